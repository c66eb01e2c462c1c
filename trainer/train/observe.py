"""A read-only window into the training loop, for tests that check what the engine computes.

``train(cfg, hooks=TrainHooks(observer=...))`` calls the observer at three points of every
optimizer step (``run_step`` and the loop; ``trainer.train.hooks`` carries it). It exists
so that a test can replay exactly what each rank saw (the prepared micro-batch, the torch RNG state
DeepSpeed's top-2 gate will draw from) in a plain-PyTorch reference and compare the engine's
averaged gradients and learning rate with it (``tests/test_engine_reference.py``). Observers must
not change the batch or the engine's state; every rank calls them in the same order, so an
observer may run collectives (``deepspeed.utils.safe_get_full_grad`` is one). The default
``None`` costs nothing.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch


class TrainObserver(Protocol):
    """Called by ``trainer.train.engine.train`` on every rank (steps count from 1)."""

    def micro_batch(self, step: int, micro: int, batch: dict[str, torch.Tensor]) -> None:
        """Before the forward of micro-batch ``micro`` (0-based) of ``step``, batch on the device."""

    def gradients(self, step: int, engine: Any) -> None:
        """After the last backward of ``step``, before ``engine.step()``: gradients are reduced."""

    def step_end(self, step: int, engine: Any, lr: float) -> None:
        """After the optimizer step of ``step``; ``lr`` is the rate that step used."""
