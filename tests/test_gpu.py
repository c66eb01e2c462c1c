"""What the GPU check (benchmarks/gpu_check.py) relies on: the FLOP count, bf16 against fp32, CUDA.

Tests marked ``gpu`` need a CUDA device and skip without one (CI has none); ``gpu_check.sh`` runs
them on a lent machine with ``pytest -m gpu``. Their CPU twins run everywhere, so the comparisons
themselves are known to work before a GPU ever sees them.
"""

from __future__ import annotations

import copy
import json
import math
import os
import random
from pathlib import Path

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from trainer.model import Dna2GffConfig, Dna2GffModel
from trainer.train.monitor import train_flops

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(
    not CUDA, reason="needs a CUDA GPU (torch.cuda.is_available() is False)"
)
ON_CUDA = pytest.param("cuda", marks=[pytest.mark.gpu, needs_cuda])


def tiny_config(moe: bool, vocab: int = 300) -> Dna2GffConfig:
    return Dna2GffConfig(
        vocab_size=vocab,
        hidden_size=64,
        num_encoder_layers=2,
        num_decoder_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        use_moe=moe,
        num_experts=4,
        moe_top_k=2,
    )


def batch(cfg: Dna2GffConfig, b: int = 2, s: int = 40, t: int = 12, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, cfg.vocab_size - 50, (b, s), generator=g)
    dec = torch.randint(5, cfg.vocab_size, (b, t), generator=g)
    return {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "decoder_input_ids": dec,
        "decoder_attention_mask": torch.ones_like(dec),
        "labels": torch.roll(dec, -1, 1),
    }


def counted_by_torch(model: Dna2GffModel, b: dict) -> int:
    """FLOPs torch's dispatcher sees in one forward + backward (math SDPA, so attention counts)."""
    counter = FlopCounterMode(display=False)
    with counter, sdpa_kernel(SDPBackend.MATH):
        out = model(**b)
        loss = out.loss + out.aux_loss
        if out.encoder_logits is not None:  # the encoder's auxiliary head trains too
            loss = loss + out.encoder_logits.float().mean()
        loss.backward()
    return counter.get_total_flops()


def test_train_flops_equal_torchs_own_count_for_the_dense_model() -> None:
    """MFU's numerator is exact: every matmul and attention product, backward = 2x forward."""
    cfg = tiny_config(moe=False)
    torch.manual_seed(0)
    b = batch(cfg, b=2, s=40, t=12)
    counted = counted_by_torch(Dna2GffModel(cfg).eval(), b)
    assert train_flops(cfg, 2 * 40, 2 * 12, 40, 12) == counted
    # the cross-attention keys and values are projected from the source, not the target: a
    # longer source with the same target costs more per decoder layer than the encoder alone
    b2 = batch(cfg, b=2, s=80, t=12)
    assert train_flops(cfg, 2 * 80, 2 * 12, 80, 12) == counted_by_torch(
        Dna2GffModel(cfg).eval(), b2
    )


def test_train_flops_of_moe_count_routed_experts_not_capacity_padding() -> None:
    """With MoE the count is top-k experts + router: less than the dispatch the hardware does."""
    dense, moe = tiny_config(moe=False), tiny_config(moe=True)
    torch.manual_seed(0)
    b = batch(moe)
    counted = counted_by_torch(Dna2GffModel(moe).eval(), b)
    model = train_flops(moe, 80, 24, 40, 12)
    h, i = moe.hidden_size, moe.intermediate_size
    extra = 3 * 24 * moe.num_decoder_layers * (2 * 3 * h * i + 2 * h * moe.num_experts)
    assert model == train_flops(dense, 80, 24, 40, 12) + extra
    assert model < counted


def bf16_against_fp32(device: str, moe: bool) -> dict[str, float]:
    """Worst relative errors of a bf16-autocast forward + backward on ``device`` against fp32 on CPU.

    Eval mode (no dropout, MoE gate without sampling or dropping): the two runs must compute the
    same function, so what differs is rounding alone.
    """
    cfg = tiny_config(moe=moe)
    torch.manual_seed(0)
    ref = Dna2GffModel(cfg).eval()
    dut = copy.deepcopy(ref).to(device)
    b = batch(cfg, b=4, s=64, t=16)

    out = ref(**b)
    (out.loss + out.aux_loss).backward()
    with torch.autocast(torch.device(device).type, dtype=torch.bfloat16):
        got = dut(**{k: v.to(device) for k, v in b.items()})
        (got.loss + got.aux_loss).backward()

    def rel(a: torch.Tensor, r: torch.Tensor) -> float:
        return float((a.float().cpu() - r).norm() / r.norm().clamp_min(1e-12))

    grads = {n: p.grad for n, p in ref.named_parameters() if p.grad is not None}
    mine = {n: p.grad for n, p in dut.named_parameters() if p.grad is not None}
    assert grads.keys() == mine.keys()
    errs = {n: rel(mine[n], g) for n, g in grads.items() if g.norm() > 0}
    every = torch.cat([g.flatten() for g in grads.values()])
    return {
        "loss": abs(float(got.loss.detach()) - float(out.loss.detach()))
        / abs(float(out.loss.detach())),
        "logits": rel(got.logits.detach(), out.logits.detach()),
        "grads": rel(torch.cat([mine[n].flatten() for n in grads]), every),
        "worst_tensor": max(e for n, e in errs.items() if ".gate.wg." not in n),
        "router": max((e for n, e in errs.items() if ".gate.wg." in n), default=0.0),
    }


