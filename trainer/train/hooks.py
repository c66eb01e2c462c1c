"""Fault injection for tests: where the training loop lets a test break it on purpose.

Tests need a run that crashes right after a checkpoint (to test resume) or whose loss turns NaN at
given steps (to test the NaN guard). Those are no settings a user should see, so they are not in
``TrainConfig``: a test passes ``train(cfg, hooks=TrainHooks(...))``, or, for a subprocess (the CLI,
torchrun), sets the test-only environment variable ``DNA2GFF_TEST_FAULTS``, read here and nowhere
else, e.g. ``DNA2GFF_TEST_FAULTS="fail_at_step=7"`` or ``"nan_at_steps=2:3"``. Without either, the
hooks do nothing. ``observer`` (``trainer.train.observe``) lets a test watch every step read-only;
it has no environment form (a subprocess test runs its own worker script that passes one).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from baking.common.errors import ConfigError
from trainer.train.observe import TrainObserver

ENV = "DNA2GFF_TEST_FAULTS"


@dataclass(frozen=True)
class TrainHooks:
    """What to break: ``fail_at_step`` raises after that step's checkpoint; ``nan_at_steps`` poison
    the loss of those steps (1-based, like ``TrainerState.step`` after the step)."""

    fail_at_step: int | None = None
    nan_at_steps: frozenset[int] = frozenset()
    observer: TrainObserver | None = field(default=None, compare=False)

    def poison_loss(self, step: int) -> bool:
        """Whether the loss of (1-based) ``step`` is to be made NaN."""
        return step in self.nan_at_steps

    def after_step(self, step: int) -> None:
        """Called once a step's logging, evaluation and checkpoint are done."""
        if self.fail_at_step is not None and step == self.fail_at_step:
            raise RuntimeError(f"fail_at_step={self.fail_at_step}: simulated crash")

    @classmethod
    def from_env(cls) -> TrainHooks:
        """The hooks ``DNA2GFF_TEST_FAULTS`` asks for (none when it is unset)."""
        spec = os.environ.get(ENV, "").strip()
        fail: int | None = None
        nan: frozenset[int] = frozenset()
        for item in filter(None, (part.strip() for part in spec.split(","))):
            name, _, value = item.partition("=")
            try:
                if name == "fail_at_step":
                    fail = int(value)
                elif name == "nan_at_steps":
                    nan = frozenset(int(v) for v in value.split(":") if v)
                else:
                    raise ValueError(name)
            except ValueError:
                raise ConfigError(
                    f"{ENV}: bad item {item!r} (fail_at_step=N, nan_at_steps=A:B)"
                ) from None
        return cls(fail_at_step=fail, nan_at_steps=nan)
