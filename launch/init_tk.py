#!/usr/bin/env python3
"""``init_tk TOKENS``: DNABERT-2's tokenizer plus the annotation tokens in TOKENS (one per line).

Writes ``--out``/tokenizer.json (default: a ``tokenizer/`` folder beside TOKENS, e.g.
``data/tokenizer/tokenizer.json`` for ``data/new_tokens.txt``).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script (python3 launch/X.py): import from this checkout
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
from collections.abc import Sequence

from launch._cli import add_logging_args, check_outputs, run_cli, setup_logging
from trainer.tokens.tokenizer import DNABERT2_HUB_ID, init_tokenizer, load_tokenizer


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="init_tk", description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("tokens", help="annotation tokens file (the baker's --extract_tokens output)")
    p.add_argument(
        "--base",
        default=DNABERT2_HUB_ID,
        help="base tokenizer: hub id, folder or tokenizer.json (offline: a local folder)",
    )
    p.add_argument("--out", help="output folder (default: tokenizer/ beside TOKENS)")
    add_logging_args(p)
    return p


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    out = Path(args.out) if args.out else Path(args.tokens).parent / "tokenizer"
    check_outputs(files=[args.log_file], folders=[out], inputs=[args.tokens, args.base])
    setup_logging(args.verbose, args.log_file)
    path = init_tokenizer(args.tokens, out, base=args.base)
    size = load_tokenizer(path).get_vocab_size(with_added_tokens=True)
    print(f"tokenizer: {path} ({size} tokens)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
