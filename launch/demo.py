#!/usr/bin/env python3
"""``demo``: the whole recipe end to end on synthetic genomes (or yours), ending in a score table.

Runs make_synthetic -> tokenizer + tiny DNABERT-2-layout checkpoint -> init_model (MoE) -> bake_data
(2 workers) -> init_tk / append_tk / resize_model -> train (DeepSpeed, 2 CPU ranks, ZeRO-2, bf16,
ep_size 2) -> annotate (held-out genome) -> evaluate (with Prodigal).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script (python3 launch/X.py): import from this checkout
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
from collections.abc import Sequence

from launch._cli import check_outputs, run_cli, setup_logging
from trainer.demo import DemoConfig, run_demo


def build_parser() -> argparse.ArgumentParser:
    d = DemoConfig()
    p = argparse.ArgumentParser(
        prog="demo",
        description="Run the whole recipe end to end on synthetic genomes (or yours); print the scores.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    io = p.add_argument_group("Input / Output")
    io.add_argument("--out", default=d.out, help="output folder (replaced if an earlier demo's)")
    io.add_argument(
        "--genome",
        nargs=2,
        action="append",
        metavar=("FNA", "GFF"),
        default=[],
        help="a real genome (repeatable); the last one is held out and scored",
    )
    io.add_argument(
        "--dnabert_path",
        default=None,
        help="DNABERT-2 folder or hub id (default: a tiny random stand-in)",
    )
    io.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    syn = p.add_argument_group("Synthetic genomes")
    syn.add_argument("--seed", type=int, default=d.seed)
    syn.add_argument("--train_genomes", type=int, default=d.train_genomes)
    syn.add_argument("--genome_length", type=int, default=d.genome_length, help="chromosome bp")
    m = p.add_argument_group("Tiny stand-in model")
    m.add_argument("--vocab_size", type=int, default=d.vocab_size, help="BPE tokens")
    m.add_argument("--hidden_size", type=int, default=d.hidden_size)
    m.add_argument("--num_layers", type=int, default=d.num_layers)
    m.add_argument("--num_heads", type=int, default=d.num_heads)
    m.add_argument("--intermediate_size", type=int, default=d.intermediate_size)
    m.add_argument("--num_experts", type=int, default=d.num_experts)
    m.add_argument("--moe_top_k", type=int, default=d.moe_top_k)
    t = p.add_argument_group("Bake and train")
    t.add_argument(
        "--window_len",
        type=int,
        default=None,
        help="bake window in bp (default: 400 for the tiny model, the baker's "
        "default with --dnabert_path)",
    )
    t.add_argument(
        "--val_fraction",
        type=float,
        default=d.val_fraction,
        help="validation block at the end of each training sequence",
    )
    t.add_argument("--workers", type=int, default=d.workers, help="bake worker processes")
    t.add_argument("--launcher", choices=("deepspeed", "torchrun", "python"), default=d.launcher)
    t.add_argument("--nproc", type=int, default=d.nproc, help="training ranks")
    t.add_argument("--ep_size", type=int, default=d.ep_size, help="expert parallelism")
    t.add_argument("--deepspeed_config", default=d.deepspeed_config)
    t.add_argument("--max_steps", type=int, default=d.max_steps)
    t.add_argument("--micro_batch_size", type=int, default=d.micro_batch_size)
    t.add_argument("--lr", type=float, default=d.lr)
    m.add_argument("--dense", action="store_true", help="no MoE (a dense decoder)")
    t.add_argument(
        "--bake_arg", action="append", default=[], metavar="ARG", help="extra flag for bake_data.py"
    )
    t.add_argument(
        "--train_arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra flag for train.py, e.g. --train_arg=--save_every=50",
    )
    t.add_argument(
        "--annotate_arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra flag for annotate.py",
    )
    t.add_argument("--no_baseline", action="store_true", help="skip the Prodigal row")
    return p


def _main(argv: Sequence[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    check_outputs(folders=[a.out], inputs=[p for pair in a.genome for p in pair])
    setup_logging(a.verbose)
    cfg = DemoConfig(
        out=a.out,
        genomes=tuple((f, g) for f, g in a.genome),
        dnabert_path=a.dnabert_path,
        seed=a.seed,
        train_genomes=a.train_genomes,
        genome_length=a.genome_length,
        vocab_size=a.vocab_size,
        hidden_size=a.hidden_size,
        num_layers=a.num_layers,
        num_heads=a.num_heads,
        intermediate_size=a.intermediate_size,
        num_experts=a.num_experts,
        moe_top_k=a.moe_top_k,
        window_len=a.window_len,
        val_fraction=a.val_fraction,
        workers=a.workers,
        launcher=a.launcher,
        nproc=a.nproc,
        ep_size=a.ep_size,
        deepspeed_config=a.deepspeed_config,
        max_steps=a.max_steps,
        micro_batch_size=a.micro_batch_size,
        lr=a.lr,
        use_moe=not a.dense,
        bake_args=tuple(a.bake_arg),
        train_args=tuple(a.train_arg),
        annotate_args=tuple(a.annotate_arg),
        baseline=not a.no_baseline,
    )
    print(run_demo(cfg).report())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: 0 when every step passed; 2 with ``error: ...`` naming the failed step."""
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
