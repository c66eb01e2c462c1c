"""The recipe's commands as subprocesses: init_model, init_tk, append_tk, resize_model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from trainer.model.seq2seq import Dna2GffModel
from trainer.tokens.tokenizer import load_tokenizer

REPO = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, DS_ACCELERATOR="cpu", HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO))


def run(script: str, *args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "launch" / f"{script}.py"), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=180,
        env=ENV,
        cwd=cwd,
    )


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    """The seed's flow on a tiny random DNABERT-2: init_model -> init_tk -> append_tk -> resize."""
    root = tmp_path_factory.mktemp("recipe")
    res = run(
        "init_model",
        "--random_dnabert2",
        root / "dnabert2",
        "--hidden_size",
        32,
        "--num_layers",
        2,
        "--num_heads",
        4,
        "--intermediate_size",
        48,
        "--vocab_size",
        100,
        "--weights_format",
        "safetensors",
        "--no_bert_prefix",
        "--save_dir",
        root / "model",
        "--dnabert_path",
        root / "dnabert2",
        "--use_moe",
        "--num_experts",
        4,
        "--moe_top_k",
        2,
        "--tie_weights",
    )
    assert res.returncode == 0, res.stderr
    return root


def test_init_model_random_and_build(recipe):
    dn = recipe / "dnabert2"
    assert sorted(p.name for p in dn.iterdir()) == [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    model = Dna2GffModel.from_pretrained(recipe / "model")
    cfg = model.config
    assert (cfg.hidden_size, cfg.num_encoder_layers, cfg.num_decoder_layers, cfg.vocab_size) == (
        32,
        2,
        2,
        100,
    )
    assert cfg.use_moe and cfg.num_experts == 4 and cfg.moe_top_k == 2 and cfg.tie_word_embeddings
    assert cfg.source_checkpoint == str(dn)
    assert load_tokenizer(recipe / "model").get_vocab_size() == 100


def test_token_tools_and_resize(recipe, tmp_path):
    tokens = tmp_path / "data" / "new_tokens.txt"
    tokens.parent.mkdir()
    tokens.write_text("<CDS>\n<+>\n<->\n")
    res = run("init_tk", "data/new_tokens.txt", "--base", recipe / "dnabert2", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    default_out = tmp_path / "data" / "tokenizer" / "tokenizer.json"  # the documented default
    assert load_tokenizer(default_out).token_to_id("<CDS>") == 100
    model_tok = recipe / "model" / "tokenizer.json"
    res = run("append_tk", tokens, model_tok)
    assert res.returncode == 0 and "added 3 token(s)" in res.stdout, res.stderr
    res = run("append_tk", tokens, model_tok)
    assert res.returncode == 0 and "added 0 token(s)" in res.stdout
    res = run("resize_model", recipe / "model", model_tok)
    assert res.returncode == 0, res.stderr
    assert json.loads((recipe / "model" / "config.json").read_text())["vocab_size"] == 103
    model = Dna2GffModel.from_pretrained(recipe / "model").eval()
    ids = torch.tensor([[1, 5, 6, 2]])
    assert model(ids, torch.ones_like(ids), torch.tensor([[1, 100, 102]])).logits.shape == (
        1,
        3,
        103,
    )


def test_seed_command_offline_fails_clearly(tmp_path):
    res = run(
        "init_model",
        "--save_dir",
        tmp_path / "init",
        "--dnabert_path",
        "zhihan1996/DNABERT-2-117M",
        "--use_moe",
        "--num_experts",
        8,
        "--moe_top_k",
        2,
        "--tie_weights",
    )
    assert res.returncode == 2
    assert (
        res.stderr.strip()
        .splitlines()[-1]
        .startswith("error: zhihan1996/DNABERT-2-117M: cannot fetch")
    )
    assert "local folder" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "init").exists()


def test_bad_inputs_exit_2(tmp_path, recipe):
    res = run("init_model")
    assert res.returncode == 2 and "error: nothing to do" in res.stderr
    res = run("init_model", "--save_dir", tmp_path / "m", "--dnabert_path", tmp_path / "nowhere")
    assert res.returncode == 2 and "no such folder" in res.stderr
    bad = tmp_path / "bad.txt"
    bad.write_text("<ok>\n<no good>\n")
    res = run("append_tk", bad, recipe / "model" / "tokenizer.json")
    assert (
        res.returncode == 2
        and f"error: {bad}:2: token '<no good>' contains whitespace" in res.stderr
    )
    invisible = tmp_path / "zwsp.txt"
    invisible.write_text("<ok>\n<C\u200bDS>\n")
    res = run("append_tk", invisible, recipe / "model" / "tokenizer.json")
    assert res.returncode == 2 and res.stderr.strip().splitlines()[-1] == (
        f"error: {invisible}:2: token '<C\\u200bDS>' contains an invisible character "
        "(U+200B zero width space): corrupt file"
    )
    res = run("init_tk", bad, "--base", tmp_path / "missing")
    assert res.returncode == 2 and "error:" in res.stderr
    res = run("resize_model", tmp_path / "nomodel", recipe / "model" / "tokenizer.json")
    assert res.returncode == 2 and "error:" in res.stderr and "Traceback" not in res.stderr


def test_help_runs_for_every_command():
    for script in ("init_model", "init_tk", "append_tk", "resize_model"):
        res = run(script, "--help")
        assert res.returncode == 0 and "usage:" in res.stdout, script
