"""Shared fixtures: where ../shared lives, and a skip with a reason when it does not."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DNA2GFF_SHARED", REPO.parent / "shared"))
GENOMES = SHARED / "data" / "genomes"
DNABERT2_DIR = SHARED / "data" / "dnabert2" / "DNABERT-2-117M"

GENOME_PAIRS = {
    "C.crescentus": (
        GENOMES / "C.crescentus" / "GCF_000022005.1_ASM2200v1_genomic.fna.gz",
        GENOMES / "C.crescentus" / "GCF_000022005.1_ASM2200v1_genomic.gff.gz",
    ),
    "E.coli": (
        GENOMES / "E.coli" / "GCF_000005845.2_ASM584v2_genomic.fna.gz",
        GENOMES / "E.coli" / "GCF_000005845.2_ASM584v2_genomic.gff.gz",
    ),
    "phage": (
        GENOMES / "phage_VT2-Sakai" / "NC_000902.1.fna.gz",
        GENOMES / "phage_VT2-Sakai" / "NC_000902.1.gff.gz",
    ),
}


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"shared data absent: {path} (set DNA2GFF_SHARED or clone beside ../shared)")
    return path


@pytest.fixture
def genome_pair():
    """``genome_pair("phage")`` -> (fasta, gff) paths, skipping when ../shared is absent."""

    def get(name: str) -> tuple[Path, Path]:
        fna, gff = GENOME_PAIRS[name]
        return _need(fna), _need(gff)

    return get


@pytest.fixture
def dnabert2_tokenizer_dir() -> Path:
    """The real DNABERT-2-117M tokenizer/config folder, skipping when ../shared is absent."""
    return _need(DNABERT2_DIR / "tokenizer.json").parent
