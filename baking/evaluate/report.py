"""Print evaluation figures: a fixed-width table (one row per type and predictor) or JSON."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from baking.evaluate.metrics import Scores, TypeReport

LEVELS = ("exact", "stop", "base")


def _cells(s: Scores) -> str:
    return f"{s.sensitivity:7.3f} {s.precision:7.3f} {s.f1:7.3f}"


def format_table(runs: Mapping[str, Sequence[TypeReport]]) -> str:
    """Rows ``type predictor n_ref n_pred`` then Sn/Pr/F1 for exact, stop and base level.

    ``runs`` maps a predictor's name (``dna2gff``, ``prodigal``) to its reports; rows for the same
    type sit together so the baseline is read side by side.
    """
    head1 = f"{'':<12} {'':<10} {'':>7} {'':>7} " + " ".join(
        f"{lvl + ' Sn/Pr/F1':^23}" for lvl in LEVELS
    )
    head2 = f"{'type':<12} {'predictor':<10} {'n_ref':>7} {'n_pred':>7} " + " ".join(
        f"{'Sn':>7} {'Pr':>7} {'F1':>7}" for _ in LEVELS
    )
    lines = [head1.rstrip(), head2]
    types: list[str] = []
    for reports in runs.values():
        types += [r.type for r in reports if r.type not in types]
    for t in types:
        for name, reports in runs.items():
            for r in reports:
                if r.type != t:
                    continue
                cells = " ".join(_cells(getattr(r, lvl)) for lvl in LEVELS)
                lines.append(f"{t:<12} {name:<10} {r.n_ref:>7d} {r.n_pred:>7d} {cells}")
    return "\n".join(lines)


def format_json(runs: Mapping[str, Sequence[TypeReport]], **extra: object) -> str:
    """The same figures (counts included) as one JSON object keyed by predictor then type."""
    payload: dict[str, object] = {
        name: {r.type: r.as_dict() for r in reports} for name, reports in runs.items()
    }
    payload.update(extra)
    return json.dumps(payload, indent=2, sort_keys=True)
