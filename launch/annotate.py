#!/usr/bin/env python3
"""Annotate a genome FASTA with a dna2gff model, writing GFF3; see `--help`."""

import sys
from pathlib import Path

sys.path.insert(
    0, str(Path(__file__).resolve().parents[1])
)  # run from a checkout without installing
from trainer.cli.annotate import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
