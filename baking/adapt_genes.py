"""Every candidate gene of a sequence, scored by the genome's own statistics, then one set chosen.

Why: a model trained on other species misses genes of a new one; a candidate set that holds only
what some window predicted cannot give them back. Here the candidates are **every ORF** of the
sequence under its genetic code (both strands, over the origin of a circular one, each stop with
its possible starts, at least ``min_codons`` long), so a gene no window wrote can still be chosen
when this genome's statistics (``baking.genome_stats``) say it codes. Each candidate's score adds
the statistics (coding + start) to whatever evidence the caller brings (the model's windows:
``trainer.inference.adapt``; none for the statistics-alone control) and
``baking.gene_selection.select_genes`` picks the best consistent set, as Prodigal does with its own
coding and start scores.

Coordinates are ``baking.orfs``': 0-based ``[lo, hi)``, stop codon included; on a circular sequence
of length ``n`` a candidate over the origin has ``n < hi``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from baking.gene_selection import DEFAULT_RULES, OverlapRules, select_genes
from baking.genome_stats import GenomeStats, SeedGene, revcomp
from baking.orfs import GeneticCode, OrfIndex

MIN_CODONS = 45
"""Shortest candidate (codons, start and stop included): 45 measured best of 30, 45, 60 on training
genomes of the learn_real split (Buchnera, M. genitalium; docs/annotate-evaluate.md)."""
STARTS_PER_STOP = 6
"""Candidates kept per stop codon: the best-scoring starts by the statistics (plus any start the
caller's evidence names). Two starts of one stop can never both be chosen, and a low-scoring start
is only chosen when its overlap lets a neighbour in: on Buchnera, M. genitalium and S. aureus 6
and 50 starts per stop give the same F1 to the third decimal (1 costs up to 0.004 exact)."""
LENGTH_SEED_OFFSET = 90
"""Length-only seed selection: an ORF scores ``codons - 90`` (``benchmarks/gene_selection.py``'s
choice on three genomes: stop F1 0.60-0.91 with no model)."""


@dataclass(frozen=True)
class Candidates:
    """All candidate genes of one sequence: parallel arrays, sorted by (strand, stop, start)."""

    lo: np.ndarray
    hi: np.ndarray
    plus: np.ndarray
    coding: np.ndarray
    """The statistics' coding score (0 before any statistics are given)."""
    start: np.ndarray
    """The statistics' start score."""

    def __len__(self) -> int:
        return len(self.lo)

    @property
    def codons(self) -> np.ndarray:
        return (self.hi - self.lo) // 3

    @property
    def stop_key(self) -> np.ndarray:
        """One integer per stop codon (strand and 3' end): candidates sharing it are starts of
        one ORF."""
        three = np.where(self.plus, self.hi, self.lo)
        return three * 2 + self.plus.astype(np.int64)


def extension(n: int, circular: bool) -> int:
    """Bases of the sequence's start appended past its end to find genes over the origin."""
    return min(n, 30_000) if circular else 0


def enumerate_orfs(
    seq: str, code: GeneticCode, *, circular: bool, min_codons: int = MIN_CODONS
) -> Candidates:
    """Every (start, stop) ORF of at least ``min_codons`` codons on both strands (no scores)."""
    n = len(seq)
    ext = seq + seq[: extension(n, circular)]
    index = OrfIndex(ext, code)
    los, his, pls = [], [], []
    for strand in ("+", "-"):
        for f in range(3):
            starts = index.start_positions(strand, f)
            stops = index.stop_positions(strand, f)
            if not len(starts) or not len(stops):
                continue
            if strand == "+":
                k = np.searchsorted(stops, starts, "left")
                ok = k < len(stops)
                lo, hi = starts[ok], stops[k[ok]] + 3
            else:
                k = np.searchsorted(stops, starts, "left") - 1
                ok = k >= 0
                lo, hi = stops[k[ok]], starts[ok] + 3
            keep = ((hi - lo) // 3 >= min_codons) & (lo < n) & (hi - lo <= n)
            los.append(lo[keep])
            his.append(hi[keep])
            pls.append(np.full(int(keep.sum()), strand == "+"))
    if not los:
        z = np.zeros(0, dtype=np.int64)
        return Candidates(z, z, np.zeros(0, dtype=bool), z.astype(float), z.astype(float))
    lo = np.concatenate(los).astype(np.int64)
    hi = np.concatenate(his).astype(np.int64)
    plus = np.concatenate(pls)
    if not circular:
        keep = hi <= n
        lo, hi, plus = lo[keep], hi[keep], plus[keep]
    three = np.where(plus, hi, lo)
    five = np.where(plus, lo, -hi)
    order = np.lexsort((five, three, ~plus))
    zeros = np.zeros(len(lo))
    return Candidates(lo[order], hi[order], plus[order], zeros, zeros.copy())


def score_candidates(seq: str, cands: Candidates, stats: GenomeStats, circular: bool) -> Candidates:
    """``cands`` with the coding and start scores of ``stats`` filled in."""
    n = len(seq)
    ext = seq + seq[: extension(n, circular)]
    m = len(ext)
    coding = np.zeros(len(cands))
    start = np.zeros(len(cands))
    for plus in (True, False):
        sel = np.flatnonzero(cands.plus == plus)
        if not len(sel):
            continue
        sense = ext if plus else revcomp(ext)
        lo, hi = cands.lo[sel], cands.hi[sel]
        a, b = (lo, hi) if plus else (m - hi, m - lo)
        prof = stats.coding_profile(sense)
        coding[sel] = prof[b - 6] - prof[a]
        start[sel] = stats.start_scores(sense, a)
    return Candidates(cands.lo, cands.hi, cands.plus, coding, start)


def top_starts(
    cands: Candidates, score: np.ndarray, k: int = STARTS_PER_STOP, keep: np.ndarray | None = None
) -> np.ndarray:
    """Indices of the ``k`` best-scoring starts of every stop, plus every index in ``keep``."""
    if not len(cands):
        return np.zeros(0, dtype=np.int64)
    key = cands.stop_key
    order = np.lexsort((-score, key))
    ks = key[order]
    first = np.r_[True, ks[1:] != ks[:-1]]
    group_start = np.maximum.accumulate(np.where(first, np.arange(len(ks)), 0))
    rank = np.arange(len(ks)) - group_start
    chosen = np.zeros(len(cands), dtype=bool)
    chosen[order[rank < k]] = True
    if keep is not None:
        chosen[keep] = True
    return np.flatnonzero(chosen)


def choose(
    cands: Candidates,
    score: np.ndarray,
    n: int,
    circular: bool,
    rules: OverlapRules = DEFAULT_RULES,
) -> np.ndarray:
    """Indices (into ``cands``) of the best consistent set under ``score``."""
    if not len(cands):
        return np.zeros(0, dtype=np.int64)
    sel = select_genes(
        cands.lo, cands.hi, cands.plus, score, length=n, circular=circular, rules=rules
    )
    return np.asarray(sel.chosen, dtype=np.int64)


def length_seeds(seq: str, cands: Candidates, circular: bool) -> np.ndarray:
    """The seed set with no model: the longest ORF of each stop scored ``codons - 90``, one
    consistent set chosen (indices into ``cands``)."""
    if not len(cands):
        return np.zeros(0, dtype=np.int64)
    longest = top_starts(cands, cands.codons.astype(float), k=1)
    score = cands.codons[longest] - float(LENGTH_SEED_OFFSET)
    sub = Candidates(
        cands.lo[longest],
        cands.hi[longest],
        cands.plus[longest],
        cands.coding[longest],
        cands.start[longest],
    )
    return longest[choose(sub, score, len(seq), circular)]


def seed_genes(seq_index: int, n: int, cands: Candidates, chosen: np.ndarray) -> list[SeedGene]:
    """Chosen candidates as seed genes (those over a circular origin are left out: the
    statistics read each strand as one linear string)."""
    return [
        SeedGene(seq_index, int(cands.lo[i]), int(cands.hi[i]), "+" if cands.plus[i] else "-")
        for i in chosen
        if cands.hi[i] <= n
    ]


def alternatives_of(cands: Candidates, seeds_idx: np.ndarray, n: int) -> list[list[int]]:
    """For each seed candidate, the 5' boundaries of the other candidates of its stop (the
    starts a finder could have chosen instead: what the start model learns against)."""
    key = cands.stop_key
    five = np.where(cands.plus, cands.lo, cands.hi)
    groups: dict[int, list[int]] = {}
    for k, f in zip(key.tolist(), five.tolist()):
        groups.setdefault(k, []).append(f)
    return [[f for f in groups[int(key[i])] if f <= n] for i in seeds_idx]


def candidate_keys(cands: Candidates) -> dict[tuple[int, int, bool], int]:
    """``(lo, hi, plus) -> index``, to match predictions to candidates."""
    return {
        (int(a), int(b), bool(p)): i
        for i, (a, b, p) in enumerate(zip(cands.lo.tolist(), cands.hi.tolist(), cands.plus))
    }


def subset(cands: Candidates, idx: Sequence[int] | np.ndarray) -> Candidates:
    """The candidates at ``idx``, in that order."""
    idx = np.asarray(idx, dtype=np.int64)
    return Candidates(
        cands.lo[idx], cands.hi[idx], cands.plus[idx], cands.coding[idx], cands.start[idx]
    )
