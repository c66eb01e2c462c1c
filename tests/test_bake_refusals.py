"""Inputs that baked or scored without a word, or were refused with a misleading reason (issue 19,
cases 10 and 11): a genome without usable annotation, compressed or BOM-prefixed files, a FIFO,
a seqid version mismatch, ``evaluate`` with types nothing has."""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import subprocess
import sys
from pathlib import Path

import pytest
from bake_helpers import REPO, output_files, run_bake

from baking.formats.fasta import read_fasta_dict
from baking.shards.manifest import load_manifest
from trainer.fixtures import SHARED_GENOME_PAIRS

PHAGE_ID = "NC_000902.1"


@pytest.fixture
def phage(tmp_path: Path) -> tuple[Path, Path, str, str]:
    """The real phage, unpacked: (fasta, gff, its DNA, its GFF3 text)."""
    fna, gff = SHARED_GENOME_PAIRS["phage"]
    if not fna.exists():
        pytest.skip(f"shared data absent: {fna}")
    dna = read_fasta_dict(fna)[PHAGE_ID]
    text = gzip.decompress(gff.read_bytes()).decode()
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "phage.fna").write_text(f">{PHAGE_ID}\n{dna}\n")
    (folder / "phage.gff").write_text(text)
    return folder / "phage.fna", folder / "phage.gff", dna, text


