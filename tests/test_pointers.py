"""The pointer form of the target (baking.target_format.pointers): round trip, automaton, ORF constraint.

The ORF checks here are independent of ``OrfSites``: they read the codons off the DNA directly
(``baking.orfs.is_valid_orf`` for whole genes, codon scans for cut pieces).
"""

from __future__ import annotations

import random

import pytest

from baking.orfs import OrfIndex, genetic_code, is_valid_orf
from baking.target_format.grammar import END, GrammarError, WindowFeature
from baking.target_format.pointers import (
    CUT,
    OrfSites,
    PointerAutomaton,
    decode_pointer_target,
    encode_pointer_target,
)

CODE = genetic_code(11)
_COMP = str.maketrans("ACGT", "TGCA")


def _rc(s: str) -> str:
    return s.translate(_COMP)[::-1]


def test_example_by_hand() -> None:
    feats = [
        WindowFeature(0, 100, "+", "CDS", 2, True, False),
        WindowFeature(50, 300, "+", "tRNA"),
        WindowFeature(50, 1999, "-", "CDS", 0, False, True),
    ]
    items = encode_pointer_target(feats, 2000)
    assert items == [
        "<CDS>",
        "<+>",
        CUT,
        100,
        "<p2>",
        "<tRNA>",
        "<+>",
        50,
        300,
        "<CDS>",
        "<->",
        50,
        CUT,
        "<p0>",
    ]
    assert decode_pointer_target(items, 2000) == feats
    assert encode_pointer_target([], 10) == []
    assert decode_pointer_target([], 10) == []


@pytest.mark.parametrize(
    "items",
    [
        ["<CDS>", "<+>", 5, 3, "<p0>"],  # end before start
        ["<CDS>", "<+>", 5, 10],  # CDS without phase
        ["<tRNA>", "<+>", 5, 10, "<p0>"],  # phase on an RNA
        ["<tRNA>", "<+>", 5, 100],  # past the window
        ["<tRNA>", "<+>", -1, 10],  # negative position
        ["<tRNA>", "<+>", 5, 10, "<tRNA>", "<+>", 4, 10],  # out of order
        ["<tRNA>", "<+>", 5, 10, "<tRNA>", "<+>", 5, 10],  # a complete feature repeated
        ["<tRNA>", "<+>", 5],  # ends inside a feature
        ["<+>", "<tRNA>", 5, 10],  # strand before type
        ["<tRNA>", "<+>", CUT, CUT, "<tRNA>", "<+>", True, 10],  # a bool is not a position
        [END, "<tRNA>"],
    ],
)
def test_invalid_targets_are_rejected(items: list) -> None:
    with pytest.raises(GrammarError):
        decode_pointer_target(items, 50, ["CDS", "tRNA"])


def test_cut_features_repeat_at_most_max_copies() -> None:
    one = ["<tRNA>", "<+>", CUT, CUT]
    assert len(decode_pointer_target(one * 4, 20)) == 4
    with pytest.raises(GrammarError):
        decode_pointer_target(one * 5, 20)


def _cut_piece_ok(dna: str, f: WindowFeature) -> bool:
    """A CDS piece of a window is part of a valid ORF: start/stop codons where its ends are
    closed, no in-frame stop inside, codons in the frame its phase says."""
    n = len(dna)
    if f.strand == "+":
        seq, a, b = dna, f.start, f.end
        closed5, closed3 = not f.cut_left, not f.cut_right
    else:
        seq, a, b = _rc(dna), n - 1 - f.end, n - 1 - f.start
        closed5, closed3 = not f.cut_right, not f.cut_left
    if closed5 and closed3:
        lo, hi = (f.start, f.end + 1)
        return f.phase == 0 and is_valid_orf(dna, lo, hi, f.strand, 11)
    first = a + f.phase  # first complete codon (sense coordinates)
    if closed5 and (f.phase != 0 or seq[a : a + 3] not in CODE.starts):
        return False
    if closed3:
        if (b + 1 - first) % 3 or seq[b - 2 : b + 1] not in CODE.stops:
            return False
        inner_end = b - 2
    else:
        inner_end = b + 1
    codons = [seq[i : i + 3] for i in range(first, inner_end - 2, 3)]
    if closed5:
        codons = codons[1:]
    return all(c not in CODE.stops for c in codons)


