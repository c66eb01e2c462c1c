#!/usr/bin/env python3
"""Train a dna2gff model with DeepSpeed (deepspeed, torchrun, mpirun or plain python); see `--help`."""

import sys
from pathlib import Path

sys.path.insert(
    0, str(Path(__file__).resolve().parents[1])
)  # run from a checkout without installing
from trainer.cli.train import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
