"""What a run shows while it trains: TensorBoard scalars, a progress bar, rates and MFU.

Only rank 0 writes; the other ranks get a ``Monitor`` that does nothing, so the training loop can call
it unconditionally. Scalars land in ``RUN_DIR/tensorboard/`` under stable names (``train/loss``,
``moe/expert_load/layer_0/expert_3``, ...) that the docs and tests rely on.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: Dense bf16 peak FLOP/s by device-name fragment (tensor cores, no sparsity).
PEAK_BF16_FLOPS = {
    "H200": 989e12,
    "H100": 989e12,
    "A100": 312e12,
    "L40S": 362e12,
    "A10G": 70e12,
    "V100": 125e12,
}


def peak_flops(device_name: str) -> float | None:
    for key, value in PEAK_BF16_FLOPS.items():
        if key in device_name.upper():
            return value
    return None


def train_flops(cfg: Any, src_tokens: int, tgt_tokens: int, src_len: int, tgt_len: int) -> float:
    """Forward+backward FLOPs of one batch, counted from shapes (x3 for backward).

    Per token and layer: 2 x (weights touched) for matmuls, plus attention scores and values
    (4 x length x hidden). Encoder layers see source tokens, decoder layers target tokens (self
    attention over the target, cross attention over the source). With MoE the MLP counts
    ``moe_top_k`` experts. Embedding lookups are free; the output projection is counted.
    """
    h = cfg.hidden_size
    i = cfg.intermediate_size
    mlp = 3 * h * i  # gated: h -> 2i, then i -> h
    if getattr(cfg, "use_moe", False):
        mlp *= getattr(cfg, "moe_top_k", 1)
    enc_layer = 4 * h * h + mlp
    dec_layer = 4 * h * h + 4 * h * h + mlp  # self + cross attention projections
    enc = src_tokens * (2 * enc_layer + 4 * src_len * h) * cfg.num_encoder_layers
    dec = tgt_tokens * (2 * dec_layer + 4 * tgt_len * h + 4 * src_len * h) * cfg.num_decoder_layers
    head = tgt_tokens * 2 * h * cfg.vocab_size
    return 3.0 * (enc + dec + head)


class Monitor:
    """TensorBoard + tqdm on rank 0; a no-op elsewhere."""

    def __init__(
        self, run_dir: str | Path, *, rank: int, total_steps: int, start_step: int
    ) -> None:
        self.enabled = rank == 0
        self.writer: Any = None
        self.bar: Any = None
        self._t = time.perf_counter()
        if not self.enabled:
            return
        from torch.utils.tensorboard import SummaryWriter
        from tqdm import tqdm

        self.writer = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))
        self.bar = tqdm(
            total=total_steps,
            initial=start_step,
            desc="train",
            unit="step",
            dynamic_ncols=True,
            mininterval=1.0,
        )

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        for name, value in values.items():
            self.writer.add_scalar(name, float(value), step)

    def step(self, step: int, loss: float, lr: float) -> None:
        if self.enabled:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", refresh=False)

    def flush(self) -> None:
        if self.enabled:
            self.writer.flush()

    def close(self) -> None:
        if self.enabled:
            self.bar.close()
            self.writer.flush()
            self.writer.close()
