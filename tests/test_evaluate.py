"""Evaluation figures on hand-made reference/prediction pairs with known answers, and vs gt eval."""

from __future__ import annotations

import pytest

from trainer.evaluate.metrics import (
    Feature,
    Scores,
    base_scores,
    compare,
    exact_scores,
    stop_scores,
)


def F(start: int, end: int, strand: str = "+", type: str = "CDS", seqid: str = "chr") -> Feature:
    return Feature(seqid, type, start, end, strand)


REF = [F(1, 300), F(400, 699, "-"), F(1000, 1299), F(2000, 2099, type="tRNA")]
PRED = [
    F(1, 300),  # exact
    F(403, 699, "-"),  # start off, stop right (minus strand: 3' end is `start`): not a stop match
    F(400, 702, "-"),  # 5' end off on minus; stop (start=400) right
    F(1003, 1299),  # stop right on plus
    F(5000, 5299),  # false positive
    F(2000, 2099, type="tRNA"),
]


def test_exact_match_counts() -> None:
    ref = [f for f in REF if f.type == "CDS"]
    pred = [f for f in PRED if f.type == "CDS"]
    s = exact_scores(ref, pred)
    assert (s.tp_ref, s.n_ref, s.tp_pred, s.n_pred) == (1, 3, 1, 5)
    assert s.sensitivity == pytest.approx(1 / 3)
    assert s.precision == pytest.approx(1 / 5)
    assert s.f1 == pytest.approx(2 * (1 / 3) * (1 / 5) / (1 / 3 + 1 / 5))


def test_stop_match_uses_three_prime_end_per_strand() -> None:
    ref = [f for f in REF if f.type == "CDS"]
    pred = [f for f in PRED if f.type == "CDS"]
    s = stop_scores(ref, pred)
    # ref stops: (300,+) (400,-) (1299,+); predicted: 300+, 403-, 400-, 1299+, 5299+
    assert (s.tp_ref, s.n_ref, s.tp_pred, s.n_pred) == (3, 3, 3, 5)


def test_wrong_strand_or_seqid_never_matches() -> None:
    ref = [F(1, 300)]
    assert exact_scores(ref, [F(1, 300, "-")]).tp_ref == 0
    assert exact_scores(ref, [F(1, 300, seqid="other")]).tp_ref == 0
    assert stop_scores(ref, [F(1, 300, "-")]).tp_ref == 0


def test_base_level_union_per_strand() -> None:
    ref = [F(1, 100), F(51, 150), F(1, 100, "-")]  # + union 1..150 (150), - 1..100 (100)
    pred = [F(101, 200), F(1, 50, "-")]  # + 101..200 overlaps 50; - overlaps 50
    s = base_scores(ref, pred)
    assert (s.tp_ref, s.n_ref, s.n_pred) == (100, 250, 150)
    assert s.sensitivity == pytest.approx(100 / 250)
    assert s.precision == pytest.approx(100 / 150)


def test_base_level_wraps_origin_spanning_features() -> None:
    ref = [F(951, 1050)]  # circular length 1000: 951..1000 + 1..50
    pred = [F(1, 50), F(961, 1000)]
    s = base_scores(ref, pred, {"chr": 1000})
    assert (s.tp_ref, s.n_ref, s.n_pred) == (90, 100, 90)


def test_empty_sides_score_zero_not_nan() -> None:
    s = exact_scores([], [])
    assert (s.sensitivity, s.precision, s.f1) == (0.0, 0.0, 0.0)
    assert Scores(0, 5, 0, 0).f1 == 0.0


def test_compare_reports_per_type() -> None:
    reports = {r.type: r for r in compare(REF, PRED, ["CDS", "tRNA", "rRNA"])}
    assert (reports["CDS"].n_ref, reports["CDS"].n_pred) == (3, 5)
    assert reports["tRNA"].exact.f1 == 1.0
    assert reports["rRNA"].n_ref == 0 and reports["rRNA"].exact.f1 == 0.0
    d = reports["CDS"].as_dict()
    assert d["exact"]["tp_ref"] == 1 and "f1" in d["stop"]
