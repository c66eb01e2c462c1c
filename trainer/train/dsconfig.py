"""DeepSpeed JSON configs with ``"auto"`` values filled from the command line.

One file in ``ds_configs/`` serves every model size and cluster shape: batch sizes, learning rate,
schedule length, clipping and bf16 are written as ``"auto"`` (the convention Hugging Face users know)
and filled here from ``TrainConfig`` and the world size. A value written explicitly in the JSON wins
over the command line, and the trainer reads the effective batch settings back from the filled dict,
so the data loader always agrees with what DeepSpeed was told.
"""

from __future__ import annotations

import copy
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from baking.common.errors import ConfigError, InputError
from baking.common.files import read_json
from trainer.train.config import TrainConfig

log = logging.getLogger(__name__)

AUTO = "auto"

#: Used when no ``--deepspeed_config`` is given: ZeRO-2, bf16, torch AdamW (compiles nothing),
#: linear warmup then cosine decay to ``--min_lr`` (``--min_lr == --lr``: constant after warmup).
DEFAULT_CONFIG: dict[str, Any] = {
    "train_batch_size": AUTO,
    "train_micro_batch_size_per_gpu": AUTO,
    "gradient_accumulation_steps": AUTO,
    "gradient_clipping": AUTO,
    "steps_per_print": 1000000,
    "bf16": {"enabled": AUTO, "check_grad_overflow": True},
    "zero_optimization": {
        "stage": 2,
        "overlap_comm": False,
        "contiguous_gradients": True,
        "reduce_bucket_size": AUTO,
        "allgather_bucket_size": AUTO,
    },
    "optimizer": {
        "type": "AdamW",
        "params": {
            "lr": AUTO,
            "betas": [0.9, 0.98],
            "eps": 1e-8,
            "weight_decay": AUTO,
            "torch_adam": True,
        },
    },
    "scheduler": {
        "type": "WarmupCosineLR",
        "params": {
            "warmup_num_steps": AUTO,
            "total_num_steps": AUTO,
            "warmup_min_ratio": AUTO,
            "cos_min_ratio": AUTO,
            "warmup_type": "linear",
        },
    },
}

_BUCKET = 200_000_000


@dataclass(frozen=True)
class ResolvedDSConfig:
    """The filled DeepSpeed dict plus the batch settings the data loader must use."""

    config: dict[str, Any]
    micro_batch_size: int
    grad_accum: int
    bf16: bool


def load_ds_config(path: str | Path | None) -> dict[str, Any]:
    """Read a DeepSpeed JSON (or return the built-in default), with a located error when bad."""
    if path is None:
        return copy.deepcopy(DEFAULT_CONFIG)
    p = Path(path)
    if not p.is_file():
        raise InputError(p, "DeepSpeed config not found")
    data = read_json(p)
    if not isinstance(data, dict):
        raise InputError(p, "a DeepSpeed config must be a JSON object")
    return data


def _fill(d: dict[str, Any], key: str, value: Any) -> None:
    if d.get(key) == AUTO:
        d[key] = value


