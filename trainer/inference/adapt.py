"""``annotate --adapt``: learn the input genome's own statistics, then choose genes with them and
the model's windows together.

Why: Prodigal and GeneMarkS reach their accuracy on any species by learning each genome from itself
(codon usage, start context) and choosing one consistent gene set over all start/stop candidates.
The model alone misses and invents genes on a species it never saw (``docs/learning.md``). Here:

1. **Seeds**: the model's confident genes of the genome (what ``--selection votes`` keeps, complete,
   written by at least ``SEED_MIN_WINDOWS`` windows); too few of them (a model that says little),
   or ``use_model=False``: the long ORFs a length-only selection picks
   (``baking.adapt_genes.length_seeds``).
2. **Statistics** (``baking.genome_stats``): in-frame hexamer and start-context log-likelihood
   ratios learned from the seeds against the genome itself. Never an annotation: the input is the
   FASTA and the model's own output.
3. **Candidates**: every ORF of each sequence of >= ``AdaptWeights.min_codons`` codons, each stop
   with its best starts (``baking.adapt_genes``), plus every CDS the model predicted.
4. **Score** of a candidate: ``coding + start_weight * start + stop_vote * m_stop
   + exact_vote * m_exact - silent * s - offset``, with ``m_stop`` the windows that predicted a
   gene on its stop (any start), ``m_exact`` those that predicted exactly it, ``s`` the windows that
   held it whole and predicted nothing on its stop. ``baking.gene_selection`` picks the set.
5. Optionally ``iterations`` more rounds: the statistics retrained on the chosen set.

Non-CDS features and CDS open at a linear sequence's end pass through unchanged. A genome too
small to learn from (``genome_stats.TooLittleData``) keeps what ``--selection`` chose, with the
reason logged.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from baking.adapt_genes import (
    Candidates,
    alternatives_of,
    choose,
    enumerate_orfs,
    length_seeds,
    score_candidates,
    seed_genes,
    top_starts,
)
from baking.genome_stats import (
    MIN_SEED_CODONS,
    GenomeStats,
    SeedGene,
    TooLittleData,
    train_stats,
)
from baking.orfs import GeneticCode
from baking.target_format.windows import WindowMeta
from trainer.inference.merge import Prediction

log = logging.getLogger(__name__)

SEED_MIN_WINDOWS = 2
"""A model gene is a seed when at least this many windows wrote it (one window's call is the
kind of error adaptation is meant to correct)."""
ADAPT_STATUS = "adapt"
"""The ``snap=`` attribute of a CDS no window predicted: the genome's statistics chose it."""


@dataclass(frozen=True)
class AdaptWeights:
    """How a candidate's score is put together (module docstring, step 4); chosen on training
    genomes of the learn_real split (``docs/annotate-evaluate.md``)."""

    start_weight: float = 2.0
    stop_vote: float = 2.0
    exact_vote: float = 2.0
    silent: float = 0.5
    offset: float = 20.0
    iterations: int = 2
    min_codons: int = 45


DEFAULT_WEIGHTS = AdaptWeights()


@dataclass
class SequenceInput:
    """One sequence as annotate holds it after merging and snapping."""

    seqid: str
    seq: str
    circular: bool
    snapped: list[tuple[Prediction, str]]
    """Snapped predictions (``annotate._snap_all``) before any vote."""
    metas: list[WindowMeta]
    voted: list[tuple[Prediction, str]]
    """What ``--selection votes`` keeps of ``snapped`` (the seeds come from it)."""


@dataclass
class Evidence:
    """The model's evidence on every candidate of one sequence (arrays parallel to ``cands``)."""

    cands: Candidates
    m_stop: np.ndarray
    m_exact: np.ndarray
    silent: np.ndarray
    prob: np.ndarray
    model_pred: dict[int, tuple[Prediction, str]]
    """Candidate index -> the model's prediction that is exactly it."""


def _key(p: Prediction) -> tuple[int, int, bool]:
    return p.start - 1, p.end, p.strand == "+"


def _is_gene(p: Prediction) -> bool:
    return p.type == "CDS" and not p.partial and not p.orphan


def held_counts(lo: np.ndarray, hi: np.ndarray, metas: Sequence[WindowMeta]) -> np.ndarray:
    """Windows that hold each ``[lo, hi)`` whole (windows of one sequence, equal length, sorted)."""
    out = np.zeros(len(lo), dtype=np.int64)
    if not metas or not len(lo):
        return out
    w_lo = np.array([w.start for w in metas], dtype=np.int64)
    w_hi = np.array([w.end for w in metas], dtype=np.int64)
    order = np.argsort(w_lo, kind="stable")
    w_lo, w_hi = w_lo[order], w_hi[order]
    n = metas[0].seq_length
    for sh in (0, n) if metas[0].circular else (0,):
        i1 = np.searchsorted(w_lo, lo + sh, "right")
        i0 = np.searchsorted(w_hi, hi + sh, "left")
        out += np.maximum(i1 - i0, 0)
    return out


