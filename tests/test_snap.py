"""Joint start/stop snapping on hand-made sequences (and a seeded synthetic genome)."""

from __future__ import annotations

import random

import pytest

from baking.common.errors import ConfigError
from baking.formats.fasta import reverse_complement
from trainer.inference.snap import (
    best_orf,
    complete_cds,
    genetic_code,
    is_orf,
    snap_cds,
)

CODE11 = genetic_code(11)
SENSE = ["GCT", "GAA", "CGT", "AAA", "CCG", "GGC", "TCC", "CAG", "ATC", "GAC"]


def _orf(n_codons: int, rng: random.Random) -> str:
    return "ATG" + "".join(rng.choice(SENSE) for _ in range(n_codons)) + "TAA"


def _flank(n: int) -> str:
    """Flank DNA with no start codon and no stop in any frame: 'C'-rich filler."""
    return ("CCGC" * n)[:n]


def _plus_case() -> tuple[str, int, int]:
    rng = random.Random(1)
    left, orf = _flank(60), _orf(40, rng)
    seq = left + orf + _flank(60)
    return seq, len(left) + 1, len(left) + len(orf)


def test_exact_prediction_is_kept() -> None:
    seq, s, e = _plus_case()
    assert is_orf(seq, s, e, "+", CODE11)
    out = snap_cds(seq, s, e, "+", CODE11)
    assert (out.start, out.end, out.status) == (s, e, "kept")


@pytest.mark.parametrize("ds,de", [(2, 0), (-4, 5), (7, -8), (-29, 29), (1, 1)])
def test_joint_snap_recovers_offsets_not_multiple_of_three(ds: int, de: int) -> None:
    seq, s, e = _plus_case()
    out = snap_cds(seq, s + ds, e + de, "+", CODE11, window=30)
    assert (out.start, out.end, out.status) == (s, e, "moved")


def test_minus_strand_mirrors_plus() -> None:
    seq, s, e = _plus_case()
    rc = reverse_complement(seq)
    n = len(seq)
    rs, re_ = n - e + 1, n - s + 1
    assert is_orf(rc, rs, re_, "-", CODE11)
    out = snap_cds(rc, rs - 5, re_ + 2, "-", CODE11)
    assert (out.start, out.end) == (rs, re_)


def test_outside_window_fails_and_keeps_coordinates() -> None:
    seq, s, e = _plus_case()
    out = snap_cds(seq, s + 40, e, "+", CODE11, window=30)
    assert (out.start, out.end, out.status) == (s + 40, e, "failed")
    out = snap_cds(seq, s, e, ".", CODE11)
    assert out.status == "failed"


def test_nearest_start_wins_when_two_starts_share_a_stop() -> None:
    rng = random.Random(2)
    body = "".join(rng.choice(SENSE) for _ in range(30))
    # Two in-frame starts 9 bases apart; both end at the same stop.
    seq = _flank(40) + "ATG" + "GCTGCT" + "ATG" + body + "TAA" + _flank(40)
    first = 41
    second = first + 9
    end = len(seq) - 40
    assert snap_cds(seq, first + 1, end, "+", CODE11).start == first
    assert snap_cds(seq, second - 1, end, "+", CODE11).start == second


def test_circular_origin_spanning_cds() -> None:
    seq, s, e = _plus_case()
    # Rotate so the ORF spans the origin: its first 50 bases sit at the end of the sequence.
    cut = s - 1 + 50
    rotated = seq[cut:] + seq[:cut]
    n = len(seq)
    rs = s - cut + n  # 1-based start in the rotated sequence, near the end
    re_ = rs + (e - s)  # > n: origin-spanning per GFF3
    assert re_ > n
    out = snap_cds(rotated, rs + 2, re_ - 1, "+", CODE11, circular=True)
    assert (out.start, out.end, out.status) == (rs, re_, "moved")
    # Linear: the same request cannot see past the end, so nothing valid is found.
    assert snap_cds(rotated, rs + 2, re_ - 1, "+", CODE11, circular=False).status == "failed"


def test_table_4_reads_tga_as_tryptophan() -> None:
    rng = random.Random(3)
    head = "ATG" + "".join(rng.choice(SENSE) for _ in range(10)) + "TGA"
    tail = "".join(rng.choice(SENSE) for _ in range(10)) + "TAA"
    seq = _flank(40) + head + tail + _flank(40)
    s = 41
    e11 = s + len(head) - 1
    e4 = s + len(head) + len(tail) - 1
    assert snap_cds(seq, s, e11 + 2, "+", genetic_code(11)).end == e11
    assert snap_cds(seq, s, e4 - 2, "+", genetic_code(4)).end == e4
    assert snap_cds(seq, s, e4 - 2, "+", genetic_code(25)).end == e4
    assert not is_orf(seq, s, e4, "+", genetic_code(11))  # internal TGA stop


def test_unknown_table_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="transl_table=99"):
        genetic_code(99)


def test_best_orf_requires_start_codon() -> None:
    assert best_orf("CCCCCCCCCTAA", 0, 11, CODE11, 5) is None


def _per_end_snap(seq: str, s: int, e: int, window: int) -> tuple[int, int] | None:
    """The naive alternative: the stop in the predicted start's frame, then the nearest start."""
    stops = CODE11.stops
    stop = next(
        (
            i
            for i in range(s - 1, len(seq) - 2, 3)
            if seq[i : i + 3] in stops and i + 3 > e - window
        ),
        None,
    )
    if stop is None or abs(stop + 3 - e) > window:
        return None
    starts = [
        i
        for i in range(s - 1 - window, s + window)
        if (stop - i) % 3 == 0 and seq[i : i + 3] in CODE11.starts
    ]
    if not starts:
        return None
    i = min(starts, key=lambda x: abs(x - (s - 1)))
    return i + 1, stop + 3


