"""The decoder: DNABERT-2 layers run causally, plus a new cross-attention to the encoder.

Decoder layer i (post-LN, like the encoder):

    x = LN1(x + self_attn(x))        # Wqkv, dense, LN1 copied from encoder layer i; causal ALiBi
    x = LN2(x + cross_attn(x, enc))  # new: q, kv, dense ~ N(0, 0.02), zero biases; no ALiBi
    x = LN3(x + mlp(x))              # gated MLP (or MoE of its copies) and LN3 copied from layer i

LN2 starts as a copy of layer i's ``attention.output.LayerNorm`` (the norm that follows an attention
residual in the pre-trained model), so every norm is pre-trained. Causal ALiBi is the encoder's bias
restricted to the past: ``-slope * (i - j)`` for j <= i, masked for j > i.

Incremental decoding keeps a ``KVCache``: self-attention keys/values grow one step at a time, the
cross-attention keys/values of the encoder output are computed once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import cast

import torch
from torch import Tensor, nn

from trainer.model.config import Dna2GffConfig
from trainer.model.encoder import (
    Attention,
    GatedMLP,
    KVPair,
    SelfOutput,
    attention_bias,
    compute_dtype,
    masked_value,
    sdpa,
)
from trainer.model.moe import MoEMLP

CROSS_INIT_STD = 0.02


@dataclass
class KVCache:
    """Per decoder layer: self-attention (k, v) so far and the cross-attention (k, v) of the source."""

    self_kv: list[KVPair] = field(default_factory=list)
    cross_kv: list[KVPair] = field(default_factory=list)

    @property
    def seq_len(self) -> int:
        """Decoder positions already cached."""
        return int(self.self_kv[0][0].shape[2]) if self.self_kv else 0

    def index_select(self, index: Tensor) -> KVCache:
        """Reorder/select batch rows (beam search): row b of the result is row ``index[b]``."""

        def pick(pairs: list[KVPair]) -> list[KVPair]:
            return [(k.index_select(0, index), v.index_select(0, index)) for k, v in pairs]

        return KVCache(pick(self.self_kv), pick(self.cross_kv))


class CrossAttention(nn.Module):
    """Queries from the decoder, keys/values from the encoder output; padding-masked, no ALiBi."""

    def __init__(self, config: Dna2GffConfig) -> None:
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.attention_dropout = config.attention_dropout
        self.q = nn.Linear(config.hidden_size, config.hidden_size)
        self.kv = nn.Linear(config.hidden_size, 2 * config.hidden_size)  # rows: k, v
        self.output = SelfOutput(config)
        for linear in (self.q, self.kv, self.output.dense):
            nn.init.normal_(linear.weight, std=CROSS_INIT_STD)
            nn.init.zeros_(linear.bias)

    def project_kv(self, enc: Tensor) -> KVPair:
        b, s, h = enc.shape
        kv = self.kv(enc).view(b, s, 2, self.num_heads, h // self.num_heads)
        k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, nh, S, hd)
        return k, v

    def forward(self, x: Tensor, kv: KVPair, bias: Tensor) -> Tensor:
        b, t, h = x.shape
        q = (
            self.q(x).view(b, t, self.num_heads, h // self.num_heads).transpose(1, 2)
        )  # (B, nh, T, hd)
        p = self.attention_dropout if self.training else 0.0
        return self.output(sdpa(q, kv[0], kv[1], bias, p), x)


class DecoderLayer(nn.Module):
    """Causal self-attention, cross-attention, then the (dense or MoE) gated MLP."""

    def __init__(self, config: Dna2GffConfig, index: int, ep_size: int = 1) -> None:
        super().__init__()
        self.attention = Attention(config)
        self.crossattention = CrossAttention(config)
        self.mlp: GatedMLP | MoEMLP = (
            MoEMLP(config, ep_size) if config.is_moe_layer(index) else GatedMLP(config)
        )

    def forward(
        self,
        x: Tensor,
        self_bias: Tensor,
        cross_kv: KVPair,
        cross_bias: Tensor,
        past_kv: KVPair | None = None,
    ) -> tuple[Tensor, KVPair, Tensor | None]:
        x, new_kv = self.attention(x, self_bias, past_kv)
        x = self.crossattention(x, cross_kv, cross_bias)
        if isinstance(self.mlp, MoEMLP):
            x, l_aux = self.mlp(x)
            return x, new_kv, l_aux
        return self.mlp(x), new_kv, None


class Decoder(nn.Module):
    """The decoder stack (``decoder.layer.N``); embeddings and head live in ``Dna2GffModel``."""

    def __init__(self, config: Dna2GffConfig, ep_size: int = 1) -> None:
        super().__init__()
        self.layer = nn.ModuleList(
            DecoderLayer(config, i, ep_size) for i in range(config.num_decoder_layers)
        )

    def layers(self) -> list[DecoderLayer]:
        return cast(list[DecoderLayer], list(self.layer))

    def forward(
        self,
        x: Tensor,
        encoder_hidden: Tensor,
        encoder_attention_mask: Tensor,
        alibi_slopes: Tensor,
        decoder_attention_mask: Tensor | None = None,
        cache: KVCache | None = None,
    ) -> tuple[Tensor, KVCache, Tensor]:
        """``x`` (B, T, H) embedded decoder input -> hidden (B, T, H), updated cache, summed l_aux.

        ``decoder_attention_mask`` (B, past + T), 1 = real, covers the cached positions too.
        """
        past = cache.seq_len if cache is not None else 0
        t = x.shape[1]
        dtype = compute_dtype(x)
        self_bias = attention_bias(
            alibi_slopes,
            t,
            past + t,
            causal=True,
            key_padding_mask=decoder_attention_mask,
            q_offset=past,
            dtype=dtype,
        )
        pad = ~encoder_attention_mask.bool()[:, None, None, :]  # (B, 1, 1, S)
        cross_bias = torch.zeros(pad.shape, dtype=dtype, device=x.device)
        cross_bias = cross_bias.masked_fill(pad, masked_value(dtype))
        new_cache = KVCache()
        aux = x.new_zeros((), dtype=torch.float32)
        for i, layer in enumerate(self.layers()):
            if cache is not None and cache.cross_kv:
                cross_kv = cache.cross_kv[i]
            else:
                cross_kv = layer.crossattention.project_kv(encoder_hidden)
            past_kv = cache.self_kv[i] if cache is not None and cache.self_kv else None
            x, kv, l_aux = layer(x, self_bias, cross_kv, cross_bias, past_kv)
            new_cache.self_kv.append(kv)
            new_cache.cross_kv.append(cross_kv)
            if l_aux is not None:
                aux = aux + l_aux.float()
        return x, new_cache, aux
