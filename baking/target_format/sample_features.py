"""A window's features as the shards store them: ``features.json``, a neutral JSON list.

Why not the target itself: the target is the model's spelling of the features (token strings and
base positions the trainer maps onto encoder tokens with the tokenizer's offsets), so the shards
keep what the spelling is made from -- one object per feature, in canonical order::

    {"type": "CDS", "strand": "+", "start": 0, "end": 99, "phase": 2, "cut_left": true, "cut_right": false}

Coordinates are window positions (0-based, inclusive, on the sample's strand); ``phase`` is null
for unphased types. ``features_from_json`` refuses anything the target could not spell
(``check_window_feature``), so a damaged shard fails where it is read, naming the feature.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from baking.target_format.grammar import GrammarError, WindowFeature
from baking.target_format.pointers import canonical_features

FEATURES_FIELD = "features.json"
"""The shard member (``KEY.features.json``) that holds a window's features."""
_KEYS = ("type", "strand", "start", "end", "phase", "cut_left", "cut_right")


def features_to_json(features: Iterable[WindowFeature], length: int) -> bytes:
    """The ``features.json`` bytes of a window of ``length`` bases (checked, canonical order,
    compact and deterministic: the same window always gives the same bytes)."""
    rows = [
        {
            "type": f.type,
            "strand": f.strand,
            "start": f.start,
            "end": f.end,
            "phase": f.phase,
            "cut_left": f.cut_left,
            "cut_right": f.cut_right,
        }
        for f in canonical_features(features, length)
    ]
    return json.dumps(rows, separators=(",", ":")).encode("utf-8")


def features_from_json(data: bytes | str, length: int) -> list[WindowFeature]:
    """The features of a ``features.json`` for a window of ``length`` bases, in canonical order;
    ``GrammarError`` for text that is not such a list or a feature the target cannot spell."""
    try:
        rows = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise GrammarError(f"not valid JSON ({exc})") from None
    if not isinstance(rows, list):
        raise GrammarError("must be a JSON list of features")
    return canonical_features((_feature(row, i) for i, row in enumerate(rows)), length)


def _feature(row: Any, i: int) -> WindowFeature:
    if not isinstance(row, dict) or set(row) != set(_KEYS):
        raise GrammarError(f"feature {i}: must be an object with keys {', '.join(_KEYS)}")
    ints = (row["start"], row["end"], *(() if row["phase"] is None else (row["phase"],)))
    if any(isinstance(v, bool) or not isinstance(v, int) for v in ints):
        raise GrammarError(f"feature {i}: start, end and phase must be integers: {row}")
    if not isinstance(row["type"], str) or not isinstance(row["strand"], str):
        raise GrammarError(f"feature {i}: type and strand must be strings: {row}")
    if not isinstance(row["cut_left"], bool) or not isinstance(row["cut_right"], bool):
        raise GrammarError(f"feature {i}: cut_left and cut_right must be true or false: {row}")
    return WindowFeature(
        row["start"],
        row["end"],
        row["strand"],
        row["type"],
        row["phase"],
        row["cut_left"],
        row["cut_right"],
    )
