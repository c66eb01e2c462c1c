"""The training run's settings as one typed dataclass.

Every launcher (deepspeed, torchrun, mpirun, plain python) ends up calling ``train(TrainConfig)``;
keeping the settings in one validated object means a bad value fails before any process group,
model or shard is touched, with a message that names the field.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from baking.common.errors import ConfigError
from baking.common.files import write_json


@dataclass
class TrainConfig:
    """What a training run needs; paths are folders unless named ``*_config``."""

    model: str
    """Model folder written by ``init_model`` (config.json, model.safetensors, tokenizer)."""
    data: str
    """Baked folder: ``manifest.json`` plus ``train/*.tar`` and ``val/*.tar``."""
    output: str
    """Run folder: ``checkpoints/``, ``tensorboard/``, ``export/``, ``train.log``."""
    deepspeed_config: str | None = None
    """DeepSpeed JSON; ``"auto"`` values are filled from this config. None: built-in ZeRO-2."""
    ep_size: int = 1
    """Expert parallelism: how many ranks share one copy of the experts."""
    seed: int = 1234
    max_steps: int = 100
    """Optimizer steps to run (the run ends there, or earlier with ``epochs``)."""
    epochs: float | None = None
    """If set, stop after this many passes over the training split (whichever comes first)."""
    micro_batch_size: int = 8
    grad_accum: int = 1
    lr: float = 3e-4
    min_lr: float = 0.0
    warmup_steps: int = 10
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    bf16: bool = True
    """bf16 weights and activations (ZeRO keeps fp32 master weights)."""
    constrained_loss: str = "orf"
    """The loss of each step is the constrained decoder's distribution over what
    it allows there -- ``orf`` (pointer grammar + ORF layer, as annotate decodes), ``grammar``
    (pointer grammar only) or ``none`` (every base and target token)."""
    transl_table: int = 11
    """Genetic code of the ORF layer in the constrained loss for samples that carry none; each
    sample baked with a code (its ``json`` ``transl_table``, see ``bake_data``) uses its own."""
    restrict_loss_vocab: bool = True
    """Softmax only over the target vocabulary (annotation tokens + [SEP]) in the loss."""
    max_src_tokens: int = 512
    """Longest window in encoder tokens ([CLS] and [SEP] included): a longer one is refused,
    never cut (the encoder sees whole windows, as in annotate)."""
    max_tgt_tokens: int = 512
    """Longest target in decoder tokens ([CLS] included): a longer one is refused, never cut."""
    pad_multiple: int = 8
    """Batch lengths are padded up to a multiple of this (fewer shapes: fewer kernel compiles)."""
    num_workers: int = 1
    """DataLoader worker processes per rank (0 = tokenise in the training process)."""
    shuffle_buffer: int = 256
    genome_balance: float = 0.5
    """How windows are drawn across genomes: each genome's share of a pass is proportional to its
    train windows to this power (1.0: to its size; 0.5: its square root, so a 0.6 Mbp genome is
    not drowned by a 6 Mbp one; 0.0: every genome alike). See ``trainer.data.balance``."""
    save_every: int = 50
    """Checkpoint every N steps (0 = only at the end)."""
    keep_last: int = 3
    resume: bool = False
    """Continue from the latest complete checkpoint in ``output/checkpoints``."""
    log_every: int = 1
    eval_every: int = 50
    """Validation loss every N steps (0 = never; always at the end when a val split exists)."""
    eval_batches: int = 4
    decode_every: int = 100
    """Greedy-decode a few validation windows every N steps and count exact features (0 = never)."""
    decode_windows: int = 4
    max_nan_steps: int = 10
    """Stop the run after this many skipped steps with a NaN/inf loss."""
    export: bool = True
    """Write a consolidated model folder to ``output/export`` at the end."""
    export_every: int = 0
    """Also export every N steps (0 = only at the end)."""
    export_only: bool = False
    """Load the latest checkpoint, write ``output/export`` and stop (same launcher as training)."""

    def __post_init__(self) -> None:
        positive = (
            "ep_size",
            "max_steps",
            "micro_batch_size",
            "grad_accum",
            "keep_last",
            "log_every",
            "eval_batches",
            "decode_windows",
            "max_src_tokens",
            "max_tgt_tokens",
            "shuffle_buffer",
            "pad_multiple",
        )
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        non_negative = (
            "warmup_steps",
            "save_every",
            "eval_every",
            "decode_every",
            "num_workers",
            "max_nan_steps",
            "export_every",
        )
        for name in non_negative:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"{name} must be an integer >= 0, got {value!r}")
        if self.constrained_loss not in ("orf", "grammar", "none"):
            raise ConfigError(
                f"constrained_loss must be orf, grammar or none, got {self.constrained_loss!r}"
            )
        if not self.lr > 0:
            raise ConfigError(f"lr must be > 0, got {self.lr!r}")
        if not 0 <= self.min_lr <= self.lr:
            raise ConfigError(f"min_lr must be in [0, lr={self.lr}], got {self.min_lr!r}")
        if self.weight_decay < 0:
            raise ConfigError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        if self.grad_clip < 0:
            raise ConfigError(f"grad_clip must be >= 0 (0 = off), got {self.grad_clip!r}")
        balance = self.genome_balance
        if isinstance(balance, bool) or not isinstance(balance, (int, float)):
            raise ConfigError(f"genome_balance must be a number in [0, 1], got {balance!r}")
        if not 0.0 <= balance <= 1.0:
            raise ConfigError(f"genome_balance must be in [0, 1], got {balance!r}")
        if self.epochs is not None and not self.epochs > 0:
            raise ConfigError(f"epochs must be > 0, got {self.epochs!r}")
        if self.max_src_tokens < 3 or self.max_tgt_tokens < 2:
            raise ConfigError(
                f"max_src_tokens must be >= 3 and max_tgt_tokens >= 2, got "
                f"{self.max_src_tokens} and {self.max_tgt_tokens}"
            )
        for name in ("model", "data", "output"):
            if not str(getattr(self, name)):
                raise ConfigError(f"{name} must be a path, got an empty string")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown TrainConfig field(s): {', '.join(unknown)}")
        return cls(**d)

    def save(self, path: str | Path) -> None:
        write_json(path, self.to_dict(), sort_keys=True)
