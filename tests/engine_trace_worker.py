"""``torchrun ... tests/engine_trace_worker.py CONFIG.json TRACE_DIR``: train and record each rank.

Used by ``tests/test_engine_reference.py``. Runs ``trainer.train.engine.train`` (the real loop, the
real DeepSpeed engine) with an observer that records, per rank, what a plain-PyTorch reference needs
to replay the run: every prepared micro-batch, the torch RNG state just before its forward (the
top-2 gate samples its second expert from it), the fp32 gradients DeepSpeed reduced for every
parameter (experts under their global index), the global gradient norm and the learning rate of
each step. Written to ``TRACE_DIR/trace_rank{R}.pt`` once training is done.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: import from this checkout
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import torch

from trainer.model.moe import is_expert_key
from trainer.train.config import TrainConfig
from trainer.train.engine import train
from trainer.train.observe import TrainObserver


class Recorder(TrainObserver):
    """Keeps everything in memory (tiny models, a few steps) and saves it at the end."""

    def __init__(self) -> None:
        self.micro: list[dict[str, Any]] = []
        self.grads: dict[int, dict[str, torch.Tensor]] = {}
        self.steps: list[dict[str, float]] = []

    def micro_batch(self, step: int, micro: int, batch: dict[str, torch.Tensor]) -> None:
        self.micro.append(
            {
                "step": step,
                "micro": micro,
                "rng": torch.get_rng_state(),
                "batch": {k: v.detach().cpu().clone() for k, v in batch.items()},
            }
        )

    def gradients(self, step: int, engine: Any) -> None:
        import torch.distributed as dist
        from deepspeed.utils import safe_get_full_grad

        module = engine.module
        shard = module.expert_shard()  # local expert ids -> global ones
        rank = dist.get_rank()
        grads: dict[str, torch.Tensor] = {}
        for name, p in module.named_parameters():
            g = safe_get_full_grad(p)  # a collective over the parameter's data-parallel group
            if g is not None and (rank == 0 or is_expert_key(name)):
                grads[shard.to_global(name)] = g.detach().float().cpu().clone()
        self.grads[step] = grads

    def step_end(self, step: int, engine: Any, lr: float) -> None:
        norm = engine.get_global_grad_norm()
        self.steps.append({"step": step, "lr": lr, "grad_norm": float(norm)})


def main() -> int:
    import torch.distributed as dist

    cfg = TrainConfig.from_dict(json.loads(Path(sys.argv[1]).read_text()))
    out = Path(sys.argv[2])
    rec = Recorder()
    result = train(cfg, observer=rec)
    rank = dist.get_rank()
    out.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "micro": rec.micro,
            "grads": rec.grads,
            "steps": rec.steps,
            "losses": result.losses,
            "world": dist.get_world_size(),
        },
        out / f"trace_rank{rank}.pt",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
