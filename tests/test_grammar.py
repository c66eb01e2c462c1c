"""baking.target_format.grammar: the target's vocabulary and the canonical rules every target
follows (order, duplicates, feature checks), through the one target form's encoder and automaton."""

from __future__ import annotations

import random

import pytest

from baking.target_format.grammar import (
    CUT,
    END,
    MAX_COPIES,
    GrammarError,
    WindowFeature,
    target_vocabulary,
)
from baking.target_format.pointers import (
    PointerAutomaton,
    decode_pointer_target,
    encode_pointer_target,
)

W = WindowFeature


def test_vocabulary_order_has_no_digits() -> None:
    vocab = target_vocabulary(["CDS", "tRNA", "CDS"])
    assert vocab == [CUT, "<+>", "<->", "<p0>", "<p1>", "<p2>", "<CDS>", "<tRNA>"]
    assert END not in vocab and not any(t[1:-1].isdigit() for t in vocab)


def test_order_is_canonical_whatever_the_input_order() -> None:
    rng = random.Random(1)
    feats = [
        W(s, min(s + rng.randrange(300), 999), rng.choice("+-"), rng.choice(["CDS", "tRNA"]), None)
        for s in (rng.randrange(1000) for _ in range(30))
    ]
    feats = [W(f.start, f.end, f.strand, f.type, 1 if f.type == "CDS" else None) for f in feats]
    shuffled = feats[:]
    rng.shuffle(shuffled)
    assert encode_pointer_target(feats, 1000) == encode_pointer_target(shuffled, 1000)


def test_complete_duplicates_dropped_cut_duplicates_kept() -> None:
    a = W(5, 9, "+", "tRNA")
    b = W(0, 9, "+", "CDS", 1, True, False)
    items = encode_pointer_target([a, a, b, b], 20)
    assert decode_pointer_target(items, 20) == [b, b, a]
    with pytest.raises(GrammarError, match="repeated more than"):
        encode_pointer_target([b] * (MAX_COPIES + 1), 20)


@pytest.mark.parametrize(
    "feature, reason",
    [
        (W(5, 4, "+", "tRNA"), "outside window"),
        (W(0, 20, "+", "tRNA"), "outside window"),
        (W(1, 4, "+", "tRNA", None, True), "cut_left needs start 0"),
        (W(1, 4, "+", "tRNA", None, False, True), "cut_right needs end 19"),
        (W(1, 4, ".", "tRNA"), "strand"),
        (W(1, 4, "+", "CDS"), "phase"),
        (W(1, 4, "+", "tRNA", 0), "phase"),
        (W(1, 4, "+", "t RNA"), "cannot be a grammar token"),
    ],
)
def test_encode_rejects_invalid_features(feature: WindowFeature, reason: str) -> None:
    with pytest.raises(GrammarError, match=reason):
        encode_pointer_target([feature], 20)


def test_short_window_bounds_coordinates() -> None:
    s = PointerAutomaton(["CDS"], 2000).start(length=37)
    s = s.advance("<CDS>").advance("<+>")
    assert s.allowed().tokens == {CUT} and s.allowed().positions == range(37)
    feats = decode_pointer_target(["<CDS>", "<+>", CUT, CUT, "<p1>"], 37)
    assert feats == [W(0, 36, "+", "CDS", 1, True, True)]


def test_automaton_accepts_every_encoded_target() -> None:
    rng = random.Random(7)
    for _ in range(300):
        n = rng.choice([5, 50, 500])
        feats = []
        for _ in range(rng.randrange(6)):
            s = rng.randrange(n)
            e = rng.randrange(s, n)
            t = rng.choice(["CDS", "tRNA", "rRNA"])
            feats.append(
                W(
                    s,
                    e,
                    rng.choice("+-"),
                    t,
                    rng.randrange(3) if t == "CDS" else None,
                    s == 0 and rng.random() < 0.5,
                    e == n - 1 and rng.random() < 0.5,
                )
            )
        items = encode_pointer_target(feats, n)
        state = PointerAutomaton(["CDS", "tRNA", "rRNA"], n).start()
        for item in items:
            assert item in state.allowed()
            state = state.advance(item)
        assert state.accepting and END in state.allowed()
        expected = sorted({f for f in feats if not (f.cut_left or f.cut_right)}) + sorted(
            f for f in feats if f.cut_left or f.cut_right
        )
        assert sorted(decode_pointer_target(items, n)) == sorted(expected)


def test_open_type_set_when_decoding() -> None:
    items = ["<riboswitch>", "<+>", 0, 4]
    assert decode_pointer_target(items, 10) == [W(0, 4, "+", "riboswitch")]
    with pytest.raises(GrammarError):
        decode_pointer_target(items, 10, feature_types=["CDS"])
