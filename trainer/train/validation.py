"""Validation during training: loss on the val split and exact features from greedy decoding.

Both are collective: every rank runs the same number of forwards (MoE all-to-all needs every
expert-parallel peer), and the results are summed across ranks. They run under a forked RNG so a
validation pass never shifts the training RNG stream (resume stays bit-exact whatever the eval
schedule).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from typing import Any

import torch

from trainer.data.examples import ExampleBuilder
from trainer.data.loader import ShardBatches, ShardEntry, first_samples
from trainer.distributed import all_sum
from trainer.train.ds_engine import TrainEngine
from trainer.train.step import forward_batch, prepare_batch, token_loss

log = logging.getLogger(__name__)


def _fork_rng(device: torch.device) -> Any:
    devices = [device] if device.type == "cuda" else []
    return torch.random.fork_rng(devices=devices)


def validation_loss(
    engine: TrainEngine,
    shards: Sequence[ShardEntry],
    examples: ExampleBuilder,
    *,
    rank: int,
    world_size: int,
    micro_batch_size: int,
    batches: int,
    seed: int,
    vocab: torch.Tensor | None,
    device: torch.device,
    pad_id: int,
    align: bool,
    joint_from: int | None = None,
) -> float:
    """Token-mean CE over ``batches`` val micro-batches per rank (the same batches every time)."""
    data = ShardBatches(
        shards,
        examples,
        rank=rank,
        world_size=world_size,
        num_workers=0,
        micro_batch_size=micro_batch_size,
        seed=seed,
        shuffle_buffer=1,
        repeats_ok=True,  # a val split smaller than the train batch is still worth a loss
    )
    it = iter(data)
    total = count = 0.0
    engine.eval()
    try:
        with _fork_rng(device), torch.no_grad():
            for _ in range(batches):
                batch = prepare_batch(next(it), device, pad_id, align)
                out = forward_batch(engine, batch)
                loss, n = token_loss(out.logits, batch["labels"], vocab, joint_from)
                total += float(loss) * n
                count += n
    finally:
        engine.train()
    total, count = all_sum([total, count], device)
    return total / count if count else float("nan")


def exact_feature_counts(predicted: Sequence[Any], gold: Sequence[Any]) -> int:
    """How many gold features appear identically among the predicted ones (multiset match)."""
    return sum((Counter(predicted) & Counter(gold)).values())


def window_code(sample: dict[str, Any], default: Any) -> Any:
    """The genetic code to decode a val window under: its genome's (the sample's ``json``), or
    ``default`` when the sample names none; None (no ORF layer) when ``default`` is None."""
    if default is None:
        return None
    from baking.orfs import genetic_code
    from trainer.data.loader import sample_transl_table

    table = sample_transl_table(sample)
    return default if table is None else genetic_code(table)


def _decode_by_code(
    module: Any,
    tokenizer: Any,
    dna: Sequence[str],
    codes: Sequence[Any],
    window_len: int,
    feature_types: Sequence[str],
    max_new_tokens: int,
    device: torch.device,
) -> list[Any]:
    """Decode ``dna`` windows, each under its own code (one batch per code, so a mixed val split
    costs one call per code), results in the windows' order."""
    from trainer.inference.generate import generate_targets

    out: list[Any] = [None] * len(dna)
    for code in dict.fromkeys(codes):
        idx = [i for i, c in enumerate(codes) if c == code]
        got = generate_targets(
            module,
            tokenizer,
            [dna[i] for i in idx],
            window_len,
            list(feature_types),
            max_new_tokens=max_new_tokens,
            device=device,
            orf_code=code,
        )
        for i, g in zip(idx, got):
            out[i] = g
    return out


def decode_metric(
    engine: TrainEngine,
    tokenizer: Any,
    shards: Sequence[ShardEntry],
    *,
    windows: int,
    window_len: int | None,
    feature_types: Sequence[str] | None,
    max_new_tokens: int,
    device: torch.device,
    orf_code: Any = None,
) -> dict[str, float] | None:
    """Greedy-decode the first ``windows`` val windows; fraction of gold features exactly right.

    ``orf_code`` (a model trained with the ORF-constrained loss): decode with the ORF layer, as
    annotate does, each window under its own genome's code (the sample's ``json``; ``orf_code``
    for samples baked without one).

    Every rank decodes the same windows with the same weights, so every rank takes the same number
    of decoding steps (the MoE all-to-all stays matched). Returns None without the grammar
    information (window length, feature types).
    """
    if not window_len or not feature_types:
        return None
    from baking.target_format.pointers import decode_pointer_target
    from baking.target_format.sample_features import FEATURES_FIELD, features_from_json

    samples = first_samples(shards, windows)
    dna = [s["dna.txt"].decode("ascii") for s in samples]
    gold = [features_from_json(s[FEATURES_FIELD], len(d)) for s, d in zip(samples, dna)]
    module = engine.module
    module.eval()
    try:
        with _fork_rng(device), torch.no_grad():
            codes = [window_code(s, orf_code) for s in samples]
            generated = _decode_by_code(
                module, tokenizer, dna, codes, window_len, feature_types, max_new_tokens, device
            )
    finally:
        module.train()
    matched = n_gold = n_pred = 0
    for gen, ref, seq in zip(generated, gold, dna):
        try:
            pred = decode_pointer_target(gen.tokens, min(len(seq), window_len))
        except Exception:  # a truncated target (max_new_tokens) does not decode
            pred = []
        matched += exact_feature_counts(pred, ref)
        n_gold += len(ref)
        n_pred += len(pred)
    return {
        "val/exact_features": matched / n_gold if n_gold else 0.0,
        "val/predicted_features": float(n_pred),
        "val/gold_features": float(n_gold),
    }
