#!/usr/bin/env python3
"""``append_tk TOKENS TOKENIZER_JSON``: add the tokens not yet present; ids kept, idempotent.

The file is rewritten atomically and only when something was added. Afterwards run
``resize_model`` so the model's embeddings grow to the new vocabulary.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script (python3 launch/X.py): import from this checkout
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
from collections.abc import Sequence

from launch._cli import add_logging_args, check_outputs, run_cli, setup_logging
from trainer.tokens.tokenizer import TOKENIZER_NAME, append_tokens


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="append_tk",
        description=__doc__,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("tokens", help="annotation tokens file, one per line")
    p.add_argument("tokenizer", help="tokenizer.json to extend (or its folder)")
    add_logging_args(p)
    return p


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    tokenizer = Path(args.tokenizer)
    if tokenizer.is_dir():
        tokenizer = tokenizer / TOKENIZER_NAME
    check_outputs(files=[tokenizer, args.log_file], inputs=[args.tokens])
    setup_logging(args.verbose, args.log_file)
    added = append_tokens(args.tokens, args.tokenizer)
    print(f"added {len(added)} token(s)" + (f": {' '.join(added)}" if added else ""))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
