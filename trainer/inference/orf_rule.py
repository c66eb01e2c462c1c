"""The no-model control: call every ORF of at least N codons a CDS.

Why: a learned annotator has to beat what the ORF rule alone gives. Bacterial genes are long ORFs,
so "every ORF of at least N codons, on both strands, the longest one per stop codon (the first
start after the previous in-frame stop)" already finds many stops; the learning benchmark prints
it as a control row next to the model and Prodigal. N is chosen on the *training* genomes only
(``choose_min_codons``: the N that maximises pooled CDS stop F1 against their references), then
applied unchanged to a held-out genome.

    n = choose_min_codons([(train_fna, train_gff), ...])
    summary = annotate_orf_rule(test_fna, "pred.gff3", n, circular=("all",))

Output GFF3 is laid out as ``annotate`` writes it (a ``region`` line per sequence, a ``gene`` and
its ``CDS`` per ORF, source ``dna2gff``, score 1: there is no model probability). Circular
sequences also get their origin-spanning ORFs (``end > length``, as GFF3 writes them).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from baking.common.errors import ConfigError, InputError
from baking.common.files import check_output
from baking.evaluate.load import pseudo_features
from baking.evaluate.metrics import Feature, Scores, exact_scores, stop_scores
from baking.formats.fasta import read_fasta
from baking.formats.gff3 import GFFFeature, read_gff3, write_gff3
from baking.orfs import Orf, OrfIndex, genetic_code
from trainer.inference.annotate import gene_lines, region_line
from trainer.inference.merge import Prediction

log = logging.getLogger(__name__)

DEFAULT_CANDIDATES: tuple[int, ...] = tuple(range(20, 301, 5))
"""Minimum ORF lengths (codons, start and stop included) ``choose_min_codons`` tries."""
WRAP_BP = 20_000
"""Bases past the origin searched for origin-spanning ORFs (longer than any bacterial gene)."""


@dataclass(frozen=True)
class OrfRuleSummary:
    """What one ``annotate_orf_rule`` run wrote."""

    sequences: int
    bp: int
    cds: int
    min_codons: int
    seconds: float


def _sequence_orfs(seq: str, min_codons: int, transl_table: int, circular: bool) -> list[Orf]:
    """Longest ORF per stop codon on both strands, with origin-spanning ones on a circular seq.

    A circular sequence is indexed as ``seq + seq[:k]``: an ORF that starts before the origin and
    stops after it appears once with ``lo < n < hi``. Each stop (taken modulo ``n``) keeps one ORF,
    the longest, so a gene near the origin is not also reported from its truncated copy; an ORF
    longer than the sequence itself (a frame running round a tiny circle) is dropped.
    """
    n = len(seq)
    if not circular or n < 6:
        return list(OrfIndex(seq, transl_table).iter_orfs(min_codons))
    k = min(n, WRAP_BP)
    best: dict[tuple[str, int], Orf] = {}
    for o in OrfIndex(seq + seq[:k], transl_table).iter_orfs(min_codons):
        if o.lo >= n or o.hi - o.lo > n:  # a copy from the first k bases; longer than the circle
            continue
        key = (o.strand, o.three_prime % n)
        old = best.get(key)
        if old is None or o.hi - o.lo > old.hi - old.lo:
            best[key] = o
    return sorted(best.values(), key=lambda o: (o.lo, o.hi, o.strand))


def orf_rule_predictions(
    seqs: Sequence[tuple[str, str]],
    min_codons: int,
    *,
    transl_table: int = 11,
    circular: Iterable[str] = (),
) -> list[Prediction]:
    """The control's CDS on ``(seqid, DNA)`` pairs, as annotate's ``Prediction`` (GFF coordinates).

    ``circular`` names circular sequence ids (``("all",)`` for every one), as annotate's option.
    """
    if min_codons < 2:
        raise ConfigError(f"min_codons must be >= 2 (a start and a stop), got {min_codons}")
    genetic_code(transl_table)
    circ = set(circular)
    out = []
    for seqid, seq in seqs:
        is_circ = "all" in circ or seqid in circ
        for o in _sequence_orfs(seq, min_codons, transl_table, is_circ):
            out.append(Prediction(seqid, o.lo + 1, o.hi, o.strand, "CDS", 0, 1.0, 0, frozenset()))
    return out


def orf_rule_features(
    seqs: Sequence[tuple[str, str]],
    min_codons: int,
    *,
    transl_table: int = 11,
    circular: Iterable[str] = (),
) -> tuple[list[GFFFeature], dict[str, tuple[int, int]]]:
    """GFF3 lines (region, gene, CDS) and sequence regions of the control, as annotate lays them."""
    circ = set(circular)
    preds = orf_rule_predictions(seqs, min_codons, transl_table=transl_table, circular=circ)
    by_seq: dict[str, list[Prediction]] = {}
    for p in preds:
        by_seq.setdefault(p.seqid, []).append(p)
    out: list[GFFFeature] = []
    regions: dict[str, tuple[int, int]] = {}
    n_gene = 0
    for seqid, seq in seqs:
        if not seq:
            continue
        regions[seqid] = (1, len(seq))
        out.append(region_line(seqid, len(seq), "all" in circ or seqid in circ))
        for p in by_seq.get(seqid, []):
            n_gene += 1
            out.extend(gene_lines(n_gene, p, "", score_type=None))
    return out, regions


def _read_fasta_checked(fasta: str | Path) -> list[tuple[str, str]]:
    path = Path(fasta)
    if not path.is_file():
        raise InputError(path, "no such file")
    seqs = list(read_fasta(path))
    if not seqs:
        raise InputError(path, "no sequences (expected FASTA)")
    return seqs


def annotate_orf_rule(
    fasta: str | Path,
    out: str | Path,
    min_codons: int,
    *,
    transl_table: int = 11,
    circular: Iterable[str] = (),
) -> OrfRuleSummary:
    """Annotate a genome FASTA with the ORF rule and write GFF3 atomically to ``out``.

    ``circular``: sequence ids to treat as circular, ``("all",)`` for every one. Raises
    ``InputError`` for a missing or empty FASTA, ``ConfigError`` for a bad N or table.
    """
    t0 = time.perf_counter()
    check_output(out, [fasta])  # before the work, and never over the genome it reads
    seqs = _read_fasta_checked(fasta)
    circ = tuple(circular)
    unknown = sorted(set(circ) - {"all"} - {sid for sid, _ in seqs})
    if unknown:
        raise ConfigError(f"circular names sequences not in {Path(fasta).name}: {unknown}")
    features, regions = orf_rule_features(
        seqs, min_codons, transl_table=transl_table, circular=circ
    )
    comments = [f"dna2gff orf_rule min_codons={min_codons} transl_table={transl_table}"]
    write_gff3(out, features, regions, comments)
    summary = OrfRuleSummary(
        sequences=len(seqs),
        bp=sum(len(s) for _, s in seqs),
        cds=sum(f.type == "CDS" for f in features),
        min_codons=min_codons,
        seconds=time.perf_counter() - t0,
    )
    log.info("orf_rule %s", summary)
    return summary


def _reference(gff: str | Path) -> tuple[list[Feature], set[str]]:
    """Non-pseudo reference CDS of a GFF3 (as ``evaluate`` scores them) and its circular ids."""
    doc = read_gff3(gff)
    skip = pseudo_features(doc.features)
    ref = [
        Feature(f.seqid, f.type, f.start, f.end, f.strand)
        for i, f in enumerate(doc.features)
        if f.type == "CDS" and i not in skip
    ]
    circular = {
        f.seqid
        for f in doc.features
        if f.type == "region" and (f.attr("Is_circular") or "").lower() == "true"
    }
    return ref, circular


def score_min_codons(
    pairs: Sequence[tuple[str | Path, str | Path]],
    candidates: Sequence[int] = DEFAULT_CANDIDATES,
    *,
    transl_table: int = 11,
) -> dict[int, tuple[Scores, Scores]]:
    """Pooled (stop, exact) CDS scores of the control for each N over ``(fasta, gff)`` pairs.

    Counts are summed over the genomes before the ratios, so a big genome weighs by its genes.
    Circularity comes from each reference's ``region`` lines (``Is_circular=true``).
    """
    if not pairs:
        raise ConfigError("no training genomes to choose min_codons on")
    if not candidates or min(candidates) < 2:
        raise ConfigError(f"candidates must be non-empty and >= 2, got {list(candidates)}")
    lowest = min(candidates)
    totals: dict[int, list[list[int]]] = {n: [[0] * 4, [0] * 4] for n in candidates}
    for fasta, gff in pairs:
        seqs = _read_fasta_checked(fasta)
        ref, circular = _reference(gff)
        preds = orf_rule_predictions(seqs, lowest, transl_table=transl_table, circular=circular)
        for n in candidates:
            keep = [
                Feature(p.seqid, "CDS", p.start, p.end, p.strand)
                for p in preds
                if (p.end - p.start + 1) // 3 >= n
            ]
            for level, fn in enumerate((stop_scores, exact_scores)):
                s = fn(ref, keep)
                acc = totals[n][level]
                for j, v in enumerate((s.tp_ref, s.n_ref, s.tp_pred, s.n_pred)):
                    acc[j] += v
    return {n: (Scores(*t[0]), Scores(*t[1])) for n, t in totals.items()}


def choose_min_codons(
    train_pairs: Sequence[tuple[str | Path, str | Path]],
    candidates: Sequence[int] = DEFAULT_CANDIDATES,
    *,
    transl_table: int = 11,
) -> int:
    """The minimum ORF length (codons, start and stop included) with the best pooled stop F1.

    ``train_pairs`` are ``(fasta, gff)`` paths of training genomes (plain or gzip); ties go to the
    smaller N. Use the result on held-out genomes only, so the control is as honest as the model.
    """
    scores = score_min_codons(train_pairs, candidates, transl_table=transl_table)
    best = max(sorted(scores), key=lambda n: (scores[n][0].f1, -n))
    log.info(
        "orf_rule choose_min_codons n=%d stop_f1=%.4f exact_f1=%.4f",
        best,
        scores[best][0].f1,
        scores[best][1].f1,
    )
    return best
