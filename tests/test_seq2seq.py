"""The recipe's encoder-decoder: what is copied, what is new, save/load, cached decoding."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from baking.common.errors import ConfigError, InputError
from trainer.model.build import build_from_dnabert2
from trainer.model.config import Dna2GffConfig
from trainer.model.seq2seq import Dna2GffModel
from trainer.model.state import CheckpointError
from trainer.random_checkpoint import write_random_dnabert2

SIZES = dict(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=48, vocab_size=60)


@pytest.fixture(
    scope="module", params=[("bin", True), ("safetensors", False)], ids=["bin+bert", "st+bare"]
)
def checkpoint(request, tmp_path_factory):
    fmt, prefix = request.param
    return write_random_dnabert2(
        tmp_path_factory.mktemp("ck") / "dnabert2", weights_format=fmt, bert_prefix=prefix, **SIZES
    )


def source_encoder(folder) -> dict[str, torch.Tensor]:
    if (folder / "model.safetensors").exists():
        raw = load_file(str(folder / "model.safetensors"))
    else:
        raw = torch.load(folder / "pytorch_model.bin", weights_only=True)
    return {
        k.removeprefix("bert."): v for k, v in raw.items() if not k.startswith(("cls.", "pooler."))
    }


def batch(vocab: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (2, 9), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    ids[1, 6:] = 3
    dec = torch.randint(5, vocab, (2, 5), generator=gen)
    dec[:, 0] = 1
    return ids, mask, dec


@pytest.mark.parametrize("tie", [True, False])
def test_init_table(checkpoint, tie):
    src = source_encoder(checkpoint)
    model = build_from_dnabert2(str(checkpoint), tie_weights=tie)
    sd = model.state_dict()
    # encoder and embeddings: every tensor equals the source
    for name, value in src.items():
        assert torch.equal(sd[name], value), name
    for i in range(2):
        enc, dec = f"encoder.layer.{i}.", f"decoder.layer.{i}."
        # decoder self-attention + LN1, MLP + LN3: copies of the same-index encoder layer
        for part in ("attention.self.Wqkv", "attention.output.dense", "attention.output.LayerNorm"):
            for kind in ("weight", "bias"):
                assert torch.equal(sd[f"{dec}{part}.{kind}"], src[f"{enc}{part}.{kind}"])
        for part in (
            "mlp.gated_layers.weight",
            "mlp.wo.weight",
            "mlp.wo.bias",
            "mlp.layernorm.weight",
        ):
            assert torch.equal(sd[dec + part], src[enc + part])
        # LN2 starts as the layer's attention.output.LayerNorm
        assert torch.equal(
            sd[dec + "crossattention.output.LayerNorm.weight"],
            src[enc + "attention.output.LayerNorm.weight"],
        )
        # cross-attention projections are new: equal to no source tensor, N(0, 0.02), zero bias
        for part in ("q", "kv", "output.dense"):
            w = sd[f"{dec}crossattention.{part}.weight"]
            assert not any(v.shape == w.shape and torch.equal(v, w) for v in src.values())
            assert 0.01 < w.std() < 0.03
            assert torch.all(sd[f"{dec}crossattention.{part}.bias"] == 0)
    emb = model.embeddings.word_embeddings.weight
    if tie:
        assert model.lm_head.weight is emb and model.lm_head.weight.data_ptr() == emb.data_ptr()
    else:
        assert (
            torch.equal(model.lm_head.weight, emb)
            and model.lm_head.weight.data_ptr() != emb.data_ptr()
        )
    assert model.lm_head.bias is None
    assert model.config.source_checkpoint == str(checkpoint)


def test_seed_fixes_random_parts_and_keeps_global_rng(checkpoint):
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = build_from_dnabert2(str(checkpoint), seed=5)
    after = torch.rand(1)
    b = build_from_dnabert2(str(checkpoint), seed=5)
    c = build_from_dnabert2(str(checkpoint), seed=6)
    key = "decoder.layer.0.crossattention.q.weight"
    assert torch.equal(a.state_dict()[key], b.state_dict()[key])
    assert not torch.equal(a.state_dict()[key], c.state_dict()[key])
    assert torch.equal(before, after)  # building does not consume the caller's random stream


@pytest.mark.parametrize("moe", [False, True])
@pytest.mark.parametrize("tie", [True, False])
def test_save_load_identical_logits(checkpoint, tmp_path, moe, tie):
    model = build_from_dnabert2(str(checkpoint), use_moe=moe, num_experts=4, tie_weights=tie).eval()
    ids, mask, dec = batch(SIZES["vocab_size"])
    logits = model(ids, mask, dec).logits
    model.save_pretrained(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        "config.json",
        "model.safetensors",
    ]
    loaded = Dna2GffModel.from_pretrained(tmp_path / "m").eval()
    assert torch.equal(loaded(ids, mask, dec).logits, logits)
    assert loaded.config == model.config
    if tie:
        assert loaded.lm_head.weight is loaded.embeddings.word_embeddings.weight
        assert "lm_head.weight" not in load_file(str(tmp_path / "m" / "model.safetensors"))


def test_save_copies_tokenizer(checkpoint, tmp_path):
    tok = tmp_path / "tok"
    tok.mkdir()
    (tok / "tokenizer.json").write_text("{}")
    (tok / "tokenizer_config.json").write_text("{}")
    build_from_dnabert2(str(checkpoint)).save_pretrained(tmp_path / "m", tokenizer_dir=tok)
    assert (tmp_path / "m" / "tokenizer.json").is_file() and (
        tmp_path / "m" / "tokenizer_config.json"
    ).is_file()
    assert not list((tmp_path / "m").glob(".*"))  # no temporary files left behind


@pytest.mark.parametrize("moe", [False, True])
def test_cached_decoding_equals_full_forward(checkpoint, moe):
    model = build_from_dnabert2(
        str(checkpoint), use_moe=moe, num_experts=4, tie_weights=True
    ).eval()
    ids, mask, dec = batch(SIZES["vocab_size"], seed=1)
    full = model(ids, mask, dec).logits
    enc = model.encode(ids, mask)
    logits, cache = model.decode(
        dec[:, :2], enc, mask, use_cache=True
    )  # a prefix, then one at a time
    steps = [logits]
    for t in range(2, dec.shape[1]):
        logits, cache = model.decode(
            dec[:, t : t + 1], enc, mask, past_key_values=cache, use_cache=True
        )
        steps.append(logits)
    assert torch.allclose(torch.cat(steps, 1), full, atol=1e-5)
    assert cache is not None and cache.seq_len == dec.shape[1]
    # beam reordering: swapping rows of the cache equals decoding the swapped batch
    order = torch.tensor([1, 0])
    nxt = torch.full((2, 1), 7)
    swapped, _ = model.decode(
        nxt, enc[order], mask[order], past_key_values=cache.index_select(order)
    )
    direct = model(ids[order], mask[order], torch.cat([dec[order], nxt], 1)).logits[:, -1:]
    assert torch.allclose(swapped, direct, atol=1e-5)


def test_decoder_is_causal_and_reads_the_encoder(checkpoint):
    model = build_from_dnabert2(str(checkpoint)).eval()
    ids, mask, dec = batch(SIZES["vocab_size"], seed=2)
    base = model(ids, mask, dec).logits
    changed = dec.clone()
    changed[:, 3] = 9
    out = model(ids, mask, changed).logits
    assert torch.equal(out[:, :3], base[:, :3]) and not torch.allclose(out[:, 3:], base[:, 3:])
    other = ids.clone()
    other[:, 2] = 11
    assert not torch.allclose(model(other, mask, dec).logits, base)
    padded = ids.clone()
    padded[1, 6:] = 20  # tokens under the mask do not matter
    assert torch.allclose(model(padded, mask, dec).logits, base, atol=1e-6)


def test_loss_is_token_cross_entropy_without_aux(checkpoint):
    model = build_from_dnabert2(str(checkpoint), use_moe=True, num_experts=4).eval()
    ids, mask, dec = batch(SIZES["vocab_size"], seed=3)
    labels = torch.cat([dec[:, 1:], torch.full((2, 1), 2)], 1)
    labels[1, 3:] = -100
    out = model(ids, mask, dec, labels=labels)
    keep = labels != -100
    want = F.cross_entropy(out.logits[keep], labels[keep])
    assert torch.allclose(out.loss, want)
    assert out.aux_loss > 0
    assert model(ids, mask, dec).loss is None


def test_shallower_decoder_and_moe_layer_choice(checkpoint):
    model = build_from_dnabert2(str(checkpoint), num_decoder_layers=1, use_moe=True, num_experts=4)
    assert len(model.decoder.layer) == 1 and model.config.num_decoder_layers == 1
    model = build_from_dnabert2(str(checkpoint), use_moe=True, num_experts=4, moe_layers=[1])
    assert list(model.moe_layers()) == [1]
    with pytest.raises(ConfigError, match="num_decoder_layers=3"):
        build_from_dnabert2(str(checkpoint), num_decoder_layers=3)


def test_config_round_trip_and_validation(tmp_path):
    cfg = Dna2GffConfig(
        vocab_size=10,
        hidden_size=8,
        num_encoder_layers=2,
        num_decoder_layers=1,
        num_attention_heads=2,
        intermediate_size=16,
        use_moe=True,
        moe_layers=[0],
        window_len=300,
        feature_types=["CDS"],
    )
    cfg.save(tmp_path)
    assert Dna2GffConfig.load(tmp_path) == cfg
    assert Dna2GffConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    bad = [
        (dict(hidden_size=9), "hidden_size=9 is not divisible"),
        (dict(vocab_size=0), "vocab_size must be a positive integer"),
        (dict(pad_token_id=10), "pad_token_id=10"),
        (dict(moe_top_k=3), "moe_top_k"),
        (dict(moe_layers=[4]), r"moe_layers=\[4\]"),
        (dict(hidden_dropout=1.5), "hidden_dropout"),
    ]
    for change, message in bad:
        with pytest.raises(ConfigError, match=message):
            Dna2GffConfig(**{**cfg.to_dict(), **change})
    with pytest.raises(ConfigError, match="unknown config field"):
        Dna2GffConfig.from_dict({**cfg.to_dict(), "hiden_size": 3})


def test_from_pretrained_errors_name_the_problem(checkpoint, tmp_path):
    with pytest.raises(InputError, match="model folder not found"):
        Dna2GffModel.from_pretrained(tmp_path / "none")
    build_from_dnabert2(str(checkpoint)).save_pretrained(tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    state = load_file(str(weights))
    state["decoder.layer.1.crossattention.kv.weight"] = torch.zeros(3, 3)
    del state["encoder.layer.0.mlp.wo.bias"]
    save_file(state, str(weights))
    with pytest.raises(CheckpointError) as err:
        Dna2GffModel.from_pretrained(tmp_path / "m")
    assert "encoder.layer.0.mlp.wo.bias" in str(err.value)
    assert "decoder.layer.1.crossattention.kv.weight has shape (3, 3)" in str(err.value)
    weights.unlink()
    with pytest.raises(InputError, match="no model.safetensors"):
        Dna2GffModel.from_pretrained(tmp_path / "m")
    (tmp_path / "m" / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(InputError, match="not a dna2gff model config"):
        Dna2GffModel.from_pretrained(tmp_path / "m")


def test_save_handles_views_into_one_flat_buffer(checkpoint, tmp_path):
    """Under ZeRO the parameters are views into flat buffers; saving must still work."""
    model = build_from_dnabert2(str(checkpoint)).eval()
    params = list(model.parameters())
    flat = torch.cat([p.detach().reshape(-1) for p in params])
    offset = 0
    for p in params:
        p.data = flat[offset : offset + p.numel()].view_as(p)
        offset += p.numel()
    ids, mask, dec = batch(SIZES["vocab_size"])
    model.save_pretrained(tmp_path / "m")
    loaded = Dna2GffModel.from_pretrained(tmp_path / "m").eval()
    assert torch.equal(loaded(ids, mask, dec).logits, model(ids, mask, dec).logits)
