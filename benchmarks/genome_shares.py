#!/usr/bin/env python3
"""Each genome's share of a training pass, drawn by size and by ``train --genome_balance``.

Reads one pass of the balanced sample stream of a baked folder (one loader slot, no tokenising)
and counts the windows per genome, next to the shares by size (``--genome_balance 1``). The
table in ``docs/training.md`` is this script's output on the 21 shared genomes:

    python3 launch/bake_data.py --genomes benchmarks/shared_corpus.tsv /tmp/corpus
    python benchmarks/genome_shares.py /tmp/corpus --alpha 0.5
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", help="baked folder (manifest.json, train/)")
    p.add_argument("--alpha", type=float, default=0.5, help="train --genome_balance")
    p.add_argument("--seed", type=int, default=1234)
    a = p.parse_args()

    from trainer.data.balance import GenomeBalance
    from trainer.data.loader import read_manifest, split_shards
    from trainer.data.slots import SlotPlan, pass_yield, slot_stream

    shards = split_shards(a.data, "train")
    bp = {name: g.get("bp", 0) for name, g in read_manifest(a.data)["genomes"].items()}
    sizes: Counter[str] = Counter()
    for s in shards:
        sizes[s.genome or "?"] += s.count
    balance = GenomeBalance.for_shards(shards, a.alpha, a.seed)
    plan = SlotPlan(tuple(shards), 1, 0)
    n = pass_yield(plan, a.seed, 0, 0, balance)
    t0 = time.perf_counter()
    stream = slot_stream(plan, a.seed, 0, 256, balance=balance)
    drawn = Counter(json.loads(s["json"])["genome"] for s in itertools.islice(stream, n))
    took = time.perf_counter() - t0
    total, pass_len = sum(sizes.values()), sum(drawn.values())
    print(
        f"| genome | Mbp | train windows | share by size | share, alpha {a.alpha} | draws/window |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for g in sorted(sizes, key=lambda g: sizes[g]):
        print(
            f"| {g} | {bp.get(g, 0) / 1e6:.2f} | {sizes[g]} | {100 * sizes[g] / total:.2f}% | "
            f"{100 * drawn[g] / pass_len:.2f}% | {drawn[g] / sizes[g]:.2f} |"
        )
    small, large = min(sizes, key=lambda g: sizes[g]), max(sizes, key=lambda g: sizes[g])
    print(
        f"\npass: {pass_len} samples (split {total}); largest/smallest share "
        f"{sizes[large] / sizes[small]:.1f}x by size, {drawn[large] / max(drawn[small], 1):.1f}x "
        f"balanced; read in {took:.1f} s ({pass_len / took:.0f} samples/s, one slot)"
    )


if __name__ == "__main__":
    main()
