"""A plain-PyTorch replay of a recorded DeepSpeed run: what the engine's updates *should* be.

One process, no DeepSpeed engine, no ZeRO, no expert parallelism: the model at ``ep_size=1`` holds
every expert; fp32 master weights; each micro-batch runs forward and backward on a bf16 copy of
the weights (as ZeRO's bf16 module does); gradients are accumulated in fp32, averaged over ranks x
micro-batches exactly as data parallelism defines it, clipped by their global norm, and stepped by
``torch.optim.AdamW`` with the engine's betas, eps, per-group weight decay and learning rate.

The inputs come from ``tests/engine_trace_worker.py``: each rank's prepared micro-batches (so the
reference sees the same global batch, the same padding, the same per-rank capacity of the MoE
gate) and the torch RNG state before each forward (so the top-2 gate draws the same Gumbel noise
for its second expert). Everything else -- loss, averaging, clipping, schedule, AdamW -- is written
out here from the documented settings, not taken from the engine.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

IGNORE = -100


@dataclass(frozen=True)
class Hyper:
    """The optimisation settings the engine's resolved DeepSpeed config applies."""

    lr: float
    warmup_num_steps: int
    total_num_steps: int
    cos_min_ratio: float
    weight_decay: float
    grad_clip: float
    betas: tuple[float, float]
    eps: float
    grad_accum: int
    aux_coef: float


def hyper_from_ds(ds: dict[str, Any], aux_coef: float) -> Hyper:
    """Read the settings from a filled DeepSpeed dict (``resolve_ds_config(...).config``).

    Only what this reference implements is accepted: AdamW and linear-warmup ``WarmupCosineLR``.
    """
    opt, sched = ds["optimizer"], ds["scheduler"]
    assert opt["type"] == "AdamW" and sched["type"] == "WarmupCosineLR", (opt, sched)
    o, s = opt["params"], sched["params"]
    assert s.get("warmup_type") == "linear" and s["warmup_min_ratio"] == 0.0, s
    return Hyper(
        lr=o["lr"],
        warmup_num_steps=s["warmup_num_steps"],
        total_num_steps=s["total_num_steps"],
        cos_min_ratio=s["cos_min_ratio"],
        weight_decay=o["weight_decay"],
        grad_clip=ds["gradient_clipping"],
        betas=tuple(o["betas"]),
        eps=o["eps"],
        grad_accum=ds["gradient_accumulation_steps"],
        aux_coef=aux_coef,
    )


@dataclass
class ReferenceRun:
    """Per step (1-based): losses, pre-clip gradients, global norms, lrs; final fp32 weights."""

    losses: list[float] = field(default_factory=list)
    grads: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)
    grad_norms: list[float] = field(default_factory=list)
    lrs: list[float] = field(default_factory=list)
    initial: dict[str, torch.Tensor] = field(default_factory=dict)
    weights: dict[str, torch.Tensor] = field(default_factory=dict)


def deepspeed_warmup_cosine_lr(step: int, h: Hyper) -> float:
    """The rate optimizer step ``step`` (1-based) trains with under DeepSpeed's ``WarmupCosineLR``.

    The scheduler is built at iteration -1 (rate 0) and advanced after each optimizer step, so
    step ``t`` uses iteration ``t - 2``: steps 1 and 2 both train at rate 0. Warmup lasts
    ``max(2, warmup_num_steps)`` iterations (linear from 0), then a cosine from ``lr`` down to
    ``cos_min_ratio * lr`` over the remaining ``total_num_steps - warmup`` iterations.
    """
    it = step - 2
    if it < 0:
        return 0.0
    warm = max(2, h.warmup_num_steps)
    if it < warm:
        return h.lr * it / warm
    progress = min(1.0, (it - warm + 1) / max(1, h.total_num_steps - warm))
    floor = h.cos_min_ratio
    return h.lr * max(0.0, floor + (1 - floor) * (1 + math.cos(math.pi * progress)) / 2)


