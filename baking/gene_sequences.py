"""Proteins (``.faa``) and gene sequences (``.ffn``) of an annotation, as gene finders write them.

Input is what annotate writes: GFF3 features with ``gene`` parents and their child features
(``CDS``, ``tRNA``, ...). Each child becomes one ``.ffn`` record (its bases on its strand) and each
CDS one ``.faa`` record (``baking.translate.cds_protein`` under the genome's genetic code). The
header's first word is the child's GFF3 ``ID``, so a protein joins back to its line:

    >cds12 NC_000913.3:337..2799(+) CDS score=0.9731

A feature written ``partial=true`` is cut by a linear sequence's end; a CDS whose 5' end lies on
that end keeps its first codon's own amino acid (Prodigal's rule for an edge gene).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from baking.formats.gff3 import GFFFeature
from baking.orfs import GeneticCode
from baking.translate import cds_protein, feature_dna


@dataclass(frozen=True)
class GeneRecords:
    """The FASTA records of one annotation: proteins (CDS only) and every gene's bases."""

    proteins: list[tuple[str, str]]
    genes: list[tuple[str, str]]


def _header(f: GFFFeature, name: str) -> str:
    score = "" if f.score is None else f" score={f.score:g}"
    return f"{name} {f.seqid}:{f.start}..{f.end}({f.strand}) {f.type}{score}"


def _five_prime_cut(f: GFFFeature, length: int) -> bool:
    if f.attr("partial") != "true":
        return False
    return f.start == 1 if f.strand == "+" else f.end == length


def gene_records(
    features: Iterable[GFFFeature], seqs: Mapping[str, str], code: GeneticCode
) -> GeneRecords:
    """Records of every child feature (a feature with a ``Parent``) of ``features``.

    ``seqs`` maps seqid to the sequence the features lie on (a feature on a sequence not in it is
    a ``KeyError``: the caller annotated that sequence, so it is a bug).
    """
    proteins: list[tuple[str, str]] = []
    genes: list[tuple[str, str]] = []
    for f in features:
        if f.attr("Parent") is None:
            continue
        seq = seqs[f.seqid]
        name = f.attr("ID") or f"{f.type}_{f.seqid}_{f.start}"
        genes.append((_header(f, name), feature_dna(seq, f.start, f.end, f.strand)))
        if f.type == "CDS":
            protein = cds_protein(
                seq,
                f.start,
                f.end,
                f.strand,
                code,
                phase=f.phase or 0,
                partial_five_prime=_five_prime_cut(f, len(seq)),
            )
            proteins.append((_header(f, name), protein))
    return GeneRecords(proteins, genes)
