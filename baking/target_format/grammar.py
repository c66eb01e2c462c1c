"""The target grammar: window features <-> annotation tokens (see ``docs/target-format.md``).

A target lists a window's features in one canonical order, each as::

    START END STRAND TYPE [PHASE]

- ``START`` is ``<cut>`` when the feature begins before the window (it is then clipped to 0),
  otherwise the 0-based window position written as ``width`` digit tokens ``<0>``..``<9>``, where
  ``width = len(str(window_len - 1))`` (fixed width: one spelling per number, place value =
  position in the token string);
- ``END`` (inclusive) is the same digits, or ``<cut>`` when the feature runs past the window's end;
- ``STRAND`` is ``<+>`` or ``<->``, relative to the sample's DNA (reverse-complemented samples flip
  it); ``TYPE`` is ``<CDS>``, ``<tRNA>``, ...;
- ``PHASE`` (``<p0>``/``<p1>``/``<p2>``) follows phased types (CDS) only: the phase of the clipped
  piece at its own 5' end, so it stays right after clipping and after reverse complement.

Features are sorted by their token strings read lexicographically (``<cut>`` first at START and last
at END, digits numerically, ``+`` before ``-``, types by name, phases by value), i.e. by (start,
end, strand, type, phase). Because the order is the token order, ``GrammarAutomaton`` enforces it
with one feature of look-back. A feature may repeat the previous one only if it is cut (two nested
genes sharing a stop codon look identical in a window that cuts both) and at most
``MAX_COPIES`` times in a row, so constrained decoding cannot loop on one feature; a complete
feature is never repeated (``encode_target`` drops exact duplicates of complete features).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

from baking.common.errors import Dna2GffError

END = "<END>"  # not a vocabulary token: "the target may end here" (the decoder's EOS)
DIGITS: tuple[str, ...] = tuple(f"<{d}>" for d in range(10))
CUT = "<cut>"
STRAND_TOKENS: dict[str, str] = {"+": "<+>", "-": "<->"}
PHASE_TOKENS: tuple[str, ...] = ("<p0>", "<p1>", "<p2>")
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
_RESERVED = {t[1:-1] for t in (*DIGITS, CUT, *STRAND_TOKENS.values(), *PHASE_TOKENS, END)}
_DIGIT_VALUE = {t: i for i, t in enumerate(DIGITS)}
_STRAND_OF = {v: k for k, v in STRAND_TOKENS.items()}
_PHASE_OF = {t: i for i, t in enumerate(PHASE_TOKENS)}


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


def coordinate_width(window_len: int) -> int:
    """Digit tokens per coordinate: the digits of the largest position, ``window_len - 1``."""
    if window_len < 1:
        raise GrammarError(f"window_len must be >= 1, got {window_len}")
    return len(str(window_len - 1))


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
    """The sort key that equals the lexicographic order of the features' token strings."""
    return (
        -1 if f.cut_left else f.start,
        1 << 60 if f.cut_right else f.end,
        f.strand,
        f.type,
        -1 if f.phase is None else f.phase,
    )


@lru_cache(maxsize=1 << 16)
def _digits(value: int, width: int) -> tuple[str, ...]:
    return tuple(DIGITS[int(c)] for c in str(value).zfill(width))


def check_window_feature(f: WindowFeature, length: int) -> None:
    """A window feature both target forms can spell: inside the window, cuts on its edges, phase for CDS only."""
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


def feature_tokens(f: WindowFeature, width: int) -> list[str]:
    """The tokens of one feature (no validation; see ``encode_target``)."""
    out = [CUT] if f.cut_left else list(_digits(f.start, width))
    out.extend((CUT,) if f.cut_right else _digits(f.end, width))
    out += [STRAND_TOKENS[f.strand], type_token(f.type)]
    if f.phase is not None:
        out.append(PHASE_TOKENS[f.phase])
    return out


