#!/usr/bin/env python3
"""Run the whole recipe end to end on synthetic genomes (or --genome FNA GFF); see `--help`."""

import sys
from pathlib import Path

sys.path.insert(
    0, str(Path(__file__).resolve().parents[1])
)  # run from a checkout without installing
from trainer.cli.demo import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