def _walk(rng: random.Random, state, limit: int = 40) -> list:
    items: list = []
    for _ in range(limit):
        allowed = state.allowed()
        choices = sorted(allowed.tokens) + list(allowed.positions)
        assert choices, f"dead end after {items}"
        item = rng.choice(choices)
        if item == END:
            return items
        items.append(item)
        state = state.advance(item)
    while not state.accepting:
        allowed = state.allowed()
        choices = sorted(allowed.tokens - {END}) + list(allowed.positions)
        assert choices, f"dead end after {items}"
        item = rng.choice(choices)
        items.append(item)
        state = state.advance(item)
    return items


@pytest.mark.parametrize("orf_on", [False, True])
def test_random_walks_decode_and_reencode(orf_on: bool) -> None:
    rng = random.Random(3)
    automaton = PointerAutomaton(["CDS", "tRNA", "rRNA"], 400)
    n_cds = 0
    for _ in range(300):
        n = rng.choice([1, 2, 5, 30, 200, 400])
        # AT-rich DNA: many stops, the hardest case for the ORF layer
        dna = "".join(rng.choice("AATTCG") for _ in range(n))
        orf = OrfSites(dna, CODE.starts, CODE.stops) if orf_on else None
        items = _walk(rng, automaton.start(n, orf))
        feats = decode_pointer_target(items, n, orf=orf)
        assert encode_pointer_target(feats, n) == items
        if orf_on:
            for f in feats:
                if f.type == "CDS":
                    n_cds += 1
                    assert _cut_piece_ok(dna, f), (dna, f)
    if orf_on:
        assert n_cds > 100  # the walks did exercise CDS


@pytest.mark.parametrize("min_codons", [0, 30])
def test_orf_sites_agree_with_independent_check_on_every_choice(min_codons: int) -> None:
    """Every CDS the ORF layer allows in a random window is a valid ORF piece (at least
    ``min_codons`` long when whole), and every such complete ORF of the window is allowed."""
    rng = random.Random(5)
    for _ in range(20):
        n = 240
        dna = "".join(rng.choice("ACGT") for _ in range(n))
        orf = OrfSites(dna, CODE.starts, CODE.stops, min_codons)
        allowed = set()
        for strand in "+-":
            starts = [None, *orf.starts(strand)]
            for s in starts:
                for e in orf.ends(strand, s):
                    e2 = None if e == CUT else int(e)
                    for p in orf.phases(strand, s, e2):
                        f = WindowFeature(
                            0 if s is None else s,
                            n - 1 if e2 is None else e2,
                            strand,
                            "CDS",
                            p,
                            s is None,
                            e2 is None,
                        )
                        assert _cut_piece_ok(dna, f), f
                        assert orf.feature_ok(f)
                        if not (f.cut_left or f.cut_right):
                            assert f.end - f.start + 1 >= 3 * min_codons
                        allowed.add((f.start, f.end, strand))
        index = OrfIndex(dna, 11)
        for strand in "+-":
            for lo in range(n):
                for hi in range(lo + max(6, 3 * min_codons), n + 1, 3):
                    if index.is_valid_orf(lo, hi, strand):
                        assert (lo, hi - 1, strand) in allowed, (lo, hi, strand)


def test_order_constraint_with_orf_layer_never_dead_ends() -> None:
    """After a CDS the next feature must sort after it; the ORF layer's choices are filtered
    by that too, and a type is offered only when some valid continuation exists."""
    rng = random.Random(9)
    automaton = PointerAutomaton(["CDS"], 120)
    for _ in range(200):
        dna = "".join(rng.choice("ACGT") for _ in range(120))
        orf = OrfSites(dna, CODE.starts, CODE.stops)
        items = _walk(rng, automaton.start(120, orf), limit=60)
        decode_pointer_target(items, 120, ["CDS"], orf)
