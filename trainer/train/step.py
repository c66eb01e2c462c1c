"""One training step and the pieces that training and validation share (loss, batch, forward).

Both the loop (``trainer.train.engine``) and validation (``trainer.train.validation``) import from
here and nothing here imports either of them: the forward and the loss are the same code whether
the weights learn from them or not.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import astuple, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F

from baking.common.errors import Dna2GffError
from trainer.data.loader import pad_decoder
from trainer.distributed import all_max, all_sum
from trainer.model.pointer import PointerInputs
from trainer.model.seq2seq import IGNORE_INDEX
from trainer.train.ds_engine import TrainEngine
from trainer.train.observe import TrainObserver


class TrainingError(Dna2GffError):
    """The run cannot go on (too many NaN steps, nothing to train on)."""


def token_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    vocab: torch.Tensor | None,
    joint_from: int | None = None,
) -> tuple[torch.Tensor, int]:
    """Mean cross-entropy over non-ignored labels (optionally softmax over ``vocab`` only).

    Returns the loss and the number of label tokens. With ``vocab`` the logits are cut to those
    columns and labels are remapped; a label outside the vocabulary is a data error. The
    model's joint logits (``V + L`` columns, ``joint_from = V``) keep every base column too.
    """
    logits = logits.float()  # (B, T, V)
    if vocab is not None and joint_from is not None and logits.shape[-1] > joint_from:
        bases = torch.arange(joint_from, logits.shape[-1], device=vocab.device)
        vocab = torch.cat([vocab, bases])
    if vocab is not None:
        lookup = torch.full((logits.shape[-1],), -1, dtype=torch.long, device=labels.device)
        lookup[vocab] = torch.arange(len(vocab), device=labels.device)
        keep = labels != IGNORE_INDEX
        mapped = torch.where(keep, lookup[labels.clamp(min=0)], IGNORE_INDEX)  # (B, T)
        if bool(((mapped < 0) & keep).any()):
            raise TrainingError(
                "a target token is outside the target vocabulary: rebuild the tokenizer"
            )
        logits = logits.index_select(-1, vocab.to(logits.device))  # (B, T, K)
        labels = mapped
    n = int((labels != IGNORE_INDEX).sum())
    loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX)
    return loss, n


def prepare_batch(
    batch: dict[str, torch.Tensor], device: torch.device, pad_id: int, align: bool
) -> dict[str, torch.Tensor]:
    """Move a batch to the device; with ``align`` pad the decoder to the longest across ranks."""
    if align:
        batch = pad_decoder(batch, all_max(batch["decoder_input_ids"].shape[1], device), pad_id)
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def forward_batch(engine: Any, batch: dict[str, torch.Tensor]) -> Any:
    """The model's forward on a prepared batch (labels stay out: the loss is ``token_loss``).

    The batch's base arrays and decoder positions go along as one ``PointerInputs``
    (``trainer.data.examples``)."""
    return engine(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        decoder_input_ids=batch["decoder_input_ids"],
        decoder_attention_mask=batch["decoder_attention_mask"],
        pointer=PointerInputs.from_batch(batch),
    )


def _head_loss(
    outputs: Any,
    batch: dict[str, torch.Tensor],
    logits_name: str,
    labels_name: str,
    rare_class_weight: float = 1.0,
) -> torch.Tensor | None:
    """Cross-entropy of an auxiliary head's (B, N, C) logits against the batch's (B, >= N) labels;
    None when the model or the batch has none, a zero that keeps the graph when no label is set.
    ``rare_class_weight`` weighs every class but 0 against class 0 (a weighted mean)."""
    logits = getattr(outputs, logits_name, None)
    if logits is None or labels_name not in batch:
        return None
    labels = batch[labels_name][:, : logits.shape[1]]
    if not bool((labels != IGNORE_INDEX).any()):
        return logits.float().sum() * 0.0
    weight = None
    if rare_class_weight != 1.0:
        weight = torch.full((logits.shape[-1],), rare_class_weight, device=logits.device)
        weight[0] = 1.0
    return F.cross_entropy(
        logits.float().flatten(0, 1), labels.flatten(), weight=weight, ignore_index=IGNORE_INDEX
    )


def encoder_aux_loss(outputs: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
    """Cross-entropy of the per-token encoder head (None when the model or batch has none)."""
    return _head_loss(outputs, batch, "encoder_logits", "encoder_labels")


def base_aux_loss(
    outputs: Any, batch: dict[str, torch.Tensor], class_weight: float = 1.0
) -> torch.Tensor | None:
    """Cross-entropy of the per-base head on the pointer keys (None when model or batch has none),
    the begin/end classes weighted ``class_weight`` against "neither"."""
    return _head_loss(outputs, batch, "base_logits", "base_labels", class_weight)


@dataclass
class StepStats:
    """One optimizer step's sums on this rank, or (``all_reduced``) over all ranks."""

    loss_sum: float = 0.0
    """Cross-entropy x label tokens, over the micro-batches whose loss was finite."""
    label_tokens: float = 0.0
    """Label tokens behind ``loss_sum``."""
    aux: float = 0.0
    """MoE load-balancing loss, mean over the step's micro-batches."""
    nonfinite: float = 0.0
    """Micro-batches whose loss was NaN/inf (the step is then skipped on every rank)."""
    src_tokens: float = 0.0
    """Non-pad encoder tokens."""
    tgt_tokens: float = 0.0
    """Non-pad decoder tokens."""
    stop: float = 0.0
    """1 when this rank was asked to stop (SIGTERM/SIGUSR1); > 0 after the sum: all stop."""
    encoder_aux: float = 0.0
    """Encoder auxiliary loss (pointer models), mean over the step's micro-batches."""
    base_aux: float = 0.0
    """Per-base loss on the pointer keys, mean over the step's micro-batches."""

    def add(self, other: StepStats) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def reset(self) -> None:
        for f in fields(self):
            setattr(self, f.name, 0.0)

    def all_reduced(self, device: torch.device) -> StepStats:
        """The field-wise sum over all ranks (one all-reduce)."""
        return StepStats(*all_sum(list(astuple(self)), device))

    @property
    def loss(self) -> float:
        """Token-mean cross-entropy (NaN when no finite micro-batch had labels)."""
        return self.loss_sum / self.label_tokens if self.label_tokens else float("nan")

    @property
    def skipped(self) -> bool:
        return self.nonfinite > 0

    @property
    def tokens(self) -> float:
        return self.src_tokens + self.tgt_tokens


