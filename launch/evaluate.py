#!/usr/bin/env python3
"""``evaluate REF.gff3 PRED.gff3``: exact / stop-codon / base-level scores per feature type.

Optionally runs Prodigal on the same genome as a baseline row and draws the worst regions.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script (python3 launch/X.py): import from this checkout
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import re
from collections.abc import Sequence

from baking.common.errors import ConfigError, InputError
from baking.common.files import input_problem
from baking.evaluate.genome_match import check_fasta_matches, check_same_genome, seqids_of
from baking.evaluate.load import load_features
from baking.evaluate.metrics import TypeReport, compare
from baking.evaluate.report import format_json, format_table
from baking.evaluate.types_check import check_types
from launch._cli import add_logging_args, check_outputs, run_cli, setup_logging

DEFAULT_TYPES = "CDS,tRNA,rRNA"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="evaluate",
        description=__doc__,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    io = p.add_argument_group("Input / Output")
    io.add_argument("reference", help="reference GFF3 (plain or .gz)")
    io.add_argument("prediction", help="predicted GFF3 (plain or .gz)")
    io.add_argument("--json", action="store_true", help="print JSON instead of a table")
    io.add_argument("--plot", metavar="OUT.png", help="draw reference/predicted tracks")
    io.add_argument(
        "--region",
        action="append",
        metavar="SEQID:START-END",
        help="region(s) to draw (default: the worst-scoring 10 kbp bins)",
    )
    sc = p.add_argument_group("Scoring")
    sc.add_argument(
        "--types",
        default=argparse.SUPPRESS,  # absent: the defaults, which may be missing from a genome
        help=f"comma-separated feature types (default: {DEFAULT_TYPES}; a type named here must "
        "occur in the reference or the prediction)",
    )
    sc.add_argument(
        "--include_pseudo", action="store_true", help="keep pseudogenes (excluded by default)"
    )
    sc.add_argument(
        "--allow_disjoint",
        action="store_true",
        help="score even when reference and prediction share no sequence id (warns; by default "
        "that is refused as two different genomes)",
    )
    bl = p.add_argument_group("Baseline")
    bl.add_argument("--baseline", choices=["prodigal"], help="also score this gene finder")
    bl.add_argument("--fasta", help="genome FASTA for --baseline (plain or .gz)")
    bl.add_argument("--transl_table", type=int, default=11, help="genetic code for the baseline")
    lg = p.add_argument_group("Logging")
    add_logging_args(lg)
    return p


def _parse_region(text: str) -> tuple[str, int, int]:
    m = re.fullmatch(r"(.+):(\d+)-(\d+)", text)
    if not m or int(m.group(2)) > int(m.group(3)):
        raise ConfigError(f"--region={text!r} is not SEQID:START-END with START <= END")
    return m.group(1), int(m.group(2)), int(m.group(3))


def _need_file(path: str) -> None:
    problem = input_problem(path)
    if problem is not None:
        raise InputError(path, problem)


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    check_outputs(
        files=[args.plot, args.log_file], inputs=[args.reference, args.prediction, args.fasta]
    )
    setup_logging(args.verbose, args.log_file)
    given = getattr(args, "types", None)
    types = [t.strip() for t in (DEFAULT_TYPES if given is None else given).split(",") if t.strip()]
    if not types:
        raise ConfigError("--types is empty")
    regions = [_parse_region(r) for r in args.region or []]
    if args.baseline and not args.fasta:
        raise ConfigError("--baseline prodigal needs --fasta GENOME")
    for path in (args.reference, args.prediction, *([args.fasta] if args.baseline else [])):
        _need_file(path)
    ref, lengths = load_features(args.reference, include_pseudo=args.include_pseudo)
    pred, pred_lengths = load_features(args.prediction, include_pseudo=args.include_pseudo)
    check_same_genome(
        args.reference,
        seqids_of(ref, lengths),
        args.prediction,
        seqids_of(pred, pred_lengths),
        allow_disjoint=args.allow_disjoint,
    )
    check_types(args.reference, ref, pred, types, explicit=given is not None)
    runs: dict[str, list[TypeReport]] = {"dna2gff": compare(ref, pred, types, lengths)}
    extra: dict[str, object] = {}
    if args.baseline == "prodigal":
        from baking.evaluate.prodigal import run_prodigal
        from baking.formats.fasta import read_fasta

        genome = list(read_fasta(args.fasta))
        check_fasta_matches(args.fasta, genome, args.reference, seqids_of(ref, lengths), lengths)
        prod = run_prodigal(genome, transl_table=args.transl_table)
        runs["prodigal"] = compare(ref, prod.features, types, lengths)
        extra["prodigal_seconds"] = prod.seconds
    if args.plot:
        from baking.evaluate.plot import plot_tracks

        keep = set(types)
        plot_tracks(
            [f for f in ref if f.type in keep],
            [f for f in pred if f.type in keep],
            args.plot,
            regions=regions or None,
            title=f"{Path(args.prediction).name} vs {Path(args.reference).name}",
        )
    print(format_json(runs, **extra) if args.json else format_table(runs))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``dna2gff-evaluate`` and ``launch/evaluate.py``."""
    return run_cli(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
