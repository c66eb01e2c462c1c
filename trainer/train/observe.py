"""A window into the training loop, for callers that check what the engine computes.

``train(cfg, observer=...)`` calls the observer at four points of every optimizer step
(``run_step`` and the loop). It exists so that a test can replay exactly what each rank saw (the
prepared micro-batch, the torch RNG state DeepSpeed's top-2 gate will draw from) in a
plain-PyTorch reference and compare the engine's averaged gradients and learning rate with it
(``tests/test_engine_reference.py``), and so that a test can break a run at a chosen step
(``tests/faults.py``: a crash after a checkpoint). Observers must not change the batch or the
engine's state; every rank calls them in the same order, so an observer may run collectives
(``deepspeed.utils.safe_get_full_grad`` is one). The default ``None`` costs nothing.

Why a base class with do-nothing methods rather than a ``Protocol``: an observer overrides only
the points it cares about, and the loop may call every point without asking which exist.
Nothing here reads the environment: what a run does is decided by its caller alone.
"""

from __future__ import annotations

from typing import Any

import torch


class TrainObserver:
    """Called by ``trainer.train.engine.train`` on every rank (steps count from 1)."""

    def micro_batch(self, step: int, micro: int, batch: dict[str, torch.Tensor]) -> None:
        """Before the forward of micro-batch ``micro`` (0-based) of ``step``, batch on the device."""

    def gradients(self, step: int, engine: Any) -> None:
        """After the last backward of ``step``, before ``engine.step()``: gradients are reduced."""

    def step_end(self, step: int, engine: Any, lr: float) -> None:
        """After the optimizer step of ``step``; ``lr`` is the rate that step used."""

    def step_done(self, step: int) -> None:
        """After ``step``'s record and its periodic work (validation, export, checkpoint)."""
