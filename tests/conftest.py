"""Shared fixtures: where ../shared lives, and a skip with a reason when it does not."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from trainer.fixtures import SHARED_DIR, SHARED_DNABERT2, SHARED_GENOME_PAIRS, SHARED_GENOMES

REPO = Path(__file__).resolve().parents[1]
SHARED = SHARED_DIR
GENOMES = SHARED_GENOMES
DNABERT2_DIR = SHARED_DNABERT2
GENOME_PAIRS = SHARED_GENOME_PAIRS


@pytest.fixture(autouse=True)
def _root_logging_of_this_test() -> Iterator[None]:
    """A command's ``main`` called in-process points the root logger at the stderr of its test
    (``setup_logging``); capsys closes that stream when the test ends, and the next test's first
    log line would then print a "Logging error" traceback into its own captured stderr. Each test
    gets back the root handlers it started with. A library logger made during a test (DeepSpeed's,
    on its first import) keeps that test's stdout: it is pointed back at the session's stderr."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        if h not in handlers:
            root.removeHandler(h)
            if isinstance(h, logging.FileHandler):
                h.close()
    for h in handlers:
        if h not in root.handlers:
            root.addHandler(h)
    root.setLevel(level)
    for logger in [root, *logging.root.manager.loggerDict.values()]:
        for h in getattr(logger, "handlers", ()):
            stream = getattr(h, "stream", None)
            if isinstance(h, logging.StreamHandler) and getattr(stream, "closed", False):
                h.stream = sys.stderr  # setStream would flush the closed one


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
