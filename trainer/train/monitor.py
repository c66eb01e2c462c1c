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
    """Model FLOPs of one batch's forward + backward, counted from shapes (backward = 2x forward).

    What MFU divides by, so it counts the model's arithmetic and nothing else: 2 FLOPs per weight a
    token passes through, plus attention scores and weighted values (4 x length x hidden per token
    and layer, over the padded length the kernel computes). Only non-pad tokens pay the weights.
    Encoder layers see source tokens (Wqkv + dense 4 H^2, gated MLP 3 H I). Decoder layers see
    target tokens (self-attention 4 H^2, cross-attention query and output 2 H^2, the MLP once per
    routed expert, ``moe_top_k`` of them, plus the router H x E); the cross-attention keys and
    values (2 H^2) are projected once per layer from the *source* tokens. The output projection
    (H x V) is counted for every target token, the encoder's auxiliary head (H x ``AUX_CLASSES``,
    when ``encoder_aux_weight`` > 0) for every source token. Embedding lookups, norms, softmax, the MoE's
    dispatch and combine, and padding are not counted (they are work the model does not need).
    ``tests/test_gpu.py`` checks the dense count against torch's own FLOP counter.
    """
    h = cfg.hidden_size
    i = cfg.intermediate_size
    use_moe = bool(getattr(cfg, "use_moe", False))
    experts = getattr(cfg, "moe_top_k", 1) if use_moe else 1
    router = h * getattr(cfg, "num_experts", 0) if use_moe else 0
    enc_layer = 2 * (4 * h * h + 3 * h * i) + 4 * src_len * h
    dec_layer = 2 * (4 * h * h + 2 * h * h + experts * 3 * h * i + router)
    dec_layer += 4 * tgt_len * h + 4 * src_len * h  # self- and cross-attention scores + values
    cross_kv = 2 * (2 * h * h)  # per source token and decoder layer
    enc = src_tokens * (enc_layer * cfg.num_encoder_layers + cross_kv * cfg.num_decoder_layers)
    if float(getattr(cfg, "encoder_aux_weight", 0.0) or 0.0) > 0:
        from trainer.model.pointer import AUX_CLASSES

        enc += src_tokens * 2 * h * AUX_CLASSES
    dec = tgt_tokens * (dec_layer * cfg.num_decoder_layers + 2 * h * cfg.vocab_size)
    return 3.0 * (enc + dec)


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
