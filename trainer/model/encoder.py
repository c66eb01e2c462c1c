"""DNABERT-2's encoder, written out plainly: the file to read first.

DNABERT-2-117M (``zhihan1996/DNABERT-2-117M``) is a MosaicBERT-style *post-LayerNorm* BERT:

    x = LayerNorm(word_emb[ids] + type_emb[type_ids])           # no position embeddings
    for each layer:
        x = LayerNorm(x + dense(attention(Wqkv(x)) + ALiBi))   # attention.output.LayerNorm
        x = LayerNorm(x + wo(gelu(g) * u)),  [g | u] = gated_layers(x)   # mlp.layernorm

Positions enter only through ALiBi, an additive bias ``-slope_h * |i - j|`` on the attention scores.
We keep the published parameter names (``Wqkv``, ``gated_layers``, ``wo``, ...) so a checkpoint
loads by name, and attention runs through ``F.scaled_dot_product_attention`` with ALiBi + padding as
one additive float mask, so fused kernels serve on GPU and bf16 works. The published code removes pad
tokens before the layers and puts zeros back after; that is plain masked attention, which is what we
do (and we zero the pad positions of the final output the same way).

The decoder (``decoder.py``) reuses ``Attention`` (causal ALiBi, with a KV cache) and ``GatedMLP``.
"""

from __future__ import annotations

import math
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainer.model.config import Dna2GffConfig

KVPair = tuple[Tensor, Tensor]


def alibi_slopes(num_heads: int) -> list[float]:
    """ALiBi slopes as DNABERT-2 (and the ALiBi paper) define them.

    For ``n = 2^k`` heads: ``2^(-8 (h+1) / n)``, h = 0..n-1. Otherwise take the slopes of the nearest
    smaller power of two, then every other slope of twice that many heads, until ``n`` are reached
    (12 heads: 2^-1 .. 2^-8, then 2^-0.5, 2^-1.5, 2^-2.5, 2^-3.5).
    """
    if num_heads < 1:
        raise ValueError(f"num_heads must be >= 1, got {num_heads}")

    def power_of_two(n: int) -> list[float]:
        return [2.0 ** (-8.0 * (h + 1) / n) for h in range(n)]

    if math.log2(num_heads).is_integer():
        return power_of_two(num_heads)
    closest = 2 ** math.floor(math.log2(num_heads))
    return power_of_two(closest) + alibi_slopes(2 * closest)[0::2][: num_heads - closest]


def compute_dtype(x: Tensor) -> torch.dtype:
    """The dtype attention will run in (autocast's if active), so the mask is cast once, not per layer."""
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


def masked_value(dtype: torch.dtype) -> float:
    """A large finite negative for masked scores: -inf would give NaN rows, min() could overflow."""
    return torch.finfo(dtype).min / 2


def attention_bias(
    slopes: Tensor,
    q_len: int,
    k_len: int,
    *,
    causal: bool,
    key_padding_mask: Tensor | None = None,
    q_offset: int = 0,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """The additive mask handed to SDPA: ALiBi, plus causal and padding masks.

    ``slopes`` (H,); query i sits at absolute position ``q_offset + i`` and key j at j (so a cached
    decoder step gets the right distances). ``key_padding_mask`` (B, k_len) is 1/True for real keys.
    Returns (B or 1, H, q_len, k_len).
    """
    device = slopes.device
    q_pos = torch.arange(q_offset, q_offset + q_len, device=device)
    k_pos = torch.arange(k_len, device=device)
    dist = q_pos[:, None] - k_pos[None, :]  # (q, k): i - j
    if causal:
        bias = -slopes.float()[:, None, None] * dist.clamp(min=0)
        bias = bias.masked_fill(dist < 0, masked_value(dtype))
    else:
        bias = -slopes.float()[:, None, None] * dist.abs()
    bias = bias.unsqueeze(0).to(dtype)  # (1, H, q, k)
    if key_padding_mask is not None:
        pad = ~key_padding_mask.bool()[:, None, None, :]  # (B, 1, 1, k)
        bias = bias.masked_fill(pad, masked_value(dtype))
    return bias


class Embeddings(nn.Module):
    """Word + token-type embeddings, LayerNorm, dropout (no position embeddings: ALiBi does that).

    Shared by encoder and decoder in dna2gff: one vocabulary, one table.
    """

    def __init__(self, config: Dna2GffConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout)

    def forward(self, input_ids: Tensor, token_type_ids: Tensor | None = None) -> Tensor:
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        x = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.LayerNorm(x))  # (B, S, H)


