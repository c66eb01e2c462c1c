#!/usr/bin/env python3
"""Trainer tokens/s against a plain PyTorch loop on the same model and batches, in one run.

What it measures: the DeepSpeed trainer (``trainer.train.engine.train``: ZeRO-2, bf16 weights with fp32
masters, loader workers, NaN/SIGTERM bookkeeping, per-step all-reduce) against the shortest honest
PyTorch loop (bf16 autocast, torch AdamW, the same restricted-vocabulary loss, clipping) over the
very batches the trainer drew (same loader, same seed, prefetched into memory for the plain loop).
Steady state only: the first ``--warmup`` steps of each are dropped. On a GPU it also prints MFU,
FLOPs counted from the batches' shapes (``trainer.train.monitor.train_flops``).

    python benchmarks/train_throughput.py                      # tiny MoE model, CPU (~2 min)
    python benchmarks/train_throughput.py --hidden 768 --layers 12 --heads 12 --window 2200 \\
        --tokenizer ../shared/data/dnabert2/DNABERT-2-117M --micro_batch 32 --no_moe  # GPU, 117M

``--trainer_only`` times the trainer alone (no plain loop) and ``--json`` writes its figures
(tokens/s, MFU from the FLOPs the trainer logs per step, peak GPU memory) for
``benchmarks/gpu_check.py``; ``--samples`` caps the windows written (the loader cycles over them).

Target: ratio >= 0.9 on CPU; MFU >= 45% on one H100 for the 117M encoder at seq 512.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--steps", type=int, default=20, help="timed steps")
    p.add_argument("--warmup", type=int, default=5, help="untimed first steps")
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--experts", type=int, default=4)
    p.add_argument("--no_moe", action="store_true")
    p.add_argument("--micro_batch", type=int, default=8)
    p.add_argument(
        "--window",
        type=int,
        default=2000,
        help="bp per window (the baker's default; ~440 encoder tokens)",
    )
    p.add_argument("--workers", type=int, default=1, help="trainer loader workers")
    p.add_argument("--pad_multiple", type=int, default=8, help="batch length rounding")
    p.add_argument("--log_every", type=int, default=1, help="trainer's TensorBoard interval")
    p.add_argument("--cold", action="store_true", help="no untimed pass over the batches first")
    p.add_argument("--tokenizer", help="DNABERT-2 tokenizer folder (default: a small trained one)")
    p.add_argument("--fp32", action="store_true", help="both sides in fp32 instead of bf16")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (1: stable figures on a shared machine, where spinning "
        "OpenMP barriers make multi-threaded timings swing by 10x or more)",
    )
    p.add_argument("--workdir", help="keep files here (default: a temporary folder)")
    p.add_argument(
        "--trainer_only", action="store_true", help="time the trainer alone (no plain loop)"
    )
    p.add_argument("--json", help="also write the figures as JSON to this path")
    p.add_argument("--build_only", action="store_true", help=argparse.SUPPRESS)
    p.add_argument(
        "--samples",
        type=int,
        default=0,
        help="training windows to write (0: one per timed sample); the loader cycles over them",
    )
    p.add_argument(
        "--max_src_tokens",
        type=int,
        default=4096,
        help="encoder tokens per window, [CLS] and [SEP] included (longer windows are cut)",
    )
    return p.parse_args(argv)


def build(args: argparse.Namespace, work: Path) -> tuple[Path, Path]:
    from baking.target_format.grammar import target_vocabulary
    from trainer.fixtures import TYPES, make_model, make_tokenizer, write_shards

    tok = work / "tok"
    if args.tokenizer:
        from trainer.tokens.tokenizer import add_annotation_tokens, load_tokenizer, save_tokenizer

        t = load_tokenizer(args.tokenizer)
        add_annotation_tokens(t, target_vocabulary(TYPES))
        tok.mkdir(parents=True, exist_ok=True)
        save_tokenizer(t, tok)
    else:
        make_tokenizer(tok)
    n = args.samples or (args.warmup + args.steps) * args.micro_batch
    data = write_shards(work / "data", {"train": [n // 2 + 1, n // 2 + 1]}, window_len=args.window)
    model = work / "model"
    make_model(
        model,
        tok,
        use_moe=not args.no_moe,
        num_experts=args.experts,
        hidden=args.hidden,
        layers=args.layers,
        heads=args.heads,
        intermediate=4 * args.hidden,
    )
    return model, data


def trainer_run(args, model: Path, data: Path, out: Path) -> list[dict]:
    """The timed trainer steps' rows of RUN_DIR/metrics.jsonl (tokens, flops, seconds, loss)."""
    from trainer.train.config import TrainConfig
    from trainer.train.engine import train

    cfg = TrainConfig(
        model=str(model),
        data=str(data),
        output=str(out),
        max_steps=args.warmup + args.steps,
        micro_batch_size=args.micro_batch,
        num_workers=args.workers,
        save_every=0,
        eval_every=0,
        export=False,
        bf16=not args.fp32,
        warmup_steps=2,
        max_src_tokens=args.max_src_tokens,
        pad_multiple=args.pad_multiple,
        log_every=args.log_every,
    )
    train(cfg)
    rows = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    return rows[args.warmup :]


