"""Shared fixtures: where ../shared lives, and a skip with a reason when it does not."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainer.fixtures import SHARED_DIR, SHARED_DNABERT2, SHARED_GENOME_PAIRS, SHARED_GENOMES

REPO = Path(__file__).resolve().parents[1]
SHARED = SHARED_DIR
GENOMES = SHARED_GENOMES
DNABERT2_DIR = SHARED_DNABERT2
GENOME_PAIRS = SHARED_GENOME_PAIRS


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
