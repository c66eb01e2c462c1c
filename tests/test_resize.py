"""resize_model: embeddings and head grow to the tokenizer, old rows kept, new rows at the mean."""

from __future__ import annotations

import json
import random

import pytest
import torch

from baking.common.errors import InputError
from trainer.model.build import build_from_dnabert2
from trainer.model.resize import resize_model, resize_token_embeddings
from trainer.model.seq2seq import Dna2GffModel
from trainer.random_checkpoint import write_random_dnabert2
from trainer.tokens.tokenizer import append_tokens, load_tokenizer, train_dna_tokenizer

NEW = ["<CDS>", "<+>", "<->", "<0>", "<1>"]


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    root = tmp_path_factory.mktemp("src")
    rng = random.Random(1)
    train_dna_tokenizer(["".join(rng.choices("ACGT", k=20_000))], 80, root / "tok")
    vocab = load_tokenizer(root / "tok").get_vocab_size()
    return write_random_dnabert2(
        root / "dnabert2",
        hidden_size=32,
        num_layers=2,
        num_heads=4,
        intermediate_size=48,
        vocab_size=vocab,
        tokenizer_dir=root / "tok",
    )


def make_model_dir(source, tmp_path, tie, moe=False):
    model = build_from_dnabert2(str(source), tie_weights=tie, use_moe=moe, num_experts=4)
    model.save_pretrained(tmp_path / "m", tokenizer_dir=source)
    (tmp_path / "new_tokens.txt").write_text("\n".join(NEW) + "\n")
    append_tokens(tmp_path / "new_tokens.txt", tmp_path / "m" / "tokenizer.json")
    return model


@pytest.mark.parametrize("tie,moe", [(True, True), (False, False)])
def test_resize_grows_and_keeps(source, tmp_path, tie, moe):
    before = make_model_dir(source, tmp_path, tie, moe).eval()
    old_v = before.config.vocab_size
    added = resize_model(tmp_path / "m", tmp_path / "m" / "tokenizer.json")
    assert added == len(NEW)
    after = Dna2GffModel.from_pretrained(tmp_path / "m").eval()
    assert after.config.vocab_size == old_v + len(NEW)
    assert json.loads((tmp_path / "m" / "config.json").read_text())["vocab_size"] == old_v + len(
        NEW
    )
    emb_old = before.embeddings.word_embeddings.weight
    emb_new = after.embeddings.word_embeddings.weight
    assert torch.equal(emb_new[:old_v], emb_old)
    assert torch.allclose(emb_new[old_v:], emb_old.mean(0).expand(len(NEW), -1))
    if tie:
        assert after.lm_head.weight is after.embeddings.word_embeddings.weight
    else:
        assert after.lm_head.weight.data_ptr() != emb_new.data_ptr()
        assert torch.equal(after.lm_head.weight[:old_v], before.lm_head.weight)
        assert torch.allclose(
            after.lm_head.weight[old_v:], before.lm_head.weight.mean(0).expand(len(NEW), -1)
        )
    # old tokens in, old logits unchanged
    ids = torch.randint(5, old_v, (2, 7))
    mask = torch.ones_like(ids)
    dec = torch.randint(5, old_v, (2, 4))
    assert torch.allclose(
        after(ids, mask, dec).logits[..., :old_v], before(ids, mask, dec).logits, atol=1e-6
    )
    # a new token can be embedded and decoded
    new_id = load_tokenizer(tmp_path / "m").token_to_id("<CDS>")
    assert after(ids, mask, torch.tensor([[1, new_id]] * 2)).logits.shape[-1] == old_v + len(NEW)
    # idempotent: a second run adds nothing
    assert resize_model(tmp_path / "m", tmp_path / "m" / "tokenizer.json") == 0


def test_resize_copies_tokenizer_into_out(source, tmp_path):
    make_model_dir(source, tmp_path, tie=True)
    ext = tmp_path / "grown.json"
    ext.write_bytes((tmp_path / "m" / "tokenizer.json").read_bytes())
    append_tokens_file = tmp_path / "more.txt"
    append_tokens_file.write_text("<tRNA>\n")
    append_tokens(append_tokens_file, ext)
    resize_model(tmp_path / "m", ext, out_dir=tmp_path / "m2")
    assert load_tokenizer(tmp_path / "m2").token_to_id("<tRNA>") is not None
    assert (
        Dna2GffModel.from_pretrained(tmp_path / "m2").config.vocab_size
        == load_tokenizer(ext).get_vocab_size()
    )


def test_resize_refuses_foreign_or_smaller_tokenizer(source, tmp_path):
    model = make_model_dir(source, tmp_path, tie=True)
    rng = random.Random(9)
    other = train_dna_tokenizer(["".join(rng.choices("ACGT", k=5000))], 200, tmp_path / "other")
    assert other.get_vocab_size() > model.config.vocab_size
    with pytest.raises(InputError, match="does not extend the model's tokenizer"):
        resize_model(tmp_path / "m", tmp_path / "other")
    with pytest.raises(ValueError, match="cannot shrink"):
        resize_token_embeddings(model, 10)