def _holds(meta: WindowMeta, lo: int, hi: int) -> bool:
    shifts = (0, meta.seq_length) if meta.circular else (0,)
    return any(meta.start <= lo + k and hi + k <= meta.end for k in shifts)


def model_evidence(
    seq: str, item: SequenceInput, code: GeneticCode, min_codons: int, use_model: bool = True
) -> Evidence:
    """Every ORF candidate of one sequence and what the model's windows say of each."""
    cands = enumerate_orfs(seq, code, circular=item.circular, min_codons=min_codons)
    keys = {
        (int(a), int(b), bool(p)): i
        for i, (a, b, p) in enumerate(zip(cands.lo.tolist(), cands.hi.tolist(), cands.plus))
    }
    genes = [(p, s) for p, s in item.snapped if _is_gene(p)] if use_model else []
    extra = [ps for ps in genes if _key(ps[0]) not in keys]
    if extra:  # model genes the enumeration does not hold (shorter than min_codons)
        add_lo = np.array([p.start - 1 for p, _ in extra], dtype=np.int64)
        add_hi = np.array([p.end for p, _ in extra], dtype=np.int64)
        add_pl = np.array([p.strand == "+" for p, _ in extra], dtype=bool)
        z = np.zeros(len(extra))
        cands = Candidates(
            np.concatenate((cands.lo, add_lo)),
            np.concatenate((cands.hi, add_hi)),
            np.concatenate((cands.plus, add_pl)),
            np.concatenate((cands.coding, z)),
            np.concatenate((cands.start, z)),
        )
        for j, (p, _) in enumerate(extra):
            keys.setdefault(_key(p), len(cands) - len(extra) + j)
    m = len(cands)
    m_stop = np.zeros(m)
    m_exact = np.zeros(m)
    silent = np.zeros(m)
    prob = np.zeros(m)
    model_pred: dict[int, tuple[Prediction, str]] = {}
    if not use_model:
        return Evidence(cands, m_stop, m_exact, silent, prob, model_pred)
    stop_windows: dict[int, set[int]] = {}
    skey = cands.stop_key
    for p, status in genes:
        i = keys[_key(p)]
        model_pred[i] = (p, status)
        m_exact[i] = len(p.windows)
        prob[i] = p.prob
        stop_windows.setdefault(int(skey[i]), set()).update(p.windows)
    held = held_counts(cands.lo, cands.hi, item.metas)
    for i in range(m):
        ws = stop_windows.get(int(skey[i]))
        if ws is None:
            silent[i] = held[i]
            continue
        m_stop[i] = len(ws)
        inside = sum(
            1 for w in ws if w < len(item.metas) and _holds(item.metas[w], cands.lo[i], cands.hi[i])
        )
        silent[i] = max(int(held[i]) - inside, 0)
    return Evidence(cands, m_stop, m_exact, silent, prob, model_pred)


def total_score(ev: Evidence, w: AdaptWeights) -> np.ndarray:
    """A candidate's score (module docstring, step 4)."""
    c = ev.cands
    return (
        c.coding
        + w.start_weight * c.start
        + w.stop_vote * ev.m_stop
        + w.exact_vote * ev.m_exact
        - w.silent * ev.silent
        - w.offset
    )


def model_seeds(items: Sequence[SequenceInput]) -> list[SeedGene]:
    """The model's confident genes: voted, complete, written by >= ``SEED_MIN_WINDOWS`` windows,
    not over a circular origin."""
    out = []
    for k, it in enumerate(items):
        for p, _ in it.voted:
            if _is_gene(p) and len(p.windows) >= SEED_MIN_WINDOWS and p.end <= len(it.seq):
                out.append(SeedGene(k, p.start - 1, p.end, p.strand))
    return out


def _seed_stats(
    items: Sequence[SequenceInput], evs: Sequence[Evidence], seeds: list[SeedGene]
) -> GenomeStats:
    """Train on ``seeds``; the start model's alternatives are the other starts of each seed's stop."""
    alts: list[list[int]] = [[] for _ in seeds]
    for k, (it, ev) in enumerate(zip(items, evs)):
        c = ev.cands
        keys = {
            (int(a), int(b), "+" if p else "-"): i
            for i, (a, b, p) in enumerate(zip(c.lo.tolist(), c.hi.tolist(), c.plus.tolist()))
        }
        mine = [j for j, g in enumerate(seeds) if g.seq == k and (g.lo, g.hi, g.strand) in keys]
        idx = np.array(
            [keys[(seeds[j].lo, seeds[j].hi, seeds[j].strand)] for j in mine], dtype=np.int64
        )
        for j, a in zip(mine, alternatives_of(c, idx, len(it.seq))):
            alts[j] = a
    return train_stats([(it.seqid, it.seq) for it in items], seeds, alts)


