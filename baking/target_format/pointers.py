"""The target: coordinates as base positions the decoder points at (see
``docs/target-format.md``).

A feature is written ::

    TYPE STRAND START END [PHASE]

with ``START`` = ``<cut>`` or a window position (an ``int``), ``END`` = a position or ``<cut>``.
The trainer turns a position into "this encoder token, this base inside it" with the tokenizer's
offsets, so the decoder *points* at a base instead of spelling its number: nothing in the network
has to count bases. Type and strand come first so that, when the start is chosen, the allowed
starts are known (a CDS on ``+`` may only start on a start codon, see ``OrfSites``).

Features keep the canonical order of ``baking.target_format.grammar`` (by start, end, strand,
type, phase; cut-left first, cut-right last) and its duplicate rules (a complete feature is never
repeated, a cut one at most ``MAX_COPIES`` times in a row). The shards store the window's
features (``baking.target_format.sample_features``); the trainer builds this target from them.

``PointerAutomaton`` enforces bounds, order, phase presence and -- with ``OrfSites`` of the window's
DNA -- that a CDS is decoded only as a valid ORF: a ``+`` start on a start codon and its end on the
first in-frame stop after it (no internal stop); on ``-`` the low end on a stop codon and the high
end on an in-frame start codon before the next in-frame stop; a cut piece's phase agrees with the
frame its visible codons fix. RNA features stay free.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from baking.formats.fasta import reverse_complement
from baking.target_format.grammar import (
    CUT,
    END,
    MAX_COPIES,
    PHASE_OF,
    PHASE_TOKENS,
    PHASED_TYPES,
    STRAND_OF,
    STRAND_TOKENS,
    GrammarError,
    WindowFeature,
    canonical_key,
    check_window_feature,
    type_token,
)

Item = str | int
"""A pointer-form target item: a token string, or a window position (0-based, inclusive)."""

MIN_ORF_CODONS = 30
"""Default shortest whole CDS the ORF layer allows (codons incl. start and stop = 90 bp, Prodigal's
minimum gene; 2% of E. coli's and 0.5% of C. crescentus' reference CDS are shorter)."""
MIN_ORF_CODONS_CANDIDATES = (30, 60, 90, 120, 150)
"""What ``tune_orf`` tries for a model's ORF layer: Prodigal's minimum up to the length most
ORF-length rules pick on bacteria (the no-model rule chose 135-210 codons on the shared genomes)."""
CUT_RIGHT = 1 << 60  # the value of a cut END in the order key (after every position)
_STRAND_RANK = {STRAND_TOKENS["+"]: 0, STRAND_TOKENS["-"]: 1}

# slots of a feature: 0 type, 1 strand, 2 start, 3 end, 4 phase (phased types only)
TYPE_SLOT, STRAND_SLOT, START_SLOT, END_SLOT, PHASE_SLOT = range(5)


def is_position(item: Item) -> bool:
    """Whether a target item is a window position (an ``int``, never a ``bool``)."""
    return isinstance(item, int) and not isinstance(item, bool)


def pointer_feature_items(f: WindowFeature) -> list[Item]:
    """The items of one feature (no validation; see ``encode_pointer_target``)."""
    out: list[Item] = [type_token(f.type), STRAND_TOKENS[f.strand]]
    out.append(CUT if f.cut_left else f.start)
    out.append(CUT if f.cut_right else f.end)
    if f.phase is not None:
        out.append(PHASE_TOKENS[f.phase])
    return out


def canonical_features(features: Iterable[WindowFeature], length: int) -> list[WindowFeature]:
    """A window's features checked, in canonical order, exact duplicates of complete features
    dropped (they carry no information); ``GrammarError`` for one the target cannot spell or a
    cut feature repeated more than ``MAX_COPIES`` times."""
    if length < 1:
        raise GrammarError(f"window length {length} must be >= 1")
    out: list[WindowFeature] = []
    last = None
    copies = 0
    for f in sorted(features, key=canonical_key):
        check_window_feature(f, length)
        key = canonical_key(f)
        if key == last:
            if not (f.cut_left or f.cut_right):
                continue
            copies += 1
            if copies > MAX_COPIES:
                raise GrammarError(f"feature {f} repeated more than {MAX_COPIES} times")
        else:
            copies = 1
        out.append(f)
        last = key
    return out


def encode_pointer_target(features: Iterable[WindowFeature], length: int) -> list[Item]:
    """Items of a window's features in canonical order (``canonical_features``)."""
    items: list[Item] = []
    for f in canonical_features(features, length):
        items += pointer_feature_items(f)
    return items


