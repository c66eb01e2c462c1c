"""The target's vocabulary and its window features (see ``docs/target-format.md``).

What every part of the one target form shares: the token strings (``<cut>``, strands, phases,
feature types), the ``WindowFeature`` a target describes, its canonical order and the checks a
feature must pass. The target itself -- ``TYPE STRAND START END [PHASE]`` with coordinates as
window positions the decoder points at -- and its automaton are ``baking.target_format.pointers``.

Features are sorted by (start, end, strand, type, phase) with cut-left first and cut-right last,
a left-to-right scan of the window. A feature may repeat the previous one only if it is cut (two
nested genes sharing a stop codon look identical in a window that cuts both) and at most
``MAX_COPIES`` times in a row, so constrained decoding cannot loop on one feature; a complete
feature is never repeated.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from baking.common.errors import Dna2GffError

END = "<END>"  # not a vocabulary token: "the target may end here" (the decoder's EOS)
CUT = "<cut>"
STRAND_TOKENS: dict[str, str] = {"+": "<+>", "-": "<->"}
STRAND_OF: dict[str, str] = {v: k for k, v in STRAND_TOKENS.items()}
"""Strand token -> ``+``/``-`` (the one inverse of ``STRAND_TOKENS``)."""
PHASE_TOKENS: tuple[str, ...] = ("<p0>", "<p1>", "<p2>")
PHASE_OF: dict[str, int] = {t: i for i, t in enumerate(PHASE_TOKENS)}
"""Phase token -> 0..2 (the one inverse of ``PHASE_TOKENS``)."""
PHASED_TYPES = frozenset({"CDS"})
MAX_COPIES = 4  # identical cut features in a row (nested genes sharing the visible piece)
DEFAULT_FEATURE_TYPES: tuple[str, ...] = (
    "CDS",
    "tRNA",
    "rRNA",
    "ncRNA",
    "tmRNA",
    "SRP_RNA",
    "RNase_P_RNA",
    "antisense_RNA",
)
_RESERVED = {t[1:-1] for t in (CUT, *STRAND_TOKENS.values(), *PHASE_TOKENS, END)}


class GrammarError(Dna2GffError):
    """A token sequence (or a feature list) that the target grammar does not allow."""


@dataclass(frozen=True, order=True)
class WindowFeature:
    """A feature in window coordinates: 0-based, inclusive, on the sample's strand frame.

    ``cut_left``/``cut_right``: the feature continues past the window's first/last base (its
    ``start`` is then 0 / its ``end`` is then ``length - 1``). ``phase`` is set for phased types
    (CDS) only, as the phase of this (possibly clipped) piece at its 5' end.
    """

    start: int
    end: int
    strand: str
    type: str
    phase: int | None = None
    cut_left: bool = False
    cut_right: bool = False


@lru_cache(maxsize=1024)
def type_token(feature_type: str) -> str:
    """The token of a feature type, e.g. ``CDS`` -> ``<CDS>``; rejects unusable names."""
    if (
        not feature_type
        or any(c.isspace() or c in "<>" for c in feature_type)
        or feature_type in _RESERVED
    ):
        raise GrammarError(f"feature type {feature_type!r} cannot be a grammar token")
    return f"<{feature_type}>"


def canonical_key(f: WindowFeature) -> tuple:
    """The canonical order: (start, end, strand, type, phase), cut-left first, cut-right last."""
    return (
        -1 if f.cut_left else f.start,
        1 << 60 if f.cut_right else f.end,
        f.strand,
        f.type,
        -1 if f.phase is None else f.phase,
    )


def check_window_feature(f: WindowFeature, length: int) -> None:
    """A window feature the target can spell: inside the window, cuts on its edges, phase for CDS only."""
    if not (0 <= f.start <= f.end < length):
        raise GrammarError(f"feature {f} outside window of length {length} or end < start")
    if f.cut_left and f.start != 0:
        raise GrammarError(f"feature {f}: cut_left needs start 0")
    if f.cut_right and f.end != length - 1:
        raise GrammarError(f"feature {f}: cut_right needs end {length - 1}")
    if f.strand not in STRAND_TOKENS:
        raise GrammarError(f"feature {f}: strand must be + or -")
    if (f.type in PHASED_TYPES) != (f.phase is not None) or f.phase not in (None, 0, 1, 2):
        raise GrammarError(f"feature {f}: phase must be 0-2 for CDS and None otherwise")


def target_vocabulary(feature_types: Sequence[str]) -> list[str]:
    """The token strings a target may use, in a stable order: cut, strands, phases, then the
    types in the order given (coordinates are positions, not tokens)."""
    types = [type_token(t) for t in dict.fromkeys(feature_types)]
    return [CUT, *STRAND_TOKENS.values(), *PHASE_TOKENS, *types]
