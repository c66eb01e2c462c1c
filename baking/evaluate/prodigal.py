"""The baseline users compare us with: Prodigal (through pyrodigal) on the same genome.

Single-genome mode, trained on all sequences of the FASTA together, as ``prodigal -i genome.fna``
does; a genome shorter than Prodigal's training minimum (20 kbp) falls back to metagenomic mode.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import pyrodigal

from baking.evaluate.metrics import Feature

log = logging.getLogger(__name__)

MIN_TRAIN_BP = 20_000


@dataclass(frozen=True)
class ProdigalRun:
    """Prodigal's CDS predictions and how long they took (training included)."""

    features: list[Feature]
    seconds: float
    bp: int

    @property
    def bp_per_s(self) -> float:
        return self.bp / self.seconds if self.seconds else float("inf")


def run_prodigal(sequences: Sequence[tuple[str, str]], *, transl_table: int = 11) -> ProdigalRun:
    """Predict CDS on ``(seqid, sequence)`` pairs with pyrodigal (one thread)."""
    t0 = time.perf_counter()
    total = sum(len(s) for _, s in sequences)
    meta = total < MIN_TRAIN_BP
    finder = pyrodigal.GeneFinder(meta=meta, closed=False)
    if not meta:
        with warnings.catch_warnings():  # "should be at least 100000 characters": fine for phages
            warnings.simplefilter("ignore", UserWarning)
            encoded = [s.encode() for _, s in sequences]
            finder.train(*encoded, translation_table=transl_table)  # type: ignore[call-overload]
    feats: list[Feature] = []
    for seqid, seq in sequences:
        for gene in finder.find_genes(seq.encode()):
            strand = "+" if gene.strand == 1 else "-"
            feats.append(Feature(seqid, "CDS", gene.begin, gene.end, strand))
    seconds = time.perf_counter() - t0
    log.info(
        "prodigal mode=%s cds=%d bp=%d seconds=%.2f",
        "meta" if meta else "single",
        len(feats),
        total,
        seconds,
    )
    return ProdigalRun(feats, seconds, total)
