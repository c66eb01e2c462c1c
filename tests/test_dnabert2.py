"""Reading DNABERT-2 checkpoints strictly, in both key styles and both file formats."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from baking.common.errors import InputError
from trainer.model.config import Dna2GffConfig
from trainer.model.dnabert2 import encoder_config, load_dnabert2, read_dnabert2_config
from trainer.model.encoder import DNABert2Model
from trainer.model.state import CheckpointError
from trainer.random_checkpoint import write_random_dnabert2

SIZES = dict(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=48, vocab_size=50)


def source_tensors(folder) -> dict[str, torch.Tensor]:
    if (folder / "model.safetensors").exists():
        return load_file(str(folder / "model.safetensors"))
    return torch.load(folder / "pytorch_model.bin", weights_only=True)


@pytest.mark.parametrize(
    "fmt,prefix", [("bin", True), ("bin", False), ("safetensors", True), ("safetensors", False)]
)
def test_every_encoder_tensor_equals_the_source(tmp_path, fmt, prefix):
    folder = write_random_dnabert2(tmp_path / "ck", weights_format=fmt, bert_prefix=prefix, **SIZES)
    model, config, _ = load_dnabert2(folder)
    raw = source_tensors(folder)
    got = model.state_dict()
    assert config.hidden_size == 32 and config.num_encoder_layers == 2 and config.vocab_size == 50
    compared = 0
    for key, value in raw.items():
        name = key.removeprefix("bert.")
        if name.startswith(("cls.", "pooler.")):
            assert name not in got  # MLM head / pooler ignored
            continue
        assert torch.equal(got[name], value), name
        compared += 1
    assert compared == len(got) == 4 + 11 * 2  # embeddings: word, type, LN w+b; 11 per layer


def test_random_checkpoint_layout_matches_dnabert2_names(tmp_path):
    folder = write_random_dnabert2(tmp_path / "ck", **SIZES)
    keys = set(torch.load(folder / "pytorch_model.bin", weights_only=True))
    assert "bert.encoder.layer.1.attention.self.Wqkv.weight" in keys
    assert "bert.encoder.layer.0.mlp.gated_layers.weight" in keys
    assert "bert.encoder.layer.0.mlp.gated_layers.bias" not in keys
    assert "cls.predictions.decoder.bias" in keys
    hf = json.loads((folder / "config.json").read_text())
    assert hf["num_hidden_layers"] == 2 and hf["hidden_act"] == "gelu"


def _rewrite(folder, edit) -> None:
    path = folder / "model.safetensors"
    state = load_file(str(path))
    edit(state)
    save_file(state, str(path))


def test_missing_tensor_is_named(tmp_path):
    folder = write_random_dnabert2(tmp_path / "ck", weights_format="safetensors", **SIZES)
    _rewrite(folder, lambda s: s.pop("bert.encoder.layer.1.mlp.wo.bias"))
    with pytest.raises(
        CheckpointError, match=r"missing tensor\(s\): encoder\.layer\.1\.mlp\.wo\.bias"
    ):
        load_dnabert2(folder)


def test_misshaped_tensor_is_named(tmp_path):
    folder = write_random_dnabert2(tmp_path / "ck", weights_format="safetensors", **SIZES)

    def shrink(state):
        state["bert.encoder.layer.0.attention.self.Wqkv.weight"] = torch.zeros(95, 32)

    _rewrite(folder, shrink)
    with pytest.raises(
        CheckpointError,
        match=r"encoder\.layer\.0\.attention\.self\.Wqkv\.weight has shape \(95, 32\)",
    ):
        load_dnabert2(folder)


def test_unexpected_tensor_is_named(tmp_path):
    folder = write_random_dnabert2(tmp_path / "ck", weights_format="safetensors", **SIZES)
    _rewrite(folder, lambda s: s.update({"bert.encoder.layer.5.extra.weight": torch.zeros(2)}))
    with pytest.raises(
        CheckpointError, match=r"unexpected tensor\(s\): encoder\.layer\.5\.extra\.weight"
    ):
        load_dnabert2(folder)


def test_config_and_weights_disagree(tmp_path):
    folder = write_random_dnabert2(tmp_path / "ck", **SIZES)
    hf = json.loads((folder / "config.json").read_text())
    hf["num_hidden_layers"] = 3
    (folder / "config.json").write_text(json.dumps(hf))
    with pytest.raises(CheckpointError, match="encoder.layer.2"):
        load_dnabert2(folder)


def test_key_both_with_and_without_prefix(tmp_path):
    folder = write_random_dnabert2(tmp_path / "ck", weights_format="safetensors", **SIZES)
    _rewrite(folder, lambda s: s.update({"embeddings.LayerNorm.bias": torch.zeros(32)}))
    with pytest.raises(CheckpointError, match="both with and without"):
        load_dnabert2(folder)


def test_bad_folders(tmp_path):
    with pytest.raises(InputError, match="no such folder"):
        load_dnabert2(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no config.json"):
        load_dnabert2(tmp_path / "empty")
    folder = write_random_dnabert2(tmp_path / "ck", **SIZES)
    (folder / "pytorch_model.bin").unlink()
    with pytest.raises(InputError, match="no weights"):
        load_dnabert2(folder)
    (folder / "pytorch_model.bin").write_bytes(b"not a pickle")
    with pytest.raises(CheckpointError, match="cannot read weights"):
        load_dnabert2(folder)


def test_hub_id_offline_asks_for_a_folder(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(InputError, match="pass a local folder"):
        load_dnabert2("nobody-xyz/not-a-model")


def test_write_refuses_to_replace_foreign_folder(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(InputError, match="not a random DNABERT-2 checkpoint"):
        write_random_dnabert2(tmp_path / "mine", **SIZES)
    assert (tmp_path / "mine" / "notes.txt").exists()
    first = write_random_dnabert2(tmp_path / "ck", seed=1, **SIZES)
    again = write_random_dnabert2(tmp_path / "ck", seed=2, **SIZES)  # ours: replaced
    assert first == again and json.loads((again / "config.json").read_text())["dna2gff_seed"] == 2


def test_real_dnabert2_config_gives_117m_parameters(dnabert2_tokenizer_dir):
    hf = read_dnabert2_config(dnabert2_tokenizer_dir)
    config = encoder_config(hf)
    assert (config.hidden_size, config.num_encoder_layers, config.num_attention_heads) == (
        768,
        12,
        12,
    )
    assert config.vocab_size == 4096 and config.intermediate_size == 3072
    with torch.device("meta"):
        model = DNABert2Model(config)
    encoder = sum(p.numel() for p in model.parameters())
    mlm_head = (
        768 * 768 + 768 + 2 * 768 + 4096
    )  # transform dense + LayerNorm + decoder bias (tied weight)
    assert encoder + mlm_head == 117_074_176  # the published count
    assert isinstance(config, Dna2GffConfig)


def test_make_tiny_with_real_tokenizer(dnabert2_tokenizer_dir, tmp_path):
    from trainer.random_checkpoint import make_tiny_dnabert2

    folder = make_tiny_dnabert2(
        tmp_path / "t",
        tokenizer=dnabert2_tokenizer_dir,
        hidden_size=16,
        num_heads=2,
        intermediate_size=32,
    )
    model, config, _ = load_dnabert2(folder)
    assert config.vocab_size == 4096 and (folder / "tokenizer.json").read_bytes() != b""
    assert (folder / "tokenizer_config.json").is_file()


def test_make_tiny_from_fasta(genome_pair, tmp_path):
    from trainer.random_checkpoint import make_tiny_dnabert2
    from trainer.tokens.tokenizer import encode_dna, load_tokenizer

    fna, _ = genome_pair("phage")
    folder = make_tiny_dnabert2(
        tmp_path / "t",
        fasta=[fna],
        vocab_size=300,
        hidden_size=16,
        num_heads=2,
        intermediate_size=32,
    )
    tok = load_tokenizer(folder)
    assert tok.get_vocab_size() == 300 and load_dnabert2(folder)[1].vocab_size == 300
    ids = encode_dna(tok, "atgaaacgcattagcaccaccattaccaccacc")
    assert ids[0] == 1 and ids[-1] == 2 and 0 not in ids


def test_saved_alibi_buffer_is_checked_and_dropped(tmp_path):
    from trainer.model.encoder import alibi_slopes, attention_bias

    folder = write_random_dnabert2(tmp_path / "ck", weights_format="safetensors", **SIZES)
    alibi = attention_bias(torch.tensor(alibi_slopes(4)), 16, 16, causal=False).contiguous()
    _rewrite(
        folder,
        lambda s: s.update(
            {
                "bert.encoder.alibi": alibi,
                "bert.embeddings.token_type_ids": torch.zeros(1, 16, dtype=torch.long),
            }
        ),
    )
    load_dnabert2(folder)  # buffers of the published code: verified, not loaded
    _rewrite(folder, lambda s: s.update({"bert.encoder.alibi": alibi * 2}))
    with pytest.raises(CheckpointError, match="encoder.alibi differs"):
        load_dnabert2(folder)
