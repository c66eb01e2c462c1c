#!/usr/bin/env python3
"""``resize_model MODEL_PATH TOKENIZER_PATH``: grow embeddings (and head) to the tokenizer.

Old rows are kept, new rows start at the mean of the old ones, a tied head stays tied, the config's
``vocab_size`` is updated and the tokenizer is copied into the model folder.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script (python3 launch/X.py): import from this checkout
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
from collections.abc import Sequence

from launch._cli import add_logging_args, check_outputs, run_cli, setup_logging


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="resize_model",
        description=__doc__,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("model", help="model folder (config.json + model.safetensors)")
    p.add_argument(
        "tokenizer", help="tokenizer.json (or its folder) extended with annotation tokens"
    )
    p.add_argument("--out", help="write the resized model here instead of in place")
    add_logging_args(p)
    return p


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    check_outputs(files=[args.log_file], folders=[args.out or args.model])
    setup_logging(args.verbose, args.log_file)
    from trainer.model.resize import resize_model  # torch import only after argument parsing

    added = resize_model(args.model, args.tokenizer, args.out)
    print(f"resized {args.out or args.model}: {added} new embedding row(s)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
