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
import contextlib
import json
import logging
import sys
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from launch._cli import setup_logging  # noqa: E402
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
    p.add_argument("--probe_steps", type=int, default=100, help="steps of the first chunk")
    d = p.add_argument_group("data")
    d.add_argument("--train_genomes", type=int, default=16)
    d.add_argument("--genome_length", type=int, default=100_000)
    d.add_argument("--mean_protein_codons", type=int, default=280)
    d.add_argument("--window", type=int, default=400, help="bake/annotate window (bp)")
    d.add_argument("--stride", type=int, default=200, help="bake stride (bp)")
    d.add_argument("--rc", default="both", choices=("none", "both", "random"))
    m = p.add_argument_group("model")
    m.add_argument("--vocab_size", type=int, default=128, help="BPE vocabulary (DNABERT-2: 4096)")
    m.add_argument("--hidden_size", type=int, default=128)
    m.add_argument("--num_layers", type=int, default=3)
    m.add_argument("--num_heads", type=int, default=4)
    m.add_argument("--intermediate_size", type=int, default=256)
    m.add_argument("--moe", action="store_true", help="MoE decoder (4 experts, top-2)")
    t = p.add_argument_group("training")
    t.add_argument("--micro_batch_size", type=int, default=32)
    t.add_argument("--lr", type=float, default=2e-3, help="constant after warmup")
    t.add_argument("--warmup_steps", type=int, default=100)
    t.add_argument("--bf16", action="store_true", help="bf16 (default fp32: faster for tiny "
                   "matrices on this CPU)")  # fmt: skip
    t.add_argument("--num_workers", type=int, default=0,
                   help="loader processes (0: tokenise in the trainer; a worker process only "
                   "competes for 2 cores)")  # fmt: skip
    t.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS for training")
    t.add_argument("--seed", type=int, default=1)
    return p


#: One rank: ZeRO stage 0 (ZeRO-2's partitioning is pure overhead on one process); a constant
#: learning rate after warmup, so training continues across chunks with --resume unchanged.
DS_CONFIG = {
    "train_batch_size": "auto",
    "train_micro_batch_size_per_gpu": "auto",
    "gradient_accumulation_steps": "auto",
    "gradient_clipping": "auto",
    "steps_per_print": 1000000,
    "bf16": {"enabled": "auto"},
    "zero_optimization": {"stage": 0},
    "optimizer": {"type": "AdamW", "params": {"lr": "auto", "betas": [0.9, 0.98], "eps": 1e-8,
                                              "weight_decay": "auto", "torch_adam": True}},
    "scheduler": {"type": "WarmupLR", "params": {"warmup_min_lr": 0.0, "warmup_max_lr": "auto",
                                                 "warmup_num_steps": "auto",
                                                 "warmup_type": "linear"}},
}  # fmt: skip


def _score(lay: Layout, held: tuple[Path, Path], tag: str, i: int, snap: bool, window: int) -> dict:
    """annotate + evaluate --json on the held-out genome; returns the parsed JSON."""
    pred = lay.out / f"pred_{tag}.gff3"
    report = lay.out / f"eval_{tag}.json"
    annotate = _py("annotate.py", "--model", lay.run / "export", "--fasta", held[0], "--out", pred,
                   "--circular", "all", "--no_progress", "--batch_size", "64",
                   *([] if snap else ["--no_snap"]))  # fmt: skip
    run_step(Step(f"annotate_{tag}", annotate), i, lay)
    evaluate = _py("evaluate.py", held[1], pred, "--json", "--types", "CDS,tRNA,rRNA", "--baseline",
                   "prodigal", "--fasta", held[0])  # fmt: skip
    run_step(Step(f"evaluate_{tag}", evaluate), i + 1, lay, report)
    return json.loads(report.read_text())


def _loop_seconds(log_path: Path) -> float | None:
    """Seconds between the trainer's ``train start`` and ``train done`` lines (no start-up)."""
    stamps = {}
    for line in log_path.read_text(errors="replace").splitlines():
        for key in ("train start", "train done"):
            if key in line and key not in stamps:
                with contextlib.suppress(ValueError):
                    stamps[key] = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
    if len(stamps) < 2:
        return None
    return (stamps["train done"] - stamps["train start"]).total_seconds()


