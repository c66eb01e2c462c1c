"""Faults injected into training runs on purpose: the tests' own support code.

Tests need a run that crashes right after a checkpoint (to test resume) or whose loss turns NaN at
given steps (to test the NaN guard). Neither is a setting a user should see, and the production
package neither knows about them nor reads any environment variable for them:

- ``fail_at_step`` is an observer (``trainer.train.observe.TrainObserver``): its ``step_done``
  raises once that step's record, evaluation and checkpoint are done;
- ``nan_at_steps`` wraps ``trainer.train.step.token_loss`` for the length of the run, making the
  loss of those (1-based) steps NaN; the observer's ``micro_batch`` tells it which step runs.

In process: ``train_with_faults(cfg, Faults(...))``. In a subprocess (the CLI, torchrun):
``python tests/faulty_train.py --faults fail_at_step=7 <train.py's arguments>``
(``faults_from_spec`` reads that text: ``fail_at_step=N``, ``nan_at_steps=A:B``, comma-separated).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from trainer.train.observe import TrainObserver


@dataclass(frozen=True)
class FaultSpec:
    """What to break: ``fail_at_step`` raises after that step's checkpoint; ``nan_at_steps``
    poison the loss of those steps (1-based, like ``TrainerState.step`` after the step)."""

    fail_at_step: int | None = None
    nan_at_steps: frozenset[int] = frozenset()


class Faults(TrainObserver):
    """An observer that breaks the run as its ``FaultSpec`` says (and watches nothing else)."""

    def __init__(self, fail_at_step: int | None = None, nan_at_steps: frozenset[int] = frozenset()):
        self.spec = FaultSpec(fail_at_step, frozenset(nan_at_steps))
        self.step = 0  # the step whose micro-batches are running

    def micro_batch(self, step: int, micro: int, batch: Any) -> None:
        self.step = step

    def step_done(self, step: int) -> None:
        if self.spec.fail_at_step is not None and step == self.spec.fail_at_step:
            raise RuntimeError(f"fail_at_step={self.spec.fail_at_step}: simulated crash")

    @contextlib.contextmanager
    def poisoned_loss(self) -> Iterator[None]:
        """While active, the training loss of the steps in ``nan_at_steps`` is NaN."""
        from trainer.train import step as step_mod

        if not self.spec.nan_at_steps:
            yield
            return
        real = step_mod.token_loss

        def token_loss(*args: Any, **kwargs: Any) -> Any:
            ce, n = real(*args, **kwargs)
            if self.step in self.spec.nan_at_steps:
                ce = ce * float("nan")
            return ce, n

        step_mod.token_loss = token_loss
        try:
            yield
        finally:
            step_mod.token_loss = real


def faults_from_spec(spec: str) -> Faults:
    """``"fail_at_step=7"``, ``"nan_at_steps=2:3"`` or both, comma-separated."""
    fail: int | None = None
    nan: frozenset[int] = frozenset()
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, value = item.partition("=")
        if name == "fail_at_step":
            fail = int(value)
        elif name == "nan_at_steps":
            nan = frozenset(int(v) for v in value.split(":") if v)
        else:
            raise ValueError(f"bad fault {item!r} (fail_at_step=N, nan_at_steps=A:B)")
    return Faults(fail, nan)


def train_with_faults(cfg: Any, faults: Faults) -> Any:
    """``trainer.train.engine.train(cfg)`` with ``faults`` injected."""
    from trainer.train.engine import train

    with faults.poisoned_loss():
        return train(cfg, observer=faults)
