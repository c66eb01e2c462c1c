"""Joint start/stop snapping on hand-made sequences (and a seeded synthetic genome)."""

from __future__ import annotations

import random

import pytest

from baking.errors import ConfigError
from baking.fasta import reverse_complement
from trainer.inference.snap import (
    best_orf,
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
