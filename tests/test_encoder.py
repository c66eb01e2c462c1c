"""The DNABERT-2 encoder against its documented math: slopes, masks, a hand-computed layer."""

from __future__ import annotations

import math

import pytest
import torch

from trainer.model.config import Dna2GffConfig
from trainer.model.encoder import DNABert2Model, alibi_slopes, attention_bias


def tiny_config(**kw) -> Dna2GffConfig:
    fields = dict(
        vocab_size=40,
        hidden_size=32,
        num_encoder_layers=2,
        num_decoder_layers=2,
        num_attention_heads=4,
        intermediate_size=48,
        hidden_dropout=0.0,
    )
    fields.update(kw)
    return Dna2GffConfig(**fields)


def randomise(model: torch.nn.Module, seed: int = 0) -> None:
    """Random weights everywhere, norms included, so nothing hides behind ones and zeros."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            p.copy_(1 + 0.1 * noise if "orm.weight" in name else 0.3 * noise)


def test_alibi_slopes_12_heads_follow_the_non_power_of_two_rule():
    expected = [2.0**-e for e in (1, 2, 3, 4, 5, 6, 7, 8, 0.5, 1.5, 2.5, 3.5)]
    assert alibi_slopes(12) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("n", [1, 2, 4, 8, 16])
def test_alibi_slopes_power_of_two(n):
    assert alibi_slopes(n) == pytest.approx([2 ** (-8 * (h + 1) / n) for h in range(n)])


def test_alibi_slopes_6_heads():
    # 4 heads: 2^-2, 2^-4, 2^-6, 2^-8; then 8-head slopes 2^-1, 2^-3 (every other one)
    assert alibi_slopes(6) == pytest.approx([2**-2, 2**-4, 2**-6, 2**-8, 2**-1, 2**-3])


def test_attention_bias_symmetric_and_causal():
    slopes = torch.tensor([0.5, 0.25])
    sym = attention_bias(slopes, 4, 4, causal=False)[0]
    assert torch.allclose(sym[1, 0, 3], torch.tensor(-0.25 * 3))
    assert torch.allclose(sym[0, 3, 0], torch.tensor(-0.5 * 3))
    assert torch.equal(sym, sym.transpose(-1, -2))
    causal = attention_bias(slopes, 4, 4, causal=True)[0]
    assert causal[0, 2, 0] == pytest.approx(-1.0)
    assert causal[0, 2, 2] == 0
    assert causal[0, 1, 3] < -1e30  # the future is masked
    # a cached step: query at absolute position 3 against keys 0..3 equals the last row
    step = attention_bias(slopes, 1, 4, causal=True, q_offset=3)[0]
    assert torch.equal(step[:, 0], causal[:, 3])


def reference_forward(model: DNABert2Model, ids: torch.Tensor) -> torch.Tensor:
    """DNABERT-2 spelt out with plain float64 matrix products, one sequence, no padding."""
    cfg = model.config
    sd = {k: v.double() for k, v in model.state_dict().items()}
    nh, hd = cfg.num_attention_heads, cfg.head_dim

    def ln(x, prefix):
        mu = x.mean(-1, keepdim=True)
        var = ((x - mu) ** 2).mean(-1, keepdim=True)
        return (x - mu) / torch.sqrt(var + cfg.layer_norm_eps) * sd[prefix + ".weight"] + sd[
            prefix + ".bias"
        ]

    def gelu(x):
        return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))

    x = (
        sd["embeddings.word_embeddings.weight"][ids]
        + sd["embeddings.token_type_embeddings.weight"][0]
    )
    x = ln(x, "embeddings.LayerNorm")
    s = len(ids)
    slopes = alibi_slopes(nh)
    for i in range(cfg.num_encoder_layers):
        p = f"encoder.layer.{i}."
        qkv = x @ sd[p + "attention.self.Wqkv.weight"].T + sd[p + "attention.self.Wqkv.bias"]
        heads = []
        for h in range(nh):
            q = qkv[:, h * hd : (h + 1) * hd]
            k = qkv[:, cfg.hidden_size + h * hd : cfg.hidden_size + (h + 1) * hd]
            v = qkv[:, 2 * cfg.hidden_size + h * hd : 2 * cfg.hidden_size + (h + 1) * hd]
            scores = q @ k.T / math.sqrt(hd)
            for a in range(s):
                for b in range(s):
                    scores[a, b] -= slopes[h] * abs(a - b)
            heads.append(torch.softmax(scores, -1) @ v)
        att = torch.cat(heads, -1) @ sd[p + "attention.output.dense.weight"].T
        x = ln(x + att + sd[p + "attention.output.dense.bias"], p + "attention.output.LayerNorm")
        g = x @ sd[p + "mlp.gated_layers.weight"].T
        inner = gelu(g[:, : cfg.intermediate_size]) * g[:, cfg.intermediate_size :]
        out = inner @ sd[p + "mlp.wo.weight"].T + sd[p + "mlp.wo.bias"]
        x = ln(x + out, p + "mlp.layernorm")
    return x


@pytest.mark.parametrize("layers,heads", [(1, 4), (2, 12)])
def test_hand_computed_layers_match(layers, heads):
    cfg = tiny_config(
        num_encoder_layers=layers, num_decoder_layers=1, num_attention_heads=heads, hidden_size=48
    )
    model = DNABert2Model(cfg).eval()
    randomise(model)
    ids = torch.tensor([1, 7, 5, 30, 12, 9, 2])
    got = model(ids[None])[0]
    want = reference_forward(model, ids).float()
    assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()


def test_padding_never_changes_real_positions():
    cfg = tiny_config()
    model = DNABert2Model(cfg).eval()
    randomise(model, 1)
    a = torch.tensor([1, 5, 9, 22, 13, 2])
    b = torch.tensor([1, 8, 30, 2])
    alone_a, alone_b = model(a[None])[0], model(b[None])[0]
    for pad_id in (3, 17):  # whatever sits in the padded slots must not matter
        batch = torch.full((2, 6), pad_id)
        batch[0], batch[1, :4] = a, b
        mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2])
        out = model(batch, mask)
        assert torch.allclose(out[0], alone_a, atol=1e-6)
        assert torch.allclose(out[1, :4], alone_b, atol=1e-6)
        assert torch.all(out[1, 4:] == 0)  # pads are zeros, as DNABERT-2 re-pads them


def test_token_types_change_the_output():
    cfg = tiny_config()
    model = DNABert2Model(cfg).eval()
    randomise(model, 2)
    ids = torch.tensor([[1, 5, 9, 2]])
    assert not torch.allclose(model(ids), model(ids, token_type_ids=torch.ones_like(ids)))


def test_bf16_autocast_and_backward():
    cfg = tiny_config()
    model = DNABert2Model(cfg)
    randomise(model, 3)
    ids = torch.randint(5, cfg.vocab_size, (2, 16), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, 10:] = 0
    ref = model.eval()(ids, mask)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(ids, mask)
    diff = (out.float() - ref).abs()
    # matmuls really ran in bf16 (LayerNorm keeps fp32 under autocast): a small but non-zero error,
    # judged on the mean (bf16 has 8 mantissa bits; single elements after LayerNorm can reach ~0.2)
    assert 0 < diff.mean() < 0.03 and diff.max() < 0.5
    model.train()
    model(ids, mask).float().pow(2).mean().backward()
    grad = model.encoder.layer[0].attention.self.Wqkv.weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_longer_than_512_tokens():
    cfg = tiny_config(num_encoder_layers=1, num_decoder_layers=1)
    model = DNABert2Model(cfg).eval()
    out = model(torch.randint(5, cfg.vocab_size, (1, 600)))
    assert out.shape == (1, 600, cfg.hidden_size) and torch.isfinite(out).all()
