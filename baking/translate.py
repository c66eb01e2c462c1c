"""A gene's DNA and its protein, read as a gene finder writes them (``--faa``, ``--ffn``).

Why its own module: annotate's protein and gene FASTA files and the tests that compare them with
Prodigal's must read a feature the same way. The codon tables are ``baking.orfs``'
(``GeneticCode.amino_acids``) and the reverse complement is ``baking.formats.fasta``'s: one of each
in the project.

Prodigal's conventions, matched here (checked against pyrodigal's ``Gene.translate()`` in
``tests/test_gene_sequences.py``): the first codon of a gene with a real start is written ``M``
whatever the start codon (GTG, TTG); the stop codon of a complete gene is written ``*``; a codon
holding a non-ACGT letter is ``X``. A gene cut by a linear sequence's end (``partial=true``) keeps
its first codon's own amino acid and, when its 3' end is cut, has no ``*``.
"""

from __future__ import annotations

from baking.formats.fasta import reverse_complement
from baking.orfs import GeneticCode


def feature_dna(seq: str, start: int, end: int, strand: str) -> str:
    """The bases of GFF feature ``start..end`` (1-based, closed) read on its strand.

    On a circular sequence a feature across the origin has ``end > len(seq)`` (as annotate writes
    it); its bases continue from the sequence's start.
    """
    n = len(seq)
    if start < 1 or end < start or end - start + 1 > n:
        raise ValueError(f"feature {start}..{end} does not fit a {n} bp sequence")
    dna = seq[start - 1 : end] if end <= n else seq[start - 1 :] + seq[: end - n]
    return dna if strand == "+" else reverse_complement(dna)


def translate(dna: str, code: GeneticCode, *, start_as_met: bool = True) -> str:
    """The protein of ``dna`` (read from its first base, a trailing partial codon ignored).

    ``start_as_met``: a first codon that is one of the code's start codons is ``M``, as a ribosome
    reads an initiating GTG or TTG and as Prodigal writes it.
    """
    aa = [code.amino_acid(dna[i : i + 3]) for i in range(0, len(dna) - 2, 3)]
    if aa and start_as_met and dna[:3] in code.starts:
        aa[0] = "M"
    return "".join(aa)


def cds_protein(
    seq: str,
    start: int,
    end: int,
    strand: str,
    code: GeneticCode,
    *,
    phase: int = 0,
    partial_five_prime: bool = False,
) -> str:
    """The protein of a CDS feature: its bases from ``phase`` on, the first codon ``M`` unless
    its 5' end is cut (``partial_five_prime``), the stop codon ``*``."""
    dna = feature_dna(seq, start, end, strand)[phase:]
    return translate(dna, code, start_as_met=not partial_five_prime)
