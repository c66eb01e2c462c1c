"""``init_model --data BAKED_DIR`` (issue 16 item 5): bake -> init_model -> train with no step in
between, and the model it writes is the one init_tk / append_tk / resize_model made before."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from bake_helpers import small_genome

from baking.bake import GenomeSpec, bake
from baking.bake_config import BakeConfig

TINY = [
    "--hidden_size",
    "32",
    "--num_layers",
    "2",
    "--num_heads",
    "4",
    "--intermediate_size",
    "48",
    "--vocab_size",
    "100",
    "--weights_format",
    "safetensors",
    "--no_bert_prefix",
]


@pytest.fixture(scope="module")
def baked(tmp_path_factory) -> dict[str, Path]:
    """A synthetic genome baked with ``--extract_tokens``, and a tiny random DNABERT-2."""
    from launch.init_model import main as init_model

    root = tmp_path_factory.mktemp("from_data")
    fna, gff = small_genome(root / "in")
    cfg = BakeConfig(window_len=1000, progress=False, val_fraction=0.2)
    tokens = root / "new_tokens.txt"
    manifest, _ = bake([GenomeSpec("small", str(fna), str(gff))], cfg, root / "data", tokens)
    assert manifest is not None
    assert init_model(["--random_dnabert2", str(root / "dnabert2"), *TINY]) == 0
    return {"root": root, "data": root / "data", "tokens": tokens, "dnabert2": root / "dnabert2"}


def _tensors(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def test_data_gives_the_model_the_token_steps_gave(baked, tmp_path):
    from launch.append_tk import main as append_tk
    from launch.init_model import main as init_model
    from launch.resize_model import main as resize_model

    source = ["--dnabert_path", str(baked["dnabert2"]), "--tie_weights"]
    steps, fitted = tmp_path / "steps", tmp_path / "fitted"
    assert init_model(["--save_dir", str(steps), *source]) == 0
    assert append_tk([str(baked["tokens"]), str(steps / "tokenizer.json")]) == 0
    assert resize_model([str(steps), str(steps / "tokenizer.json")]) == 0
    assert init_model(["--save_dir", str(fitted), *source, "--data", str(baked["data"])]) == 0

    assert (fitted / "tokenizer.json").read_bytes() == (steps / "tokenizer.json").read_bytes()
    a, b = _tensors(steps), _tensors(fitted)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    cfg = json.loads((fitted / "config.json").read_text())
    grammar = json.loads((baked["data"] / "manifest.json").read_text())["grammar"]
    assert cfg["vocab_size"] == json.loads((steps / "config.json").read_text())["vocab_size"]
    assert cfg["vocab_size"] > 100  # the annotation tokens were added
    assert cfg["window_len"] == grammar["window_len"] == 1000
    assert cfg["feature_types"] == grammar["types_in_targets"] == ["CDS", "tRNA"]
    assert cfg["extra"]["genetic_codes"] == [11]


def test_bake_init_model_train_with_no_other_step(baked, tmp_path):
    from launch.init_model import main as init_model
    from trainer.train.config import TrainConfig
    from trainer.train.engine import train

    model = tmp_path / "model"
    args = ["--save_dir", str(model), "--dnabert_path", str(baked["dnabert2"])]
    assert init_model([*args, "--data", str(baked["data"])]) == 0
    saved_env, threads = dict(os.environ), torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = train(
            TrainConfig(
                model=str(model),
                data=str(baked["data"]),
                output=str(tmp_path / "run"),
                max_steps=2,
                micro_batch_size=4,
                num_workers=0,
                eval_every=0,
                decode_every=0,
                export=False,
            )
        )
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        torch.set_num_threads(threads)
    assert result.steps == 2 and all(torch.isfinite(torch.tensor(result.losses)))


def test_bad_data_is_refused_before_anything_is_written(baked, tmp_path, capsys):
    from launch.init_model import main as init_model

    out = tmp_path / "model"
    args = ["--save_dir", str(out), "--dnabert_path", str(baked["dnabert2"])]
    assert init_model([*args, "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        err[-1]
        == f"error: {tmp_path / 'manifest.json'}: no manifest (is this a baked output folder?)"
    )
    old = tmp_path / "old"
    old.mkdir()
    manifest = json.loads((baked["data"] / "manifest.json").read_text())
    (old / "manifest.json").write_text(json.dumps({**manifest, "format": "dna2gff-shards/1"}))
    assert init_model([*args, "--data", str(old)]) == 2
    assert "manifest format version 1 is an older format" in capsys.readouterr().err
    assert not out.exists()
