"""Score predicted features against a reference the way gene finders are scored.

Three levels per feature type:

* **exact** -- a feature matches when (seqid, start, end, strand) are identical. Sensitivity is
  the share of reference features that some prediction matches, precision the share of predictions
  that match some reference feature. This is GenomeTools' ``gt eval`` "exon sensitivity/specificity
  (CDS level, all)" for CDS: identical features count once, as a set (a test checks the figures
  against ``gt eval`` on Prodigal's C. crescentus predictions).
* **stop** -- the 3' end (``end`` on ``+``, ``start`` on ``-``) and strand match: how often the
  model found the right gene even if the start is off (in bacteria the stop fixes the frame).
* **base** -- bases covered on the same strand, over the union of each side's features (as
  ``gt eval``'s "nucleotide ... (CDS level)").

Features on circular sequences that span the origin (``end > length``) are compared as written
for exact/stop and wrapped for base level.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Feature:
    """The part of a GFF3 feature scoring needs (GFF coordinates: 1-based, inclusive)."""

    seqid: str
    type: str
    start: int
    end: int
    strand: str

    @property
    def three_prime(self) -> int:
        """The last base in transcription direction (the stop codon's third base for a CDS)."""
        return self.start if self.strand == "-" else self.end


@dataclass(frozen=True)
class Scores:
    """Counts behind sensitivity/precision; the ratios are properties so JSON keeps both."""

    tp_ref: int
    n_ref: int
    tp_pred: int
    n_pred: int

    @property
    def sensitivity(self) -> float:
        return self.tp_ref / self.n_ref if self.n_ref else 0.0

    @property
    def precision(self) -> float:
        return self.tp_pred / self.n_pred if self.n_pred else 0.0

    @property
    def f1(self) -> float:
        sn, pr = self.sensitivity, self.precision
        return 2 * sn * pr / (sn + pr) if sn + pr else 0.0

    def as_dict(self) -> dict[str, float | int]:
        """Counts and ratios, for ``--json``."""
        return {
            **asdict(self),
            "sensitivity": self.sensitivity,
            "precision": self.precision,
            "f1": self.f1,
        }


def _match_scores(ref_keys: Sequence[tuple], pred_keys: Sequence[tuple]) -> Scores:
    ref_set, pred_set = set(ref_keys), set(pred_keys)
    return Scores(
        tp_ref=sum(k in pred_set for k in ref_keys),
        n_ref=len(ref_keys),
        tp_pred=sum(k in ref_set for k in pred_keys),
        n_pred=len(pred_keys),
    )


def exact_scores(ref: Sequence[Feature], pred: Sequence[Feature]) -> Scores:
    """Exact (seqid, start, end, strand) match."""
    return _match_scores(
        [(f.seqid, f.start, f.end, f.strand) for f in ref],
        [(f.seqid, f.start, f.end, f.strand) for f in pred],
    )


def stop_scores(ref: Sequence[Feature], pred: Sequence[Feature]) -> Scores:
    """3'-end (stop codon for CDS) and strand match."""
    return _match_scores(
        [(f.seqid, f.three_prime, f.strand) for f in ref],
        [(f.seqid, f.three_prime, f.strand) for f in pred],
    )


def _merged(intervals: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Union of inclusive intervals as sorted, disjoint, non-adjacent intervals."""
    out: list[tuple[int, int]] = []
    for a, b in sorted(intervals):
        if out and a <= out[-1][1] + 1:
            if b > out[-1][1]:
                out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return out


def _overlap_length(xs: list[tuple[int, int]], ys: list[tuple[int, int]]) -> int:
    """Bases shared by two merged interval lists (a two-pointer sweep)."""
    i = j = total = 0
    while i < len(xs) and j < len(ys):
        lo, hi = max(xs[i][0], ys[j][0]), min(xs[i][1], ys[j][1])
        if lo <= hi:
            total += hi - lo + 1
        if xs[i][1] < ys[j][1]:
            i += 1
        else:
            j += 1
    return total


def _strand_intervals(
    features: Iterable[Feature], lengths: Mapping[str, int]
) -> dict[tuple[str, str], list[tuple[int, int]]]:
    groups: dict[tuple[str, str], list[tuple[int, int]]] = defaultdict(list)
    for f in features:
        n = lengths.get(f.seqid)
        if n and f.end > n:  # origin-spanning on a circular sequence
            groups[(f.seqid, f.strand)] += [(f.start, n), (1, f.end - n)]
        else:
            groups[(f.seqid, f.strand)].append((f.start, f.end))
    return {k: _merged(v) for k, v in groups.items()}


def base_scores(
    ref: Sequence[Feature], pred: Sequence[Feature], lengths: Mapping[str, int] | None = None
) -> Scores:
    """Base-level match on the same strand; ``lengths`` (seqid -> bp) wraps origin-spanners."""
    lengths = lengths or {}
    r, p = _strand_intervals(ref, lengths), _strand_intervals(pred, lengths)
    tp = sum(_overlap_length(iv, p.get(k, [])) for k, iv in r.items())
    n_ref = sum(b - a + 1 for iv in r.values() for a, b in iv)
    n_pred = sum(b - a + 1 for iv in p.values() for a, b in iv)
    return Scores(tp_ref=tp, n_ref=n_ref, tp_pred=tp, n_pred=n_pred)


@dataclass(frozen=True)
class TypeReport:
    """All figures for one feature type."""

    type: str
    n_ref: int
    n_pred: int
    exact: Scores
    stop: Scores
    base: Scores

    def as_dict(self) -> dict[str, object]:
        return {
            "type": self.type,
            "n_ref": self.n_ref,
            "n_pred": self.n_pred,
            "exact": self.exact.as_dict(),
            "stop": self.stop.as_dict(),
            "base": self.base.as_dict(),
        }


def compare(
    ref: Sequence[Feature],
    pred: Sequence[Feature],
    types: Sequence[str],
    lengths: Mapping[str, int] | None = None,
) -> list[TypeReport]:
    """One report per type in ``types`` (features of other types are ignored)."""
    reports = []
    for t in types:
        r = [f for f in ref if f.type == t]
        p = [f for f in pred if f.type == t]
        reports.append(
            TypeReport(
                type=t,
                n_ref=len(r),
                n_pred=len(p),
                exact=exact_scores(r, p),
                stop=stop_scores(r, p),
                base=base_scores(r, p, lengths),
            )
        )
    return reports
