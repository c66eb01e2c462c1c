#!/usr/bin/env python3
"""Grow a model's embeddings to its extended tokenizer; see `--help`."""

import sys
from pathlib import Path

sys.path.insert(
    0, str(Path(__file__).resolve().parents[1])
)  # run from a checkout without installing
from trainer.cli.resize_model import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
