#!/usr/bin/env python3
"""Add new annotation tokens to a tokenizer.json (ids kept, idempotent); see `--help`."""

import sys
from pathlib import Path

sys.path.insert(
    0, str(Path(__file__).resolve().parents[1])
)  # run from a checkout without installing
from trainer.cli.append_tk import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
