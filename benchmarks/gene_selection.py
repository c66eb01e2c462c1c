#!/usr/bin/env python3
"""Does genome-wide selection add over the ORF rule by itself? No model: length scores only.

    python benchmarks/gene_selection.py                      # E. coli, B. subtilis, C. crescentus

Candidates are every ORF of >= 60 codons (the longest per stop, both strands, origin-spanning ones
on circular sequences). Two ways to call genes from them, each with one parameter:

* the ORF rule (``trainer/inference/orf_rule.py``): every ORF of >= N codons;
* the selection (``baking/gene_selection.py``, default overlap rules): every ORF scored
  ``codons - C``, the best-scoring consistent set chosen per sequence.

For each genome the parameter is chosen on the *other* genomes (best mean CDS stop F1), so the
figures are held-out ones; the per-genome best (an upper bound) is printed beside it. Scored as
``evaluate`` does: reference CDS without pseudogenes, exact = start, end and strand; stop = 3' end
and strand.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from baking.evaluate.metrics import Feature, exact_scores, stop_scores  # noqa: E402
from baking.formats.fasta import read_fasta  # noqa: E402
from baking.gene_selection import select_genes  # noqa: E402
from trainer.fixtures import SHARED_GENOMES  # noqa: E402
from trainer.inference.orf_rule import _reference, _sequence_orfs  # noqa: E402

GENOMES = {
    "E.coli": "E.coli/GCF_000005845.2_ASM584v2_genomic",
    "B.subtilis": "Bacillus_subtilis_BEST7003/GCA_000523045.1_ASM52304v1_genomic",
    "C.crescentus": "C.crescentus/GCF_000022005.1_ASM2200v1_genomic",
}
RULE_N = tuple(range(60, 301, 10))
SELECT_C = tuple(range(40, 261, 10))


def _calls(name: str) -> tuple[dict[str, dict[int, tuple[float, float]]], float]:
    """``{"rule": {N: (stop F1, exact F1)}, "select": {C: ...}}`` for one genome, and the
    program's seconds for one whole-genome choice."""
    stem = SHARED_GENOMES / GENOMES[name]
    ref, circular = _reference(f"{stem}.gff.gz")
    per_seq = []
    for seqid, seq in read_fasta(f"{stem}.fna.gz"):
        circ = seqid in circular
        orfs = _sequence_orfs(seq, 60, 11, circ)
        lo = np.array([o.lo for o in orfs], dtype=np.int64)
        hi = np.array([o.hi for o in orfs], dtype=np.int64)
        plus = np.array([o.strand == "+" for o in orfs], dtype=bool)
        per_seq.append((seqid, len(seq), circ, lo, hi, plus))

    def score(chosen: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]) -> tuple[float, float]:
        pred = [
            Feature(sid, "CDS", int(a) + 1, int(b), "+" if p else "-")
            for sid, lo, hi, plus in chosen
            for a, b, p in zip(lo, hi, plus)
        ]
        return stop_scores(ref, pred).f1, exact_scores(ref, pred).f1

    out: dict[str, dict[int, tuple[float, float]]] = {"rule": {}, "select": {}}
    for n in RULE_N:
        keep = [(s, lo, hi, p, (hi - lo) // 3 >= n) for s, _, _, lo, hi, p in per_seq]
        out["rule"][n] = score([(s, lo[k], hi[k], p[k]) for s, lo, hi, p, k in keep])
    seconds = 0.0
    for c in SELECT_C:
        chosen = []
        for s, length, circ, lo, hi, p in per_seq:
            t0 = time.perf_counter()
            sel = select_genes(lo, hi, p, (hi - lo) // 3 - c, length=length, circular=circ)
            seconds = max(seconds, time.perf_counter() - t0) if s == per_seq[0][0] else seconds
            k = sel.chosen
            chosen.append((s, lo[k], hi[k], p[k]))
        out["select"][c] = score(chosen)
    return out, seconds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--genomes", default=",".join(GENOMES), help="comma-separated, of " + ", ".join(GENOMES)
    )
    names = [g for g in ap.parse_args().genomes.split(",") if g]
    res = {}
    for g in names:
        res[g], secs = _calls(g)
        print(f"# {g}: scored, selection {secs:.2f} s per whole-genome choice", flush=True)
    print(
        "| genome | method | parameter (chosen on the others) | stop F1 | exact F1 | best on itself (param: stop / exact) |"
    )
    print("|---|---|---|---|---|---|")
    for g in names:
        others = [o for o in names if o != g] or [g]
        for method, label in (("rule", "ORF rule, N"), ("select", "selection, codons - C")):
            params = res[g][method]
            chosen = max(params, key=lambda v: np.mean([res[o][method][v][0] for o in others]))
            best = max(params, key=lambda v: params[v][0])
            s, e = params[chosen]
            bs, be = params[best]
            print(f"| {g} | {label} | {chosen} | {s:.3f} | {e:.3f} | {best}: {bs:.3f} / {be:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
