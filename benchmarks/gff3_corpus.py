#!/usr/bin/env python3
"""Does the baker's GFF3 reader judge files as GenomeTools does? Prints a table per file.

    python benchmarks/gff3_corpus.py FOLDER [--gt gt] [--all]

For every ``*.gff3`` file in FOLDER (e.g. GenomeTools' own ``testdata/`` corpus, fetched outside
the repository) it runs ``gt gff3validator FILE`` (exit 0: accepted) and the baker's checks
(``read_gff3`` + ``check_gff3_semantics``, with the ``##sequence-region`` range check, since there is
no FASTA here), then prints each file whose verdicts differ (``--all``: every file) with both
messages, and the counts: accepted by gt and by us, rejected by gt and by us. The baker must
accept every file gt accepts; the aim is to reject what gt rejects.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def ours(path: Path) -> str | None:
    """None when the baker accepts ``path``, else its error message (without the path)."""
    from baking.common.errors import InputError
    from baking.formats.gff3 import read_gff3
    from baking.formats.gff3_semantics import check_gff3_semantics

    try:
        check_gff3_semantics(read_gff3(path), path)
    except InputError as exc:
        return f"{exc.line}: {exc.reason}" if exc.line is not None else exc.reason
    return None


def genometools(path: Path, gt: str) -> str | None:
    """None when ``gt gff3validator`` accepts ``path``, else its last stderr line."""
    run = subprocess.run(
        [gt, "gff3validator", path.name], capture_output=True, text=True, cwd=path.parent
    )
    if run.returncode == 0:
        return None
    lines = run.stderr.strip().splitlines()
    return (
        lines[-1].removeprefix("gt gff3validator: error: ") if lines else f"exit {run.returncode}"
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("folder", type=Path)
    p.add_argument("--gt", default="gt", help="the GenomeTools binary")
    p.add_argument("--all", action="store_true", help="print every file, not only disagreements")
    args = p.parse_args()
    if shutil.which(args.gt) is None:
        print(f"error: {args.gt}: GenomeTools not found", file=sys.stderr)
        return 2
    files = sorted(args.folder.glob("*.gff3"))
    if not files:
        print(f"error: {args.folder}: no *.gff3 files", file=sys.stderr)
        return 2
    logging.disable(logging.WARNING)  # the reader's warnings (negative regions, ...) are expected
    counts = {(a, b): 0 for a in (True, False) for b in (True, False)}
    rows = []
    for f in files:
        theirs, mine = genometools(f, args.gt), ours(f)
        counts[(theirs is None, mine is None)] += 1
        if args.all or (theirs is None) != (mine is None):
            rows.append((f.name, theirs, mine))
    width = max([len(r[0]) for r in rows] + [4])
    print(f"{'file':<{width}}  gt      ours    messages (gt / ours)")
    for name, theirs, mine in rows:
        verdict = ("accept" if theirs is None else "reject", "accept" if mine is None else "reject")
        print(f"{name:<{width}}  {verdict[0]:<6}  {verdict[1]:<6}  {theirs or '-'} / {mine or '-'}")
    acc, rej = (
        counts[(True, True)] + counts[(True, False)],
        counts[(False, True)] + counts[(False, False)],
    )
    print(
        f"\n{len(files)} files: gt accepts {acc}, we accept {counts[(True, True)]} of them; "
        f"gt rejects {rej}, we reject {counts[(False, False)]} of them"
    )
    return 0 if counts[(True, False)] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