def test_joint_beats_per_end_on_noisy_synthetic_genome() -> None:
    """Prior-art measurement: ±12 bp noise on both ends; joint snapping recovers most genes."""
    rng = random.Random(7)
    parts, genes, pos = [], [], 0
    for _ in range(200):
        spacer = "".join(rng.choice("ACGT") for _ in range(rng.randint(40, 120)))
        orf = "ATG" + "".join(rng.choice(SENSE + ["TGG", "CAT", "TTA"]) for _ in range(80)) + "TAA"
        parts += [spacer, orf]
        genes.append((pos + len(spacer) + 1, pos + len(spacer) + len(orf)))
        pos += len(spacer) + len(orf)
    seq = "".join(parts)
    joint_exact = joint_stop = naive_exact = 0
    for s, e in genes:
        ps, pe = s + rng.randint(-12, 12), e + rng.randint(-12, 12)
        out = snap_cds(seq, ps, pe, "+", CODE11)
        joint_exact += (out.start, out.end) == (s, e)
        joint_stop += out.end == e
        naive_exact += _per_end_snap(seq, ps, pe, 30) == (s, e)
    assert joint_stop / len(genes) >= 0.95
    assert joint_exact / len(genes) >= 0.8
    assert naive_exact < joint_exact


def test_complete_cds_from_a_known_start_finds_its_stop_on_both_strands() -> None:
    rng = random.Random(7)
    orf = _orf(40, rng)
    seq = _flank(50) + orf + _flank(50)
    start, end = 51, 50 + len(orf)
    # Only the 5' end was closed: on + that is the left end, the right one ran past every window.
    assert complete_cds(seq, start, start + 99, "+", CODE11, open_left=False, open_right=True) == (
        start,
        end,
    )
    # The same gene on the minus strand: its 5' end is the right end.
    rc = reverse_complement(seq)
    n = len(seq)
    m_start, m_end = n - end + 1, n - start + 1
    got = complete_cds(rc, m_end - 99, m_end, "-", CODE11, open_left=True, open_right=False)
    assert got == (m_start, m_end)


def test_complete_cds_from_a_known_stop_takes_the_longest_orf() -> None:
    rng = random.Random(8)
    inner = _orf(30, rng)  # ATG ... TAA
    # An in-frame stop, then an upstream start (ATG) 5 codons before the inner ATG: the longest
    # ORF starts at the upstream ATG, the one right after the in-frame stop.
    upstream = "TAG" + "GCT" * 2 + "ATG" + "GCT" * 4
    seq = _flank(40) + upstream + inner + _flank(40)
    stop_end = 40 + len(upstream) + len(inner)
    longest_start = 40 + 3 + 6 + 1
    got = complete_cds(seq, stop_end - 80, stop_end, "+", CODE11, open_left=True, open_right=False)
    assert got == (longest_start, stop_end)
    assert is_orf(seq, *got, "+", CODE11)
    # A 3' end predicted a few bases off still lands on the stop codon nearby.
    got2 = complete_cds(
        seq, stop_end - 80, stop_end + 4, "+", CODE11, open_left=True, open_right=False
    )
    assert got2 == got


def test_complete_cds_needs_exactly_one_open_end() -> None:
    seq = _flank(30) + _orf(10, random.Random(1)) + _flank(30)
    assert complete_cds(seq, 31, 66, "+", CODE11, open_left=True, open_right=True) is None
    assert complete_cds(seq, 31, 66, "+", CODE11, open_left=False, open_right=False) is None
    # No stop codon anywhere downstream of the start: nothing to complete.
    assert (
        complete_cds("ATG" + _flank(60), 1, 30, "+", CODE11, open_left=False, open_right=True)
        is None
    )


def test_complete_cds_recovers_every_synthetic_stop_from_the_stop_end() -> None:
    from baking.synthetic import SyntheticConfig, generate_genome

    genome = generate_genome(SyntheticConfig(seed=3, chromosome_length=30_000, plasmid_lengths=()))
    checked = 0
    for f in genome.features_of("CDS"):
        seq = genome.sequence(f.seqid).seq
        if f.end > len(seq):
            continue  # origin-spanning: completion is linear only
        five_open = (True, False) if f.strand == "+" else (False, True)
        lo, hi = (f.end - 60, f.end) if f.strand == "+" else (f.start, f.start + 60)
        got = complete_cds(
            seq, max(lo, 1), hi, f.strand, CODE11, open_left=five_open[0], open_right=five_open[1]
        )
        assert got is not None and is_orf(seq, *got, f.strand, CODE11)
        stop = got[1] if f.strand == "+" else got[0]
        assert stop == (f.end if f.strand == "+" else f.start)  # the stop is exact
        three_open = (not five_open[0], not five_open[1])
        lo, hi = (f.start, f.start + 60) if f.strand == "+" else (f.end - 60, f.end)
        got = complete_cds(
            seq, lo, hi, f.strand, CODE11, open_left=three_open[0], open_right=three_open[1]
        )
        assert got == (f.start, f.end)  # a true start fixes the whole ORF
        checked += 1
    assert checked > 10
