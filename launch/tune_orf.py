#!/usr/bin/env python3
"""``tune_orf --model M --fasta GENOME --gff REFERENCE [--candidates 30,60,90,120,150]``.

Choose the shortest whole CDS a model's ORF layer may call: annotate the genome once per
candidate N, score each against the reference GFF3 (CDS stop F1, then exact F1), print the table
and record the best N in the model's config.json, where ``annotate`` reads it (its
``--min_orf_codons`` still wins). Use a genome the model was not trained on, of the kind it will
annotate. ``--no_record`` only prints. See docs/annotate.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script (python3 launch/X.py): import from this checkout
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import json
from collections.abc import Sequence

from baking.target_format.pointers import MIN_ORF_CODONS_CANDIDATES
from launch._cli import add_logging_args, check_outputs, run_cli, setup_logging

MODEL_DEFAULT = "default: the model's generation_config.json, else "


def _candidates(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"not a comma-separated list of integers: {text!r}"
        ) from exc


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tune_orf", description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--model", required=True, help="model folder (its config.json is updated)")
    p.add_argument("--fasta", required=True, help="genome FASTA the model was not trained on")
    p.add_argument("--gff", required=True, help="its reference GFF3")
    p.add_argument(
        "--candidates",
        type=_candidates,
        default=",".join(map(str, MIN_ORF_CODONS_CANDIDATES)),
        help="comma-separated N to try (codons, start and stop included)",
    )
    p.add_argument("--no_record", action="store_true", help="print the table, change nothing")
    p.add_argument("--json", action="store_true", help="print the table as JSON")
    a = p.add_argument_group("annotate (as annotate's options of the same name)")
    a.add_argument("--num_beams", type=int, default=None, help=f"({MODEL_DEFAULT}1)")
    a.add_argument("--batch_size", type=int, default=64)
    a.add_argument("--overlap", type=int, default=None, help=f"({MODEL_DEFAULT}half the window)")
    a.add_argument("--min_votes", type=float, default=None, help=f"({MODEL_DEFAULT}0.5)")
    a.add_argument(
        "--selection", choices=("votes", "genome"), default=None, help=f"({MODEL_DEFAULT}votes)"
    )
    a.add_argument("--circular", default="", help="comma-separated circular sequence ids, or 'all'")
    a.add_argument("--transl_table", type=int, default=11, help="NCBI genetic code (1, 4, 11, 25)")
    a.add_argument("--device", default="cpu")
    add_logging_args(p)
    return p


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    model = Path(args.model)
    check_outputs(
        files=[
            args.log_file,
            *([] if args.no_record else [model / "generation_config.json", model / "README.md"]),
        ],
        inputs=[args.fasta, args.gff, model / "model.safetensors"],
    )
    setup_logging(args.verbose, args.log_file)
    from trainer.inference.annotate import AnnotateOptions, with_decoding
    from trainer.inference.tune_orf import (
        check_candidates,
        record_min_orf_codons,
        tune_min_orf_codons,
    )
    from trainer.model.generation import load_decoding

    candidates = check_candidates(args.candidates)
    given = [
        k
        for k in ("num_beams", "overlap", "min_votes", "selection")
        if getattr(args, k) is not None
    ]
    options = AnnotateOptions(
        batch_size=args.batch_size,
        overlap=args.overlap,
        transl_table=args.transl_table,
        circular=tuple(c for c in args.circular.split(",") if c),
        device=args.device,
        progress=False,
        **{k: getattr(args, k) for k in ("num_beams", "min_votes", "selection") if k in given},
    )
    # the model's recorded decoding (not its old N: every candidate is tried) unless a flag says
    options = with_decoding(options, load_decoding(model), [*given, "min_orf_codons"])
    result = tune_min_orf_codons(model, args.fasta, args.gff, candidates, options)
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
    else:
        print(f"{'min_orf_codons':>14}  {'CDS exact F1':>12}  {'CDS stop F1':>11}  predicted")
        for r in result.rows:
            mark = "  <- chosen" if r.min_orf_codons == result.chosen else ""
            print(
                f"{r.min_orf_codons:>14}  {r.exact_f1:>12.3f}  {r.stop_f1:>11.3f}  "
                f"{r.predicted:>9}{mark}"
            )
    if not args.no_record:
        chosen = next(r for r in result.rows if r.min_orf_codons == result.chosen)
        path = record_min_orf_codons(
            model, result.chosen, options, chosen, genome=Path(args.fasta).name
        )
        print(f"recorded min_orf_codons={result.chosen} in {path}", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``launch/tune_orf.py``."""
    return run_cli(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