def same_batches(args, model: Path, data: Path) -> list[dict]:
    """The trainer's batches: same dataset, loader, seed and worker layout."""
    from trainer.data.examples import ExampleBuilder
    from trainer.data.loader import ShardBatches, TokenIds, make_loader, split_shards
    from trainer.fixtures import TYPES
    from trainer.model.config import Dna2GffConfig

    mc = Dna2GffConfig.load(model)
    ids = TokenIds(mc.bos_token_id, mc.eos_token_id, mc.pad_token_id)
    examples = ExampleBuilder(
        str(model),
        ids,
        args.max_src_tokens,
        512,
        args.pad_multiple,
        vocab_size=mc.vocab_size,
        feature_types=mc.feature_types or TYPES,
    )
    ds = ShardBatches(
        split_shards(data, "train"),
        examples,
        rank=0,
        world_size=1,
        num_workers=args.workers,
        micro_batch_size=args.micro_batch,
        seed=1234,
        shuffle_buffer=256,
    )
    loader = make_loader(ds, args.workers, seed=1234)
    return list(itertools.islice(iter(loader), args.warmup + args.steps))


def plain_run(args, model_dir: Path, batches: list[dict], device) -> tuple[list, float]:
    """Plain loop: fp32 weights, bf16 autocast, torch AdamW. (tokens, seconds) per step, FLOPs."""
    import torch

    from baking.shards.manifest import load_manifest
    from trainer.model.pointer import PointerInputs
    from trainer.model.seq2seq import Dna2GffModel
    from trainer.tokens.tokenizer import load_tokenizer
    from trainer.train.ds_engine import param_groups
    from trainer.train.monitor import train_flops
    from trainer.train.step import token_loss
    from trainer.train.targets import data_grammar, target_vocab_ids

    model = Dna2GffModel.from_pretrained(model_dir).to(device).train()
    opt = torch.optim.AdamW(param_groups(model, 0.01), lr=3e-4, betas=(0.9, 0.98), eps=1e-8)
    tok = load_tokenizer(model_dir)
    manifest = load_manifest(args._data)
    vocab = target_vocab_ids(tok, data_grammar(manifest, tok).tokens, model.config.eos_token_id)
    vocab = vocab.to(device)
    coef = model.config.moe_aux_loss_coef if model.config.use_moe else 0.0
    steps: list[tuple[float, float]] = []
    flops = 0.0
    for i, batch in enumerate(batches):
        b = {k: v.to(device) for k, v in batch.items()}
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=not args.fp32):
            out = model(
                b["input_ids"],
                b["attention_mask"],
                b["decoder_input_ids"],
                b["decoder_attention_mask"],
                pointer=PointerInputs.from_batch(b),
            )
        loss, _ = token_loss(out.logits, b["labels"], vocab, model.config.vocab_size)
        (loss + coef * out.aux_loss.float()).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        if i >= args.warmup:
            src, tgt = float(b["attention_mask"].sum()), float(b["decoder_attention_mask"].sum())
            steps.append((src + tgt, dt))
            flops += train_flops(
                model.config, int(src), int(tgt), b["input_ids"].shape[1], b["labels"].shape[1]
            )
    return steps, flops


