#!/usr/bin/env python3
"""Build the dna2gff encoder-decoder from DNABERT-2 (or write a random DNABERT-2 checkpoint); see `--help`."""

import sys
from pathlib import Path

sys.path.insert(
    0, str(Path(__file__).resolve().parents[1])
)  # run from a checkout without installing
from trainer.cli.init_model import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
