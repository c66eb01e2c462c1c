"""Refuse a scoring that can only print zeros: no requested type in the reference.

``evaluate --types BOGUS`` (or ``CDs``), or a reference without CDS (a GFF3 of ``gene`` lines
only), printed rows of 0.000 and exited 0, which reads like a model that found nothing. A type
the user named (``--types``) that occurs in neither file is refused too; the default types are
not (a phage has no rRNA: its row says ``n_ref 0``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from baking.common.errors import ConfigError, InputError
from baking.evaluate.metrics import Feature


def _has(counts: Counter) -> str:
    if not counts:
        return "it has no features"
    shown = ", ".join(f"{t} {n}" for t, n in counts.most_common(8))
    return f"it has {shown}" + (", ..." if len(counts) > 8 else "")


def check_types(
    ref_path: str | Path,
    ref: Sequence[Feature],
    pred: Sequence[Feature],
    types: Sequence[str],
    explicit: bool,
) -> None:
    """``InputError``/``ConfigError`` when the scores would say nothing (module docstring);
    ``explicit``: the types came from the user, not the defaults."""
    in_ref = Counter(f.type for f in ref)
    in_pred = Counter(f.type for f in pred)
    if not any(in_ref[t] for t in types):
        raise InputError(
            ref_path,
            f"no {', '.join(types)} feature to score against ({_has(in_ref)}); "
            "choose --types among its types",
        )
    if explicit:
        absent = [t for t in types if not in_ref[t] and not in_pred[t]]
        if absent:
            twins = [p for t in absent for p in in_ref if p.lower() == t.lower()]
            hint = f" (types are case-sensitive: {twins[0]!r}?)" if twins else ""
            raise ConfigError(
                f"--types {','.join(absent)}: in neither the reference nor the prediction"
                f"{hint}; the reference {ref_path}: {_has(in_ref)}"
            )
