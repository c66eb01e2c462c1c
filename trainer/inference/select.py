"""``annotate --selection genome``: score each candidate CDS from the model's windows, then choose
one consistent gene set over the whole sequence (``baking.gene_selection``).

Why: with ``--selection votes`` each window's genes are kept or dropped one by one (votes, then one
start per stop). Gene finders that reach exact boundaries instead choose all genes of a sequence
at once under overlap rules; here the model supplies the scores.

Candidates are the CDS that merging, snapping and completion leave (``annotate._snap_all``): every
gene some window predicted, with each start a window chose on a stop as its own candidate (so the
program also picks the start). A candidate's score counts the windows that could have written it:

    score = m * (1 + p) - SILENT_PENALTY * s

``m`` = windows that predicted it (whole or as a cut piece), ``p`` = its mean probability under
the model (``merge.py``: in 0..1, a tie-breaker among equally voted genes), ``s`` = windows that
held it whole and predicted something else there (an outvoting: ``merge.drop_outvoted``'s
denominator). A gene one window of two wrote scores ``1 + p - 1 > 0``; one window in three
``1 + p - 2 < 0`` and is never chosen, like ``--min_votes 0.5`` at the same counts. A start two
windows chose over another start of the same stop wins through the rules (one start per stop is
the no-containment rule) because the other start's ``s`` counts those windows.

Non-CDS features (tRNA, rRNA, ...) and CDS still open at an end pass through unchanged and take no
part in the overlap rules (a tRNA inside an ORF is no reason to drop either).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from baking.gene_selection import DEFAULT_RULES, OverlapRules, select_genes
from baking.target_format.windows import WindowMeta
from trainer.inference.merge import Prediction

SILENT_PENALTY = 1.0
"""What one window that held a candidate whole but did not predict it takes off its score."""


def window_counts(
    preds: Sequence[Prediction], metas: Sequence[WindowMeta]
) -> tuple[np.ndarray, np.ndarray]:
    """``(m, s)`` per prediction: windows that predicted it; windows holding it whole that did not.

    Vectorised over windows (``merge.covering_windows`` per gene is O(windows) in Python)."""
    m = np.array([len(p.windows) for p in preds], dtype=np.int64)
    s = np.zeros(len(preds), dtype=np.int64)
    if not metas:
        return m, s
    w_lo = np.array([w.start for w in metas], dtype=np.int64)
    w_hi = np.array([w.end for w in metas], dtype=np.int64)
    n = metas[0].seq_length
    shifts = (0, n, -n) if metas[0].circular else (0,)
    for k, p in enumerate(preds):
        lo, hi = p.start - 1, p.end  # 0-based [lo, hi)
        held = np.zeros(len(metas), dtype=bool)
        for sh in shifts:
            held |= (w_lo <= lo + sh) & (hi + sh <= w_hi)
        held[list(p.windows)] = False
        s[k] = int(held.sum())
    return m, s


def candidate_scores(preds: Sequence[Prediction], metas: Sequence[WindowMeta]) -> np.ndarray:
    """The score of each prediction as a candidate gene (module docstring)."""
    m, s = window_counts(preds, metas)
    prob = np.array([p.prob for p in preds], dtype=np.float64)
    return m * (1.0 + prob) - SILENT_PENALTY * s


def select_genome(
    snapped: Sequence[tuple[Prediction, str]],
    metas: Sequence[WindowMeta],
    seq_len: int,
    circular: bool,
    counts: Counter,
    rules: OverlapRules = DEFAULT_RULES,
) -> list[tuple[Prediction, str]]:
    """One sequence's snapped predictions -> the consistent, best-scoring CDS set plus every other
    feature unchanged, in the order given. ``counts`` gains ``selection_candidates`` and
    ``selection_dropped`` (candidates the program left out)."""
    cand = [
        i for i, (p, _) in enumerate(snapped) if p.type == "CDS" and not p.partial and not p.orphan
    ]
    if not cand:
        return list(snapped)
    preds = [snapped[i][0] for i in cand]
    score = candidate_scores(preds, metas)
    lo = np.array([p.start - 1 for p in preds], dtype=np.int64)
    hi = np.array([p.end for p in preds], dtype=np.int64)
    plus = np.array([p.strand == "+" for p in preds], dtype=bool)
    sel = select_genes(lo, hi, plus, score, length=seq_len, circular=circular, rules=rules)
    chosen = {cand[int(k)] for k in sel.chosen}
    counts["selection_candidates"] += len(cand)
    counts["selection_dropped"] += len(cand) - len(chosen)
    dropped = set(cand) - chosen
    return [x for i, x in enumerate(snapped) if i not in dropped]