def target_vocab(model_dir: Path, tokens: list[str], eos_id: int) -> torch.Tensor:
    """Ids the loss softmax runs over: the data grammar's tokens plus ``[SEP]``."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    ids = {eos_id} | {int(tok.token_to_id(t)) for t in tokens if tok.token_to_id(t) is not None}
    return torch.tensor(sorted(ids))


def restricted_ce(
    logits: torch.Tensor, labels: torch.Tensor, vocab: torch.Tensor, joint_from: int | None = None
) -> torch.Tensor:
    """Mean cross-entropy over label tokens with the softmax over ``vocab`` columns only; with
    joint logits (``V + L`` columns, ``joint_from = V``) every base column stays in the softmax."""
    if joint_from is not None and logits.shape[-1] > joint_from:
        vocab = torch.cat([vocab, torch.arange(joint_from, logits.shape[-1])])
    remap = torch.full((logits.shape[-1],), -1, dtype=torch.long)
    remap[vocab] = torch.arange(len(vocab))
    keep = labels != IGNORE
    mapped = torch.where(keep, remap[labels.clamp(min=0)], IGNORE)
    assert not bool(((mapped < 0) & keep).any()), "label outside the target vocabulary"
    cut = logits.float()[..., vocab]
    return F.cross_entropy(cut.flatten(0, 1), mapped.flatten(), ignore_index=IGNORE)


def is_decayed(name: str, p: torch.Tensor) -> bool:
    """Weight decay on matrices only, never on norms (the usual AdamW recipe; docs/training.md)."""
    return p.ndim >= 2 and "norm" not in name.lower()


def replay(
    model_dir: Path,
    traces: list[dict[str, Any]],
    h: Hyper,
    vocab: torch.Tensor,
    grad_bug: Callable[[str, torch.Tensor], torch.Tensor] | None = None,
) -> ReferenceRun:
    """Replay the recorded global batches on one process; see the module docstring.

    ``grad_bug`` (the tests' negative controls) rewrites each averaged gradient before clipping, to
    show that a known DeepSpeed bug (e.g. expert gradients ``ep_size`` x too large) would be caught.
    """
    from trainer.model.pointer import PointerInputs
    from trainer.model.seq2seq import Dna2GffModel

    world = len(traces)
    by_key = [{(m["step"], m["micro"]): m for m in t["micro"]} for t in traces]
    steps = sorted({m["step"] for m in traces[0]["micro"]})
    model = Dna2GffModel.from_pretrained(model_dir, ep_size=1)
    named = list(model.named_parameters())
    masters = {n: p.detach().clone().float() for n, p in named}
    run = ReferenceRun(initial={n: t.clone() for n, t in masters.items()})
    work = model.to(torch.bfloat16).train()
    params = dict(work.named_parameters())
    groups = [
        {
            "params": [masters[n] for n, p in named if is_decayed(n, p)],
            "weight_decay": h.weight_decay,
        },
        {"params": [masters[n] for n, p in named if not is_decayed(n, p)], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=h.lr, betas=h.betas, eps=h.eps)
    for step in steps:
        acc = {n: torch.zeros_like(t) for n, t in masters.items()}
        ce_sum = n_sum = 0.0
        for micro in range(h.grad_accum):
            for r in range(world):
                rec = by_key[r][(step, micro)]
                b = rec["batch"]
                torch.set_rng_state(rec["rng"])  # the gate's Gumbel noise as on rank r
                out = work(
                    input_ids=b["input_ids"],
                    attention_mask=b["attention_mask"],
                    decoder_input_ids=b["decoder_input_ids"],
                    decoder_attention_mask=b["decoder_attention_mask"],
                    pointer=PointerInputs.from_batch(b),  # the windows' bases, pointed positions
                )
                ce = restricted_ce(out.logits, b["labels"], vocab, model.config.vocab_size)
                loss = ce + h.aux_coef * out.aux_loss.float()
                # data parallelism's objective: the mean over ranks x micro-batches of each loss
                (loss / (world * h.grad_accum)).backward()
                for n, p in params.items():
                    if p.grad is not None:
                        acc[n] += p.grad.float()
                        p.grad = None
                n = int((b["labels"] != IGNORE).sum())
                ce_sum += float(ce.detach()) * n
                n_sum += n
        run.losses.append(ce_sum / n_sum)
        if grad_bug is not None:
            acc = {n: grad_bug(n, g) for n, g in acc.items()}
        run.grads[step] = {n: g.clone() for n, g in acc.items()}
        norm = math.sqrt(sum(float(g.double().pow(2).sum()) for g in acc.values()))
        run.grad_norms.append(norm)
        scale = 1.0
        if h.grad_clip > 0:  # DeepSpeed's rule: divide by max(1, (norm + 1e-6) / clip)
            scale = 1.0 / max(1.0, (norm + 1e-6) / h.grad_clip)
        lr = deepspeed_warmup_cosine_lr(step, h)
        run.lrs.append(lr)
        for g in opt.param_groups:
            g["lr"] = lr
        for n, t in masters.items():
            t.grad = acc[n] * scale
        opt.step()
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(masters[n])
    run.weights = masters
    return run


def rel_error(a: torch.Tensor, b: torch.Tensor, ref_scale: torch.Tensor) -> float:
    """``||a - b|| / ||ref_scale||`` in float64 (0 when both are 0)."""
    num = float((a.double() - b.double()).norm())
    den = float(ref_scale.double().norm())
    return num / den if den > 0 else (0.0 if num == 0 else math.inf)


def group_of(name: str) -> str:
    """``expert``, ``gate`` (the MoE router) or ``shared``: how results are reported."""
    from trainer.model.moe import is_expert_key

    if is_expert_key(name.removesuffix("[key]")):
        return "expert"
    return "gate" if ".gate.wg." in name else "shared"


def key_bias_slice(name: str, size: int) -> slice | None:
    """The key part of a fused attention bias (``Wqkv.bias``: q|k|v, ``kv.bias``: k|v), or None.

    Softmax attention is invariant to a bias added to every key (``q . b_k`` is the same for all
    keys of a query), so the exact gradient of these entries is 0 and what either side computes is
    rounding noise; Adam scales that noise to a step of the usual size. They are compared apart.
    The pointer head's ``key_norm.bias`` is such a bias as a whole: it is added to every base key,
    and the softmax over bases ignores it (only ``<cut>``/END, allowed beside the positions at a
    few steps, give it a small exact gradient).
    """
    if name.endswith("pointer_head.key_norm.bias"):
        return slice(0, size)
    if name.endswith("Wqkv.bias"):
        return slice(size // 3, 2 * size // 3)
    if name.endswith("crossattention.kv.bias"):
        return slice(0, size // 2)
    return None


def weight_errors(engine: dict[str, torch.Tensor], ref: ReferenceRun) -> dict[str, float]:
    """Per tensor: ``||w_engine - w_ref|| / ||w_ref - w_initial||`` (error relative to the update).

    Key-bias slices (see ``key_bias_slice``) are reported as ``NAME[key]``, the rest as ``NAME``.
    """
    out: dict[str, float] = {}
    for name, final in ref.weights.items():
        got, upd = engine[name].detach().flatten(), (final - ref.initial[name]).flatten()
        want = final.flatten()
        cut = key_bias_slice(name, want.numel())
        if cut is None:
            out[name] = rel_error(got, want, upd)
            continue
        rest = torch.ones(want.numel(), dtype=torch.bool)
        rest[cut] = False
        out[name] = rel_error(got[rest], want[rest], upd[rest])
        out[name + "[key]"] = rel_error(got[cut], want[cut], upd[cut])
    return out


def grad_errors(
    engine: dict[int, dict[str, torch.Tensor]], ref: ReferenceRun
) -> dict[tuple[int, str], float]:
    """Per step and tensor: ``||g_engine - g_ref|| / ||g_ref||`` of the averaged, pre-clip grads.

    A tensor that is a key bias as a whole (``key_bias_slice``) is reported as ``NAME[key]``."""
    out: dict[tuple[int, str], float] = {}
    for step, grads in ref.grads.items():
        for name, g in grads.items():
            whole = key_bias_slice(name, g.numel()) == slice(0, g.numel())
            out[(step, name + "[key]" if whole else name)] = rel_error(engine[step][name], g, g)
    return out


def worst_by_group(errors: dict[Any, float]) -> dict[str, float]:
    """The largest error of each parameter group (keys may be names or (step, name) pairs)."""
    out: dict[str, float] = {}
    for key, err in errors.items():
        name = key[1] if isinstance(key, tuple) else key
        g = group_of(name) + ("[key]" if name.endswith("[key]") else "")
        out[g] = max(out.get(g, 0.0), err)
    return out
