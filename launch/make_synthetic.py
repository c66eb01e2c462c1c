#!/usr/bin/env python3
"""Write synthetic bacterial genomes (.fna.gz + .gff.gz) for the demo and tests; see `--help`."""

import sys
from pathlib import Path

sys.path.insert(
    0, str(Path(__file__).resolve().parents[1])
)  # run from a checkout without installing
from baking.synthetic_cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
