#!/usr/bin/env python3
"""``train``: fine-tune a dna2gff model on baked shards with DeepSpeed (ZeRO-2, bf16, MoE).

The same flags work under every launcher: ``deepspeed launch/train.py ...``, ``torchrun
--nproc_per_node G launch/train.py ...``, ``mpirun -n N python launch/train.py ...`` and plain
``python launch/train.py ...`` (one process). Without a GPU it runs on DeepSpeed's CPU accelerator
with gloo. ``"auto"`` values in the DeepSpeed JSON are filled from these flags.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script (python3 launch/X.py): import from this checkout
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import os
from collections.abc import Sequence
from typing import Any

from launch._cli import check_outputs, run_cli, setup_logging
from trainer.train.config import TrainConfig

_D = TrainConfig(model="-", data="-", output="-")  # defaults for the help text

# (group, flag, type, help); defaults come from TrainConfig
_OPTIONS: list[tuple[str, str, Any, str]] = [
    ("Input / Output", "deepspeed_config", str, "DeepSpeed JSON (None: built-in ZeRO-2 bf16)"),
    (
        "Parallelism",
        "ep_size",
        int,
        "expert-parallel ranks per expert copy (divides world and experts)",
    ),
    ("Schedule", "max_steps", int, "optimizer steps"),
    ("Schedule", "epochs", float, "stop after this many passes over train (whichever first)"),
    ("Schedule", "micro_batch_size", int, "windows per rank per micro-batch"),
    ("Schedule", "grad_accum", int, "micro-batches per optimizer step"),
    ("Schedule", "lr", float, "peak learning rate"),
    ("Schedule", "min_lr", float, "final learning rate (WarmupCosineLR)"),
    ("Schedule", "warmup_steps", int, "linear warmup steps"),
    ("Schedule", "weight_decay", float, "AdamW weight decay (matrices only)"),
    ("Schedule", "grad_clip", float, "gradient clipping norm (0 = off)"),
    ("Schedule", "seed", int, "seed of data order and dropout"),
    (
        "Data",
        "max_src_tokens",
        int,
        "longest window in encoder tokens incl. [CLS]/[SEP]; a longer one is refused, never cut",
    ),
    (
        "Data",
        "max_tgt_tokens",
        int,
        "longest target in decoder tokens incl. [CLS]; a longer one is refused, never cut",
    ),
    ("Data", "pad_multiple", int, "pad batch lengths to a multiple of this (fewer shapes)"),
    ("Data", "num_workers", int, "loader worker processes per rank"),
    ("Data", "shuffle_buffer", int, "samples in each loader slot's shuffle buffer"),
    (
        "Data",
        "genome_balance",
        float,
        "windows drawn across genomes: a genome's share of a pass is proportional to its windows "
        "to this power (1 = to its size, 0.5 = square root, 0 = every genome alike)",
    ),
    (
        "Data",
        "constrained_loss",
        str,
        "loss over what the decoder allows at each step: orf, grammar or none",
    ),
    (
        "Data",
        "transl_table",
        int,
        "genetic code of the ORF layer in the constrained loss for samples baked without one "
        "(a sample's own code, recorded by bake_data, wins)",
    ),
    ("Checkpoints", "save_every", int, "checkpoint every N steps (0 = only at the end)"),
    ("Checkpoints", "keep_last", int, "complete checkpoints to keep"),
    ("Checkpoints", "export_every", int, "export a model folder every N steps (0 = at the end)"),
    ("Checkpoints", "max_nan_steps", int, "stop after this many NaN/inf-loss steps"),
    ("Monitoring", "log_every", int, "TensorBoard scalars every N steps"),
    ("Monitoring", "eval_every", int, "validation loss every N steps (0 = at the end only)"),
    ("Monitoring", "eval_batches", int, "validation micro-batches per rank"),
    ("Monitoring", "decode_every", int, "greedy-decode val windows every N steps (0 = never)"),
    ("Monitoring", "decode_windows", int, "windows to decode for val/exact_features"),
]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="train", description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    groups = {"Input / Output": p.add_argument_group("Input / Output")}
    io = groups["Input / Output"]
    for flag, text in (
        ("model", "model folder from init_model / resize_model"),
        ("data", "baked folder (manifest.json, train/, val/)"),
        ("output", "run folder (checkpoints/, tensorboard/, export/)"),
    ):
        io.add_argument(f"--{flag}", required=True, default=argparse.SUPPRESS, help=text)
    for group, flag, kind, text in _OPTIONS:
        g = groups.setdefault(group, p.add_argument_group(group))
        g.add_argument(f"--{flag}", type=kind, default=getattr(_D, flag), help=text)
    ck = groups["Checkpoints"]
    ck.add_argument("--resume", action="store_true", help="continue from the latest checkpoint")
    ck.add_argument(
        "--no_export", action="store_true", help="do not write RUN_DIR/export at the end"
    )
    ck.add_argument(
        "--export_only",
        action="store_true",
        help="export the latest checkpoint to RUN_DIR/export and stop",
    )
    dt = groups["Data"]
    dt.add_argument(
        "--full_vocab_loss",
        action="store_true",
        help="softmax over the whole vocabulary (default: target tokens + [SEP] only)",
    )
    dt.add_argument("--no_bf16", action="store_true", help="fp32 (when the JSON says bf16 auto)")
    misc = p.add_argument_group("Logging")
    misc.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    misc.add_argument("--local_rank", "--local-rank", type=int, default=-1, help=argparse.SUPPRESS)
    return p


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    check_outputs(folders=[args.output], inputs=[args.model, args.data, args.deepspeed_config])
    rank = os.environ.get("RANK", os.environ.get("OMPI_COMM_WORLD_RANK", "0"))
    setup_logging(args.verbose)  # train() adds RUN_DIR/train.rank{R}.log once the options pass
    fields = {flag: getattr(args, flag) for _, flag, _, _ in _OPTIONS}
    cfg = TrainConfig(
        model=args.model,
        data=args.data,
        output=args.output,
        resume=args.resume,
        export=not args.no_export,
        export_only=args.export_only,
        restrict_loss_vocab=not args.full_vocab_loss,
        bf16=not args.no_bf16,
        **fields,
    )
    from trainer.train.engine import train

    result = train(cfg)
    if int(rank) == 0:
        loss = f"{result.losses[-1]:.4f}" if result.losses else "none"  # no step in this run
        print(
            f"steps={result.steps} stopped_by={result.stopped_by} "
            f"loss={loss} "
            f"val_loss={result.val_loss} checkpoint={result.checkpoint} export={result.export_dir}"
        )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, argv)


def cli() -> None:
    """The process entry (script and console command): ``main``, then an exit a launcher trusts."""
    code = main()
    from trainer.distributed import exit_process

    exit_process(code)


if __name__ == "__main__":
    cli()