@dataclass(frozen=True)
class StepInputs:
    """What every step needs besides the engine and the batches."""

    grad_accum: int
    device: torch.device
    pad_id: int
    align: bool
    """Pad the decoder to the longest across ranks (expert parallelism needs equal shapes)."""
    vocab: torch.Tensor | None
    aux_coef: float
    joint_from: int | None = None
    """Pointer models: the vocabulary size, where the base columns of the joint logits start."""
    encoder_aux_weight: float = 0.0
    base_aux_weight: float = 0.0
    base_aux_class_weight: float = 1.0


def run_step(
    engine: TrainEngine,
    batches: Iterator[dict],
    how: StepInputs,
    observer: TrainObserver | None = None,
    step: int = 0,
) -> tuple[StepStats, tuple[int, int]]:
    """One optimizer step over ``grad_accum`` micro-batches (DeepSpeed steps at the boundary).

    Returns this rank's sums and the last batch's (S, T). A non-finite loss is still
    back-propagated: ZeRO sees the non-finite gradients and skips the step on every rank.
    ``observer`` (tests) sees each prepared micro-batch and the reduced gradients of optimizer
    step ``step``.
    """
    stats = StepStats()
    shapes = (0, 0)
    ga = how.grad_accum
    for micro in range(ga):
        batch = prepare_batch(next(batches), how.device, how.pad_id, how.align)
        if observer is not None:
            observer.micro_batch(step, micro, batch)
        outputs = forward_batch(engine, batch)
        ce, n = token_loss(outputs.logits, batch["labels"], how.vocab, how.joint_from)
        aux = outputs.aux_loss.float() if torch.is_tensor(outputs.aux_loss) else torch.zeros(())
        loss = ce + how.aux_coef * aux
        enc_aux = encoder_aux_loss(outputs, batch)
        if enc_aux is not None:
            loss = loss + how.encoder_aux_weight * enc_aux
        per_base = base_aux_loss(outputs, batch, how.base_aux_class_weight)
        if per_base is not None:
            loss = loss + how.base_aux_weight * per_base
        engine.backward(loss)
        if observer is not None and micro == ga - 1:
            observer.gradients(step, engine)
        engine.step()
        finite = bool(torch.isfinite(loss.detach()))
        stats.add(
            StepStats(
                loss_sum=float(ce.detach()) * n if finite else 0.0,
                label_tokens=n if finite else 0,
                aux=float(aux.detach()) / ga,
                nonfinite=0.0 if finite else 1.0,
                src_tokens=float(batch["attention_mask"].sum()),
                tgt_tokens=float(batch["decoder_attention_mask"].sum()),
                encoder_aux=0.0 if enc_aux is None else float(enc_aux.detach()) / ga,
                base_aux=0.0 if per_base is None else float(per_base.detach()) / ga,
            )
        )
        shapes = (batch["input_ids"].shape[1], batch["labels"].shape[1])
    return stats, shapes


def expert_load_scalars(module: Any, device: torch.device, world_size: int) -> dict[str, float]:
    """``moe/expert_load/layer_i/expert_j``: fraction of tokens per expert, averaged over ranks."""
    loads = module.expert_load() if hasattr(module, "expert_load") else {}
    if not loads:
        return {}
    layers = sorted(loads)
    flat = torch.cat([loads[i].detach().float().flatten().cpu() for i in layers])
    summed = all_sum(flat.tolist(), device)
    out: dict[str, float] = {}
    k = 0
    for i in layers:
        for j in range(loads[i].numel()):
            out[f"moe/expert_load/layer_{i}/expert_{j}"] = summed[k] / world_size
            k += 1
    return out


def engine_scalars(
    engine: TrainEngine, use_moe: bool, step: StepStats, device: torch.device, world: int
) -> dict[str, float]:
    """Gradient norm and, for MoE, aux loss and per-expert load (a collective when MoE).

    ``step`` holds the all-reduced sums of the step just taken.
    """
    values: dict[str, float] = {}
    norm = engine.get_global_grad_norm()
    if norm is not None and math.isfinite(float(norm)):
        values["train/grad_norm"] = float(norm)
    if use_moe:
        values["moe/aux_loss"] = step.aux / world
        values.update(expert_load_scalars(engine.module, device, world))
    return values