def resolve_ds_config(
    ds: dict[str, Any], cfg: TrainConfig, world_size: int, total_steps: int
) -> ResolvedDSConfig:
    """Fill every ``"auto"`` in ``ds`` from ``cfg``; check batch arithmetic; return a new dict.

    ``total_steps`` is the number of optimizer steps the run will take (the schedule's length).
    """
    if world_size < 1:
        raise ConfigError(f"world_size must be >= 1, got {world_size}")
    out = copy.deepcopy(ds)
    for key in (
        "train_micro_batch_size_per_gpu",
        "gradient_accumulation_steps",
        "train_batch_size",
    ):
        out.setdefault(key, AUTO)
    _fill(out, "train_micro_batch_size_per_gpu", cfg.micro_batch_size)
    _fill(out, "gradient_accumulation_steps", cfg.grad_accum)
    mb = _int_field("train_micro_batch_size_per_gpu", out["train_micro_batch_size_per_gpu"])
    ga = _int_field("gradient_accumulation_steps", out["gradient_accumulation_steps"])
    _fill(out, "train_batch_size", mb * ga * world_size)
    tbs = _int_field("train_batch_size", out["train_batch_size"])
    if mb * ga * world_size != tbs:
        raise ConfigError(
            f"train_batch_size={tbs} must equal train_micro_batch_size_per_gpu={mb} x "
            f"gradient_accumulation_steps={ga} x world_size={world_size}"
        )
    _fill(out, "gradient_clipping", cfg.grad_clip)

    bf16 = out.setdefault("bf16", {})
    _fill(bf16, "enabled", cfg.bf16)
    fp16 = out.get("fp16", {})
    if fp16.get("enabled") == AUTO:
        fp16["enabled"] = False
    if bf16.get("enabled") and fp16.get("enabled"):
        raise ConfigError("bf16.enabled and fp16.enabled cannot both be true")

    zero = out.get("zero_optimization", {})
    for key in ("reduce_bucket_size", "allgather_bucket_size", "stage3_prefetch_bucket_size"):
        _fill(zero, key, _BUCKET)

    opt = out.get("optimizer", {}).get("params", {})
    _fill(opt, "lr", cfg.lr)
    _fill(opt, "weight_decay", cfg.weight_decay)
    _fill(opt, "betas", [0.9, 0.98])
    _fill(opt, "eps", 1e-8)

    sched = out.get("scheduler", {}).get("params", {})
    _fill(sched, "warmup_min_lr", 0.0)
    _fill(sched, "warmup_max_lr", cfg.lr)
    _fill(sched, "warmup_num_steps", max(1, min(cfg.warmup_steps, total_steps - 1)))
    _fill(sched, "total_num_steps", max(total_steps, 1))
    _fill(sched, "cos_min_ratio", cfg.min_lr / cfg.lr)
    _fill(sched, "warmup_min_ratio", 0.0)
    _fill(sched, "lr_range_test_min_lr", cfg.lr)

    left = _find_auto(out)
    if left:
        raise ConfigError(
            f'no value to fill DeepSpeed config field(s) set to "auto": {", ".join(left)}'
        )
    return ResolvedDSConfig(out, mb, ga, bool(out.get("bf16", {}).get("enabled", False)))


def _int_field(name: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return value


def _find_auto(d: Any, prefix: str = "") -> list[str]:
    if isinstance(d, dict):
        found: list[str] = []
        for k, v in d.items():
            found += _find_auto(v, f"{prefix}{k}.")
        return found
    return [prefix.rstrip(".")] if d == AUTO else []


def check_ep_size(ep_size: int, world_size: int, num_experts: int | None) -> None:
    """Fail early, with numbers, when expert parallelism cannot tile the world or the experts."""
    if ep_size < 1:
        raise ConfigError(f"--ep_size must be >= 1, got {ep_size}")
    if world_size % ep_size:
        raise ConfigError(f"--ep_size {ep_size} must divide the world size {world_size}")
    if num_experts is None:
        if ep_size > 1:
            raise ConfigError(
                f"--ep_size {ep_size} needs a MoE model, but the model has no experts"
            )
        return
    if num_experts % ep_size:
        raise ConfigError(f"--ep_size {ep_size} must divide the number of experts {num_experts}")


def use_cpu_accelerator_if_no_gpu() -> str:
    """Pick DeepSpeed's accelerator before deepspeed is imported: cpu when there is no CUDA.

    Returns the accelerator name. Must run before the first ``import deepspeed`` anywhere.
    """
    if "DS_ACCELERATOR" not in os.environ:
        import torch

        if not torch.cuda.is_available():
            os.environ["DS_ACCELERATOR"] = "cpu"
    return os.environ.get("DS_ACCELERATOR", "cuda")
