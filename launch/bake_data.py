#!/usr/bin/env python3
"""``bake_data``: genome FASTA + GFF3 pairs -> webdataset shards, manifest and token file.

python3 launch/bake_data.py GENOME.fna.gz ANNOT.gff.gz OUT_DIR --extract_tokens data/new_tokens.txt
python3 launch/bake_data.py --genomes LIST.tsv OUT_DIR --workers 4
mpirun -n 4 python3 launch/bake_data.py --genomes LIST.tsv OUT_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script (python3 launch/X.py): import from this checkout
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import logging
import re
import time
from collections.abc import Sequence

from baking.bake import bake, format_summary
from baking.bake_config import DEFAULT_WINDOW, RC_MODES, UNANNOTATED, BakeConfig, GenomeSpec
from baking.common.errors import ConfigError
from baking.genome_list import BAKE_COLUMNS, read_list_rows
from baking.target_format.grammar import DEFAULT_FEATURE_TYPES
from baking.target_format.transl_table import parse_transl_table
from launch._cli import check_outputs, run_cli, setup_logging

log = logging.getLogger(__name__)
_SUFFIXES = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}


def parse_size(text: str) -> int:
    """``256M`` -> bytes (K, M, G suffixes are binary)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]?)(?:i?B)?\s*", text, re.IGNORECASE)
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 268435456, 256M, 1G)")
    return int(float(m.group(1)) * _SUFFIXES[m.group(2).upper()])


