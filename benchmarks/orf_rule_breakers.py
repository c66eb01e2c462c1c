#!/usr/bin/env python3
"""How many reference CDS break the ORF rule, by cause, on the shared genomes (or given pairs).

    python benchmarks/orf_rule_breakers.py                    # C. crescentus, E. coli, phage
    python benchmarks/orf_rule_breakers.py --pair g.fna g.gff  # any genome
    python benchmarks/orf_rule_breakers.py --list other        # list the CDS of one cause

A CDS breaks the rule when it is not one interval from a start codon of its table to the first
in-frame stop (``baking.evaluate.refcheck`` says how causes are assigned). Prints one row per
genome, the start codons of the ``start_codon`` breakers, and (``--list``) the CDS of one cause.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from baking.common.errors import Dna2GffError  # noqa: E402
from baking.evaluate.load import load_features  # noqa: E402
from baking.evaluate.refcheck import CAUSES, CdsCheck, check_reference_cds, tally  # noqa: E402
from baking.formats.fasta import read_fasta  # noqa: E402
from baking.formats.gff3 import read_gff3  # noqa: E402
from baking.orfs import OrfIndex  # noqa: E402
from trainer.fixtures import SHARED_GENOME_PAIRS  # noqa: E402

SHARED_PAIRS = SHARED_GENOME_PAIRS


def check_pair(fna: Path, gff: Path) -> list[CdsCheck]:
    """All CDS checks of one genome (circular sequences from the GFF3's ``region`` lines)."""
    seqs = dict(read_fasta(fna))
    doc = read_gff3(gff)
    circular = {
        f.seqid
        for f in doc.features
        if f.type == "region" and (f.attr("Is_circular") or "").lower() == "true"
    }
    return check_reference_cds(seqs, doc.features, circular=circular)


def ceilings(fna: Path, gff: Path, transl_table: int = 11) -> tuple[int, int, int]:
    """What ORF-only output can score, as ``evaluate`` counts: (CDS lines scored, lines that are
    ORFs = reachable exactly, lines whose 3' end is a stop codon = reachable at stop level).

    ``evaluate`` scores each GFF3 line (pseudogenes excluded), so a two-piece CDS is two lines.
    """
    index = {sid: OrfIndex(s, transl_table) for sid, s in read_fasta(fna)}
    ref, _ = load_features(gff)
    cds = [f for f in ref if f.type == "CDS" and f.seqid in index]
    exact = stop = 0
    for f in cds:
        idx = index[f.seqid]
        if f.end > idx.n:  # origin-spanning: not reachable by a linear index (none here)
            continue
        exact += idx.is_valid_orf(f.start - 1, f.end, f.strand)
        stop += idx.is_stop(f.end if f.strand == "+" else f.start - 1, f.strand)
    return len(cds), exact, stop


def format_rows(results: dict[str, list[CdsCheck]]) -> str:
    """A fixed-width table: genome, CDS, valid, then one column per cause."""
    head = f"{'genome':<14} {'CDS':>6} {'valid':>6} {'valid%':>7} " + " ".join(
        f"{c:>13}" for c in CAUSES
    )
    lines = [head]
    for name, checks in results.items():
        t = tally(checks)
        n = len(checks)
        cells = " ".join(f"{t[c]:>13d}" for c in CAUSES)
        share = 100 * t["ok"] / n if n else 0.0
        lines.append(f"{name:<14} {n:>6d} {t['ok']:>6d} {share:>6.2f}% {cells}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pair", nargs=2, action="append", metavar=("FASTA", "GFF3"))
    p.add_argument("--list", choices=CAUSES, help="also list the CDS of this cause")
    args = p.parse_args(argv)
    pairs = {Path(f).name: (Path(f), Path(g)) for f, g in args.pair} if args.pair else SHARED_PAIRS
    results: dict[str, list[CdsCheck]] = {}
    try:
        for name, (fna, gff) in pairs.items():
            results[name] = check_pair(fna, gff)
    except Dna2GffError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_rows(results))
    print(f"{'genome':<14} {'scored':>7} {'exact ceiling':>14} {'stop ceiling':>13}")
    for name, (fna, gff) in pairs.items():
        n, exact, stop = ceilings(fna, gff)
        print(f"{name:<14} {n:>7d} {exact:>6d} {exact / n:6.4f} {stop:>6d} {stop / n:6.4f}")
    for name, checks in results.items():
        starts = Counter(c.start_codon for c in checks if c.cause == "start_codon")
        if starts:
            print(f"{name} start_codon breakers: {dict(starts.most_common())}")
        if args.list:
            for c in checks:
                if c.cause == args.list:
                    print(
                        f"  {name} {c.cds_id} {c.seqid}:{c.start}..{c.end}{c.strand} "
                        f"pieces={c.pieces} {'; '.join(c.problems)}"
                    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
