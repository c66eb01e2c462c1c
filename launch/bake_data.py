#!/usr/bin/env python3
"""Bake annotated genomes (FASTA + GFF3) into webdataset shards with target tokens; see `--help`."""

import sys
from pathlib import Path

sys.path.insert(
    0, str(Path(__file__).resolve().parents[1])
)  # run from a checkout without installing
from baking.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
