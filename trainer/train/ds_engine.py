"""The DeepSpeed engine: what the trainer uses of it (``TrainEngine``) and how it is built.

DeepSpeed's ``DeepSpeedEngine`` is a large untyped class; the loop, checkpoints, resharding,
validation and export use a small part of it. ``TrainEngine`` names that part, so that mypy checks
every use, a reader sees at a glance what the trainer relies on (what a DeepSpeed upgrade must
keep), and a test may stand in a small fake. Building it (``build_engine``) is the one place that
calls ``deepspeed.initialize``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import torch

if TYPE_CHECKING:
    from trainer.model.config import Dna2GffConfig
    from trainer.train.config import TrainConfig
    from trainer.train.dsconfig import ResolvedDSConfig


class TrainEngine(Protocol):
    """The methods and attributes of DeepSpeed's engine that the trainer uses."""

    module: Any
    """The wrapped ``Dna2GffModel`` (its experts are this rank's shard)."""
    optimizer: Any
    """ZeRO's optimizer wrapper (fp32 masters, Adam moments)."""
    lr_scheduler: Any
    global_steps: int
    global_samples: int
    skipped_steps: int

    def __call__(self, **inputs: Any) -> Any:
        """The module's forward (``Seq2SeqOutput``)."""

    def backward(self, loss: torch.Tensor) -> Any:
        """Back-propagate ``loss`` (scaled by gradient accumulation)."""

    def step(self) -> None:
        """Optimizer and schedule step at a gradient-accumulation boundary."""

    def train(self, mode: bool = True) -> Any: ...

    def eval(self) -> Any: ...

    def get_lr(self) -> list[float]: ...

    def get_global_grad_norm(self) -> float | None: ...

    def save_checkpoint(
        self,
        save_dir: str,
        tag: str | None = None,
        client_state: Any = None,
        save_latest: bool = True,
    ) -> Any: ...

    def load_checkpoint(self, load_dir: str, tag: str | None = None, **kwargs: Any) -> Any: ...


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Decay matrices only; then split MoE experts into their own groups (ZeRO needs that)."""
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.ndim >= 2 and "norm" not in name.lower() else no_decay).append(p)
    groups = [
        {"name": "decay", "params": decay, "weight_decay": weight_decay},
        {"name": "no_decay", "params": no_decay, "weight_decay": 0.0},
    ]
    groups = [g for g in groups if g["params"]]
    from deepspeed.moe.utils import split_params_into_different_moe_groups_for_optimizer

    return split_params_into_different_moe_groups_for_optimizer(groups)


def restore_fp32_masters(module: torch.nn.Module, masters: dict[str, torch.Tensor]) -> None:
    """Put the exact fp32 starting weights back into ZeRO's fp32 master partitions.

    DeepSpeed casts the module to bf16 before it builds the fp32 masters, so without this the
    pre-trained weights would start rounded to bf16. Local to each rank (no collective).
    """
    if not masters:
        return
    from deepspeed.utils import safe_set_full_fp32_param

    for name, p in module.named_parameters():
        if name in masters:
            safe_set_full_fp32_param(p, masters[name].to(p.device))


def build_engine(
    cfg: TrainConfig, ds: ResolvedDSConfig, rank: int, model_cfg: Dna2GffConfig
) -> TrainEngine:
    """The model under DeepSpeed (seeded per rank), with the exact fp32 weights as ZeRO masters.

    The module carries the run's one config object (``model_cfg``, with the target spec recorded),
    so the export writes it as it is.
    """
    import deepspeed

    from trainer.model.seq2seq import Dna2GffModel

    torch.manual_seed(cfg.seed + rank)
    model = Dna2GffModel.from_pretrained(cfg.model, ep_size=cfg.ep_size)
    model.config = model_cfg
    groups = param_groups(model, cfg.weight_decay)
    client_opt = None
    if "optimizer" not in ds.config:
        client_opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.98), eps=1e-8)
    masters = {n: p.detach().clone() for n, p in model.named_parameters()} if ds.bf16 else {}
    engine, _, _, _ = deepspeed.initialize(
        model=model,
        model_parameters=groups if client_opt is None else None,
        optimizer=client_opt,
        config=ds.config,
    )
    restore_fp32_masters(engine.module, masters)
    return engine