def _error(run: subprocess.CompletedProcess) -> str:
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr
    errors = [ln for ln in run.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, run.stderr
    return errors[0]


def _bake(fna: Path, gff: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return run_bake(fna, gff, out, "--window", "4000", "--no_progress", *extra)


# ------------------------------------------------------------------ case 10: unannotated genomes


def test_types_typo_names_the_type_the_file_has(tmp_path: Path, phage) -> None:
    fna, gff, _, _ = phage
    err = _error(_bake(fna, gff, tmp_path / "out", "--types", "CDs"))
    assert err == (
        f"error: {gff}: --types has 'CDs' but the file has 'CDS' (83 features); "
        "feature types are case-sensitive"
    )
    assert output_files(tmp_path / "out") == []


@pytest.mark.parametrize("keep", ["gene", "none"])
def test_genome_without_a_feature_of_the_types_is_refused(tmp_path: Path, phage, keep) -> None:
    """A GFF3 of only ``gene`` lines (or of no feature at all) would bake every window as
    gene-free; ``--unannotated keep`` is the explicit way to want that."""
    fna, gff, _, text = phage
    head = [ln for ln in text.splitlines() if ln.startswith("#")]
    genes = [ln for ln in text.splitlines() if "\tgene\t" in ln] if keep == "gene" else []
    gff.write_text("\n".join(head + genes) + "\n")
    out = tmp_path / "out"
    err = _error(_bake(fna, gff, out))
    found = f"it has gene {len(genes)}" if genes else "it has no features"
    assert err.startswith(f"error: {gff}: no feature of --types CDS,tRNA,rRNA,") and found in err
    assert output_files(out) == []
    run = _bake(fna, gff, out, "--unannotated", "keep")
    assert run.returncode == 0, run.stderr
    assert "have no feature of --types (pseudogenes aside) and are baked as gene-free" in run.stderr
    assert load_manifest(out).genomes["phage"]["gene_free_sequences"] == [PHAGE_ID]


def test_fasta_record_the_gff_never_mentions(tmp_path: Path, phage) -> None:
    """A plasmid record holding a copy of a real gene, absent from the GFF3: refused by default
    (it would teach that gene as 'no gene here'), left out with ``skip``, baked with ``keep``."""
    fna, gff, dna, _ = phage
    fna.write_text(fna.read_text() + f">plasmid\n{dna[10000:22000]}\n")
    out = tmp_path / "out"
    err = _error(_bake(fna, gff, out))
    assert err == (
        f"error: {gff}: never mentions 1 of the FASTA's 2 sequences (plasmid (12000 bp)); their "
        "windows would be taught as gene-free: --unannotated skip leaves them out, keep bakes "
        "them gene-free"
    )
    assert output_files(out) == []
    run = _bake(fna, gff, out, "--unannotated", "skip")
    assert run.returncode == 0, run.stderr
    g = load_manifest(out).genomes["phage"]
    assert g["skipped_sequences"] == ["plasmid"] and g["bp"] == len(dna)
    assert [s["seqid"] for s in g["sequences"]] == [PHAGE_ID]
    run = _bake(fna, gff, out, "--unannotated", "keep")
    assert run.returncode == 0, run.stderr
    g = load_manifest(out).genomes["phage"]
    assert g["gene_free_sequences"] == ["plasmid"] and g["bp"] == len(dna) + 12000


def test_a_record_the_gff_declares_without_genes_bakes_with_a_warning(tmp_path, phage) -> None:
    """Draft assemblies' short contigs (Leptospira's 3 region-only contigs in ../shared): the
    GFF3 says they exist and have no gene, so they bake, with a warning that counts them."""
    fna, gff, dna, text = phage
    fna.write_text(fna.read_text() + f">contig2\n{dna[:700]}\n")
    region = "contig2\tRefSeq\tregion\t1\t700\t.\t+\t.\tID=contig2:1..700"
    gff.write_text(
        text.replace(
            "##sequence-region", "##sequence-region contig2 1 700\n" + "##sequence-region", 1
        )
        + region
        + "\n"
    )
    run = _bake(fna, gff, tmp_path / "out")
    assert run.returncode == 0, run.stderr
    assert "1 of 2 sequences (700 bp) have no feature of --types (pseudogenes aside)" in run.stderr
    assert load_manifest(tmp_path / "out").genomes["phage"]["gene_free_sequences"] == ["contig2"]


# ------------------------------------------------------------ case 11: misleading input refusals


@pytest.mark.parametrize("kind", ["bz2", "xz", "zstd", "zip"])
def test_other_compressions_are_named(tmp_path: Path, phage, kind: str) -> None:
    fna, gff, _, _ = phage
    raw = fna.read_bytes()
    data = {
        "bz2": lambda: bz2.compress(raw),
        "xz": lambda: lzma.compress(raw),
        "zstd": lambda: b"\x28\xb5\x2f\xfd" + os.urandom(64),  # a zstd frame's magic
        "zip": lambda: b"PK\x03\x04" + os.urandom(64),
    }[kind]()
    fna.write_bytes(data)
    what = {"zip": "a zip archive"}.get(kind, f"{kind}-compressed")
    verb = "unpack" if kind == "zip" else "decompress"
    err = _error(_bake(fna, gff, tmp_path / "out"))
    assert err == (
        f"error: {fna}: {what}, not FASTA: {verb} it (only plain text and gzip are read)"
    )
    gff.write_bytes(bz2.compress(gff.read_bytes()))
    from baking.common.errors import InputError
    from baking.formats.gff3 import read_gff3

    with pytest.raises(InputError, match="bz2-compressed, not GFF3"):
        read_gff3(gff)


def test_byte_order_marks_are_read(tmp_path: Path, phage) -> None:
    """A UTF-8 BOM (Windows editors) before '>' or '##gff-version' is read, not refused."""
    fna, gff, dna, _ = phage
    fna.write_bytes(b"\xef\xbb\xbf" + fna.read_bytes())
    gff.write_bytes(b"\xef\xbb\xbf" + gff.read_bytes())
    out = tmp_path / "out"
    run = _bake(fna, gff, out)
    assert run.returncode == 0, run.stderr
    m = load_manifest(out)
    assert m.totals["features"] == {"CDS": 83, "tRNA": 3} and m.totals["bp"] == len(dna)
    gz = tmp_path / "in" / "bom.fna.gz"
    gz.write_bytes(gzip.compress(fna.read_bytes()))
    assert read_fasta_dict(gz) == {PHAGE_ID: dna}


def test_fifo_is_not_a_regular_file(tmp_path: Path, phage) -> None:
    """A FIFO used to get "no such file" (and opening it would block the reader forever)."""
    fna, gff, _, _ = phage
    fifo = tmp_path / "in" / "pipe.fna"
    os.mkfifo(fifo)
    err = _error(_bake(fifo, gff, tmp_path / "out"))
    assert err == f"error: {fifo}: not a regular file (a FIFO)"
    err = _error(_bake(fna, tmp_path / "in", tmp_path / "out"))
    assert err == f"error: {tmp_path / 'in'}: not a regular file (a directory)"
    err = _error(run_bake("--genomes", fifo, tmp_path / "out"))
    assert err == f"error: {fifo}: not a regular file (a FIFO)"


def test_seqid_version_mismatch_names_what_the_fasta_has(tmp_path: Path, phage) -> None:
    fna, gff, dna, text = phage
    gff.write_text(text.replace(PHAGE_ID, "NC_000902.2"))
    err = _error(_bake(fna, gff, tmp_path / "out"))
    assert (
        "seqid 'NC_000902.2' is not in the FASTA file (the FASTA has 'NC_000902.1': another " in err
    )
    fna.write_text("".join(f">ctg{i}\n{dna[i * 100 : i * 100 + 100]}\n" for i in range(7)))
    err = _error(_bake(fna, gff, tmp_path / "out"))
    assert err.endswith(
        "seqid 'NC_000902.2' is not in the FASTA file (the FASTA has 'ctg0', 'ctg1', 'ctg2', "
        "... (7 in all))"
    )


# ------------------------------------------------------------------- case 11: evaluate's refusals


def _evaluate(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "launch" / "evaluate.py"), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )


def test_evaluate_refuses_types_nothing_has(tmp_path: Path, phage) -> None:
    """``--types BOGUS`` and a reference without CDS printed rows of 0.000 and exit 0."""
    _, gff, _, text = phage
    ok = _evaluate(gff, gff)
    assert ok.returncode == 0 and "rRNA" in ok.stdout  # default types may be absent: a row
    err = _error(_evaluate(gff, gff, "--types", "BOGUS"))
    assert err.startswith(
        f"error: {gff}: no BOGUS feature to score against (it has gene 86, CDS 83"
    )
    err = _error(_evaluate(gff, gff, "--types", "CDS,CDs"))
    assert err.startswith("error: --types CDs: in neither the reference nor the prediction")
    assert "'CDS'?" in err
    genes_only = tmp_path / "genes.gff3"
    genes_only.write_text(
        "".join(
            ln + "\n" for ln in text.splitlines() if "\tCDS\t" not in ln and "\ttRNA\t" not in ln
        )
    )
    err = _error(_evaluate(genes_only, gff))
    assert err.startswith(f"error: {genes_only}: no CDS, tRNA, rRNA feature to score against")