def encode_target(
    features: Iterable[WindowFeature], window_len: int, length: int | None = None
) -> list[str]:
    """Tokens of a window's features in canonical order (see the module doc on duplicates).

    ``length`` is the window's real length when shorter than the nominal ``window_len`` (the end of
    a short sequence); the digit width always follows ``window_len``.
    """
    length = window_len if length is None else length
    width = coordinate_width(window_len)
    if not 1 <= length <= window_len:
        raise GrammarError(f"window length {length} not in 1..{window_len}")
    tokens: list[str] = []
    last = None
    copies = 0
    for f in sorted(features, key=canonical_key):
        check_window_feature(f, length)
        key = canonical_key(f)
        if key == last:
            if not (f.cut_left or f.cut_right):
                continue  # an exact duplicate of a complete feature carries no information
            copies += 1
            if copies > MAX_COPIES:
                raise GrammarError(f"feature {f} repeated more than {MAX_COPIES} times")
        else:
            copies = 1
        tokens += feature_tokens(f, width)
        last = key
    return tokens


def decode_target(
    tokens: Sequence[str],
    window_len: int,
    length: int | None = None,
    feature_types: Sequence[str] | None = None,
) -> list[WindowFeature]:
    """Features of a target; ``GrammarError`` naming the position if the tokens are not valid.

    ``feature_types`` restricts the types allowed (default: any well-formed type token).
    """
    types = None if feature_types is None else tuple(feature_types)
    state = GrammarAutomaton(types, window_len).start(length)
    out: list[WindowFeature] = []
    for i, tok in enumerate(tokens):
        if tok == END or not state.accepts(tok):
            raise GrammarError(
                f"token {i} {tok!r} not allowed after {' '.join(tokens[max(0, i - 6) : i])!r}"
            )
        state = state.advance(tok)
        if not state.current and state.previous is not None:
            out.append(tokens_to_feature(state.previous, window_len, state.length))
    if not state.accepting:
        raise GrammarError(f"target ends inside a feature: {' '.join(state.current)!r}")
    return out


def tokens_to_feature(tokens: Sequence[str], window_len: int, length: int) -> WindowFeature:
    """One complete, valid feature token group -> ``WindowFeature``."""
    width = coordinate_width(window_len)
    i = 0

    def field(last: int) -> tuple[int, bool]:
        nonlocal i
        if tokens[i] == CUT:
            i += 1
            return last, True
        value = int("".join(str(_DIGIT_VALUE[t]) for t in tokens[i : i + width]))
        i += width
        return value, False

    start, cut_left = field(0)
    end, cut_right = field(length - 1)
    strand = _STRAND_OF[tokens[i]]
    ftype = tokens[i + 1][1:-1]
    phase = _PHASE_OF[tokens[i + 2]] if len(tokens) > i + 2 else None
    return WindowFeature(start, end, strand, ftype, phase, cut_left, cut_right)


def target_vocabulary(feature_types: Sequence[str], window_len: int) -> list[str]:
    """Every token a target may use, in a stable order: digits, cut, strands, phases, types."""
    coordinate_width(window_len)
    types = [type_token(t) for t in dict.fromkeys(feature_types)]
    return [*DIGITS, CUT, *STRAND_TOKENS.values(), *PHASE_TOKENS, *types]


@lru_cache(maxsize=65536)
def _feasible_digits(prefix: int, index: int, width: int, lo: int, hi: int) -> frozenset[str]:
    """Digits that keep a ``width``-digit number (``index`` digits ``prefix`` so far) in [lo, hi]."""
    block = 10 ** (width - index - 1)
    out = []
    for d in range(10):
        first = (prefix * 10 + d) * block
        if first <= hi and first + block - 1 >= lo:
            out.append(DIGITS[d])
    return frozenset(out)