@pytest.mark.parametrize("moe", [False, True], ids=["dense", "moe"])
@pytest.mark.parametrize("device", ["cpu", ON_CUDA])
def test_bf16_forward_backward_matches_the_fp32_reference(device: str, moe: bool) -> None:
    """bf16 keeps 8 bits of mantissa (relative step 2^-8 = 0.4%): errors stay within a few steps.

    The router's gradient is the exception: it is a difference of expert outputs weighted by the
    gates, so the experts' rounding shows in it enlarged (~15% on CPU); it gets a loose bound.
    """
    err = bf16_against_fp32(device, moe)
    assert err["loss"] < 0.01, err
    assert err["logits"] < 0.03, err
    assert err["grads"] < 0.03, err
    assert err["worst_tensor"] < 0.06, err
    assert err["router"] < 0.4, err


def _tiny_annotate_model(tmp_path: Path) -> Path:
    from baking.target_format.grammar import target_vocabulary
    from trainer.fixtures import make_tokenizer
    from trainer.tokens.tokenizer import add_annotation_tokens, load_tokenizer, save_tokenizer

    types = ["CDS", "tRNA"]
    tok = load_tokenizer(make_tokenizer(tmp_path / "base"))
    add_annotation_tokens(tok, target_vocabulary(types))
    save_tokenizer(tok, tmp_path / "tok")
    cfg = Dna2GffConfig(
        vocab_size=tok.get_vocab_size(True),
        hidden_size=32,
        num_encoder_layers=2,
        num_decoder_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        window_len=500,
        feature_types=types,
    )
    torch.manual_seed(0)
    Dna2GffModel(cfg).save_pretrained(tmp_path / "model", tmp_path / "tok")
    return tmp_path / "model"


@pytest.mark.gpu
@needs_cuda
def test_annotate_on_cuda_equals_annotate_on_cpu(tmp_path: Path) -> None:
    """fp32 on both: the same windows, the same greedy tokens, the same GFF3 features.

    (An exact tie between two logits that rounding breaks differently would flip one token; with
    a few hundred decisions on random weights that is far rarer than a real bug.)
    """
    from trainer.inference.annotate import AnnotateOptions, annotate_sequences, load_model

    rng = random.Random(3)
    seqs = [("s1", "".join(rng.choice("ACGT") for _ in range(4000)))]
    runs = []
    for device in ("cpu", "cuda"):
        model, tok = load_model(_tiny_annotate_model(tmp_path / device), device)
        opts = AnnotateOptions(
            batch_size=8, max_new_tokens=24, device=device, bf16=False, progress=False
        )
        feats, regions, summary = annotate_sequences(model, tok, seqs, opts, 500, ["CDS", "tRNA"])
        runs.append(([(f.seqid, f.type, f.start, f.end, f.strand) for f in feats], summary.windows))
    assert runs[0][1] == runs[1][1] > 0
    assert runs[0][0], "an untrained model still writes features"
    assert runs[0][0] == runs[1][0]


def train_in_a_child(tmp_path: Path, accelerator: str) -> tuple[list[dict], str]:
    """``launch/train.py`` on a tiny MoE model in its own process, as the recipe runs it.

    Its own process: building a MoE model leaves a one-process gloo group behind, and the trainer
    must make its own (NCCL on a GPU) group, as it does after ``init_model`` in the recipe.
    """
    import subprocess
    import sys

    from trainer.fixtures import make_model, make_tokenizer, write_shards

    tok = make_tokenizer(tmp_path / "tok")
    model = make_model(tmp_path / "model", tok, use_moe=True, num_experts=4, hidden=64)
    data = write_shards(tmp_path / "data", {"train": [64, 64]})
    run = tmp_path / "run"
    flags = {"max_steps": 30, "micro_batch_size": 8, "lr": 1e-3, "warmup_steps": 2,
             "save_every": 0, "eval_every": 0, "decode_every": 0, "num_workers": 0}  # fmt: skip
    cmd = [sys.executable, str(Path(__file__).parents[1] / "launch" / "train.py"),
           "--model", str(model), "--data", str(data), "--output", str(run), "--no_export",
           *(x for k, v in flags.items() for x in (f"--{k}", str(v)))]  # fmt: skip
    env = {**os.environ, "DS_ACCELERATOR": accelerator}
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    return rows, res.stderr


@pytest.mark.gpu
@needs_cuda
def test_trainer_runs_zero2_bf16_on_cuda(tmp_path: Path) -> None:
    """The DeepSpeed trainer (ZeRO-2, bf16) on one GPU: finite losses that fall, FLOPs logged."""
    rows, log = train_in_a_child(tmp_path, "cuda")
    assert "accelerator=cuda" in log
    assert len(rows) == 30
    assert all(math.isfinite(r["loss"]) and not r["skipped"] for r in rows)
    assert all(r["flops"] > 0 for r in rows)
    first, last = sum(r["loss"] for r in rows[:5]) / 5, sum(r["loss"] for r in rows[-5:]) / 5
    assert last < first
