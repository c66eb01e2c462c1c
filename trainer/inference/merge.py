"""Window predictions -> one set of genome features: stitch, score, drop what windows disagree on.

Joining pieces across windows is ``baking.target_format.stitch.stitch``'s job (the baker's round trip proves it
inverts windowing, circular origin included); this module adds what model output needs on top:

1. **Scores.** Every predicted window feature carries the log-probability of its items
   (``generate.features_with_logprobs``). A
   stitched feature's score is the mean probability of the pieces it was built from: a feature
   predicted identically by two overlapping windows keeps its confidence rather than squaring it,
   and a gene joined from two cut halves is as confident as its halves on average.
2. **Orphans.** ``stitch`` reports an end that no window saw closed as partial. At a linear
   sequence's own end that is a real partial gene (kept, written ``partial=true``); anywhere else
   the windows disagreed (one cut a feature the next did not continue), so it is dropped —
   except, with ``keep_cds_orphans``, a CDS with exactly one closed end: it is kept marked
   ``orphan`` so annotate can complete it into an ORF from the end the model did place
   (``snap.complete_cds``).
3. **Near-duplicates.** Two features of the same strand and type from disjoint sets of windows
   that overlap by at least half of the longer one are the same gene seen twice with different
   ends; the one predicted farthest from a window edge (more context on both sides) wins, then
   the more probable.
4. **Votes** (``min_votes``, annotate's default 0.5): a CDS closed at both ends that at least two
   windows hold whole must have been predicted by that share of them; with overlapping windows a
   stray ORF one window wrote does not become a gene (``drop_outvoted``).
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, replace

from baking.target_format.grammar import WindowFeature
from baking.target_format.stitch import stitch
from baking.target_format.windows import WindowMeta

MIN_SHARED = 0.5
NO_EDGE = 1 << 40  # margin of a closed end lying on a linear sequence's own end


@dataclass(frozen=True)
class Prediction:
    """A predicted genome feature in GFF terms (1-based, closed; ``end > length`` = origin)."""

    seqid: str
    start: int
    end: int
    strand: str
    type: str
    phase: int | None
    prob: float
    margin: int
    windows: frozenset[int]
    partial_left: bool = False
    partial_right: bool = False
    orphan: bool = False
    """A CDS with one end no window closed, kept only to be completed from its closed end."""

    @property
    def partial(self) -> bool:
        return self.partial_left or self.partial_right


@dataclass
class MergeStats:
    """What merging did, for the log and the run summary."""

    window_features: int = 0
    stitched_features: int = 0
    orphans_dropped: int = 0
    cds_orphans_kept: int = 0
    near_duplicates_dropped: int = 0
    outvoted_dropped: int = 0


def _piece_margin(f: WindowFeature, meta: WindowMeta) -> int:
    """Distance from the piece's closed ends to its window's edges (cut ends do not count)."""
    margins = [NO_EDGE]
    if not f.cut_left:
        at_seq_start = not meta.circular and meta.start == 0
        margins.append(NO_EDGE if at_seq_start else f.start)
    if not f.cut_right:
        at_seq_end = not meta.circular and meta.end >= meta.seq_length
        margins.append(NO_EDGE if at_seq_end else meta.length - 1 - f.end)
    return min(margins)


def _keep_partial(p: Prediction, seq_len: int, circular: bool) -> bool:
    """Rule 2: a partial end is only believable at a linear sequence's own end."""
    if circular:
        return not p.partial
    ok_left = not p.partial_left or p.start == 1
    ok_right = not p.partial_right or p.end == seq_len
    return ok_left and ok_right


def judged_votes(
    a: Prediction, b: Prediction, metas: Sequence[WindowMeta] | WindowCover
) -> tuple[int, int]:
    """How many of the windows that hold both of each pair of ends where ``a`` and ``b`` differ
    predicted each. Why: only such a window could have written either. A window that cut the
    farther of two starts off never saw it (its gene then reads like an ORF from an inner start
    codon), so it has no say; one that holds both start codons does, whether or not it also holds
    the stop: its piece, cut or whole, is among those the prediction it chose was stitched from."""
    ends = [x for pair in ((a.start, b.start), (a.end, b.end)) if pair[0] != pair[1] for x in pair]
    if not ends:
        return 0, 0
    judges = covering_windows(min(ends), max(ends), metas)
    return len(judges & a.windows), len(judges & b.windows)


def drop_near_duplicates(preds: Sequence[Prediction], stats: MergeStats) -> list[Prediction]:
    """Rule 3, on one sequence's predictions."""
    ordered = sorted(preds, key=lambda p: (p.start, p.end))
    dropped: set[int] = set()
    for i, a in enumerate(ordered):
        if i in dropped:
            continue
        for j in range(i + 1, len(ordered)):
            b = ordered[j]
            if b.start > a.end:
                break
            if j in dropped or (a.strand, a.type) != (b.strand, b.type) or a.windows & b.windows:
                continue
            if a.orphan or b.orphan:  # a piece, not a gene: completion decides what it becomes
                continue
            shared = min(a.end, b.end) - b.start + 1
            if shared < MIN_SHARED * max(a.end - a.start + 1, b.end - b.start + 1):
                continue
            loser = j if (a.margin, a.prob) >= (b.margin, b.prob) else i
            dropped.add(loser)
            stats.near_duplicates_dropped += 1
            if loser == i:
                break
    return [p for k, p in enumerate(ordered) if k not in dropped]