class GrammarAutomaton:
    """The grammar as a token automaton, for constrained decoding and validation.

    ``feature_types=None`` accepts any well-formed type token (used by ``decode_target``).
    """

    def __init__(self, feature_types: Sequence[str] | None, window_len: int) -> None:
        self.window_len = window_len
        self.width = coordinate_width(window_len)
        self.types = None if feature_types is None else tuple(dict.fromkeys(feature_types))
        self.type_tokens = (
            None if self.types is None else frozenset(type_token(t) for t in self.types)
        )

    def start(self, length: int | None = None) -> GrammarState:
        """The state before the first token of a window of ``length`` bases (default: full)."""
        length = self.window_len if length is None else length
        if not 1 <= length <= self.window_len:
            raise GrammarError(f"window length {length} not in 1..{self.window_len}")
        return GrammarState(self, length, (), None, ())

    def is_type_token(self, tok: str) -> bool:
        if self.type_tokens is not None:
            return tok in self.type_tokens
        if not (tok.startswith("<") and tok.endswith(">")) or len(tok) < 3:
            return False
        try:
            type_token(tok[1:-1])
        except GrammarError:
            return False
        return True


class GrammarState:
    """An immutable automaton state: the current feature's tokens and the previous feature's.

    ``allowed()`` gives the tokens (and ``END``) that keep the target valid and completable.
    """

    __slots__ = ("automaton", "length", "current", "previous", "copies", "_exceed", "_allowed")

    def __init__(
        self,
        automaton: GrammarAutomaton,
        length: int,
        current: tuple[str, ...],
        previous: tuple[str, ...] | None,
        exceed: tuple[bool, ...],
        copies: int = 0,
    ) -> None:
        self.automaton = automaton
        self.length = length
        self.current = current  # tokens of the feature being written
        self.previous = previous  # tokens of the last complete feature (order constraint)
        self._exceed = exceed  # _exceed[j]: previous can be strictly exceeded after position j
        self.copies = copies  # how many times in a row ``previous`` has been written
        self._allowed: frozenset[str] | None = None

    @property
    def accepting(self) -> bool:
        """True between features: the target may end here."""
        return not self.current

    # -- slot structure -------------------------------------------------------------------
    def _slot(self, toks: tuple[str, ...]) -> tuple[str, int, int, int]:
        """(kind, index in field, start value, prefix value) of the next token after ``toks``."""
        w = self.automaton.width
        n = len(toks)
        i = 0
        if n == 0:
            return "S", 0, 0, 0
        if toks[0] == CUT:
            start, i = 0, 1
        else:
            if n < w:
                return "S", n, 0, _number(toks)
            start, i = _number(toks[:w]), w
        if n == i:
            return "E", 0, start, 0
        if toks[i] == CUT:
            i += 1
        else:
            if n < i + w:
                return "E", n - i, start, _number(toks[i:])
            i += w
        if n == i:
            return "strand", 0, start, 0
        if n == i + 1:
            return "type", 0, start, 0
        if n == i + 2 and toks[i + 1][1:-1] in PHASED_TYPES:
            return "phase", 0, start, 0
        return "done", 0, start, 0

    def _base(self, toks: tuple[str, ...]) -> frozenset[str] | None:
        """Tokens valid after ``toks`` ignoring the order constraint (None: any type token)."""
        kind, idx, start, prefix = self._slot(toks)
        w, hi = self.automaton.width, self.length - 1
        if kind == "S":
            digits = _feasible_digits(prefix, idx, w, 0, hi)
            return digits | {CUT} if idx == 0 else digits
        if kind == "E":
            digits = _feasible_digits(prefix, idx, w, start, hi)
            return digits | {CUT} if idx == 0 else digits
        if kind == "strand":
            return _STRANDS
        if kind == "type":
            return self.automaton.type_tokens
        if kind == "phase":
            return _PHASES
        return frozenset()

    def _rank(self, toks: tuple[str, ...], tok: str) -> tuple:
        """Order of ``tok`` among the tokens valid after ``toks`` (the canonical feature order)."""
        kind = self._slot(toks)[0]
        if tok == CUT:
            return (-1,) if kind == "S" else (10,)
        if tok in _DIGIT_VALUE:
            return (_DIGIT_VALUE[tok],)
        if tok in _PHASE_OF:
            return (_PHASE_OF[tok],)
        if tok in _STRAND_OF:
            return (0,) if tok == "<+>" else (1,)
        return (0, tok[1:-1])

    # -- public API ------------------------------------------------------------------------
    def allowed(self) -> frozenset[str]:
        """Tokens that may come next (plus ``END`` between features). For an automaton built
        without a type list, the type slot returns an empty set: use ``accepts(token)`` there."""
        if self._allowed is not None:
            return self._allowed
        base = self._base(self.current)
        if base is None:  # open type set: callers of decode_target go through accepts()
            base = frozenset()
        result = set(base)
        if self._tied():
            j = len(self.current)
            prev_tok = self.previous[j]  # type: ignore[index]
            prev_rank = self._rank(self.current, prev_tok)
            result = {t for t in result if self._rank(self.current, t) > prev_rank}
            if self._exceed[j] or self._may_repeat():
                result.add(prev_tok)
        if not self.current:
            result.add(END)
        self._allowed = frozenset(result)
        return self._allowed

    def accepts(self, token: str) -> bool:
        """Whether ``token`` may come next (works for an open type set too)."""
        if self.automaton.type_tokens is None and self._slot(self.current)[0] == "type":
            if not self.automaton.is_type_token(token):
                return False
            if self._tied():
                j = len(self.current)
                prev_tok = self.previous[j]  # type: ignore[index]
                r, pr = self._rank(self.current, token), self._rank(self.current, prev_tok)
                return r > pr or (token == prev_tok and (self._exceed[j] or self._may_repeat()))
            return True
        return token in self.allowed()

    def advance(self, token: str) -> GrammarState:
        """The state after ``token``; ``GrammarError`` if it is not allowed."""
        if token == END:
            if self.current:
                raise GrammarError("END inside a feature")
            return self
        if not self.accepts(token):
            raise GrammarError(f"token {token!r} not allowed after {' '.join(self.current)!r}")
        cur = (*self.current, token)
        if self._slot(cur)[0] != "done":
            return GrammarState(
                self.automaton, self.length, cur, self.previous, self._exceed, self.copies
            )
        if cur == self.previous:
            return GrammarState(self.automaton, self.length, (), cur, self._exceed, self.copies + 1)
        return GrammarState(self.automaton, self.length, (), cur, self._exceed_table(cur), 1)

    # -- order constraint ------------------------------------------------------------------
    def _tied(self) -> bool:
        """True when the current feature so far equals the previous feature's prefix."""
        p = self.previous
        return p is not None and p[: len(self.current)] == self.current

    def _may_repeat(self) -> bool:
        """The previous feature may be written again: it is cut and not yet at ``MAX_COPIES``."""
        p = self.previous
        return p is not None and CUT in p and self.copies < MAX_COPIES

    def _exceed_table(self, prev: tuple[str, ...]) -> tuple[bool, ...]:
        """For each position j: can a feature sharing ``prev[:j+1]`` still end up greater?"""
        greater: list[bool] = []
        for k in range(len(prev)):
            base = self._base(prev[:k])
            rank = self._rank(prev[:k], prev[k])
            if base is None:  # open type set: a greater type name always exists
                greater.append(True)
            else:
                greater.append(any(self._rank(prev[:k], t) > rank for t in base))
        return tuple(any(greater[j + 1 :]) for j in range(len(prev)))


_STRANDS = frozenset(STRAND_TOKENS.values())
_PHASES = frozenset(PHASE_TOKENS)


def _number(digit_tokens: Sequence[str]) -> int:
    value = 0
    for t in digit_tokens:
        value = value * 10 + _DIGIT_VALUE[t]
    return value
