"""Cut sequences into windows and express the features each window sees in window coordinates.

Coordinates: a window covers genome positions ``[start, end)`` (0-based, + strand). On a circular
sequence windows continue across the origin, so ``end`` may exceed the sequence length (the window's
DNA is then ``seq[start:] + seq[:end - length]``); ``start`` is always ``< length``.

Window placement over a region ``[a, b)``:
- linear (or a split block of any sequence): windows at ``a``, ``a + offset + k*stride`` and a last
  window ending exactly at ``b``, so every base is covered and no window leaves the region; a region
  shorter than the window gives one short window;
- a whole circular sequence: windows at ``(offset + k*stride) mod length`` for
  ``k < ceil(length / stride)``, wrapping over the origin; origin-spanning features are seen whole.

Each feature overlapping a window is clipped to it, marked ``cut_left``/``cut_right`` where it runs
past the window, and a CDS gets the phase of the clipped piece at its 5' end. A ``-`` sample is the
reverse complement: positions mirrored (``s' = n-1-e``), strands flipped, cut flags swapped, phase
kept (the 5' end of a piece is the same base on both strands).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from baking.formats.fasta import reverse_complement
from baking.target_format.features import GenomeFeature, SequenceInfo
from baking.target_format.grammar import WindowFeature

_FLIP = {"+": "-", "-": "+"}


@dataclass(frozen=True)
class WindowMeta:
    """Where a sample's window lies: the ``json`` field of a shard sample (plus ``genome``)."""

    genome: str
    seqid: str
    start: int
    end: int
    strand: str
    seq_length: int
    circular: bool
    window_len: int
    transl_table: int = 11
    """The genome's genetic code (NCBI table): the trainer's ORF layer reads the sample's own."""

    @property
    def length(self) -> int:
        """Bases in this window (``window_len`` except for a sequence or block shorter than it)."""
        return self.end - self.start

    def to_json(self) -> dict:
        return {
            "genome": self.genome,
            "seqid": self.seqid,
            "start": self.start,
            "end": self.end,
            "strand": self.strand,
            "seq_length": self.seq_length,
            "circular": self.circular,
            "window_len": self.window_len,
            "transl_table": self.transl_table,
        }

    @classmethod
    def from_json(cls, d: dict) -> WindowMeta:
        return cls(
            str(d["genome"]),
            str(d["seqid"]),
            int(d["start"]),
            int(d["end"]),
            str(d["strand"]),
            int(d["seq_length"]),
            bool(d["circular"]),
            int(d["window_len"]),
            int(d.get("transl_table", 11)),  # samples baked before the code was recorded: 11
        )


def plan_windows(
    length: int,
    window_len: int,
    stride: int,
    *,
    circular: bool = False,
    region: tuple[int, int] | None = None,
    offset: int = 0,
) -> list[tuple[int, int]]:
    """Window ``(start, end)`` pairs covering ``region`` (default: the whole sequence).

    ``circular`` applies only to a whole sequence at least ``window_len`` long; a block of a
    circular sequence (a split) is windowed like a linear region so no window crosses blocks.
    """
    if not 1 <= stride <= window_len:
        raise ValueError(f"stride must be in 1..window_len ({window_len}), got {stride}")
    a, b = region if region is not None else (0, length)
    if not 0 <= a < b <= length:
        raise ValueError(f"region {a}..{b} not inside 0..{length}")
    offset %= stride
    if circular and region is None and length >= window_len:
        count = -(-length // stride)
        return [
            (s, s + window_len)
            for s in sorted({(offset + k * stride) % length for k in range(count)})
        ]
    if b - a <= window_len:
        return [(a, b)]
    starts = {a, b - window_len}
    starts.update(range(a + offset, b - window_len + 1, stride))
    return [(s, s + window_len) for s in sorted(starts)]


def window_dna(seq: str, start: int, end: int) -> str:
    """The + strand DNA of window ``[start, end)``, wrapping over the origin if needed."""
    n = len(seq)
    if end <= n:
        return seq[start:end]
    return seq[start:] + seq[: end - n]


class FeatureIndex:
    """Features of one sequence (0-based, inclusive) with fast overlap queries per window.

    On a circular sequence every feature is also indexed one length to the right and, if it crosses
    the origin, one length to the left, so windows that wrap (or start at 0) see every copy.
    """

    def __init__(self, features: Sequence[GenomeFeature], info: SequenceInfo) -> None:
        spans: list[tuple[int, int, GenomeFeature]] = []
        n = info.length
        for f in features:
            s, e = f.start - 1, f.end - 1
            spans.append((s, e, f))
            if info.circular:
                spans.append((s + n, e + n, f))
                if e >= n:
                    spans.append((s - n, e - n, f))
        spans.sort(key=lambda t: (t[0], t[1]))
        self.spans = spans
        self.starts = [t[0] for t in spans]
        self.max_len = max((e - s + 1 for s, e, _ in spans), default=0)

    def overlapping(self, start: int, end: int) -> Iterator[tuple[int, int, GenomeFeature]]:
        """Copies ``(s, e, feature)`` with ``s <= end - 1`` and ``e >= start``."""
        lo = bisect.bisect_left(self.starts, start - self.max_len + 1)
        hi = bisect.bisect_left(self.starts, end)
        for s, e, f in self.spans[lo:hi]:
            if e >= start:
                yield s, e, f


def clip_feature(s: int, e: int, f: GenomeFeature, start: int, end: int) -> WindowFeature:
    """Feature copy ``[s, e]`` clipped to window ``[start, end)``, on the + strand frame."""
    cs, ce = max(s, start), min(e, end - 1)
    phase = None
    if f.phase is not None:
        removed = cs - s if f.strand == "+" else e - ce
        phase = (f.phase - removed) % 3
    return WindowFeature(cs - start, ce - start, f.strand, f.type, phase, s < start, e > end - 1)


def mirror(features: Sequence[WindowFeature], length: int) -> list[WindowFeature]:
    """The features as seen on the reverse complement of a window of ``length`` bases."""
    return [
        WindowFeature(
            length - 1 - f.end,
            length - 1 - f.start,
            _FLIP[f.strand],
            f.type,
            f.phase,
            f.cut_right,
            f.cut_left,
        )
        for f in features
    ]


def window_features(
    index: FeatureIndex, start: int, end: int, strand: str = "+"
) -> list[WindowFeature]:
    """The features window ``[start, end)`` shows on ``strand`` (``-``: reverse complement)."""
    feats = [clip_feature(s, e, f, start, end) for s, e, f in index.overlapping(start, end)]
    return mirror(feats, end - start) if strand == "-" else feats


def sample_dna(seq: str, start: int, end: int, strand: str) -> str:
    """The DNA of a sample: the window, reverse-complemented for ``-``."""
    dna = window_dna(seq, start, end)
    return reverse_complement(dna) if strand == "-" else dna
