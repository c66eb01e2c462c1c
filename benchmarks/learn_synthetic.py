#!/usr/bin/env python3
"""Does the model learn? Train the tiny model on synthetic genomes on the CPU, then score it.

Prints, after every training chunk, CDS exact-match and stop-codon F1 on a synthetic genome the model
never saw (annotated with the real ``annotate``, scored by ``evaluate``), next to Prodigal's
(pyrodigal) on the same genome; the last row is also scored without ORF snapping. The learning
curve (loss, validation loss, exact features on validation windows) is in TensorBoard.

Made to make every CPU step count (``../shared/docs/prior-art.md`` item 7: ~300 CPU steps learned
only the format): short windows (few coordinate digits, short encoder input), both strands baked,
a small BPE vocabulary, the loss over the target vocabulary only, one process (no launcher
overhead), a constant learning rate so training can go on in chunks with ``--resume``.

    python benchmarks/learn_synthetic.py --minutes 30            # the full run
    python benchmarks/learn_synthetic.py --minutes 3 --chunks 1  # a smoke run
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from baking.clitools import setup_logging  # noqa: E402
from trainer.demo import (  # noqa: E402
    DemoConfig,
    Layout,
    Step,
    _py,
    genome_pairs,
    plan_steps,
    prepare_out,
    run_step,
    start_commands_file,
    train_command,
)

log = logging.getLogger("learn_synthetic")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)  # fmt: skip
    p.add_argument("--out", default="runs/learn_synthetic", help="output folder")
    p.add_argument("--minutes", type=float, default=30.0, help="training wall-clock budget")
    p.add_argument("--chunks", type=int, default=4, help="evaluations spread over the budget")
    p.add_argument("--train_genomes", type=int, default=8)
    p.add_argument("--genome_length", type=int, default=60_000)
    p.add_argument("--mean_protein_codons", type=int, default=280)
    p.add_argument("--window_len", type=int, default=None, help="bake window (default: baker's)")
    p.add_argument("--bake_arg", action="append", default=[], help="extra bake_data.py flag")
    p.add_argument("--vocab_size", type=int, default=128, help="BPE vocabulary (DNABERT-2: 4096)")
    p.add_argument("--hidden_size", type=int, default=128)
    p.add_argument("--num_layers", type=int, default=2)
    p.add_argument("--num_heads", type=int, default=4)
    p.add_argument("--intermediate_size", type=int, default=256)
    p.add_argument("--moe", action="store_true", help="MoE decoder (4 experts, top-2)")
    p.add_argument("--micro_batch_size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--probe_steps", type=int, default=30, help="first chunk, to time a step")
    p.add_argument("--seed", type=int, default=1)
    return p


def _score(lay: Layout, held: tuple[Path, Path], tag: str, i: int, snap: bool) -> dict:
    """annotate + evaluate --json on the held-out genome; returns the parsed JSON."""
    pred = lay.out / f"pred_{tag}.gff3"
    report = lay.out / f"eval_{tag}.json"
    annotate = _py("annotate.py", "--model", lay.run / "export", "--fasta", held[0], "--out", pred,
                   "--circular", "all", "--no_progress", *([] if snap else ["--no_snap"]))  # fmt: skip
    run_step(Step(f"annotate_{tag}", annotate), i, lay)
    evaluate = _py("evaluate.py", held[1], pred, "--json", "--types", "CDS", "--baseline",
                   "prodigal", "--fasta", held[0])  # fmt: skip
    run_step(Step(f"evaluate_{tag}", evaluate), i + 1, lay, report)
    return json.loads(report.read_text())


def main() -> int:
    a = build_parser().parse_args()
    setup_logging(False)
    cfg = DemoConfig(
        out=a.out, seed=a.seed, train_genomes=a.train_genomes, genome_length=a.genome_length,
        vocab_size=a.vocab_size, hidden_size=a.hidden_size, num_layers=a.num_layers,
        num_heads=a.num_heads, intermediate_size=a.intermediate_size, use_moe=a.moe,
        window_len=a.window_len, bake_args=tuple(a.bake_arg), launcher="python", nproc=1,
        ep_size=1, micro_batch_size=a.micro_batch_size, lr=a.lr, max_steps=a.probe_steps,
        deepspeed_config=str(Path(__file__).resolve().parents[1] / "ds_configs" / "zero2_bf16.json"),
    )  # fmt: skip
    lay = Layout(Path(cfg.out).resolve())
    prepare_out(lay.out, cfg)
    lay.logs.mkdir()
    start_commands_file(lay, "The commands learn_synthetic ran, in order.")
    steps = plan_steps(cfg, lay)
    setup = [s for s in steps if s.name not in ("train", "annotate", "evaluate", "evaluate_json")]
    t0 = time.perf_counter()
    for i, step in enumerate(setup, 1):
        run_step(step, i, lay)
    log.info("setup done seconds=%.0f", time.perf_counter() - t0)
    held = genome_pairs(cfg, lay)[1]
    budget = a.minutes * 60.0
    rows: list[dict] = []
    trained = 0.0
    steps_done = 0
    target = a.probe_steps
    idx = len(setup) + 1
    while True:
        argv = train_command(cfg, lay)
        argv[argv.index("--max_steps") + 1] = str(target)
        argv += ["--min_lr", str(cfg.lr), "--warmup_steps", "20", "--eval_every", "100",
                 "--decode_every", "200", "--save_every", "0", "--num_workers", "1"]  # fmt: skip
        if steps_done:
            argv.append("--resume")
        step = Step(f"train_to_{target}", argv, env={"OMP_NUM_THREADS": "2"})
        run_step(step, idx, lay)
        idx += 1
        trained += step.seconds
        per_step = step.seconds / max(1, target - steps_done)
        steps_done = target
        scores = _score(lay, held, f"step{target}", idx, snap=True)
        idx += 2
        rows.append({"steps": target, "train_minutes": trained / 60, "scores": scores})
        log.info("chunk steps=%d train_minutes=%.1f", target, trained / 60)
        left = budget - trained
        if left < 30 or len(rows) >= a.chunks:
            break
        chunks_left = a.chunks - len(rows)
        target = steps_done + max(1, int(left / chunks_left / per_step))
    raw = _score(lay, held, "nosnap", idx, snap=False)
    print_table(rows, raw, lay)
    (lay.out / "learn_synthetic.json").write_text(
        json.dumps({"rows": rows, "no_snap": raw, "args": vars(a)}, indent=2) + "\n"
    )
    return 0


def _cds(scores: dict, who: str) -> tuple[float, float]:
    """(exact F1, stop F1) of the CDS row of ``who`` ("dna2gff" or "prodigal") in evaluate's JSON."""
    row = scores[who]["CDS"]
    return row["exact"]["f1"], row["stop"]["f1"]


def print_table(rows: list[dict], raw: dict, lay: Layout) -> None:
    print(f"{'steps':>7} {'train min':>9} {'CDS exact F1':>12} {'stop F1':>8}")
    for r in rows:
        exact, stop = _cds(r["scores"], "dna2gff")
        print(f"{r['steps']:>7} {r['train_minutes']:>9.1f} {exact:>12.3f} {stop:>8.3f}")
    exact, stop = _cds(raw, "dna2gff")
    print(f"{'no snap':>7} {'':>9} {exact:>12.3f} {stop:>8.3f}")
    exact, stop = _cds(rows[-1]["scores"], "prodigal")
    print(f"{'Prodigal':>7} {'':>9} {exact:>12.3f} {stop:>8.3f}")
    print(f"learning curve: tensorboard --logdir {lay.run / 'tensorboard'}")


if __name__ == "__main__":
    sys.exit(main())