def merge_windows(
    results: Sequence[tuple[WindowMeta, Sequence[tuple[WindowFeature, float]]]],
    *,
    keep_cds_orphans: bool = False,
    min_votes: float = 0.0,
) -> tuple[list[Prediction], MergeStats]:
    """All windows of one sequence (metas share seqid) -> its predictions, sorted by start."""
    stats = MergeStats()
    if not results:
        return [], stats
    stitched = stitch([(meta, [f for f, _ in feats]) for meta, feats in results])
    stats.window_features = sum(len(feats) for _, feats in results)
    stats.stitched_features = len(stitched)
    meta0 = results[0][0]
    preds = []
    for s in stitched:
        probs, margins, windows = [], [], set()
        for wi, fi in s.pieces:
            meta, feats = results[wi]
            f, lp = feats[fi]
            probs.append(math.exp(lp))
            margins.append(_piece_margin(f, meta))
            windows.add(wi)
        p = Prediction(
            seqid=s.seqid,
            start=s.start,
            end=s.end,
            strand=s.strand,
            type=s.type,
            phase=s.phase,
            prob=sum(probs) / len(probs),
            margin=max(margins),
            windows=frozenset(windows),
            partial_left=s.partial_left,
            partial_right=s.partial_right,
        )
        if _keep_partial(p, meta0.seq_length, meta0.circular):
            preds.append(p)
        elif keep_cds_orphans and p.type == "CDS" and p.partial_left != p.partial_right:
            preds.append(replace(p, orphan=True))
            stats.cds_orphans_kept += 1
        else:
            stats.orphans_dropped += 1
    preds = drop_near_duplicates(preds, stats)
    if min_votes > 0:
        preds = drop_outvoted(preds, [meta for meta, _ in results], min_votes, stats)
    return preds, stats


class WindowCover:
    """Which of one sequence's windows hold a span whole, by bisection over the windows' starts.

    Why: asked once per gene (votes, judges), a scan over every window made annotate's merging
    quadratic in the genome's length (E. coli's first 500 kbp: ~1 s of the finish; the whole
    genome ~9x the genes times ~9x the windows). A window holding ``[s, e]`` starts at or before
    ``s`` and, being at most ``longest`` long, after ``e - longest``: only those are checked.
    """

    def __init__(self, metas: Sequence[WindowMeta]) -> None:
        order = sorted(range(len(metas)), key=lambda i: metas[i].start)
        self.index = order
        self.starts = [metas[i].start for i in order]
        self.ends = [metas[i].end for i in order]
        self.longest = max((m.end - m.start for m in metas), default=0)
        n = metas[0].seq_length if metas else 0
        circular = bool(metas) and metas[0].circular
        self.shifts = (0, n, -n) if circular else (0,)

    def __call__(self, start: int, end: int) -> set[int]:
        """Window numbers (places in the ``metas`` given) holding 1-based ``[start, end]``
        (``end > length``: over the origin)."""
        s, e = start - 1, end - 1
        out: set[int] = set()
        for k in self.shifts:
            lo = bisect_right(self.starts, e + k - self.longest)
            for j in range(lo, bisect_right(self.starts, s + k)):
                if e + k < self.ends[j]:
                    out.add(self.index[j])
        return out


def covering_windows(start: int, end: int, metas: Sequence[WindowMeta] | WindowCover) -> set[int]:
    """Windows that hold all of 1-based ``[start, end]`` (``end > length``: over the origin);
    pass a ``WindowCover`` when asking for many spans of one sequence."""
    cover = metas if isinstance(metas, WindowCover) else WindowCover(metas)
    return cover(start, end)


def drop_outvoted(
    preds: Sequence[Prediction],
    metas: Sequence[WindowMeta],
    min_votes: float,
    stats: MergeStats,
) -> list[Prediction]:
    """Rule 4: a CDS closed at both ends that at least two windows hold whole must have been
    predicted by at least ``min_votes`` of them (a fraction): overlapping windows vote, so one
    window's stray ORF does not become a gene. Orphans, partial genes and other types are kept
    (annotate votes after completing orphans, so a completed one is judged like the rest)."""
    out = []
    held_by = WindowCover(metas)
    for p in preds:
        if p.type != "CDS" or p.orphan or p.partial:
            out.append(p)
            continue
        cover = held_by(p.start, p.end)
        if len(cover) >= 2 and len(cover & p.windows) < min_votes * len(cover):
            stats.outvoted_dropped += 1
            continue
        out.append(p)
    return out
