"""baking.orfs: codon tables, the ORF index's answers, masks and the ORF iterator.

Hand-made sequences with ORFs placed on both strands and all frames, a string-scanning reference
that the index must agree with on random DNA, and the real RefSeq CDS of the phage and E. coli.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from baking.common.errors import ConfigError
from baking.formats.fasta import read_fasta, reverse_complement
from baking.formats.gff3 import read_gff3
from baking.orfs import Orf, OrfIndex, genetic_code, is_valid_orf

FILL = "CCGC"  # no start codon and no stop codon in any frame of either strand, repeated


def _fill(n: int) -> str:
    return (FILL * (n // 4 + 1))[:n]


def _body(codons: int, seed: int) -> str:
    rng = random.Random(seed)
    return "".join(
        rng.choice(["GCT", "GAA", "CGT", "AAA", "CCG", "GGC", "CAG"]) for _ in range(codons)
    )


def _sense_orf(codons: int, seed: int, start: str = "ATG", stop: str = "TAA") -> str:
    return start + _body(codons, seed) + stop


def _place(left: int, orf: str, right: int, strand: str) -> tuple[str, int, int]:
    """``filler + orf + filler`` with the ORF on ``strand``; returns (seq, lo, hi)."""
    piece = orf if strand == "+" else reverse_complement(orf)
    return _fill(left) + piece + _fill(right), left, left + len(orf)


# ---- a string-scanning reference (+ strand only; - strand via reverse complement) ------------


def _ref_first_stop(seq: str, lo: int, stops: frozenset[str]) -> int | None:
    for j in range(lo, len(seq) - 2, 3):
        if seq[j : j + 3] in stops:
            return j + 3
    return None


def _ref_orfs(seq: str, table: int, min_codons: int) -> set[tuple[int, int]]:
    """Longest ORF per stop on +, by scanning every start codon."""
    code = genetic_code(table)
    best: dict[int, int] = {}
    for lo in range(len(seq) - 2):
        if seq[lo : lo + 3] in code.starts:
            hi = _ref_first_stop(seq, lo, code.stops)
            if hi is not None and hi - lo >= 6:
                best[hi] = min(best.get(hi, lo), lo)
    return {(lo, hi) for hi, lo in best.items() if (hi - lo) // 3 >= min_codons}


def test_codes_and_unknown_table() -> None:
    assert "TGA" in genetic_code(11).stops and "TGA" not in genetic_code(4).stops
    assert "TGA" not in genetic_code(25).stops
    assert {"ATG", "GTG", "TTG"} <= genetic_code(11).starts
    with pytest.raises(ConfigError, match="transl_table=2 is not supported"):
        genetic_code(2)
    with pytest.raises(ConfigError):
        OrfIndex("ACGT", 5)


@pytest.mark.parametrize("strand", ["+", "-"])
@pytest.mark.parametrize("left", [30, 31, 32])  # the three frames
@pytest.mark.parametrize("start", ["ATG", "GTG", "TTG"])
def test_hand_made_orf_every_frame_and_strand(strand: str, left: int, start: str) -> None:
    orf = _sense_orf(20, left, start=start, stop="TGA")
    seq, lo, hi = _place(left, orf, 27, strand)
    idx = OrfIndex(seq, 11)
    five, three = (lo, hi) if strand == "+" else (hi, lo)
    assert idx.is_valid_orf(lo, hi, strand)
    assert is_valid_orf(seq, lo, hi, strand)
    assert not idx.is_valid_orf(lo, hi, "-" if strand == "+" else "+")
    assert idx.is_start(five, strand) and idx.is_stop(three, strand)
    assert idx.forced_end(five, strand) == three
    assert list(idx.allowed_five_primes(three, strand)) == [five]
    assert idx.allowed_starts(strand)[five] and idx.allowed_stops(strand)[three]
    # in the ORF's own frame there is one start and one stop (other frames may hold codons)
    for mask, b in [(idx.allowed_starts(strand), five), (idx.allowed_stops(strand), three)]:
        hits = np.flatnonzero(mask)
        assert list(hits[(hits % 3 == b % 3) & (hits >= lo) & (hits <= hi)]) == [b]
    assert Orf(lo, hi, strand) in list(idx.iter_orfs(1))
    # off by one or by a codon on either end: not an ORF
    for dlo, dhi in [(1, 0), (0, 1), (3, 0), (0, -3), (-1, -1)]:
        assert not idx.is_valid_orf(lo + dlo, hi + dhi, strand)


def test_alternative_start_needs_its_table() -> None:
    # CTG is a start in table 1 only; TGA is a stop in 11 but Trp in 4 and Gly in 25.
    seq, lo, hi = _place(12, _sense_orf(10, 1, start="CTG"), 12, "+")
    assert OrfIndex(seq, 1).is_valid_orf(lo, hi, "+")
    assert not OrfIndex(seq, 11).is_valid_orf(lo, hi, "+")
    inner = "ATG" + _body(5, 2) + "TGA" + _body(5, 3) + "TAG"
    seq, lo, hi = _place(12, inner, 12, "-")
    idx11, idx4 = OrfIndex(seq, 11), OrfIndex(seq, 4)
    assert not idx11.is_valid_orf(lo, hi, "-")  # an internal stop under table 11
    assert idx4.is_valid_orf(lo, hi, "-") and OrfIndex(seq, 25).is_valid_orf(lo, hi, "-")
    assert idx11.forced_end(hi, "-") == hi - 3 * 7  # ATG + 5 codons + TGA
    assert idx4.forced_end(hi, "-") == lo


def test_shared_stop_lists_every_in_frame_start_after_the_previous_stop() -> None:
    #      prev stop  start  x   start        start  stop
    sense = "TAA" + "GCT" + "ATG" + "GCT" + "GTG" + _body(4, 4) + "TTG" + "GCTTAG"
    for strand in "+-":
        seq, lo, hi = _place(9, sense, 9, strand)
        idx = OrfIndex(seq, 11)
        if strand == "+":
            starts = [lo + 6, lo + 12, lo + 27]
            assert list(idx.allowed_five_primes(hi, "+")) == starts
            assert list(idx.iter_orfs(1)) == [Orf(lo + 6, hi, "+")]  # the longest
        else:
            starts = [hi - 27, hi - 12, hi - 6]  # 5' ends on -: high coordinates
            assert list(idx.allowed_five_primes(lo, "-")) == starts
            assert list(idx.iter_orfs(1)) == [Orf(lo, hi - 6, "-")]
        for five in starts:
            assert idx.forced_end(five, strand) == (hi if strand == "+" else lo)
        assert len(idx.allowed_five_primes(hi - 1 if strand == "+" else lo + 1, strand)) == 0


def test_runs_off_the_sequence_and_edge_stops() -> None:
    seq = _fill(6) + "ATG" + _body(5, 5)  # no stop before the end
    idx = OrfIndex(seq, 11)
    assert idx.forced_end(6, "+") is None
    assert list(idx.iter_orfs(1)) == []
    # stop codon as the very last bases, start as the very first
    seq = "ATG" + _body(5, 6) + "TAA"
    idx = OrfIndex(seq, 11)
    assert idx.is_valid_orf(0, len(seq), "+") and idx.allowed_stops("+")[len(seq)]
    rc = reverse_complement(seq)
    assert OrfIndex(rc, 11).is_valid_orf(0, len(rc), "-")
    assert OrfIndex(rc, 11).allowed_starts("-")[len(rc)]
    # a minus start with no stop below it runs off the left edge
    rc2 = reverse_complement(_fill(6) + "ATG" + _body(5, 5))
    assert OrfIndex(rc2, 11).forced_end(len(rc2) - 6, "-") is None


def test_cut_pieces_are_checked_in_their_own_frame() -> None:
    orf = _sense_orf(30, 7)  # 96 bp, one stop at the end
    seq = orf[10:]  # cut 10 bases into the gene: 5' open, phase (3 - 10 % 3) % 3 = 2
    idx = OrfIndex(seq, 11)
    assert idx.is_valid_orf(0, len(seq), "+", 2, open_5p=True)
    assert not idx.is_valid_orf(0, len(seq), "+", 0, open_5p=True)  # wrong phase: stop off frame
    assert not idx.is_valid_orf(0, len(seq), "+", 2)  # 5' end claimed closed: no start there
    assert not idx.is_valid_orf(1, len(seq), "+", 1, open_5p=True)  # open end off the edge
    head = orf[:50]  # 3' open
    idx = OrfIndex(head, 11)
    assert idx.is_valid_orf(0, 50, "+", open_3p=True)
    assert idx.no_internal_stop(0, 50, "+", open_3p=True)
    # both ends cut, on the minus strand: the phase counts from the high end
    mid = reverse_complement(orf[10:70])
    idx = OrfIndex(mid, 11)
    assert idx.is_valid_orf(0, 60, "-", 2, open_5p=True, open_3p=True)
    assert not idx.is_valid_orf(0, 60, "-", 2, open_5p=True)  # 3' end is no stop
    assert not idx.is_valid_orf(0, 60, "-", 2, open_3p=True)  # 5' end is no start
    # a piece with an internal stop in its frame fails however it is cut
    bad = orf[:30] + "TAA" + orf[33:]
    idx = OrfIndex(bad, 11)
    assert not idx.no_internal_stop(0, 60, "+", open_3p=True)
    assert not idx.is_valid_orf(0, len(bad), "+")
    assert idx.stops_in_frame(0, len(bad), "+") == 2


def test_no_internal_stop_rejects_an_out_of_frame_end_stop() -> None:
    seq = "ATG" + "GCT" + "TAA" + "GC" + "TAA"  # in-frame stop at 6, final TAA off frame
    idx = OrfIndex(seq, 11)
    assert not idx.no_internal_stop(0, len(seq), "+")
    assert idx.no_internal_stop(0, 9, "+")


def test_n_and_lower_case_and_tiny_sequences() -> None:
    idx = OrfIndex("atgNNNtaa", 11)
    assert idx.is_start(0, "+") and idx.is_stop(9, "+") and idx.is_valid_orf(0, 9, "+")
    assert not OrfIndex("ANGGCTTAA", 11).is_start(0, "+")
    for s in ["", "A", "AT", "ATG"]:
        idx = OrfIndex(s, 11)
        assert list(idx.iter_orfs(1)) == []
        assert idx.allowed_starts("+").shape == (len(s) + 1,)
        assert idx.forced_end(0, "+") is None
    with pytest.raises(ValueError, match="strand"):
        OrfIndex("ATG", 11).is_start(0, ".")


@pytest.mark.parametrize("table", [1, 4, 11, 25])
def test_index_agrees_with_string_scan_on_random_dna(table: int) -> None:
    rng = random.Random(table)
    code = genetic_code(table)
    for trial in range(6):
        seq = "".join(rng.choice("ACGT") for _ in range(rng.randrange(50, 700)))
        n = len(seq)
        idx, rc_idx = OrfIndex(seq, table), OrfIndex(reverse_complement(seq), table)
        assert {(o.lo, o.hi) for o in idx.iter_orfs(5, "+")} == _ref_orfs(seq, table, 5)
        mirrored = {(n - o.hi, n - o.lo) for o in rc_idx.iter_orfs(5, "+")}
        assert {(o.lo, o.hi) for o in idx.iter_orfs(5, "-")} == mirrored
        for strand in "+-":
            ends = idx.forced_ends(strand)
            assert ends.shape == (n + 1,)
            for b in range(n + 1):
                fe = idx.forced_end(b, strand)
                assert ends[b] == (-1 if fe is None else fe)
        for lo in range(n):
            assert idx.forced_end(lo, "+") == _ref_first_stop(seq, lo, code.stops)
            fe = rc_idx.forced_end(n - lo, "+")  # minus 5' end lo' = n - lo on the mirror
            assert idx.forced_end(lo, "-") == (None if fe is None else n - fe)
            assert idx.allowed_starts("+")[lo] == (seq[lo : lo + 3] in code.starts)
        for hi in range(n + 1):
            mine = idx.allowed_five_primes(hi, "+")
            ref = [
                lo
                for lo in range(hi - 5, -1, -1)
                if (hi - lo) % 3 == 0
                and seq[lo : lo + 3] in code.starts
                and _ref_first_stop(seq, lo, code.stops) == hi
            ]
            assert list(mine) == sorted(ref), (trial, hi)
            minus = idx.allowed_five_primes(n - hi, "-")
            assert sorted(n - x for x in rc_idx.allowed_five_primes(hi, "+")) == list(minus)
        assert np.array_equal(idx.allowed_stops("-"), rc_idx.allowed_stops("+")[::-1])
        assert np.array_equal(idx.allowed_starts("-"), rc_idx.allowed_starts("+")[::-1])
        for o in idx.iter_orfs(1):
            assert idx.is_valid_orf(o.lo, o.hi, o.strand)


@pytest.mark.shared
@pytest.mark.parametrize("name,min_valid", [("phage", 1.0), ("E.coli", 0.99)])
def test_refseq_cds_are_orfs(genome_pair, name: str, min_valid: float) -> None:
    """Every single-piece, non-pseudo RefSeq CDS checked with the index (transl_table 11)."""
    fna, gff = genome_pair(name)
    seqs = dict(read_fasta(fna))
    index = {sid: OrfIndex(s, 11) for sid, s in seqs.items()}
    doc = read_gff3(gff)
    pieces: dict[str, int] = {}
    for f in doc.features:
        if f.type == "CDS":
            pieces[f.attr("ID") or ""] = pieces.get(f.attr("ID") or "", 0) + 1
    cds = [
        f
        for f in doc.features
        if f.type == "CDS" and f.attr("pseudo") != "true" and pieces[f.attr("ID") or ""] == 1
    ]
    assert len(cds) > 50
    ok = [index[f.seqid].is_valid_orf(f.start - 1, f.end, f.strand) for f in cds]
    assert all(f.attr("transl_table") == "11" for f in cds)
    assert sum(ok) / len(ok) >= min_valid
    # each valid CDS's stop has a longest ORF in the iterator, reaching at least as far 5'
    longest = {
        (sid, o.strand, o.three_prime): o.five_prime
        for sid, idx in index.items()
        for o in idx.iter_orfs(1)
    }
    for f, good in zip(cds, ok):
        if good:
            five, three = (f.start - 1, f.end) if f.strand == "+" else (f.end, f.start - 1)
            other = longest[(f.seqid, f.strand, three)]
            assert other <= five if f.strand == "+" else other >= five
            allowed = index[f.seqid].allowed_five_primes(three, f.strand)
            assert five in allowed and other in (allowed[0], allowed[-1])