def main() -> int:
    a = build_parser().parse_args()
    setup_logging(False)
    cfg = DemoConfig(
        out=a.out, seed=a.seed, train_genomes=a.train_genomes, genome_length=a.genome_length,
        vocab_size=a.vocab_size, hidden_size=a.hidden_size, num_layers=a.num_layers,
        num_heads=a.num_heads, intermediate_size=a.intermediate_size, use_moe=a.moe,
        window_len=a.window, launcher="python", nproc=1, ep_size=1,
        synthetic_args=("--mean_protein_codons", str(a.mean_protein_codons)),
        bake_args=("--stride", str(a.stride), "--rc", a.rc),
        micro_batch_size=a.micro_batch_size, lr=a.lr, max_steps=a.probe_steps,
    )  # fmt: skip
    lay = Layout(Path(cfg.out).resolve())
    prepare_out(lay.out, cfg)
    ds_path = lay.out / "ds_config.json"
    ds_path.write_text(json.dumps(DS_CONFIG, indent=2) + "\n")
    cfg.deepspeed_config = str(ds_path)
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
    trained = 0.0  # seconds inside the training loops (start-up excluded)
    steps_done, target, idx = 0, a.probe_steps, len(setup) + 1
    while True:
        argv = train_command(cfg, lay)
        argv[argv.index("--max_steps") + 1] = str(target)
        argv += ["--warmup_steps", str(a.warmup_steps), "--eval_every", "200", "--decode_every",
                 "500", "--decode_windows", "64", "--save_every", "0", "--keep_last", "1", "--log_every", "10",
                 "--num_workers", str(a.num_workers)]  # fmt: skip
        if not a.bf16:
            argv.append("--no_bf16")
        if steps_done:
            argv.append("--resume")
        step = Step(f"train_to_{target}", argv, env={"OMP_NUM_THREADS": str(a.threads)})
        run_step(step, idx, lay)
        loop = _loop_seconds(lay.logs / f"{idx:02d}_{step.name}.log") or step.seconds
        idx += 1
        trained += loop
        per_step = loop / max(1, target - steps_done)
        steps_done = target
        scores = _score(lay, held, f"step{target}", idx, True, a.window)
        idx += 2
        rows.append({"steps": target, "train_minutes": trained / 60, "seconds_per_step": per_step,
                     "scores": scores})  # fmt: skip
        exact, stop = _cds(scores, "dna2gff")
        log.info("chunk steps=%d train_minutes=%.1f s_per_step=%.3f exact_f1=%.3f stop_f1=%.3f",
                 target, trained / 60, per_step, exact, stop)  # fmt: skip
        left = budget - trained
        if left < 20 * per_step or len(rows) >= a.chunks:
            break
        target = steps_done + max(1, int(left / (a.chunks - len(rows)) / per_step))
    raw = _score(lay, held, "nosnap", idx, False, a.window)
    print_table(rows, raw, lay)
    (lay.out / "learn_synthetic.json").write_text(
        json.dumps({"rows": rows, "no_snap": raw, "args": vars(a)}, indent=2) + "\n"
    )
    return 0


def _cds(scores: dict, who: str, ftype: str = "CDS") -> tuple[float, float]:
    """(exact F1, stop F1) of ``who`` ("dna2gff" or "prodigal") for ``ftype`` in evaluate's JSON."""
    row = scores[who].get(ftype)
    return (row["exact"]["f1"], row["stop"]["f1"]) if row else (0.0, 0.0)


def learning_curve(run: Path, bins: int = 10) -> list[dict]:
    """Mean train loss per bin of steps (``metrics.jsonl``) with the last validation scalars
    (TensorBoard: ``val/loss``, ``val/exact_features``) reached by the end of each bin."""
    steps = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    if not steps:
        return []
    val: dict[str, list[tuple[int, float]]] = {}
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        acc = EventAccumulator(str(run / "tensorboard"))
        acc.Reload()
        for tag in ("val/loss", "val/exact_features"):
            if tag in acc.Tags()["scalars"]:
                val[tag] = [(e.step, e.value) for e in acc.Scalars(tag)]
    except ImportError:  # pragma: no cover - tensorboard is a dependency
        pass
    size = max(1, len(steps) // bins)
    out = []
    for i in range(0, len(steps), size):
        chunk = steps[i : i + size]
        last = chunk[-1]["step"]
        row = {"step": last, "train_loss": sum(c["loss"] for c in chunk) / len(chunk)}
        for tag, points in val.items():
            seen = [v for s, v in points if s <= last]
            row[tag] = seen[-1] if seen else None
        out.append(row)
    return out


def print_table(rows: list[dict], raw: dict, lay: Layout) -> None:
    curve = learning_curve(lay.run)
    print(f"{'step':>8} {'train loss':>10} {'val loss':>9} {'val exact':>9}")
    for c in curve:
        vl, ve = c.get("val/loss"), c.get("val/exact_features")
        print(f"{c['step']:>8} {c['train_loss']:>10.3f} "
              f"{'' if vl is None else f'{vl:.3f}':>9} {'' if ve is None else f'{ve:.3f}':>9}")  # fmt: skip
    print()
    print(f"{'steps':>8} {'train min':>9} {'CDS exact F1':>12} {'stop F1':>8}")
    for r in rows:
        exact, stop = _cds(r["scores"], "dna2gff")
        print(f"{r['steps']:>8} {r['train_minutes']:>9.1f} {exact:>12.3f} {stop:>8.3f}")
    exact, stop = _cds(raw, "dna2gff")
    print(f"{'no snap':>8} {'':>9} {exact:>12.3f} {stop:>8.3f}")
    exact, stop = _cds(rows[-1]["scores"], "prodigal")
    print(f"{'Prodigal':>8} {'':>9} {exact:>12.3f} {stop:>8.3f}")
    for ftype in ("tRNA", "rRNA"):
        exact, stop = _cds(rows[-1]["scores"], "dna2gff", ftype)
        n = rows[-1]["scores"]["dna2gff"].get(ftype, {}).get("n_pred", 0)
        print(f"{ftype} (last row): exact F1 {exact:.3f}, 3' end F1 {stop:.3f}, predicted {n}")
    print(f"learning curve: tensorboard --logdir {lay.run / 'tensorboard'}")


if __name__ == "__main__":
    sys.exit(main())
