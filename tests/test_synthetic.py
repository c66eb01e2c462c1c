"""The synthetic genome generator: real ORFs, NCBI shapes, reproducibility, and its command."""

from __future__ import annotations

import gzip
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pyfastx
import pytest

from baking.common.errors import ConfigError
from baking.formats.fasta import read_fasta, reverse_complement
from baking.formats.gff3 import read_gff3
from baking.synthetic import (
    RBS_MOTIFS,
    SyntheticConfig,
    feature_sequence,
    generate_genome,
    iter_cds,
    orf_problems,
    write_genome,
)

REPO = Path(__file__).resolve().parents[1]
SMALL = {"chromosome_length": 30_000, "plasmid_lengths": (5_000,)}


@pytest.fixture(scope="module")
def genome():
    return generate_genome(SyntheticConfig(seed=3, **SMALL))


@pytest.fixture(scope="module")
def big_genome():
    return generate_genome(SyntheticConfig(seed=11))


@pytest.mark.parametrize("seed,gc", [(1, 0.5), (2, 0.35), (7, 0.65)])
def test_every_cds_is_a_valid_orf_on_both_strands(seed: int, gc: float) -> None:
    g = generate_genome(SyntheticConfig(seed=seed, gc=gc, **SMALL))
    strands = Counter()
    for f, sense in iter_cds(g):
        assert orf_problems(sense) == [], (f, orf_problems(sense))
        assert (f.end - f.start + 1) % 3 == 0
        strands[f.strand] += 1
    assert strands["+"] >= 3 and strands["-"] >= 3, strands


def test_genes_overlap_and_one_spans_the_origin(genome) -> None:
    chrom = genome.sequences[0]
    cds = sorted(
        (f for f in genome.features_of("CDS") if f.seqid == chrom.seqid), key=lambda f: f.start
    )
    overlaps = [(a, b) for a, b in zip(cds, cds[1:]) if b.start <= a.end]
    assert overlaps, "no overlapping genes"
    spanning = [f for f in genome.features if f.end > len(chrom.seq)]
    assert {f.type for f in spanning} == {"gene", "CDS"}
    f = next(f for f in spanning if f.type == "CDS")
    assert f.start <= len(chrom.seq) < f.end
    # the wrapped ORF is read across the origin and is still valid
    assert orf_problems(feature_sequence(chrom.seq, f.start, f.end, f.strand)) == []


def test_rna_genes_and_parents_follow_ncbi(genome) -> None:
    types = Counter(f.type for f in genome.features)
    assert types["tRNA"] == 4 and types["rRNA"] == 3 and types["region"] == 2
    ids = {f.attr("ID"): f for f in genome.features}
    assert len(ids) == len(genome.features), "IDs are not unique"
    for f in genome.features:
        if f.type in ("CDS", "tRNA", "rRNA"):
            parent = ids[f.attr("Parent")]
            assert parent.type == "gene"
            assert (parent.start, parent.end, parent.strand) == (f.start, f.end, f.strand)
            assert parent.attr("locus_tag") == f.attr("locus_tag")
            biotype = "protein_coding" if f.type == "CDS" else f.type
            assert parent.attr("gene_biotype") == biotype
    trna = feature_sequence(genome.sequences[0].seq, *_coords(genome.features_of("tRNA")[0]))
    assert trna.endswith("CCA") and 70 <= len(trna) <= 80
    products = {f.attr("product") for f in genome.features_of("rRNA")}
    assert products == {"16S ribosomal RNA", "23S ribosomal RNA", "5S ribosomal RNA"}


def _coords(f):
    return f.start, f.end, f.strand


def test_ribosome_binding_motif_sits_upstream_of_most_starts(genome) -> None:
    hits = total = 0
    for f, _ in iter_cds(genome):
        seq = genome.sequence(f.seqid).seq
        if f.strand == "+":
            up = seq[max(0, f.start - 1 - 16) : f.start - 1 - 4]
        else:
            up = reverse_complement(seq[f.end + 4 : f.end + 16])
        total += 1
        hits += any(m in up for m in RBS_MOTIFS)
    assert hits / total >= 0.75, (hits, total)


def test_same_seed_gives_identical_bytes_and_other_seed_differs(tmp_path: Path) -> None:
    cfg = SyntheticConfig(seed=5, **SMALL)
    a = write_genome(generate_genome(cfg), tmp_path / "a", "g")
    b = write_genome(generate_genome(cfg), tmp_path / "b", "g")
    c = write_genome(generate_genome(SyntheticConfig(seed=6, **SMALL)), tmp_path / "c", "g")
    for x, y, z in zip(a, b, c):
        assert x.read_bytes() == y.read_bytes()
        assert x.read_bytes() != z.read_bytes()
    assert not list((tmp_path / "a").glob(".*tmp")), "temporary file left behind"


def test_files_read_back_exactly_with_the_project_readers(tmp_path: Path, genome) -> None:
    fna, gff = write_genome(genome, tmp_path, "syn")
    doc = read_gff3(gff)
    assert [replace(f, line=0) for f in doc.features] == genome.features
    assert doc.sequence_regions == {s.seqid: (1, len(s.seq)) for s in genome.sequences}
    assert dict(read_fasta(fna)) == {s.seqid: s.seq for s in genome.sequences}
    assert all(f.phase == 0 for f in genome.features_of("CDS"))


