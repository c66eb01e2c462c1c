"""baking.target_format.grammar: canonical targets, exact decoding, and an automaton that allows exactly them."""

from __future__ import annotations

import random

import pytest

from baking.target_format.grammar import (
    CUT,
    DEFAULT_FEATURE_TYPES,
    END,
    MAX_COPIES,
    GrammarAutomaton,
    GrammarError,
    WindowFeature,
    coordinate_width,
    decode_target,
    encode_target,
    target_vocabulary,
)

W = WindowFeature


def test_documented_example() -> None:
    feats = [
        W(50, 1999, "-", "CDS", 0, False, True),
        W(0, 100, "+", "CDS", 2, True, False),
        W(50, 300, "+", "tRNA"),
    ]
    toks = encode_target(feats, 2000)
    assert " ".join(toks) == (
        "<cut> <0> <1> <0> <0> <+> <CDS> <p2> "
        "<0> <0> <5> <0> <0> <3> <0> <0> <+> <tRNA> "
        "<0> <0> <5> <0> <cut> <-> <CDS> <p0>"
    )
    assert decode_target(toks, 2000) == sorted(feats, key=lambda f: (f.start, f.end))


def test_width_is_digits_of_last_position() -> None:
    assert [coordinate_width(n) for n in (1, 10, 11, 100, 101, 2000, 10001)] == [
        1,
        1,
        2,
        2,
        3,
        4,
        5,
    ]
    assert encode_target([W(3, 9, "+", "tRNA")], 10) == ["<3>", "<9>", "<+>", "<tRNA>"]


def test_empty_target_and_vocabulary_order() -> None:
    assert encode_target([], 2000) == []
    assert decode_target([], 2000) == []
    vocab = target_vocabulary(["CDS", "tRNA", "CDS"], 2000)
    assert vocab[:11] == [f"<{d}>" for d in range(10)] + [CUT]
    assert vocab[-2:] == ["<CDS>", "<tRNA>"] and len(vocab) == len(set(vocab)) == 18
    assert END not in vocab


def test_order_is_canonical_whatever_the_input_order() -> None:
    rng = random.Random(1)
    feats = [
        W(s, min(s + rng.randrange(300), 999), rng.choice("+-"), rng.choice(["CDS", "tRNA"]), None)
        for s in (rng.randrange(1000) for _ in range(30))
    ]
    feats = [W(f.start, f.end, f.strand, f.type, 1 if f.type == "CDS" else None) for f in feats]
    shuffled = feats[:]
    rng.shuffle(shuffled)
    assert encode_target(feats, 1000) == encode_target(shuffled, 1000)


def test_complete_duplicates_dropped_cut_duplicates_kept() -> None:
    a = W(5, 9, "+", "tRNA")
    b = W(0, 9, "+", "CDS", 1, True, False)
    toks = encode_target([a, a, b, b], 20)
    assert decode_target(toks, 20) == [b, b, a]
    with pytest.raises(GrammarError, match="repeated more than"):
        encode_target([b] * (MAX_COPIES + 1), 20)


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
        encode_target([feature], 20)


@pytest.mark.parametrize(
    "tokens, reason",
    [
        (["<0>", "<5>"], "ends inside a feature"),
        (["<5>", "<3>", "<+>", "<tRNA>"], "not allowed"),  # end < start
        (["<2>", "<0>", "<+>", "<tRNA>"], "not allowed"),  # 20 >= window of 20
        (["<1>", "<3>", "<+>", "<CDS>", "<+>"], "not allowed"),  # phase missing
        (["<1>", "<3>", "<+>", "<tRNA>", "<p0>"], "not allowed"),  # phase on tRNA
        (["<0>", "<3>", "<+>", "<tRNA>", "<0>", "<1>", "<+>", "<tRNA>"], "not allowed"),  # order
        (["<0>", "<3>", "<+>", "<tRNA>"] * 2, "not allowed"),  # repeat of a complete feature
        (["<0>", "<cut>", "<+>", "<tRNA>"], "not allowed"),  # <cut> as a digit
        (["<0>", "<3>", "<+>", "<tRNA>", END], "not allowed"),
    ],
)
def test_decode_rejects_invalid_targets(tokens: list[str], reason: str) -> None:
    with pytest.raises(GrammarError, match=reason):
        decode_target(tokens, 20)


def test_automaton_type_list_and_allowed_sets() -> None:
    a = GrammarAutomaton(["CDS", "tRNA"], 2000)
    s = a.start()
    assert s.accepting and s.allowed() == {"<0>", "<1>", CUT, END}
    s = s.advance("<1>").advance("<9>").advance("<9>")
    assert s.allowed() == {f"<{d}>" for d in range(10)}
    s = s.advance("<9>")  # start 1999: end must be 1999 or cut
    assert s.allowed() == {"<1>", CUT}
    s = s.advance(CUT).advance("<->")
    assert s.allowed() == {"<CDS>", "<tRNA>"}
    with pytest.raises(GrammarError):
        s.advance("<rRNA>")
    s = s.advance("<tRNA>")
    assert s.accepting
    # nothing sorts after (1999, cut, -, tRNA) but a repeat of it, allowed because it is cut
    assert s.allowed() == {"<1>", END}
    for _ in range(MAX_COPIES - 1):
        for tok in ("<1>", "<9>", "<9>", "<9>", CUT, "<->", "<tRNA>"):
            s = s.advance(tok)
    assert s.allowed() == {END}


def test_short_window_bounds_coordinates() -> None:
    s = GrammarAutomaton(["CDS"], 2000).start(length=37)
    assert s.allowed() == {"<0>", CUT, END}
    s = s.advance("<0>").advance("<0>").advance("<3>")
    assert s.allowed() == {f"<{d}>" for d in range(7)}
    feats = decode_target(["<cut>", "<cut>", "<+>", "<CDS>", "<p1>"], 2000, length=37)
    assert feats == [W(0, 36, "+", "CDS", 1, True, True)]


@pytest.mark.parametrize("window_len", [1, 7, 10, 100, 2000])
def test_random_walks_are_valid_and_round_trip(window_len: int) -> None:
    """Every path the automaton allows decodes, and re-encodes to the same tokens."""
    rng = random.Random(window_len)
    a = GrammarAutomaton(DEFAULT_FEATURE_TYPES, window_len)
    for _ in range(150):
        length = rng.choice([window_len, max(1, window_len // 3)])
        s = a.start(length)
        toks: list[str] = []
        while True:
            allowed = sorted(s.allowed())
            assert allowed, toks
            tok = rng.choice(allowed)
            if tok == END:
                break
            toks.append(tok)
            s = s.advance(tok)
            if len(toks) > 200 and s.accepting:
                break
        feats = decode_target(toks, window_len, length, DEFAULT_FEATURE_TYPES)
        assert encode_target(feats, window_len, length) == toks


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
        toks = encode_target(feats, n)
        state = GrammarAutomaton(["CDS", "tRNA", "rRNA"], n).start()
        for t in toks:
            assert t in state.allowed()
            state = state.advance(t)
        assert state.accepting and END in state.allowed()
        expected = sorted({f for f in feats if not (f.cut_left or f.cut_right)}) + sorted(
            f for f in feats if f.cut_left or f.cut_right
        )
        assert sorted(decode_target(toks, n)) == sorted(expected)


def test_open_type_set_when_decoding() -> None:
    toks = ["<0>", "<4>", "<+>", "<riboswitch>"]
    assert decode_target(toks, 10) == [W(0, 4, "+", "riboswitch")]
    with pytest.raises(GrammarError):
        decode_target(toks, 10, feature_types=["CDS"])