class FusedQKV(nn.Module):
    """DNABERT-2's ``attention.self``: one projection whose rows are q, k, v (each H rows)."""

    def __init__(self, config: Dna2GffConfig) -> None:
        super().__init__()
        self.Wqkv = nn.Linear(config.hidden_size, 3 * config.hidden_size)

    def forward(self, x: Tensor, num_heads: int) -> tuple[Tensor, Tensor, Tensor]:
        b, s, h = x.shape
        qkv = self.Wqkv(x).view(b, s, 3, num_heads, h // num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, nh, S, hd)
        return q, k, v


class SelfOutput(nn.Module):
    """``dense`` + dropout + residual + post-LayerNorm, after any attention."""

    def __init__(self, config: Dna2GffConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout)

    def forward(self, attended: Tensor, residual: Tensor) -> Tensor:
        return self.LayerNorm(residual + self.dropout(self.dense(attended)))


def sdpa(q: Tensor, k: Tensor, v: Tensor, bias: Tensor, dropout_p: float) -> Tensor:
    """Scaled dot-product attention (1/sqrt(hd) scaling) with an additive mask -> (B, S, H)."""
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype), dropout_p=dropout_p)
    b, nh, s, hd = out.shape
    return out.transpose(1, 2).reshape(b, s, nh * hd)


class Attention(nn.Module):
    """Self-attention block ``attention.{self.Wqkv, output.dense, output.LayerNorm}``.

    ``past_kv`` (keys, values of earlier positions) is concatenated in front of this call's keys and
    values; the caller supplies a bias matching the full key length. Returns output and new (k, v).
    """

    def __init__(self, config: Dna2GffConfig) -> None:
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.attention_dropout = config.attention_dropout
        self.self = FusedQKV(config)
        self.output = SelfOutput(config)

    def forward(
        self, x: Tensor, bias: Tensor, past_kv: KVPair | None = None
    ) -> tuple[Tensor, KVPair]:
        q, k, v = self.self(x, self.num_heads)  # (B, nh, S, hd)
        if past_kv is not None:
            k = torch.cat([past_kv[0], k], dim=2)
            v = torch.cat([past_kv[1], v], dim=2)
        p = self.attention_dropout if self.training else 0.0
        return self.output(sdpa(q, k, v, bias, p), x), (k, v)


class GatedFFN(nn.Module):
    """The gated-GELU feed-forward without residual/norm: ``wo(gelu(g) * u)``, ``[g|u] = gated_layers(x)``.

    This is what a MoE expert is (DeepSpeed's MoE wants a pure function of the token).
    """

    def __init__(self, config: Dna2GffConfig) -> None:
        super().__init__()
        self.intermediate_size = config.intermediate_size
        self.gated_layers = nn.Linear(config.hidden_size, 2 * config.intermediate_size, bias=False)
        self.act = nn.GELU(approximate="none")
        self.dropout = nn.Dropout(config.hidden_dropout)
        self.wo = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, x: Tensor) -> Tensor:
        h = self.gated_layers(x)  # (..., 2I)
        gated, plain = h[..., : self.intermediate_size], h[..., self.intermediate_size :]
        return self.wo(self.dropout(self.act(gated) * plain))  # (..., H)


class GatedMLP(GatedFFN):
    """DNABERT-2's ``mlp`` block: the gated FFN plus residual and post-LayerNorm ``layernorm``."""

    def __init__(self, config: Dna2GffConfig) -> None:
        super().__init__(config)
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x: Tensor) -> Tensor:
        return self.layernorm(x + super().forward(x))


class EncoderLayer(nn.Module):
    """One DNABERT-2 layer: bidirectional ALiBi attention, then the gated MLP (both post-LN)."""

    def __init__(self, config: Dna2GffConfig) -> None:
        super().__init__()
        self.attention = Attention(config)
        self.mlp = GatedMLP(config)

    def forward(self, x: Tensor, bias: Tensor) -> Tensor:
        x, _ = self.attention(x, bias)
        return self.mlp(x)


class DNABert2Encoder(nn.Module):
    """The layer stack (``encoder.layer.N`` in DNABERT-2's state dict).

    Named apart from ``trainer.data.examples.ExampleBuilder``, which turns a shard sample into a
    training example.
    """

    alibi_slopes: Tensor  # (nH,) buffer, not saved: it follows from the head count

    def __init__(self, config: Dna2GffConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(EncoderLayer(config) for _ in range(config.num_encoder_layers))
        slopes = torch.tensor(alibi_slopes(config.num_attention_heads), dtype=torch.float32)
        self.register_buffer("alibi_slopes", slopes, persistent=False)

    def layers(self) -> list[EncoderLayer]:
        return cast(list[EncoderLayer], list(self.layer))

    def forward(self, x: Tensor, attention_mask: Tensor) -> Tensor:
        """``x`` (B, S, H) embeddings, ``attention_mask`` (B, S) 1 = real token -> (B, S, H)."""
        s = x.shape[1]
        bias = attention_bias(
            self.alibi_slopes,
            s,
            s,
            causal=False,
            key_padding_mask=attention_mask,
            dtype=compute_dtype(x),
        )
        for layer in self.layers():
            x = layer(x, bias)
        return x * attention_mask[..., None].to(x.dtype)  # pads are 0, as in DNABERT-2's re-padding


class DNABert2Model(nn.Module):
    """DNABERT-2's ``BertModel`` without pooler: embeddings + encoder, loadable from its checkpoint.

    ``Dna2GffModel`` holds the same two modules under the same names; this class exists so the
    encoder can be used (and tested against the published math) on its own.
    """

    def __init__(self, config: Dna2GffConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        self.encoder = DNABert2Encoder(config)

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
    ) -> Tensor:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        return self.encoder(self.embeddings(input_ids, token_type_ids), attention_mask)