def adapt_genome(
    items: Sequence[SequenceInput],
    code: GeneticCode,
    weights: AdaptWeights = DEFAULT_WEIGHTS,
    counts: Counter | None = None,
    *,
    use_model: bool = True,
    evidence: Sequence[Evidence] | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[list[tuple[Prediction, str]]] | None:
    """Every sequence's features after adaptation, or None (reason logged) when the genome is too
    small to learn from: the caller then keeps ``voted``.

    ``evidence`` (from ``model_evidence``) may be given to reuse it across weight settings."""
    counts = counts if counts is not None else Counter()
    evs = (
        list(evidence)
        if evidence is not None
        else [model_evidence(it.seq, it, code, weights.min_codons, use_model) for it in items]
    )
    seeds = model_seeds(items) if use_model else []
    source = "model"
    try:
        if sum((g.hi - g.lo) // 3 for g in seeds) < 2 * MIN_SEED_CODONS:
            source = "long ORFs"
            seeds = [
                g
                for k, it in enumerate(items)
                for g in seed_genes(
                    k, len(it.seq), evs[k].cands, length_seeds(it.seq, evs[k].cands, it.circular)
                )
            ]
        stats = _seed_stats(items, evs, seeds)
    except TooLittleData as exc:
        log.warning("--adapt: not adapting (%s); keeping the --selection choice", exc)
        counts["adapt_fallback"] += 1
        return None
    counts["adapt_seed_genes"] += stats.seed_genes
    log.info("--adapt: statistics learned from %d seed genes (%s)", stats.seed_genes, source)
    chosen: list[np.ndarray] = []
    for rnd in range(1 + max(weights.iterations, 0)):
        chosen = []
        scored = []
        for it, ev in zip(items, evs):
            ev.cands = score_candidates(it.seq, ev.cands, stats, it.circular)
            score = total_score(ev, weights)
            keep = top_starts(ev.cands, score, keep=np.array(list(ev.model_pred), dtype=np.int64))
            sub = choose(_sub(ev.cands, keep), score[keep], len(it.seq), it.circular)
            chosen.append(keep[sub])
            scored.append(ev)
        if rnd == weights.iterations:
            break
        seeds = [
            g
            for k, it in enumerate(items)
            for g in seed_genes(k, len(it.seq), evs[k].cands, chosen[k])
        ]
        try:
            stats = _seed_stats(items, evs, seeds)
        except TooLittleData:
            break
    return [_features(it, ev, idx, counts) for it, ev, idx in zip(items, evs, chosen)]


def _sub(c: Candidates, idx: np.ndarray) -> Candidates:
    return Candidates(c.lo[idx], c.hi[idx], c.plus[idx], c.coding[idx], c.start[idx])


def _features(
    it: SequenceInput, ev: Evidence, chosen: np.ndarray, counts: Counter
) -> list[tuple[Prediction, str]]:
    """Chosen candidates as predictions, plus every non-CDS and partial feature of the model."""
    out = [(p, s) for p, s in it.snapped if not _is_gene(p) and not p.orphan]
    c = ev.cands
    for i in chosen.tolist():
        if i in ev.model_pred:
            out.append(ev.model_pred[i])
            counts["adapt_model_genes"] += 1
            continue
        counts["adapt_new_genes"] += 1
        out.append(
            (
                Prediction(
                    seqid=it.seqid,
                    start=int(c.lo[i]) + 1,
                    end=int(c.hi[i]),
                    strand="+" if c.plus[i] else "-",
                    type="CDS",
                    phase=0,
                    prob=0.0,
                    margin=0,
                    windows=frozenset(),
                ),
                ADAPT_STATUS,
            )
        )
    out.sort(key=lambda x: (x[0].start, x[0].end, x[0].strand, x[0].type))
    return out


def self_trained_predictions(
    seqs: Sequence[tuple[str, str]],
    code: GeneticCode,
    circular: Sequence[bool],
    weights: AdaptWeights = DEFAULT_WEIGHTS,
    counts: Counter | None = None,
) -> list[list[tuple[Prediction, str]]]:
    """The statistics alone, no model (the benchmark's control for what the model adds): seeds
    from long ORFs, the same statistics, candidates and selection as ``--adapt``. A genome too
    small to learn from gets the length-only selection that would have seeded it."""
    items = [SequenceInput(sid, s, c, [], [], []) for (sid, s), c in zip(seqs, circular)]
    evs = [model_evidence(it.seq, it, code, weights.min_codons, use_model=False) for it in items]
    out = adapt_genome(items, code, weights, counts, use_model=False, evidence=evs)
    if out is not None:
        return out
    return [
        _features(it, ev, length_seeds(it.seq, ev.cands, it.circular), counts or Counter())
        for it, ev in zip(items, evs)
    ]
