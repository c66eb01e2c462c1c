"""A genome's own coding and start statistics, learned from its FASTA and a seed set of its genes.

Why: gene finders that reach exact boundaries on any species (Prodigal, GeneMarkS) do not carry a
model of "a gene" from other genomes; they learn the input genome's own codon usage and start
context from the genome itself, with no annotation, and then score every start/stop candidate with
them. A model trained on other species misses and invents genes where this genome's statistics
differ from what it saw (``docs/learning.md``: the short learn_real model misses 52-192 genes a
held-out genome, Prodigal 3-45). ``annotate --adapt`` (``trainer.inference.adapt``) learns these
statistics from the model's own confident genes of the genome, or from long ORFs, and adds them
to the model's evidence before one consistent gene set is chosen (``baking.gene_selection``).

Two parts, both log-likelihood ratios (natural log), numpy only:

* **coding**: the frequency of each in-frame hexamer (two consecutive codons: 4,096 of them)
  in the seed genes against its frequency over the whole genome (both strands, every frame), so a
  gene's score is the sum over its codon pairs of ``log P(hexamer | this genome's genes, in frame)
  / P(hexamer | this genome)``: positive in the genome's own coding frame, negative in the other
  five frames and in non-coding DNA (Prodigal's coding score is of this kind);
* **start**: the start codon (ATG / GTG / TTG) and the bases at each of the ``UPSTREAM`` positions
  before it, in the seed genes' starts against the other in-frame start codons of the same ORFs
  (the starts a finder could have chosen instead): the ribosome binding site and the start codon
  preference of this genome, learned from where its genes start.

Coordinates follow ``baking.orfs``: 0-based, end-exclusive ``[lo, hi)`` on the given sequence, the
stop codon included; ``strand`` ``+`` or ``-``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

UPSTREAM = 20
"""Bases before the start codon the start score reads (the RBS lies ~6-15 bases upstream)."""

N_HEX = 4096
MIN_SEED_GENES = 20
"""Fewer seed genes than this train nothing worth trusting: ``train_stats`` refuses."""
MIN_SEED_CODONS = 6000
"""Nor do fewer seed codons than this (~1.5 codon pairs per hexamer)."""

_CODE = np.full(256, 4, dtype=np.int64)
for _i, _b in enumerate(b"ACGT"):
    _CODE[_b] = _i
    _CODE[_b + 32] = _i
_COMP = str.maketrans("ACGTacgtNn", "TGCAtgcaNn")


class TooLittleData(ValueError):
    """The genome or its seed set is too small to learn statistics from (the message says why).

    Not a user error: annotate logs the reason and falls back to decoding without adaptation."""


def revcomp(seq: str) -> str:
    """The reverse complement (letters other than ACGTN are kept, read backwards)."""
    return seq.translate(_COMP)[::-1]


def encode(seq: str) -> np.ndarray:
    """Bases as 0..3 (A C G T), anything else 4."""
    return _CODE[np.frombuffer(seq.encode("ascii", "replace"), dtype=np.uint8)]


def hexamer_ids(codes: np.ndarray) -> np.ndarray:
    """Id (0..4095) of the hexamer starting at each position ``0..n-6``; -1 where one holds a
    non-ACGT base."""
    n = len(codes) - 5
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    ids = np.zeros(n, dtype=np.int64)
    bad = np.zeros(n, dtype=bool)
    for k in range(6):
        c = codes[k : k + n]
        bad |= c > 3
        ids = ids * 4 + np.minimum(c, 3)
    ids[bad] = -1
    return ids


def _sense(seqs: Sequence[tuple[str, str]]) -> dict[tuple[int, str], str]:
    """Each sequence read on each strand (``-``: reverse complement), keyed ``(index, strand)``."""
    out = {}
    for i, (_, s) in enumerate(seqs):
        out[(i, "+")] = s
        out[(i, "-")] = revcomp(s)
    return out


def _to_sense(lo: int, hi: int, strand: str, n: int) -> tuple[int, int]:
    """``[lo, hi)`` on the sequence -> the same bases' ``[a, b)`` on the strand's own reading."""
    return (lo, hi) if strand == "+" else (n - hi, n - lo)


@dataclass(frozen=True)
class SeedGene:
    """One gene the statistics learn from: sequence index, ``[lo, hi)``, strand."""

    seq: int
    lo: int
    hi: int
    strand: str


@dataclass(frozen=True)
class GenomeStats:
    """Log-likelihood ratios learned from one genome (module docstring)."""

    coding: np.ndarray
    """``coding[h]``: in-frame hexamer ``h`` in seed genes against the whole genome."""
    start_codon: dict[str, float]
    """Start codon -> log ratio of its share among seed starts to its share among other starts."""
    upstream: np.ndarray
    """``(UPSTREAM, 4)``: base at each position before the start codon (index 0 = farthest)."""
    seed_genes: int
    seed_codons: int

    def coding_profile(self, sense: str) -> np.ndarray:
        """``C`` over a strand's own reading: the coding score of ``sense[a:b]`` (an ORF, stop
        included) is ``C[b - 6] - C[a]``, the sum over its in-frame hexamers before the stop.

        ``C[p]`` sums the hexamer ratios at ``q < p``, ``q = p (mod 3)``: one cumulative sum per
        frame, so every start of every stop is scored in O(1)."""
        ids = hexamer_ids(encode(sense))
        n = len(sense)
        h = np.zeros(n + 3, dtype=np.float64)
        h[: len(ids)] = np.where(ids >= 0, self.coding[np.maximum(ids, 0)], 0.0)
        c = np.zeros(n + 3, dtype=np.float64)
        for f in range(3):
            c[f + 3 :: 3] = np.cumsum(h[f::3])[: len(c[f + 3 :: 3])]
        return c

    def start_scores(self, sense: str, starts: np.ndarray) -> np.ndarray:
        """Start score of a start codon at each of ``starts`` (positions on ``sense``)."""
        starts = np.asarray(starts, dtype=np.int64)
        out = np.zeros(len(starts), dtype=np.float64)
        if not len(starts):
            return out
        codes = encode(sense)
        for k, a in enumerate(starts.tolist()):
            out[k] = self.start_codon.get(sense[a : a + 3].upper(), 0.0)
        pos = starts[:, None] - UPSTREAM + np.arange(UPSTREAM)[None, :]
        ok = pos >= 0
        base = codes[np.maximum(pos, 0)]
        ok &= base < 4
        vals = self.upstream[np.arange(UPSTREAM)[None, :], np.minimum(base, 3)]
        return out + np.where(ok, vals, 0.0).sum(axis=1)


def train_stats(
    seqs: Sequence[tuple[str, str]],
    seeds: Iterable[SeedGene],
    alternatives: Sequence[Sequence[int]] | None = None,
) -> GenomeStats:
    """Learn ``GenomeStats`` from ``seqs`` and the seed genes on them.

    ``alternatives[k]`` are the other start positions the k-th seed's ORF offers (5' boundaries on
    the sequence, as ``baking.orfs.OrfIndex.allowed_five_primes`` gives them): what the start model
    learns against. Without them every start codon in the seed's frame within ``3 * UPSTREAM``
    bases of its start is one. Raises ``TooLittleData`` for too few seed genes or codons."""
    seeds = list(seeds)
    sense = _sense(seqs)
    codon_total = sum((g.hi - g.lo) // 3 for g in seeds)
    if len(seeds) < MIN_SEED_GENES or codon_total < MIN_SEED_CODONS:
        raise TooLittleData(
            f"{len(seeds)} seed genes, {codon_total} codons (need >= {MIN_SEED_GENES} genes and "
            f">= {MIN_SEED_CODONS} codons)"
        )
    gene_counts = np.zeros(N_HEX, dtype=np.float64)
    back_counts = np.zeros(N_HEX, dtype=np.float64)
    for s in sense.values():
        ids = hexamer_ids(encode(s))
        back_counts += np.bincount(ids[ids >= 0], minlength=N_HEX)
    true_codon: dict[str, float] = {}
    alt_codon: dict[str, float] = {}
    true_up = np.ones((UPSTREAM, 4))  # Laplace
    alt_up = np.ones((UPSTREAM, 4))
    for k, g in enumerate(seeds):
        s = sense[(g.seq, g.strand)]
        n = len(s)
        a, b = _to_sense(g.lo, g.hi, g.strand, n)
        ids = hexamer_ids(encode(s[a:b]))[: max(b - a - 8, 0) : 3]
        gene_counts += np.bincount(ids[ids >= 0], minlength=N_HEX)
        _count_start(s, a, true_codon, true_up)
        if alternatives is not None:
            alts = [f if g.strand == "+" else n - f for f in alternatives[k]]
        else:
            alts = _near_starts(s, a)
        for alt in alts:
            if alt != a and 0 <= alt <= n - 3:
                _count_start(s, alt, alt_codon, alt_up)
    coding = np.log((gene_counts + 1) / (gene_counts.sum() + N_HEX)) - np.log(
        (back_counts + 1) / (back_counts.sum() + N_HEX)
    )
    codons = set(true_codon) | set(alt_codon)
    t_sum = sum(true_codon.values()) + len(codons)
    a_sum = sum(alt_codon.values()) + len(codons)
    start_codon = {
        c: float(
            np.log((true_codon.get(c, 0) + 1) / t_sum) - np.log((alt_codon.get(c, 0) + 1) / a_sum)
        )
        for c in codons
    }
    upstream = np.log(true_up / true_up.sum(axis=1, keepdims=True)) - np.log(
        alt_up / alt_up.sum(axis=1, keepdims=True)
    )
    return GenomeStats(coding, start_codon, upstream, len(seeds), codon_total)


_STARTS = ("ATG", "GTG", "TTG")


def _near_starts(sense: str, a: int) -> list[int]:
    """Start codons in the frame of ``a`` within ``3 * UPSTREAM`` bases either side."""
    lo, hi = max(a - 3 * UPSTREAM, a % 3), min(a + 3 * UPSTREAM, len(sense) - 3)
    return [p for p in range(lo, hi + 1, 3) if sense[p : p + 3].upper() in _STARTS]


def _count_start(sense: str, a: int, codons: dict[str, float], up: np.ndarray) -> None:
    """Add the start codon at ``a`` and the bases before it to the counts."""
    codon = sense[a : a + 3].upper()
    codons[codon] = codons.get(codon, 0) + 1
    if a >= UPSTREAM:
        c = encode(sense[a - UPSTREAM : a])
        ok = c < 4
        up[np.arange(UPSTREAM)[ok], c[ok]] += 1