def items_to_feature(items: Sequence[Item], length: int) -> WindowFeature:
    """One complete, valid feature's items -> ``WindowFeature``."""
    ftype = str(items[0])[1:-1]
    strand = STRAND_OF[str(items[1])]
    cut_left, cut_right = items[2] == CUT, items[3] == CUT
    start = 0 if cut_left else int(items[2])
    end = length - 1 if cut_right else int(items[3])
    phase = PHASE_OF[str(items[4])] if len(items) > 4 else None
    return WindowFeature(start, end, strand, ftype, phase, cut_left, cut_right)


def decode_pointer_target(
    items: Sequence[Item],
    length: int,
    feature_types: Sequence[str] | None = None,
    orf: OrfSites | None = None,
) -> list[WindowFeature]:
    """Features of a pointer target; ``GrammarError`` naming the first invalid item."""
    state = PointerAutomaton(feature_types, length).start(length, orf)
    out: list[WindowFeature] = []
    for i, item in enumerate(items):
        if item == END or not state.accepts(item):
            raise GrammarError(
                f"item {i} {item!r} not allowed after {list(items[max(0, i - 5) : i])}"
            )
        state = state.advance(item)
        if state.accepting and state.previous is not None:
            out.append(items_to_feature(state.previous, length))
    if not state.accepting:
        raise GrammarError(f"target ends inside a feature: {list(state.current)!r}")
    return out


# ----------------------------------------------------------------------------------- ORF sites


