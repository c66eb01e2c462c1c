#!/usr/bin/env python3
"""The no-model control's figures: every ORF of >= N codons, N chosen on training genomes.

    python benchmarks/orf_rule_control.py                 # synthetic + real (phage held out)
    python benchmarks/orf_rule_control.py --only synthetic --train_genomes 4

Two settings, each printing N, CDS stop and exact Sn/Pr/F1 of the control on the held-out genome,
next to Prodigal's (pyrodigal, single-genome mode) on the same genome:

* ``synthetic``: genomes as ``learn_synthetic.py`` makes them (seeds ``1..T`` train, ``T + 1``
  held out, ``--length`` bp chromosome and a 5 kbp plasmid, circular), N chosen on the T;
* ``real``: N chosen on C. crescentus + E. coli, applied to the phage; also the phage's own best N
  (an upper bound for this control, not a fair figure).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from baking.evaluate.load import load_features  # noqa: E402
from baking.evaluate.metrics import TypeReport, compare  # noqa: E402
from baking.evaluate.prodigal import run_prodigal  # noqa: E402
from baking.formats.fasta import read_fasta  # noqa: E402
from baking.synthetic import make_genomes  # noqa: E402
from trainer.fixtures import SHARED_GENOME_PAIRS  # noqa: E402
from trainer.inference.orf_rule import (  # noqa: E402
    annotate_orf_rule,
    choose_min_codons,
)

REAL = SHARED_GENOME_PAIRS


def _row(label: str, n: str, r: TypeReport) -> str:
    s, e = r.stop, r.exact
    return (
        f"{label:<34} {n:>5} {r.n_ref:>6d} {r.n_pred:>6d} "
        f"{s.sensitivity:7.3f} {s.precision:7.3f} {s.f1:7.3f} {e.f1:8.3f}"
    )


def score(
    fna: Path, gff: Path, n: int, circular: tuple[str, ...], tmp: Path
) -> tuple[TypeReport, TypeReport]:
    """(control, Prodigal) CDS reports on one genome."""
    out = tmp / f"{fna.name}.orf_rule.gff3"
    annotate_orf_rule(fna, out, n, circular=circular)
    ref, lengths = load_features(gff)
    pred, _ = load_features(out)
    prod = run_prodigal(list(read_fasta(fna))).features
    return compare(ref, pred, ["CDS"], lengths)[0], compare(ref, prod, ["CDS"], lengths)[0]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", choices=("synthetic", "real"))
    p.add_argument("--train_genomes", type=int, default=16)
    p.add_argument("--length", type=int, default=100_000, help="synthetic chromosome bp")
    p.add_argument("--mean_protein_codons", type=int, default=280)
    args = p.parse_args()
    print(
        f"{'held-out genome (N chosen on)':<34} {'N':>5} {'n_ref':>6} {'n_pred':>6} "
        f"{'stopSn':>7} {'stopPr':>7} {'stopF1':>7} {'exactF1':>8}"
    )
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        if args.only in (None, "synthetic"):
            pairs = make_genomes(
                tmp,
                args.train_genomes + 1,
                chromosome_length=args.length,
                plasmid_lengths=(5_000,),
                mean_protein_codons=args.mean_protein_codons,
            )
            n = choose_min_codons(pairs[:-1])
            ours, prod = score(*pairs[-1], n, ("all",), tmp)
            label = f"synthetic_{args.train_genomes + 1} ({args.train_genomes} syn.)"
            print(_row(label, str(n), ours))
            print(_row("  prodigal", "-", prod))
        if args.only in (None, "real"):
            n = choose_min_codons([REAL["C.crescentus"], REAL["E.coli"]])
            ours, prod = score(*REAL["phage"], n, (), tmp)
            print(_row("phage (C.crescentus + E.coli)", str(n), ours))
            n_own = choose_min_codons([REAL["phage"]])
            own, _ = score(*REAL["phage"], n_own, (), tmp)
            print(_row("phage (phage itself: upper bound)", str(n_own), own))
            print(_row("  prodigal", "-", prod))
    return 0


if __name__ == "__main__":
    sys.exit(main())
