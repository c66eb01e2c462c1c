"""Genome-wide gene selection: the best-scoring consistent set of candidate genes of one sequence.

Why: annotate decodes overlapping windows, each alone. Gene finders that reach exact boundaries
(Prodigal, GeneMarkS) instead score every start/stop candidate and choose one consistent set over the
whole sequence by dynamic programming with overlap rules. This module is that choice, with no model
and no torch: candidates (intervals with a strand and a score) in, the maximum-total-score subset
that obeys ``OverlapRules`` out. ``trainer.inference.select`` scores candidates from a model's
windows; the tests and ``benchmarks/gene_selection.py`` score them from ORF length alone.

Coordinates: 0-based, end-exclusive ``[lo, hi)`` on the sequence (``baking.orfs``' convention); on a
circular sequence of length ``n`` a candidate over the origin has ``n < hi <= lo + n``.

The rules (``OverlapRules``; a chosen set obeys all of them, pair by pair):

* **no containment**: a gene never lies wholly inside another (same or opposite strand; two
  candidates with the same stop, i.e. two starts of one gene, are one inside the other, so this
  is also *one start per stop*);
* **same strand**: two genes share at most ``same_strand`` bases (60, Prodigal's figure; tandem
  genes overlap by a few bases, ATGA-style);
* **opposite strands, 3'-3' (convergent)**: at most ``convergent`` bases (200, Prodigal's figure);
* **opposite strands, 5'-5' (divergent)**: at most ``divergent`` bases (default 0: two promoters
  back to back do not share coding bases in the references we score against, and allowing it lets a
  long spurious antisense ORF hide the start of a real gene);
* **at most two genes on any base**. This makes the set a chain in which only neighbours overlap
  (proof in ``select_genes``), which is what lets the dynamic program be exact.

Only candidates with a positive score can add to the total; the rest are never chosen.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass

import numpy as np

from baking.common.errors import ConfigError


@dataclass(frozen=True)
class OverlapRules:
    """Largest overlaps (bases) two chosen genes may share; see the module docstring."""

    same_strand: int = 60
    convergent: int = 200
    divergent: int = 0

    def __post_init__(self) -> None:
        for name in ("same_strand", "convergent", "divergent"):
            if getattr(self, name) < 0:
                raise ConfigError(f"overlap rule {name} must be >= 0, got {getattr(self, name)}")

    @property
    def reach(self) -> int:
        """The largest overlap any pair may have: how far back the program looks."""
        return max(self.same_strand, self.convergent, self.divergent)

    def allowed(self, left_plus: bool, right_plus: bool) -> int:
        """Largest overlap of a gene on the left (smaller ``lo``) with one on the right."""
        if left_plus == right_plus:
            return self.same_strand
        # the left gene's right end meets the right gene's left end: + then - is 3'-3'
        return self.convergent if left_plus else self.divergent


DEFAULT_RULES = OverlapRules()


@dataclass(frozen=True)
class Selection:
    """What ``select_genes`` chose: ``chosen`` indices into the candidate arrays (sorted by
    position), their total score, and on a circular sequence with no base free of candidates the
    number of candidates over the cut point that had to be left out (0 = the choice is exact)."""

    chosen: np.ndarray
    total: float
    dropped_at_cut: int = 0


def pair_ok(
    lo_a: int, hi_a: int, plus_a: bool, lo_b: int, hi_b: int, plus_b: bool, rules: OverlapRules
) -> bool:
    """Whether two genes on a linear stretch may both be chosen (the pairwise rules)."""
    if lo_b < lo_a or (lo_b == lo_a and hi_b < hi_a):
        lo_a, hi_a, plus_a, lo_b, hi_b, plus_b = lo_b, hi_b, plus_b, lo_a, hi_a, plus_a
    overlap = min(hi_a, hi_b) - lo_b
    if overlap <= 0:
        return True
    if hi_b <= hi_a or lo_a == lo_b:  # one inside the other (same stop or same start included)
        return False
    return overlap <= rules.allowed(plus_a, plus_b)


def violations(
    lo: np.ndarray,
    hi: np.ndarray,
    plus: np.ndarray,
    chosen: np.ndarray,
    *,
    length: int | None = None,
    circular: bool = False,
    rules: OverlapRules = DEFAULT_RULES,
) -> list[str]:
    """Every broken rule among the ``chosen`` candidates, as text (empty: the set is consistent).

    Independent of the program: checks *every* overlapping pair (not only neighbours) and the
    two-genes-per-base rule, vectorised so that a whole genome's choice is checked in well under a
    second. On a circular sequence the genes are unrolled once more past the origin (``+ length``)
    so that pairs meeting over the origin are checked too."""
    idx = np.asarray(chosen, dtype=np.int64)
    a_lo, a_hi, a_pl, a_id = lo[idx].astype(np.int64), hi[idx].astype(np.int64), plus[idx], idx
    if circular:
        if length is None:
            raise ConfigError("violations: a circular sequence needs its length")
        a_lo = np.concatenate((a_lo, a_lo + length))
        a_hi = np.concatenate((a_hi, a_hi + length))
        a_pl = np.concatenate((a_pl, a_pl))
        a_id = np.concatenate((a_id, a_id))
    order = np.lexsort((a_hi, a_lo))
    a_lo, a_hi, a_pl, a_id = a_lo[order], a_hi[order], a_pl[order], a_id[order]
    out: list[str] = []
    limit = np.array([[rules.same_strand, rules.divergent], [rules.convergent, rules.same_strand]])
    for d in range(1, len(a_lo)):
        i, j = np.arange(len(a_lo) - d), np.arange(d, len(a_lo))
        touching = a_lo[j] < a_hi[i]  # j starts before i ends (lo sorted: they overlap)
        if not touching.any():
            break  # sorted by lo: no gene farther on can reach back either
        i, j = i[touching], j[touching]
        inside = (a_hi[j] <= a_hi[i]) | (a_lo[j] == a_lo[i])
        overlap = np.minimum(a_hi[i], a_hi[j]) - a_lo[j]
        too_much = overlap > limit[a_pl[i].astype(int), a_pl[j].astype(int)]
        same = a_id[i] == a_id[j]
        for k in np.flatnonzero((inside | too_much) & ~same):
            out.append(
                f"candidates {a_id[i[k]]} [{a_lo[i[k]]},{a_hi[i[k]]}) and {a_id[j[k]]} "
                f"[{a_lo[j[k]]},{a_hi[j[k]]}) "
                + ("one inside the other" if inside[k] else f"overlap {overlap[k]} bp")
            )
    pos = np.concatenate((a_lo, a_hi))
    step = np.concatenate((np.ones(len(a_lo), np.int64), -np.ones(len(a_hi), np.int64)))
    ev = np.lexsort((step, pos))  # an end before a start at the same base
    depth = np.cumsum(step[ev])
    if len(depth) and depth.max() > 2:
        out.append(f"three chosen genes share base {int(pos[ev][int(np.argmax(depth))])}")
    return out


def select_genes(
    lo: np.ndarray,
    hi: np.ndarray,
    plus: np.ndarray,
    score: np.ndarray,
    *,
    length: int | None = None,
    circular: bool = False,
    rules: OverlapRules = DEFAULT_RULES,
) -> Selection:
    """The maximum-total-score subset of the candidates that obeys ``rules`` (exact).

    Why it is exact. With no containment, chosen genes sorted by ``lo`` are also sorted by ``hi``
    (strictly), so they form a chain g1, g2, ...; gi and g(i+2) overlap only if g(i+1) covers their
    shared bases too (it starts after gi and ends after gi), i.e. only if three genes share a base,
    which the rules forbid; g(i+3) starts after g(i+2), so it cannot reach gi either. A set is
    therefore consistent iff each pair of neighbours obeys the pairwise rules and each gi ends at or
    before g(i+2) starts. The program keeps, for every candidate k, ``F(k)`` (best chain ending at
    k), and for every allowed overlapping pair (m, k) ``D(m, k)`` (best chain ending at m that k may
    follow: m's own overlapping predecessor ends by ``lo_k``). The pair values make the
    neighbour-of-neighbour condition exact; candidates within reach of k are those whose ``hi``
    lies in ``(lo_k, lo_k + reach]``, so the cost is O(n log n + n r log r) with r the candidates
    within reach of one start (tens on a real genome).

    Circular sequences: the sequence is cut at a base no candidate spans and rotated, so no gene
    crosses the cut and the linear program is exact. If every base is spanned by some candidate
    (dense candidates on a tiny circle), it is cut where the fewest candidates span and those are
    left out (``Selection.dropped_at_cut``).
    """
    lo = np.asarray(lo, dtype=np.int64)
    hi = np.asarray(hi, dtype=np.int64)
    plus = np.asarray(plus, dtype=bool)
    score = np.asarray(score, dtype=np.float64)
    n_cand = len(lo)
    if not (len(hi) == len(plus) == len(score) == n_cand):
        raise ConfigError("select_genes: lo, hi, plus and score must have one entry per candidate")
    if n_cand and np.any(hi <= lo):
        raise ConfigError("select_genes: every candidate needs lo < hi")
    keep = np.flatnonzero(score > 0)
    dropped = 0
    lo_k, hi_k = lo[keep], hi[keep]
    if circular:
        if length is None or length < 1:
            raise ConfigError("select_genes: a circular sequence needs its length")
        lo_k, hi_k, ok, dropped = _rotate(lo_k, hi_k, length)
        keep, lo_k, hi_k = keep[ok], lo_k[ok], hi_k[ok]
    picked, total = _chain(lo_k, hi_k, plus[keep], score[keep], rules)
    chosen = keep[picked]
    chosen = chosen[np.lexsort((hi[chosen], lo[chosen]))]
    return Selection(chosen, total, dropped)


def _rotate(
    lo: np.ndarray, hi: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Candidates on a circle -> coordinates from a cut point no kept candidate spans."""
    length = hi - lo
    lo = lo % n
    hi = lo + length
    if np.any(length > n):
        raise ConfigError("select_genes: a candidate is longer than its circular sequence")
    # cover[b] = candidates with lo < b < hi (mod n), for cut points b = 0..n-1
    diff = np.zeros(2 * n + 2, dtype=np.int64)
    np.add.at(diff, lo + 1, 1)
    np.add.at(diff, hi, -1)
    cover2 = np.cumsum(diff)[: 2 * n]
    cover = cover2[:n] + cover2[n:]
    cut = int(np.argmin(cover)) if n else 0
    spans = ((lo < cut) & (cut < hi)) | ((lo < cut + n) & (cut + n < hi))
    ok = ~spans
    new_lo = (lo - cut) % n
    return new_lo, new_lo + length, ok, int(spans.sum())


def _chain(
    lo: np.ndarray, hi: np.ndarray, plus: np.ndarray, score: np.ndarray, rules: OverlapRules
) -> tuple[np.ndarray, float]:
    """The exact program of ``select_genes`` on a linear stretch (positive scores only)."""
    n = len(lo)
    if n == 0:
        return np.zeros(0, dtype=np.int64), 0.0
    order = np.lexsort((lo, hi))  # by hi, then lo
    los = lo[order].tolist()
    his = hi[order].tolist()
    pls = plus[order].tolist()
    scs = score[order].tolist()
    reach = rules.reach
    allowed = {(a, b): rules.allowed(a, b) for a in (True, False) for b in (True, False)}
    f = [0.0] * n  # best chain ending at t
    best_upto = [0.0] * n  # max(0, f[0..t])
    best_arg = [-1] * n
    base = [0.0] * n  # max(0, best chain ending at or before lo_t)
    base_arg = [-1] * n
    # per t: its overlapping predecessors m (in order of hi), D(m, t), and the running max of D
    pred_hi: list[list[int]] = [[] for _ in range(n)]
    pred_m: list[list[int]] = [[] for _ in range(n)]
    pred_d: list[list[float]] = [[] for _ in range(n)]
    pred_back: list[list[int]] = [[] for _ in range(n)]  # -1: start; m's base; else index in m
    pred_run: list[list[int]] = [[] for _ in range(n)]  # index of the running max of D
    for t in range(n):
        lo_t, hi_t, p_t = los[t], his[t], pls[t]
        j = bisect_right(his, lo_t) - 1
        if j >= 0 and best_upto[j] > 0:
            base[t], base_arg[t] = best_upto[j], best_arg[j]
        top, top_from = base[t], -1  # -1: after a chain that does not overlap t
        a = j + 1
        b = bisect_right(his, min(lo_t + reach, hi_t - 1), a, t)
        for m in range(a, b):
            lo_m, hi_m = los[m], his[m]
            if lo_m >= lo_t or hi_m - lo_t > allowed[(pls[m], p_t)]:
                continue
            # D(m, t): m's best chain whose own overlapping predecessor ends by lo_t
            d, back = base[m], -1
            k = bisect_right(pred_hi[m], lo_t) - 1
            if k >= 0:
                r = pred_run[m][k]
                if pred_d[m][r] > d:
                    d, back = pred_d[m][r], r
            d += scs[m]
            pred_hi[t].append(hi_m)
            pred_m[t].append(m)
            pred_d[t].append(d)
            pred_back[t].append(back)
            run = pred_run[t]
            run.append(len(run) if not run or d > pred_d[t][run[-1]] else run[-1])
            if d > top:
                top, top_from = d, len(pred_d[t]) - 1
        f[t] = scs[t] + top
        prev = best_upto[t - 1] if t else 0.0
        if f[t] > prev:
            best_upto[t], best_arg[t] = f[t], t
        else:
            best_upto[t], best_arg[t] = prev, best_arg[t - 1] if t else -1
        pred_back[t].append(top_from)  # the last entry: how F(t) was reached
    # trace back from the best chain overall
    picked: list[int] = []
    t = best_arg[n - 1]
    total = best_upto[n - 1]
    came = pred_back[t][-1] if t >= 0 else -1
    while t >= 0:
        picked.append(t)
        if came >= 0:  # t follows an overlapping m, entry ``came`` of t's list
            m = pred_m[t][came]
            came, t = pred_back[t][came], m
            continue
        t = base_arg[t]
        came = pred_back[t][-1] if t >= 0 else -1
    idx = order[np.asarray(picked[::-1], dtype=np.int64)]
    return idx, float(total)
