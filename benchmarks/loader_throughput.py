#!/usr/bin/env python3
"""Samples/s of the loader's sample stream (tar reading, sha256, grouping, shuffle), two checkouts.

What it measures: one loader slot reading ``--passes`` passes over a baked folder's train split
(the first pass hashes every shard) without tokenising -- the part of the loader that
``trainer/data/slots.py`` and ``stages.py`` own; tokenising (``map``) costs ~100 times more per
sample and is the same code in both. Runs alternate between this checkout and ``--compare``
(another checkout, e.g. the commit before the webdataset stages) in fresh processes; it prints
the median rate per CPU second (stable on a shared machine) and per wall second.

    python benchmarks/loader_throughput.py BAKED --compare /path/to/old/checkout --rounds 4
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_CHILD = """
import itertools, json, sys, time
from trainer.data.loader import SlotPlan, slot_stream, split_shards
shards = split_shards(sys.argv[1], "train")
plan = SlotPlan(tuple(shards), 1, 0)
n = plan.total * int(sys.argv[2])
t, c = time.perf_counter(), time.process_time()
for _ in itertools.islice(slot_stream(plan, 1, 0, 256), n):
    pass
print(json.dumps({"cpu": n / (time.process_time() - c), "wall": n / (time.perf_counter() - t)}))
"""


def measure(repo: Path, data: str, passes: int) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(repo)}
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, data, str(passes)],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", help="baked folder (manifest.json, train/)")
    p.add_argument("--compare", type=Path, help="another checkout to time against this one")
    p.add_argument("--passes", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
    repos = {"this": ROOT, **({"compare": a.compare.resolve()} if a.compare else {})}
    runs: dict[str, list[dict[str, float]]] = {k: [] for k in repos}
    for _ in range(a.rounds):
        for name, repo in repos.items():
            runs[name].append(measure(repo, a.data, a.passes))
    for name, rows in runs.items():
        cpu = statistics.median(r["cpu"] for r in rows)
        wall = statistics.median(r["wall"] for r in rows)
        print(f"{name:8s} {repos[name]}: {cpu:,.0f} samples/CPU-s, {wall:,.0f} samples/s (median)")
    if a.compare:
        ratio = statistics.median(r["cpu"] for r in runs["this"]) / statistics.median(
            r["cpu"] for r in runs["compare"]
        )
        print(f"this / compare (CPU): {ratio:.3f}")


if __name__ == "__main__":
    main()
