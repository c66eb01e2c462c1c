#!/usr/bin/env python3
"""Forward+backward throughput of the full-size model (DNABERT-2-117M encoder, 12+12 layers).

Prints tokens/s (source + target) and, on a GPU, model FLOPs utilisation (MFU). FLOPs are counted
from the shapes, per step, forward x 3 for forward+backward, by the trainer's own count
(``trainer.train.monitor.train_flops``, checked against torch's FLOP counter in tests/test_gpu.py):

- encoder, per source token and layer: 8 H^2 (Wqkv 6 H^2 + dense 2 H^2) + 6 H I (gated 4 H I + wo 2 H I)
  + 4 S H (scores and weighted sum against S keys);
- decoder, per target token and layer: self-attention 8 H^2 + 4 T H (full T x T, as the masked kernel
  computes it), cross-attention q + dense 4 H^2 + 4 S H, MLP 6 H I (x k experts with MoE, + 2 H E
  router); plus the cross-attention k/v projections on source tokens, 4 H^2 per source token;
- output head 2 H V per target token.

MFU = FLOPs / step time / the card's dense bf16 peak (H100/H200 SXM 989 TFLOP/s; ``--peak_tflops``
overrides). Weights are random (sizes from DNABERT-2's config), which does not change the speed.

    python benchmarks/model_step.py                       # CPU: batch 1, 2 steps
    python benchmarks/model_step.py --device cuda --batch 16 --steps 10 [--moe]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from trainer.model import Dna2GffConfig, Dna2GffModel  # noqa: E402
from trainer.train.monitor import train_flops  # noqa: E402

PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0}


def model_config(moe: bool, vocab: int) -> Dna2GffConfig:
    """DNABERT-2-117M's sizes, with a decoder as deep as the encoder."""
    return Dna2GffConfig(
        vocab_size=vocab,
        hidden_size=768,
        num_encoder_layers=12,
        num_decoder_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        use_moe=moe,
        num_experts=8,
        moe_top_k=2,
        tie_word_embeddings=True,
        # the model these figures were measured with (the config's defaults gained context + aux)
        pointer_context_bp=0,
        encoder_aux_weight=0.0,
    )


def step_flops(cfg: Dna2GffConfig, batch: int, src: int, tgt: int) -> float:
    """Forward+backward FLOPs of one step: the trainer's own count (the module docstring)."""
    return train_flops(cfg, batch * src, batch * tgt, src, tgt)


def peak_tflops(device: torch.device, override: float | None) -> float | None:
    if override:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, value in PEAK_BF16_TFLOPS.items():
        if key in name:
            return value
    return None


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, default=None, help="default: 1 on CPU, 16 on GPU")
    p.add_argument("--steps", type=int, default=None, help="timed steps (default: 2 CPU, 10 GPU)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--src_len", type=int, default=512, help="encoder tokens (DNABERT-2's 512)")
    p.add_argument("--tgt_len", type=int, default=256, help="decoder tokens")
    p.add_argument("--vocab", type=int, default=4160, help="DNABERT-2's 4096 + annotation tokens")
    p.add_argument("--moe", action="store_true", help="8 experts, top-2, in every decoder layer")
    p.add_argument("--fp32", action="store_true", help="no bf16 autocast")
    p.add_argument("--peak_tflops", type=float, help="bf16 peak of the card (default: by name)")
    args = p.parse_args()

    # before the first MoE layer is built: that is when DeepSpeed is imported
    os.environ.setdefault("DS_ACCELERATOR", "cuda" if args.device.startswith("cuda") else "cpu")
    device = torch.device(args.device)
    on_gpu = device.type == "cuda"
    batch = args.batch or (16 if on_gpu else 1)
    steps = args.steps or (10 if on_gpu else 2)
    cfg = model_config(args.moe, args.vocab)
    torch.manual_seed(0)
    model = Dna2GffModel(cfg).to(device).train()
    n_params = sum(p.numel() for p in model.parameters())
    ids = torch.randint(5, 4096, (batch, args.src_len), device=device)
    mask = torch.ones_like(ids)
    dec = torch.randint(4096, cfg.vocab_size, (batch, args.tgt_len), device=device)
    labels = torch.roll(dec, -1, 1)
    dtype = None if args.fp32 else torch.bfloat16

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            out = model(ids, mask, dec, labels=labels)
        (out.loss + cfg.moe_aux_loss_coef * out.aux_loss).backward()
        model.zero_grad(set_to_none=True)

    def sync() -> None:
        if on_gpu:
            torch.cuda.synchronize(device)

    for _ in range(args.warmup):
        step()
    sync()
    if on_gpu:
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    dt = (time.perf_counter() - t0) / steps
    flops = step_flops(cfg, batch, args.src_len, args.tgt_len)
    tokens = batch * (args.src_len + args.tgt_len)
    print(
        f"device        {torch.cuda.get_device_name(device) if on_gpu else 'cpu'} (threads {torch.get_num_threads()})"
    )
    print(
        f"model         {n_params / 1e6:.1f} M params, 12+12 layers, moe={args.moe}, vocab {cfg.vocab_size}"
    )
    print(
        f"shape         batch {batch} x (src {args.src_len} + tgt {args.tgt_len}), {'fp32' if dtype is None else 'bf16 autocast'}"
    )
    print(f"step          {dt * 1000:.1f} ms (mean of {steps}, after {args.warmup} warm-up)")
    print(f"tokens/s      {tokens / dt:,.0f} (src+tgt), {batch * args.tgt_len / dt:,.0f} target")
    print(
        f"model FLOPs   {flops / 1e12:.3f} TFLOP/step -> {flops / dt / 1e12:.2f} TFLOP/s achieved"
    )
    peak = peak_tflops(device, args.peak_tflops)
    if peak:
        print(
            f"MFU           {100 * flops / dt / (peak * 1e12):.1f}% of {peak:.0f} TFLOP/s bf16 peak"
        )
    if on_gpu:
        print(f"peak memory   {torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB")


if __name__ == "__main__":
    main()
