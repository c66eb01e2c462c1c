"""Build the encoder-decoder from a DNABERT-2 checkpoint: the recipe's ``init_model``.

| part | init |
|---|---|
| embeddings (shared by encoder and decoder), encoder layers | copied from DNABERT-2 |
| decoder self-attention (``Wqkv``, ``dense``) + its norm | copied from the same-index encoder layer |
| cross-attention (``q``, ``kv``, ``dense``) | random N(0, 0.02), zero biases; norm copied (decoder.py) |
| decoder MLP + norm | copied; MoE experts are copies of it (sparse upcycling), router random |
| output head ``lm_head`` (no bias) | the word embedding itself when tied, else a copy of it |

Every pre-trained tensor is copied by name through the strict DNABERT-2 reader (``dnabert2.py``);
the random parts come from their own seeded streams so a build is reproducible and the caller's
random state is left untouched.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from trainer.model.config import Dna2GffConfig
from trainer.model.decoder import CROSS_INIT_STD
from trainer.model.dnabert2 import load_dnabert2
from trainer.model.encoder import GatedMLP
from trainer.model.moe import ROUTER_INIT_STD, MoEMLP
from trainer.model.seq2seq import Dna2GffModel

log = logging.getLogger(__name__)


def _init_new_parts(model: Dna2GffModel, seed: int) -> None:
    """Draw the random parts from their own seeded streams: cross-attention N(0, 0.02) with zero
    biases, routers N(0, 0.02). So the cross-attention of a MoE model equals a dense model's."""
    cross = torch.Generator().manual_seed(seed)
    router = torch.Generator().manual_seed(seed + 1)
    # the pointer head: its own stream (seed + 2)
    model.pointer_head.reset_parameters(torch.Generator().manual_seed(seed + 2))
    # the auxiliary heads: the encoder's (seed + 3), the per-base one on the pointer keys (seed + 4)
    for head, stream in ((model.encoder_aux, seed + 3), (model.base_aux, seed + 4)):
        if head is not None:
            with torch.no_grad():
                g = torch.Generator().manual_seed(stream)
                head.weight.copy_(torch.randn(head.weight.shape, generator=g) * 0.02)
                head.bias.zero_()
    with torch.no_grad():
        for layer in model.decoder.layers():
            att = layer.crossattention
            for linear in (att.q, att.kv, att.output.dense):
                linear.weight.copy_(
                    torch.randn(linear.weight.shape, generator=cross) * CROSS_INIT_STD
                )
                linear.bias.zero_()
            if isinstance(layer.mlp, MoEMLP):
                w = layer.mlp.router.weight
                w.copy_(torch.randn(w.shape, generator=router) * ROUTER_INIT_STD)


def build_from_dnabert2(
    dnabert_path: str,
    *,
    num_decoder_layers: int | None = None,
    use_moe: bool = False,
    num_experts: int = 8,
    moe_top_k: int = 2,
    moe_layers: list[int] | None = None,
    tie_weights: bool = False,
    seed: int = 0,
    **config_overrides: Any,
) -> Dna2GffModel:
    """The recipe's ``init_model``: DNABERT-2 encoder -> encoder-decoder (see the module table).

    ``seed`` fixes the random parts (cross-attention, routers). Extra keyword arguments go to
    ``Dna2GffConfig`` (e.g. ``moe_capacity_factor``).
    """
    with torch.random.fork_rng(devices=[]):  # the caller's random stream is left untouched
        torch.manual_seed(seed)
        source, enc_config, _ = load_dnabert2(dnabert_path)
        fields = enc_config.to_dict()
        fields.update(
            num_decoder_layers=num_decoder_layers or enc_config.num_encoder_layers,
            use_moe=use_moe,
            num_experts=num_experts,
            moe_top_k=moe_top_k,
            moe_layers=moe_layers,
            tie_word_embeddings=tie_weights,
            source_checkpoint=str(dnabert_path),
        )
        fields.update(config_overrides)
        config = Dna2GffConfig.from_dict(fields)
        model = Dna2GffModel(config)
    model.embeddings.load_state_dict(source.embeddings.state_dict())
    model.encoder.load_state_dict(source.encoder.state_dict())
    for i, layer in enumerate(model.decoder.layers()):
        src = source.encoder.layers()[i]
        layer.attention.load_state_dict(src.attention.state_dict())
        layer.crossattention.output.LayerNorm.load_state_dict(
            src.attention.output.LayerNorm.state_dict()
        )
        if isinstance(layer.mlp, MoEMLP):
            layer.mlp.upcycle(src.mlp)
            layer.mlp.layernorm.load_state_dict(src.mlp.layernorm.state_dict())
        else:
            assert isinstance(layer.mlp, GatedMLP)
            layer.mlp.load_state_dict(src.mlp.state_dict())
    _init_new_parts(model, seed)
    if not tie_weights:
        with torch.no_grad():
            model.lm_head.weight.copy_(model.embeddings.word_embeddings.weight)
    model.tie_weights()
    log.info(
        "built model source=%s enc_layers=%d dec_layers=%d moe=%s experts=%d top_k=%d tied=%s",
        dnabert_path,
        config.num_encoder_layers,
        config.num_decoder_layers,
        use_moe,
        num_experts,
        moe_top_k,
        tie_weights,
    )
    return model


__all__ = ["build_from_dnabert2"]