def trainer_figures(args, rows: list[dict], device, cfg) -> dict:
    """The trainer's steady-state figures: rates over the timed steps, MFU, peak memory, loss."""
    import torch

    from trainer.train.monitor import peak_flops

    tokens = sum(r["tokens"] for r in rows)
    seconds = sum(r["seconds"] for r in rows)
    flops = sum(r["flops"] for r in rows)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = peak_flops(name) if device.type == "cuda" else None
    losses = [r["loss"] for r in rows if not r["skipped"]]
    return {
        "device": name,
        "dtype": "fp32" if args.fp32 else "bf16",
        "zero_stage": 2,
        "hidden": cfg.hidden_size,
        "layers": [cfg.num_encoder_layers, cfg.num_decoder_layers],
        "experts": cfg.num_experts if cfg.use_moe else 0,
        "top_k": cfg.moe_top_k if cfg.use_moe else 0,
        "vocab": cfg.vocab_size,
        "micro_batch": args.micro_batch,
        "window_bp": args.window,
        "max_src_tokens": args.max_src_tokens,
        "src_tokens_per_window": sum(r["src_tokens"] for r in rows)
        / (len(rows) * args.micro_batch),
        "timed_steps": len(rows),
        "warmup_steps": args.warmup,
        "tokens_per_s": tokens / seconds,
        "median_tokens_per_s": statistics.median(r["tokens"] / r["seconds"] for r in rows),
        "samples_per_s": len(rows) * args.micro_batch / seconds,
        "step_ms_median": 1000 * statistics.median(r["seconds"] for r in rows),
        "model_tflops_per_s": flops / seconds / 1e12,
        "peak_tflops": peak / 1e12 if peak else None,
        "mfu": flops / seconds / peak if peak else None,
        "peak_memory_gib": (
            torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
        ),
        "loss_first": losses[0] if losses else None,
        "loss_last": losses[-1] if losses else None,
        "skipped_steps": sum(bool(r["skipped"]) for r in rows),
    }


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    logging.basicConfig(level=logging.WARNING)
    from trainer.train.dsconfig import use_cpu_accelerator_if_no_gpu

    accel = use_cpu_accelerator_if_no_gpu()
    import torch

    from trainer.model.config import Dna2GffConfig
    from trainer.train.monitor import peak_flops

    device = torch.device("cuda" if accel == "cuda" else "cpu")
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    if args.build_only:  # the child of a GPU run (below)
        build(args, Path(args.workdir))
        return
    if args.trainer_only:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(args.workdir or tmp)
            work.mkdir(parents=True, exist_ok=True)
            if device.type == "cuda":
                # built in a child: a MoE model's construction leaves a one-process gloo group,
                # and the trainer must make its own (NCCL) one, as after init_model in the recipe
                own = list(sys.argv[1:] if argv is None else argv)
                child = [sys.executable, __file__, *own, "--build_only", "--workdir", str(work)]
                subprocess.run(child, check=True)
                model, data = work / "model", work / "data"
            else:
                model, data = build(args, work)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            rows = trainer_run(args, model, data, work / f"run-{time.time_ns()}")
            figures = trainer_figures(args, rows, device, Dna2GffConfig.load(model))
        print(json.dumps(figures, indent=1))
        if args.json:
            Path(args.json).write_text(json.dumps(figures, indent=1) + "\n")
        return
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.workdir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        model, data = build(args, work)
        args._data = str(data)
        out = work / f"run-{time.time_ns()}"
        batches = same_batches(args, model, data)
        # kernels are compiled per shape (oneDNN JIT on CPU): one untimed pass sees every shape
        # first, as a long run would have; then plain, trainer, plain, since the load of a shared
        # machine drifts, compared by per-step medians
        if not args.cold:
            plain_run(args, model, batches, device)
        plain1, flops = plain_run(args, model, batches, device)
        rows = trainer_run(args, model, data, out)
        trainer = [(r["tokens"], r["seconds"]) for r in rows]
        model_cfg = Dna2GffConfig.load(model)
        plain2, _ = plain_run(args, model, batches, device)
    if [t for t, _ in trainer] != [t for t, _ in plain1]:
        print("warning: the trainer's batches differ from the plain loop's")
    t_med = statistics.median(t / s for t, s in trainer)
    p_med = statistics.median(t / s for t, s in plain1 + plain2)
    p_tok = sum(t for t, _ in plain1)
    total = {
        name: sum(t for t, _ in r) / sum(s for _, s in r)
        for name, r in (("trainer", trainer), ("plain1", plain1), ("plain2", plain2))
    }
    print(
        f"device={torch.cuda.get_device_name(0) if device.type == 'cuda' else 'cpu'} "
        f"threads={torch.get_num_threads()} dtype={'fp32' if args.fp32 else 'bf16'} "
        f"hidden={args.hidden} layers={args.layers}+{args.layers} "
        f"moe={'off' if args.no_moe else args.experts} micro_batch={args.micro_batch} "
        f"window={args.window} steps={args.steps} load={os.getloadavg()[0]:.1f}"
    )
    print(f"trainer  median tokens/s={t_med:10.1f}  overall={total['trainer']:10.1f}")
    print(
        f"plain    median tokens/s={p_med:10.1f}  overall before={total['plain1']:.1f} "
        f"after={total['plain2']:.1f}"
    )
    print(f"ratio trainer/plain (medians) = {t_med / p_med:.3f}  (target >= 0.9 on CPU)")
    t_rate = t_med
    peak = peak_flops(torch.cuda.get_device_name(0)) if device.type == "cuda" else None
    if peak:
        per_token = flops / p_tok
        print(
            f"MFU trainer={per_token * t_rate / peak:.1%} plain={per_token * p_med / peak:.1%} "
            f"(peak {peak / 1e12:.0f} TFLOP/s bf16)"
        )
    if args.json:
        figures = trainer_figures(args, rows, device, model_cfg)
        figures["plain_median_tokens_per_s"] = p_med
        figures["ratio_trainer_plain"] = t_med / p_med
        Path(args.json).write_text(json.dumps(figures, indent=1) + "\n")


if __name__ == "__main__":
    main()