def _table(text: str) -> int:
    try:
        return parse_transl_table(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _csv(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


class _Formatter(argparse.HelpFormatter):
    """Append ``(default: X)`` to option help, except where there is no meaningful default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        meaningless = (
            default is None or default is False or default == () or default == argparse.SUPPRESS
        )
        if not meaningless and "default" not in text:
            text += " (default: %(default)s)"
        return text


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bake_data",
        description="Cut annotated genomes into windows with target token sequences "
        "(webdataset shards + manifest.json); see docs/baking.md and docs/target-format.md.",
        formatter_class=_Formatter,
    )
    io = p.add_argument_group("input / output")
    io.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="FASTA GFF3 OUT_DIR for one genome, or OUT_DIR alone with --genomes",
    )
    io.add_argument(
        "--genomes",
        metavar="LIST.tsv",
        help="lines: name<TAB>fasta<TAB>gff3[<TAB>transl_table] (or a header naming the columns)",
    )
    io.add_argument("--name", help="genome name for a single FASTA/GFF3 pair (default: FASTA stem)")
    io.add_argument(
        "--transl_table",
        type=_table,
        help="genetic code (NCBI table) of genomes whose list gives none (default: the GFF3's "
        "transl_table= on CDS, else 11)",
    )
    io.add_argument("--extract_tokens", metavar="FILE", help="merge the target tokens into FILE")
    again = io.add_mutually_exclusive_group()
    again.add_argument(
        "--append",
        action="store_true",
        help="OUT_DIR holds an earlier bake: keep its genomes and add this run's (same options)",
    )
    again.add_argument(
        "--overwrite",
        action="store_true",
        help="OUT_DIR holds an earlier bake: drop its genomes that this run does not bake "
        "(their shards are deleted)",
    )
    io.add_argument("--shard_size", type=parse_size, default="256M", help="max bytes per shard")
    io.add_argument("--log_file", help="also write the (debug) log here")
    io.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    io.add_argument("--no_progress", action="store_true", help="no progress bars")
    win = p.add_argument_group("windows and targets")
    win.add_argument("--window", type=int, default=DEFAULT_WINDOW, help="window length in bp")
    win.add_argument("--stride", type=int, help="window step in bp (default: --window)")
    win.add_argument("--offset", type=int, default=0, help="shift of the window grid in bp")
    win.add_argument(
        "--keep_empty", type=float, default=1.0, help="fraction of featureless windows kept"
    )
    win.add_argument("--rc", choices=RC_MODES, default="none", help="reverse-complement samples")
    win.add_argument("--seed", type=int, default=0, help="seed of --keep_empty and --rc random")
    win.add_argument(
        "--types",
        type=_csv,
        default=",".join(DEFAULT_FEATURE_TYPES),
        help="feature types, comma-separated",
    )
    win.add_argument("--include_pseudo", action="store_true", help="keep pseudogene features")
    win.add_argument(
        "--unannotated",
        choices=UNANNOTATED,
        default="refuse",
        help="sequences without a feature of --types: refuse a genome with none or with FASTA "
        "records its GFF3 never mentions, skip (leave them out) or keep (bake them gene-free)",
    )
    sp = p.add_argument_group("splits")
    sp.add_argument("--val_genomes", type=_csv, default=(), help="genome names held out for val")
    sp.add_argument(
        "--val_fraction", type=float, default=0.0, help="val block at each sequence's end"
    )
    par = p.add_argument_group("parallelism and errors")
    par.add_argument("--workers", type=int, default=1, help="genomes baked in parallel processes")
    par.add_argument(
        "--on_error", choices=("stop", "skip"), default="stop", help="bad genome: stop or skip it"
    )
    return p


def read_genome_list(path: str | Path, transl_table: int | None = None) -> list[GenomeSpec]:
    """``bake_data --genomes``: ``name fasta gff [transl_table]`` lines or a headed list
    (``baking.genome_list``); a row without a code takes ``transl_table`` (``--transl_table``),
    else the GFF3's ``transl_table=``, else 11."""
    rows = read_list_rows(path, BAKE_COLUMNS, required=3)
    return [
        GenomeSpec(r.name, str(r.path("fasta")), str(r.path("gff")), r.transl_table(transl_table))
        for r in rows
    ]


def default_name(fasta: str) -> str:
    """The FASTA file name without compression and FASTA suffixes."""
    name = Path(fasta).name
    for suffix in (".gz", ".fna", ".fa", ".fasta", ".fas", ".fsa"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    return name or "genome"


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    check_outputs(files=[args.log_file])
    setup_logging(args.verbose, args.log_file)
    if args.genomes:
        if len(args.paths) != 1:
            raise ConfigError("with --genomes give only OUT_DIR as a positional argument")
        specs = read_genome_list(args.genomes, args.transl_table)
        out_dir = args.paths[0]
    else:
        if len(args.paths) != 3:
            raise ConfigError("give FASTA GFF3 OUT_DIR (or OUT_DIR with --genomes)")
        fasta, gff, out_dir = args.paths
        specs = [GenomeSpec(args.name or default_name(fasta), fasta, gff, args.transl_table)]
    inputs = [args.genomes, *(p for s in specs for p in (s.fasta, s.gff))]
    check_outputs(files=[args.extract_tokens], folders=[out_dir], inputs=inputs)
    cfg = BakeConfig(
        window_len=args.window,
        stride=args.stride,
        offset=args.offset,
        types=args.types,
        include_pseudo=args.include_pseudo,
        keep_empty=args.keep_empty,
        rc=args.rc,
        seed=args.seed,
        shard_size=args.shard_size,
        val_genomes=args.val_genomes,
        val_fraction=args.val_fraction,
        on_error=args.on_error,
        workers=args.workers,
        unannotated=args.unannotated,
        progress=not args.no_progress and sys.stderr.isatty(),
    )
    log.info(
        "bake genomes=%d out=%s window=%d stride=%d",
        len(specs),
        out_dir,
        cfg.window_len,
        cfg.stride,
    )
    log.debug("config %s genomes=%s", cfg.to_json(), [s.name for s in specs])
    t0 = time.perf_counter()
    existing = "append" if args.append else "overwrite" if args.overwrite else "refuse"
    manifest, results = bake(
        specs,
        cfg,
        out_dir,
        args.extract_tokens,
        list(sys.argv[1:] if argv is None else argv),
        existing=existing,
    )
    if manifest is not None:
        print(format_summary(results, time.perf_counter() - t0, cfg.types))
        log.info(
            "done manifest=%s samples=%d mean_target_tokens=%s",
            Path(out_dir) / "manifest.json",
            manifest.totals["samples"],
            manifest.totals["mean_target_tokens"],
        )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point (``dna2gff-bake``)."""
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
