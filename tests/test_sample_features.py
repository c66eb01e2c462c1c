"""baking.target_format.sample_features: the neutral ``features.json`` the shards store."""

from __future__ import annotations

import json

import pytest

from baking.target_format.grammar import GrammarError, WindowFeature
from baking.target_format.sample_features import features_from_json, features_to_json

W = WindowFeature


def test_round_trip_is_canonical_and_deterministic() -> None:
    feats = [
        W(50, 99, "-", "CDS", 0, False, True),
        W(0, 30, "+", "CDS", 2, True, False),
        W(10, 20, "+", "tRNA"),
        W(10, 20, "+", "tRNA"),  # an exact duplicate of a complete feature: dropped
    ]
    data = features_to_json(feats, 100)
    assert data == features_to_json(list(reversed(feats)), 100)  # same window, same bytes
    back = features_from_json(data, 100)
    assert back == [feats[1], feats[2], feats[0]]
    assert json.loads(data)[1] == {
        "type": "tRNA",
        "strand": "+",
        "start": 10,
        "end": 20,
        "phase": None,
        "cut_left": False,
        "cut_right": False,
    }
    assert features_from_json(features_to_json([], 5), 5) == []


@pytest.mark.parametrize(
    "text, reason",
    [
        ("{not json", "not valid JSON"),
        ("[" * 100_000 + "]" * 100_000, "not valid JSON"),
        ('{"type": "CDS"}', "must be a JSON list"),
        ("[3]", "must be an object with keys"),
        ('[{"type": "tRNA", "strand": "+", "start": 1, "end": 2}]', "must be an object with keys"),
        (
            '[{"type":"tRNA","strand":"+","start":"1","end":2,"phase":null,'
            '"cut_left":false,"cut_right":false}]',
            "must be integers",
        ),
        (
            '[{"type":"tRNA","strand":"+","start":true,"end":2,"phase":null,'
            '"cut_left":false,"cut_right":false}]',
            "must be integers",
        ),
        (
            '[{"type":"tRNA","strand":"+","start":1,"end":2,"phase":null,'
            '"cut_left":0,"cut_right":false}]',
            "true or false",
        ),
        (
            '[{"type":"tRNA","strand":"+","start":1,"end":200,"phase":null,'
            '"cut_left":false,"cut_right":false}]',
            "outside window of length 100",
        ),
        (
            '[{"type":"CDS","strand":"+","start":1,"end":20,"phase":null,'
            '"cut_left":false,"cut_right":false}]',
            "phase must be 0-2 for CDS",
        ),
        (
            '[{"type":7,"strand":"+","start":1,"end":20,"phase":null,'
            '"cut_left":false,"cut_right":false}]',
            "must be strings",
        ),
    ],
)
def test_damaged_features_are_refused_by_reason(text: str, reason: str) -> None:
    with pytest.raises(GrammarError, match=reason):
        features_from_json(text, 100)
