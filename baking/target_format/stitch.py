"""Window features -> genome features: the inverse of windowing, shared by the baker's round-trip
tests and by annotate (for model predictions).

Every window feature becomes a *piece* on the + strand in genome coordinates (a ``-`` sample's
features are mirrored back first). Pieces of one (seqid, strand, type) -- and, for CDS, one reading
frame -- are swept left to right and joined into a feature when they overlap (or abut at a cut) and
agree on the ends they know:
- a closed end is a fact: two closed starts must be equal; a cut start at ``x`` says the true start
  is ``< x`` (likewise for ends), so a closed start must lie before every cut start of the same
  feature;
- two complete pieces join only when identical (duplicates from overlapping windows).
A joined feature takes its closed ends; an end only ever seen cut is reported as ``partial_*``
(with the outermost position seen). On a circular sequence pieces are also placed one sequence
length to the right, so a feature crossing the origin is rejoined and written as GFF3 does it:
``end > length``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from baking.target_format.features import GenomeFeature
from baking.target_format.grammar import WindowFeature
from baking.target_format.windows import WindowMeta, mirror


@dataclass(frozen=True)
class StitchedFeature:
    """A feature in GFF3 terms (1-based, closed; ``end > seq_length`` when origin-spanning).

    ``pieces`` lists ``(window index, feature index)`` of every window feature merged into it, in
    the order of the input, so callers can combine per-feature scores.
    """

    genome: str
    seqid: str
    start: int
    end: int
    strand: str
    type: str
    phase: int | None
    partial_left: bool
    partial_right: bool
    pieces: tuple[tuple[int, int], ...]

    def to_genome_feature(self) -> GenomeFeature:
        return GenomeFeature(self.seqid, self.start, self.end, self.strand, self.type, self.phase)


@dataclass
class _Piece:
    gs: int
    ge: int
    open_l: bool
    open_r: bool
    frame: int | None
    ref: tuple[int, int]
    shifted: bool  # the +length copy on a circular sequence


@dataclass
class _Cluster:
    lo: int
    hi: int
    left: int | None = None  # a closed start
    right: int | None = None  # a closed end
    open_l: int | None = None  # min start of cut-left pieces: true start < open_l
    open_r: int | None = None  # max end of cut-right pieces: true end > open_r
    frame: int | None = None
    pieces: list[_Piece] = field(default_factory=list)
    windows: dict[int, list[_Piece]] = field(default_factory=dict)

    def accepts(self, p: _Piece) -> bool:
        if p.frame != self.frame:
            return False
        # One window shows a feature once, except twice at disjoint places when it wraps over the
        # origin of a small circular sequence; overlapping pieces of one window are two features.
        if any(q.gs <= p.ge and p.gs <= q.ge for q in self.windows.get(p.ref[0], ())):
            return False
        if p.gs > self.hi + 1 or (
            p.gs == self.hi + 1 and not (p.open_l and self.open_r == self.hi)
        ):
            return False
        if p.open_l:
            if self.left is not None and not self.left < p.gs:
                return False
        else:
            if self.left is not None and p.gs != self.left:
                return False
            if self.open_l is not None and not p.gs < self.open_l:
                return False
        if p.open_r:
            if self.right is not None and not self.right > p.ge:
                return False
        else:
            if self.right is not None and p.ge != self.right:
                return False
            if self.open_r is not None and not p.ge > self.open_r:
                return False
        return True

    def add(self, p: _Piece) -> None:
        self.pieces.append(p)
        self.windows.setdefault(p.ref[0], []).append(p)
        self.lo, self.hi = min(self.lo, p.gs), max(self.hi, p.ge)
        if p.open_l:
            self.open_l = p.gs if self.open_l is None else min(self.open_l, p.gs)
        else:
            self.left = p.gs
        if p.open_r:
            self.open_r = p.ge if self.open_r is None else max(self.open_r, p.ge)
        else:
            self.right = p.ge


def _frame(f: WindowFeature, gs: int, ge: int) -> int | None:
    """The codon frame of a phased piece, as a residue of genome positions (None if unphased)."""
    if f.phase is None:
        return None
    return (gs + f.phase) % 3 if f.strand == "+" else (ge - f.phase) % 3


def _cluster(pieces: list[_Piece]) -> list[_Cluster]:
    pieces.sort(key=lambda p: (p.gs, p.open_l is False, p.ge))
    done: list[_Cluster] = []
    active: list[_Cluster] = []
    for p in pieces:
        still: list[_Cluster] = []
        for c in active:
            (still if c.hi + 1 >= p.gs else done).append(c)
        active = still
        for c in active:
            if c.accepts(p):
                c.add(p)
                break
        else:
            c = _Cluster(lo=p.gs, hi=p.ge, frame=p.frame)
            c.add(p)
            active.append(c)
    return done + active


def stitch(
    window_results: Iterable[tuple[WindowMeta, Sequence[WindowFeature]]],
) -> list[StitchedFeature]:
    """Join the features of many windows into genome features, sorted by (genome, seqid, start)."""
    groups: dict[tuple, list[_Piece]] = {}
    seqs: dict[tuple[str, str], tuple[int, bool]] = {}
    for wi, (meta, feats) in enumerate(window_results):
        n = meta.seq_length
        seqs[(meta.genome, meta.seqid)] = (n, meta.circular)
        plus = mirror(feats, meta.length) if meta.strand == "-" else list(feats)
        for fi, f in enumerate(plus):
            gs, ge = meta.start + f.start, meta.start + f.end
            if meta.circular and gs >= n:  # a wrapped window's piece past the origin
                gs, ge = gs - n, ge - n
            key = (meta.genome, meta.seqid, f.strand, f.type)
            bucket = groups.setdefault(key, [])
            bucket.append(
                _Piece(gs, ge, f.cut_left, f.cut_right, _frame(f, gs, ge), (wi, fi), False)
            )
            if meta.circular:
                s2, e2 = gs + n, ge + n
                bucket.append(
                    _Piece(s2, e2, f.cut_left, f.cut_right, _frame(f, s2, e2), (wi, fi), True)
                )
    out: list[StitchedFeature] = []
    for (genome, seqid, strand, ftype), pieces in groups.items():
        n, circular = seqs[(genome, seqid)]
        clusters = _cluster(pieces)
        if circular:
            clusters = _drop_circular_copies(clusters, n)
        for c in clusters:
            out.append(_finish(c, genome, seqid, strand, ftype))
    out.sort(key=lambda f: (f.genome, f.seqid, f.start, f.end, f.strand, f.type))
    return out


def _drop_circular_copies(clusters: list[_Cluster], n: int) -> list[_Cluster]:
    """Keep each circular feature once: clusters starting in ``[0, n)``, minus the tails of
    origin-crossing features (clusters whose every piece also joined, shifted by ``n``, a kept
    cluster that crosses the origin)."""
    kept_refs: set[tuple[int, int]] = set()
    first = [c for c in clusters if c.lo < n]
    for c in first:
        if c.lo < n <= c.hi:  # crosses the origin: its shifted pieces are accounted for
            kept_refs.update(p.ref for p in c.pieces if p.shifted)
    out = []
    for c in first:
        if c.hi < n and c.left is None and all(p.ref in kept_refs for p in c.pieces):
            continue
        out.append(c)
    return out


def _finish(c: _Cluster, genome: str, seqid: str, strand: str, ftype: str) -> StitchedFeature:
    start = c.left if c.left is not None else c.lo
    end = c.right if c.right is not None else c.hi
    phase = None
    if c.frame is not None:
        phase = (c.frame - start) % 3 if strand == "+" else (end - c.frame) % 3
    refs = tuple(sorted({p.ref for p in c.pieces}))
    return StitchedFeature(
        genome,
        seqid,
        start + 1,
        end + 1,
        strand,
        ftype,
        phase,
        c.left is None,
        c.right is None,
        refs,
    )