class OrfSites:
    """Start/stop codons of one window's DNA (on the sample's strand) for ORF-constrained decoding.

    ``starts``/``stops`` are the genetic code's codon sets (e.g. ``snap.genetic_code(11)``). All
    positions are window positions of the *first* base of a codon (its leftmost base on the
    sample's strand). ``-`` codons are read reverse-complemented.
    """

    def __init__(
        self, dna: str, starts: Iterable[str], stops: Iterable[str], min_codons: int = 0
    ) -> None:
        """``min_codons``: a CDS closed at both ends in the window spans at least this many codons
        (start and stop included; annotate uses 30 = 90 bp, Prodigal's minimum gene)."""
        dna = dna.upper()
        self.min_bp = 3 * min_codons
        self.length = n = len(dna)
        starts, stops = frozenset(starts), frozenset(stops)
        rc_starts = frozenset(reverse_complement(c) for c in starts)
        rc_stops = frozenset(reverse_complement(c) for c in stops)
        codons = [dna[i : i + 3] for i in range(max(0, n - 2))]
        self.plus_start = [c in starts for c in codons]
        self.plus_stop = [c in stops for c in codons]
        self.minus_start = [c in rc_starts for c in codons]
        self.minus_stop = [c in rc_stops for c in codons]
        self._next_plus = self._next_table(self.plus_stop)
        self._next_minus = self._next_table(self.minus_stop)
        self._cache: dict[tuple[str, str, int | None], tuple[Item, ...]] = {}

    @staticmethod
    def _next_table(stop: list[bool]) -> list[int]:
        """``t[i]``: first codon position ``j >= i``, ``j = i mod 3``, with a stop (-1: none)."""
        m = len(stop)
        t = [-1] * (m + 3)
        for i in range(m - 1, -1, -1):
            t[i] = i if stop[i] else t[i + 3]
        return t

    def next_stop(self, strand: str, i: int) -> int:
        """First in-frame stop codon position ``>= i`` (same frame as ``i``), -1 when none."""
        if i < 0:
            i += 3 * ((-i + 2) // 3)
        t = self._next_plus if strand == "+" else self._next_minus
        return t[i] if i < len(t) else -1

    # ------------------------------------------------------------ allowed values per slot
    def starts(self, strand: str) -> tuple[int, ...]:
        """Closed START values of a CDS on ``strand`` that have at least one valid END."""
        key = ("starts", strand, None)
        if key not in self._cache:
            if strand == "+":
                out = [i for i, s in enumerate(self.plus_start) if s and self._long_enough(i)]
            else:
                out = [j for j, s in enumerate(self.minus_stop) if s and self.ends("-", j)]
            self._cache[key] = tuple(out)
        return self._cache[key]  # type: ignore[return-value]

    def _long_enough(self, s: int) -> bool:
        """A ``+`` start whose ORF ends in the window spans at least ``min_bp``."""
        j = self.next_stop("+", s + 3)
        return j < 0 or j + 3 - s >= self.min_bp

    def ends(self, strand: str, start: int | None) -> tuple[Item, ...]:
        """END values (positions, and ``<cut>`` last) after START (``None`` = cut)."""
        key = ("ends", strand, start)
        if key not in self._cache:
            self._cache[key] = self._ends(strand, start)
        return self._cache[key]

    def _ends(self, strand: str, start: int | None) -> tuple[Item, ...]:
        n = self.length
        out: list[Item] = []
        if strand == "+":
            if start is not None:
                j = self.next_stop("+", start + 3)
                return (j + 2,) if j >= 0 else (CUT,)
            no_stop = False
            for f in range(3):
                j = self.next_stop("+", f)
                if j >= 0:
                    out.append(j + 2)
                else:
                    no_stop = True
            out.sort()
            return (*out, CUT) if no_stop else tuple(out)
        if start is not None:  # 3' end (stop codon) at ``start``; 5' end on an in-frame start
            j = self.next_stop("-", start + 3)
            limit = j if j >= 0 else n - 2
            first = max(start + 3, start + self.min_bp - 3)
            out = [k + 2 for k in range(first, limit, 3) if self.minus_start[k]]
            return (*out, CUT) if j < 0 else tuple(out)
        no_stop = False
        for f in range(3):
            j = self.next_stop("-", f)
            limit = j if j >= 0 else n - 2
            out += [k + 2 for k in range(f, limit, 3) if self.minus_start[k]]
            no_stop |= j < 0
        out.sort()
        return (*out, CUT) if no_stop else tuple(out)

    def phases(self, strand: str, start: int | None, end: int | None) -> tuple[int, ...]:
        """Phases a CDS piece may take (``None`` = cut end); its visible codons fix the frame."""
        n = self.length
        if strand == "+":
            if start is not None:
                return (0,)
            if end is not None:
                return ((end + 1) % 3,)
            return tuple(p for p in range(3) if self.next_stop("+", p) < 0)
        if end is not None:
            return (0,)
        if start is not None:
            return ((n - start) % 3,)
        return tuple(p for p in range(3) if self.next_stop("-", (n - 3 - p) % 3) < 0)

    def feature_ok(self, f: WindowFeature) -> bool:
        """Whether a CDS window piece is one this layer allows (a valid ORF piece)."""
        s = None if f.cut_left else f.start
        e = None if f.cut_right else f.end
        if (
            f.strand == "+"
            and s is not None
            and not (s < len(self.plus_start) and self.plus_start[s])
        ):
            return False
        if f.strand == "-" and s is not None and s not in self.starts("-"):
            return False
        if (CUT if e is None else e) not in self.ends(f.strand, s):
            return False
        return f.phase in self.phases(f.strand, s, e)


# ----------------------------------------------------------------------------------- automaton


@dataclass(frozen=True)
class Allowed:
    """What may come next: token strings (and ``END``) and window positions (sorted)."""

    tokens: frozenset[str]
    positions: tuple[int, ...] | range

    def __contains__(self, item: object) -> bool:
        if isinstance(item, int) and not isinstance(item, bool):
            return item in self.positions
        return item in self.tokens


class PointerAutomaton:
    """The pointer grammar as an automaton; ``feature_types=None`` accepts any type token."""

    def __init__(self, feature_types: Sequence[str] | None, window_len: int) -> None:
        if window_len < 1:
            raise GrammarError(f"window_len must be >= 1, got {window_len}")
        self.window_len = window_len
        self.types = None if feature_types is None else tuple(dict.fromkeys(feature_types))
        self.type_tokens = (
            None if self.types is None else frozenset(type_token(t) for t in self.types)
        )

    def start(self, length: int | None = None, orf: OrfSites | None = None) -> PointerState:
        """The state before the first item; ``orf`` (the window's codons) constrains CDS to ORFs."""
        length = self.window_len if length is None else length
        if not 1 <= length <= self.window_len:
            raise GrammarError(f"window length {length} not in 1..{self.window_len}")
        if orf is not None and orf.length != length:
            raise GrammarError(f"ORF sites of {orf.length} bases for a window of {length}")
        return PointerState(self, length, orf, (), None, 0)

    def is_type_token(self, tok: object) -> bool:
        if not isinstance(tok, str):
            return False
        if self.type_tokens is not None:
            return tok in self.type_tokens
        if not (tok.startswith("<") and tok.endswith(">")) or len(tok) < 3:
            return False
        try:
            type_token(tok[1:-1])
        except GrammarError:
            return False
        return tok not in STRAND_TOKENS.values() and tok not in PHASE_OF and tok != CUT


def _start_value(v: Item) -> int:
    return -1 if v == CUT else int(v)


def _end_value(v: Item) -> int:
    return CUT_RIGHT if v == CUT else int(v)


def _key(items: Sequence[Item]) -> tuple:
    """The canonical order key of a complete feature's items (as ``grammar.canonical_key``)."""
    start = -1 if items[2] == CUT else int(items[2])
    end = CUT_RIGHT if items[3] == CUT else int(items[3])
    phase = PHASE_OF[str(items[4])] if len(items) > 4 else -1
    return (start, end, _STRAND_RANK[str(items[1])], str(items[0])[1:-1], phase)


class PointerState:
    """An immutable automaton state: the current feature's items and the previous feature's."""

    __slots__ = ("automaton", "length", "orf", "current", "previous", "copies", "_allowed")

    def __init__(
        self,
        automaton: PointerAutomaton,
        length: int,
        orf: OrfSites | None,
        current: tuple[Item, ...],
        previous: tuple[Item, ...] | None,
        copies: int,
    ) -> None:
        self.automaton = automaton
        self.length = length
        self.orf = orf
        self.current = current
        self.previous = previous
        self.copies = copies
        self._allowed: Allowed | None = None

    @property
    def accepting(self) -> bool:
        return not self.current

    @property
    def slot(self) -> int:
        return len(self.current)

    @property
    def wants_position(self) -> bool:
        """True when the next item may be a position (START or END slot)."""
        return self.slot in (START_SLOT, END_SLOT)

    # ----------------------------------------------------------- candidate values per slot
    def _cds_orf(self, items: Sequence[Item]) -> bool:
        return self.orf is not None and str(items[0])[1:-1] in PHASED_TYPES

    def _values(self, items: Sequence[Item]) -> Sequence[Item]:
        """Values of the slot after ``items`` ignoring order (not for the type slot)."""
        n = self.length
        k = len(items)
        if k == STRAND_SLOT:
            return ("<+>", "<->")
        strand = STRAND_OF[str(items[1])]
        if k == START_SLOT:
            if self._cds_orf(items):
                assert self.orf is not None
                cut: tuple[Item, ...] = (CUT,) if self.orf.ends(strand, None) else ()
                return (*cut, *self.orf.starts(strand))
            return (CUT, *range(n))
        if k == END_SLOT:
            s = None if items[2] == CUT else int(items[2])
            if self._cds_orf(items):
                assert self.orf is not None
                return self.orf.ends(strand, s)
            return (*range(s or 0, n), CUT)
        if k == PHASE_SLOT:
            if str(items[0])[1:-1] not in PHASED_TYPES:
                return ()
            if self._cds_orf(items):
                assert self.orf is not None
                s = None if items[2] == CUT else int(items[2])
                e = None if items[3] == CUT else int(items[3])
                return tuple(PHASE_TOKENS[p] for p in self.orf.phases(strand, s, e))
            return PHASE_TOKENS
        return ()

    def _done(self, items: Sequence[Item]) -> bool:
        k = len(items)
        return k == 5 or (k == 4 and str(items[0])[1:-1] not in PHASED_TYPES)

    def _may_repeat(self) -> bool:
        p = self.previous
        return p is not None and CUT in (p[2], p[3]) and self.copies < MAX_COPIES

    def _acceptable(self, items: Sequence[Item]) -> bool:
        """A complete feature is acceptable after ``previous``: greater, or an allowed repeat."""
        if self.previous is None:
            return True
        k, pk = _key(items), _key(self.previous)
        return k > pk or (k == pk and self._may_repeat())

    def _greater_start(self, v: Item) -> bool:
        """START ``v`` alone already orders the feature after ``previous``."""
        prev = self.previous
        return prev is None or _start_value(v) > _start_value(prev[2])

    def _completable(self, items: tuple[Item, ...]) -> bool:
        """Some completion of ``items`` is a valid, acceptable feature (depth-first, the most
        promising value first: the largest start or end beats the previous feature soonest)."""
        if self._done(items):
            return self._acceptable(items)
        values: Iterable[Item] = self._values(items)
        k = len(items)
        prev = self.previous
        # lazily, so that ``any`` stops at the first completable value without first filtering
        # every start of the window (annotate asks this for each type at every feature)
        if prev is not None and k == START_SLOT:
            pstart = _start_value(prev[2])
            values = (v for v in reversed(values) if _start_value(v) >= pstart)  # type: ignore[call-overload]
        elif prev is not None and k == END_SLOT and not self._greater_start(items[2]):
            pend = _end_value(prev[3])
            values = (v for v in reversed(values) if _end_value(v) >= pend)  # type: ignore[call-overload]
        return any(self._completable((*items, v)) for v in values)

    # ----------------------------------------------------------------------------- public
    def allowed(self) -> Allowed:
        """Token strings (and ``END`` between features) and positions that may come next.

        For an automaton built without a type list the type slot's token set is empty: use
        ``accepts`` there.
        """
        if self._allowed is not None:
            return self._allowed
        items = self.current
        k = len(items)
        if k in (START_SLOT, END_SLOT) and not self._cds_orf(items):
            self._allowed = self._plain_coordinate(items)
            return self._allowed
        ok: list[Item] = []
        if k == TYPE_SLOT:
            types = sorted(self.automaton.type_tokens or ())
            ok = [END, *(t for t in types if self._completable((t,)))]
        elif k in (STRAND_SLOT, PHASE_SLOT) or self.previous is None:
            # every ORF value has a valid completion (OrfSites builds its sets that way); the
            # order constraint bites on the strand (via the start) and the phase (full key)
            values = self._values(items)
            if k in (START_SLOT, END_SLOT):
                ok = list(values)
            else:
                ok = [v for v in values if self._completable((*items, v))]
        elif k == START_SLOT:
            pstart = _start_value(self.previous[2])
            for v in self._values(items):
                sv = _start_value(v)
                if sv > pstart or (sv == pstart and self._completable((*items, v))):
                    ok.append(v)
        else:  # END
            values = self._values(items)
            if self._greater_start(items[2]):
                ok = list(values)
            else:
                pend = _end_value(self.previous[3])
                for v in values:
                    ev = _end_value(v)
                    if ev > pend or (ev == pend and self._completable((*items, v))):
                        ok.append(v)
        tokens = frozenset(str(v) for v in ok if not is_position(v))
        positions = [int(v) for v in ok if is_position(v)]
        span: tuple[int, ...] | range = tuple(positions)
        if positions and positions[-1] - positions[0] + 1 == len(positions):
            span = range(positions[0], positions[-1] + 1)
        self._allowed = Allowed(tokens, span)
        return self._allowed

    def _plain_coordinate(self, items: tuple[Item, ...]) -> Allowed:
        """START/END without the ORF layer: a contiguous range of positions (and ``<cut>``),
        computed without listing every value (the previous feature only moves the low end)."""
        n = self.length
        prev = self.previous
        if len(items) == START_SLOT:
            lo, cut = 0, True
            if prev is not None:
                pstart = _start_value(prev[2])
                cut = pstart < 0 and self._completable((*items, CUT))
                if pstart >= 0:
                    lo = pstart if self._completable((*items, pstart)) else pstart + 1
            return Allowed(frozenset({CUT}) if cut else frozenset(), range(lo, n))
        s = 0 if items[2] == CUT else int(items[2])
        if prev is None or self._greater_start(items[2]):
            return Allowed(frozenset({CUT}), range(s, n))
        pend = _end_value(prev[3])
        if pend == CUT_RIGHT:
            cut = self._completable((*items, CUT))
            return Allowed(frozenset({CUT}) if cut else frozenset(), range(0))
        lo = max(s, pend if self._completable((*items, pend)) else pend + 1)
        return Allowed(frozenset({CUT}), range(lo, n))

    def accepts(self, item: Item) -> bool:
        """Whether ``item`` may come next (works for an open type set too)."""
        if self.slot == TYPE_SLOT and self.automaton.type_tokens is None:
            if item == END:
                return True
            return self.automaton.is_type_token(item) and self._completable((item,))
        return item in self.allowed()

    def advance(self, item: Item) -> PointerState:
        """The state after ``item``; ``GrammarError`` if it is not allowed."""
        if item == END:
            if self.current:
                raise GrammarError("END inside a feature")
            return self
        if not self.accepts(item):
            raise GrammarError(f"item {item!r} not allowed after {list(self.current)!r}")
        cur = (*self.current, item)
        if not self._done(cur):
            return PointerState(
                self.automaton, self.length, self.orf, cur, self.previous, self.copies
            )
        if self.previous is not None and _key(cur) == _key(self.previous):
            return PointerState(self.automaton, self.length, self.orf, (), cur, self.copies + 1)
        return PointerState(self.automaton, self.length, self.orf, (), cur, 1)
