#!/usr/bin/env python3
"""``make_synthetic``: write synthetic bacterial genomes (``.fna.gz`` + ``.gff.gz``) for demos/tests.

Why a command: the quickstart and the learning benchmark need genomes on a machine without internet,
and users can look at (or bake) exactly the files the demo trains on.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script (python3 launch/X.py): import from this checkout
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import logging
from collections.abc import Sequence

from baking.synthetic import SyntheticConfig, make_genomes
from launch._cli import check_outputs, run_cli, setup_logging

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    d = SyntheticConfig()
    p = argparse.ArgumentParser(
        prog="make_synthetic",
        description="Write synthetic bacterial-like genomes with NCBI-shaped GFF3 "
        "(synthetic_<seed>.fna.gz / .gff.gz).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    io = p.add_argument_group("Output")
    io.add_argument("out_dir", help="folder for the genome files (created if missing)")
    io.add_argument("--count", type=int, default=1, help="how many genomes")
    io.add_argument("--seed", type=int, default=1, help="seed of the first genome; next ones +1")
    io.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    g = p.add_argument_group("Genome shape")
    g.add_argument("--length", type=int, default=d.chromosome_length, help="chromosome bp")
    g.add_argument(
        "--plasmid",
        type=int,
        action="append",
        default=None,
        metavar="BP",
        help=f"a plasmid of BP bp (repeatable; 0 for none; default {list(d.plasmid_lengths)})",
    )
    g.add_argument("--gc", type=float, default=d.gc, help="GC fraction")
    g.add_argument(
        "--transl_table",
        type=int,
        choices=(11, 4),
        default=d.transl_table,
        help="genetic code of the genes (4: TGA = Trp, genes read through in-frame TGA)",
    )
    g.add_argument(
        "--species_seed",
        type=int,
        default=d.species_seed,
        help="codon usage and RNA genes shared by genomes of one species",
    )
    g.add_argument("--mean_protein_codons", type=int, default=d.mean_protein_codons)
    g.add_argument("--min_protein_codons", type=int, default=d.min_protein_codons)
    g.add_argument("--max_protein_codons", type=int, default=d.max_protein_codons)
    g.add_argument("--mean_gap", type=int, default=d.mean_gap, help="mean intergenic bp")
    g.add_argument("--overlap_rate", type=float, default=d.overlap_rate)
    g.add_argument("--trna", type=int, default=d.trna_count, help="tRNA genes per chromosome")
    g.add_argument("--rrna_operons", type=int, default=d.rrna_operons)
    return p


def _main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    check_outputs(folders=[args.out_dir])
    setup_logging(args.verbose)
    plasmids = tuple(n for n in (args.plasmid or SyntheticConfig().plasmid_lengths) if n > 0)
    pairs = make_genomes(
        args.out_dir,
        args.count,
        args.seed,
        chromosome_length=args.length,
        plasmid_lengths=plasmids,
        gc=args.gc,
        species_seed=args.species_seed,
        mean_protein_codons=args.mean_protein_codons,
        min_protein_codons=args.min_protein_codons,
        max_protein_codons=args.max_protein_codons,
        mean_gap=args.mean_gap,
        overlap_rate=args.overlap_rate,
        trna_count=args.trna,
        rrna_operons=args.rrna_operons,
        transl_table=args.transl_table,
    )
    for fna, gff in pairs:
        print(f"{fna}\t{gff}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: returns 0, or 2 with ``error: ...`` for a bad option value."""
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
