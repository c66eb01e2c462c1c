"""Proteins and gene sequences as gene finders write them: the translation matches pyrodigal's
``Gene.translate()`` on real genomes (code 11, and code 4 where TGA is Trp), and the records
join back to their GFF3 lines."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from baking.formats.fasta import read_fasta
from baking.formats.fasta_out import format_fasta, write_fasta
from baking.formats.gff3 import GFFFeature
from baking.gene_sequences import gene_records
from baking.orfs import GENETIC_CODES, genetic_code
from baking.translate import cds_protein, feature_dna, translate
from trainer.fixtures import SHARED_GENOMES

MYCOPLASMA = (
    SHARED_GENOMES / "Mycoplasma_genitalium_G37" / "GCA_000027325.1_ASM2732v1_genomic.fna.gz"
)


def test_every_table_stops_exactly_at_its_stop_codons() -> None:
    """The amino-acid string and the ORF layer's stop codons are one table, not two."""
    for code in GENETIC_CODES.values():
        stars = {
            a + b + c
            for a in "TCAG"
            for b in "TCAG"
            for c in "TCAG"
            if code.amino_acid(a + b + c) == "*"
        }
        assert stars == set(code.stops), code.table
        assert all(code.amino_acid(s) != "*" for s in code.starts)
    assert genetic_code(4).amino_acid("TGA") == "W"
    assert genetic_code(25).amino_acid("TGA") == "G"
    assert genetic_code(11).amino_acid("TGA") == "*"
    assert genetic_code(11).amino_acid("ANG") == "X"


def test_translate_reads_a_start_as_met_and_keeps_the_stop() -> None:
    code = genetic_code(11)
    assert translate("GTGAAATGA", code) == "MK*"
    assert translate("GTGAAATGA", code, start_as_met=False) == "VK*"
    assert translate("CCCAAATGAAA", code) == "PK*"  # no start codon: read as it is
    assert translate("ATGTGAAAATAA", genetic_code(4)) == "MWK*"


def test_feature_dna_wraps_the_origin_and_reverse_complements() -> None:
    seq = "ATGAAACCCGGGTTT"
    assert feature_dna(seq, 1, 3, "+") == "ATG"
    assert feature_dna(seq, 13, 18, "+") == "TTTATG"  # across the origin of a circular seq
    assert feature_dna(seq, 13, 15, "-") == "AAA"
    with pytest.raises(ValueError):
        feature_dna(seq, 5, 40, "+")


def _pyrodigal_genes(seq: str, table: int, train: bool):
    pyrodigal = pytest.importorskip("pyrodigal")
    finder = pyrodigal.GeneFinder(meta=not train)
    if train:
        finder.train(seq.encode(), translation_table=table)
    return finder.find_genes(seq.encode())


def _check_against_pyrodigal(seq: str, table: int, train: bool) -> list[str]:
    code = genetic_code(table)
    genes = _pyrodigal_genes(seq, table, train)
    proteins = []
    for g in genes:
        strand = "+" if g.strand == 1 else "-"
        five_cut = g.partial_begin if strand == "+" else g.partial_end
        ours = cds_protein(seq, g.begin, g.end, strand, code, partial_five_prime=five_cut)
        assert ours == g.translate(), (g.begin, g.end, strand, g.start_type)
        proteins.append(ours)
    assert len(proteins) > 50
    return proteins


@pytest.mark.shared
def test_proteins_equal_pyrodigal_on_the_phage(genome_pair) -> None:
    fna, _ = genome_pair("phage")
    ((_, seq),) = list(read_fasta(fna))
    proteins = _check_against_pyrodigal(seq, 11, train=False)
    assert all(p[0] == "M" and p.endswith("*") and "*" not in p[:-1] for p in proteins)


@pytest.mark.shared
def test_proteins_equal_pyrodigal_under_genetic_code_4() -> None:
    """M. genitalium (code 4): TGA inside a gene is Trp, never a stop."""
    if not MYCOPLASMA.exists():
        pytest.skip(f"shared data absent: {MYCOPLASMA}")
    ((_, seq),) = list(read_fasta(MYCOPLASMA))
    proteins = _check_against_pyrodigal(seq, 4, train=True)
    assert all("*" not in p[:-1] for p in proteins)
    # TGA is common in Mycoplasma genes: the W it reads as must appear
    assert sum(p.count("W") for p in proteins) > 1000


@pytest.mark.shared
def test_partial_genes_at_a_linear_edge_match_pyrodigal(genome_pair) -> None:
    """A gene cut by the sequence's end: no M for a cut 5' end, no * for a cut 3' end."""
    fna, _ = genome_pair("phage")
    ((_, seq),) = list(read_fasta(fna))
    piece = seq[10_000:40_000]
    genes = [g for g in _pyrodigal_genes(piece, 11, False) if g.partial_begin or g.partial_end]
    assert genes
    for g in genes:
        strand = "+" if g.strand == 1 else "-"
        five_cut = g.partial_begin if strand == "+" else g.partial_end
        ours = cds_protein(
            piece, g.begin, g.end, strand, genetic_code(11), partial_five_prime=five_cut
        )
        assert ours == g.translate()


def test_gene_records_join_their_gff3_lines(tmp_path: Path) -> None:
    seq = "CCATGAAATTTTAGCC" + "TTACAT" + "GG"
    feats = [
        GFFFeature("s", "dna2gff", "gene", 3, 14, 0.5, "+", None, (("ID", "gene1"),)),
        GFFFeature(
            "s", "dna2gff", "CDS", 3, 14, 0.5, "+", 0, (("ID", "cds1"), ("Parent", "gene1"))
        ),
        GFFFeature("s", "dna2gff", "gene", 17, 22, 0.25, "-", None, (("ID", "gene2"),)),
        GFFFeature(
            "s", "dna2gff", "CDS", 17, 22, 0.25, "-", 0, (("ID", "cds2"), ("Parent", "gene2"))
        ),
    ]
    rec = gene_records(feats, {"s": seq}, genetic_code(11))
    assert rec.proteins == [
        ("cds1 s:3..14(+) CDS score=0.5", "MKF*"),
        ("cds2 s:17..22(-) CDS score=0.25", "M*"),
    ]
    assert [g for _, g in rec.genes] == ["ATGAAATTTTAG", "ATGTAA"]
    out = write_fasta(tmp_path / "p.faa.gz", rec.proteins)
    assert gzip.decompress(out.read_bytes()).decode() == format_fasta(rec.proteins)
    assert format_fasta([("x", "A" * 61)]) == ">x\n" + "A" * 60 + "\nA\n"