def test_files_have_ncbi_shape_and_agree_with_each_other(tmp_path: Path, genome) -> None:
    fna, gff = write_genome(genome, tmp_path, "syn")
    assert fna.name == "syn.fna.gz" and gff.name == "syn.gff.gz"
    lines = gzip.decompress(gff.read_bytes()).decode().splitlines()
    assert lines[0] == "##gff-version 3"
    regions = {
        ln.split()[1]: int(ln.split()[3]) for ln in lines if ln.startswith("##sequence-region")
    }
    fa = pyfastx.Fasta(str(fna), build_index=False)
    lengths = {name: len(seq) for name, seq in fa}
    assert regions == lengths and len(lengths) == 2
    region_lines = [ln.split("\t") for ln in lines if "\tregion\t" in ln]
    assert len(region_lines) == 2
    assert all("Is_circular=true" in cols[8] for cols in region_lines)
    assert {c[8].split("genome=")[1].split(";")[0] for c in region_lines} == {
        "chromosome",
        "plasmid",
    }
    for ln in lines:
        if not ln.startswith("#"):
            assert len(ln.split("\t")) == 9


@pytest.mark.skipif(shutil.which("gt") is None, reason="GenomeTools `gt` not installed")
def test_genometools_accepts_the_gff(tmp_path: Path, genome) -> None:
    _, gff = write_genome(genome, tmp_path, "syn")
    r = subprocess.run(["gt", "gff3validator", str(gff)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_prodigal_finds_the_genes(big_genome) -> None:
    """The ORFs look like genes to a real gene finder: it recovers nearly every stop codon."""
    pyrodigal = pytest.importorskip("pyrodigal")
    genome = big_genome
    chrom = genome.sequences[0]
    L = len(chrom.seq)
    finder = pyrodigal.GeneFinder()
    finder.train(chrom.seq)
    pred = {(g.end, "+") if g.strand == 1 else (g.begin, "-") for g in finder.find_genes(chrom.seq)}
    ref = set()
    for f in genome.features_of("CDS"):
        if f.seqid == chrom.seqid:
            ref.add(((f.end - 1) % L + 1, "+") if f.strand == "+" else (f.start, "-"))
    assert len(ref & pred) / len(ref) >= 0.9, (len(ref & pred), len(ref))


def test_overlaps_come_same_strand_and_tail_to_tail(big_genome) -> None:
    chrom = big_genome.sequences[0]
    cds = sorted(
        (f for f in big_genome.features_of("CDS") if f.seqid == chrom.seqid), key=lambda f: f.start
    )
    kinds = {(a.strand, b.strand) for a, b in zip(cds, cds[1:]) if b.start <= a.end}
    assert ("+", "-") in kinds and (("+", "+") in kinds or ("-", "-") in kinds), kinds
    assert ("-", "+") not in kinds, "head-to-head overlaps are not made"


def test_chromosome_without_plasmid() -> None:
    g = generate_genome(SyntheticConfig(seed=9, chromosome_length=20_000, plasmid_lengths=()))
    assert len(g.sequences) == 1 and len(g.features_of("CDS")) > 10


@pytest.mark.parametrize(
    "field,value",
    [
        ("gc", 0.95),
        ("overlap_rate", 1.5),
        ("chromosome_length", 500),
        ("mean_gap", 3),
        ("min_protein_codons", 5),
        ("plasmid_lengths", (10,)),
        ("seed", -1),
        ("rrna_operons", 20),
    ],
)
def test_bad_config_names_the_field(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=field):
        SyntheticConfig(**{field: value})  # type: ignore[arg-type]


def test_orf_checks_reject_broken_orfs() -> None:
    good = "ATG" + "GCT" * 5 + "TAA"
    assert orf_problems(good) == []
    assert any("in-frame stop" in p for p in orf_problems("ATG" + "TGA" + "GCT" + "TAA"))
    assert any("start codon" in p for p in orf_problems("CCC" + "GCT" + "TAA"))
    assert any("multiple of 3" in p for p in orf_problems(good + "A"))
    assert feature_sequence("AACCGGTT", 7, 10, "+") == "TTAA"  # wraps the origin
    assert feature_sequence("AACCGGTT", 1, 2, "-") == "TT"
    with pytest.raises(ValueError):
        feature_sequence("ACGT", 3, 2, "+")


def test_cli_writes_genomes_and_rejects_bad_options(tmp_path: Path) -> None:
    script = str(REPO / "launch" / "make_synthetic.py")
    r = subprocess.run(
        [
            sys.executable,
            script,
            str(tmp_path),
            "--count",
            "2",
            "--seed",
            "4",
            "--length",
            "20000",
            "--plasmid",
            "0",
            "--trna",
            "1",
            "--rrna_operons",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "synthetic_4.fna.gz",
        "synthetic_4.gff.gz",
        "synthetic_5.fna.gz",
        "synthetic_5.gff.gz",
    ]
    r = subprocess.run(
        [sys.executable, script, str(tmp_path / "bad"), "--gc", "0.99"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and "error: gc=0.99" in r.stderr
    assert not (tmp_path / "bad").exists() or not list((tmp_path / "bad").iterdir())
