#!/usr/bin/env python3
"""``orf_rule --fasta GENOME.fna[.gz] --out PRED.gff3 (--min_codons N | --train FNA GFF ... |
--self_trained)``.

The no-model control: every ORF of at least N codons (start and stop included) on both strands,
the longest per stop codon, written as GFF3 the way ``annotate`` writes it. With ``--train`` N is
chosen on those genomes (best pooled CDS stop F1 against their references); see docs/orfs.md.
``--self_trained``: no N, the genome's own statistics choose (``annotate --adapt`` with no model).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script (python3 launch/X.py): import from this checkout
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
from collections.abc import Sequence

from launch._cli import add_logging_args, check_outputs, run_cli, setup_logging
from trainer.inference.orf_rule import annotate_orf_rule, choose_min_codons


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="orf_rule", description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--fasta", required=True, help="genome FASTA (plain or .gz)")
    p.add_argument("--out", required=True, help="output GFF3 (.gz for gzip)")
    n = p.add_mutually_exclusive_group(required=True)
    n.add_argument("--min_codons", type=int, help="minimum ORF length in codons")
    n.add_argument(
        "--train",
        nargs=2,
        action="append",
        metavar=("FASTA", "GFF3"),
        help="a training genome to choose N on (repeatable)",
    )
    n.add_argument(
        "--self_trained",
        action="store_true",
        help="no N: the genome's own coding and start statistics learned from its long ORFs "
        "choose the genes (annotate --adapt with no model; docs/annotate-evaluate.md)",
    )
    p.add_argument("--circular", default="", help="comma-separated circular sequence ids, or 'all'")
    p.add_argument("--transl_table", type=int, default=11, help="NCBI genetic code (1, 4, 11, 25)")
    add_logging_args(p)
    return p


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    train = [p for pair in args.train or () for p in pair]
    check_outputs(files=[args.out, args.log_file], inputs=[args.fasta, *train])
    setup_logging(args.verbose, args.log_file)
    circular = tuple(c for c in args.circular.split(",") if c)
    if args.self_trained:
        from trainer.inference.self_trained import annotate_self_trained

        cds = annotate_self_trained(
            args.fasta, args.out, transl_table=args.transl_table, circular=circular
        )
        print(f"orf_rule self_trained cds={cds}")
        return 0
    n = args.min_codons
    if args.train:
        n = choose_min_codons([tuple(t) for t in args.train], transl_table=args.transl_table)
    summary = annotate_orf_rule(
        args.fasta, args.out, n, transl_table=args.transl_table, circular=circular
    )
    print(f"orf_rule min_codons={summary.min_codons} cds={summary.cds} bp={summary.bp}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``launch/orf_rule.py``."""
    return run_cli(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
