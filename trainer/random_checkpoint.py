"""Random checkpoints in DNABERT-2's own layout, so tests and the demo exercise the real loader offline.

``write_random_dnabert2`` writes ``config.json`` + ``pytorch_model.bin`` or ``model.safetensors``
exactly as the published checkpoint lays them out (``bert.`` prefix and MLM head, or a bare
``BertModel`` with a pooler), with random weights where every tensor is distinct, norms included,
so "was it copied?" tests can tell. ``make_tiny_dnabert2`` adds a DNABERT-2-format BPE tokenizer
(given, or trained on genomes or on seeded random DNA). Both are read back by ``dnabert2.py`` like
a downloaded checkpoint.
"""

from __future__ import annotations

import logging
import random
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from baking.common.errors import InputError
from baking.common.files import (
    atomic_path,
    copy_file,
    make_temp_dir,
    read_json,
    replace_dir,
    write_json,
)
from trainer.model.config import Dna2GffConfig
from trainer.model.dnabert2 import TOKENIZER_FILES
from trainer.model.encoder import DNABert2Model

log = logging.getLogger(__name__)

RANDOM_MARK = "dna2gff-random-dnabert2"
"""``_name_or_path`` of a random checkpoint: only folders carrying it are ever replaced."""


def _random_state(model: DNABert2Model, seed: int) -> dict[str, Tensor]:
    """BERT-like random weights; norms and biases perturbed so every tensor is distinguishable."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for name, value in model.state_dict().items():
        noise = torch.randn(value.shape, generator=gen)
        if name.endswith("LayerNorm.weight") or name.endswith("layernorm.weight"):
            state[name] = 1.0 + 0.1 * noise
        elif name.endswith(".bias"):
            state[name] = 0.02 * noise
        else:
            state[name] = 0.02 * noise
    return state


def check_replaceable(out: Path) -> None:
    """Replace only an empty folder or one this module wrote before; never a user's data."""
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return
    try:
        ours = read_json(out / "config.json").get("_name_or_path") == RANDOM_MARK
    except (InputError, AttributeError):
        ours = False
    if not ours:
        raise InputError(out, "exists and is not a random DNABERT-2 checkpoint written by dna2gff")


def write_random_dnabert2(
    out_dir: str | Path,
    *,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    intermediate_size: int = 128,
    vocab_size: int = 4096,
    type_vocab_size: int = 2,
    seed: int = 0,
    weights_format: str = "bin",
    bert_prefix: bool = True,
    with_mlm_head: bool = True,
    tokenizer_dir: str | Path | None = None,
) -> Path:
    """Write a random checkpoint in DNABERT-2's layout: config.json + weights (+ tokenizer files).

    ``weights_format`` "bin" -> ``pytorch_model.bin``, "safetensors" -> ``model.safetensors``.
    With ``bert_prefix`` keys look like ``BertForMaskedLM``'s (and carry the MLM head when
    ``with_mlm_head``); without, like a bare ``BertModel`` (plus a pooler). Written to a temporary
    folder and renamed into place.
    """
    if weights_format not in ("bin", "safetensors"):
        raise ValueError(f"weights_format must be 'bin' or 'safetensors', got {weights_format!r}")
    config = Dna2GffConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_encoder_layers=num_layers,
        num_decoder_layers=num_layers,
        num_attention_heads=num_heads,
        intermediate_size=intermediate_size,
        type_vocab_size=type_vocab_size,
    )
    model = DNABert2Model(config)
    encoder = _random_state(model, seed)
    gen = torch.Generator().manual_seed(seed + 1)
    state: dict[str, Tensor] = {}
    if bert_prefix:
        state = {f"bert.{k}": v for k, v in encoder.items()}
        if with_mlm_head:
            state["cls.predictions.transform.dense.weight"] = 0.02 * torch.randn(
                hidden_size, hidden_size, generator=gen
            )
            state["cls.predictions.transform.dense.bias"] = torch.zeros(hidden_size)
            state["cls.predictions.transform.LayerNorm.weight"] = torch.ones(hidden_size)
            state["cls.predictions.transform.LayerNorm.bias"] = torch.zeros(hidden_size)
            state["cls.predictions.decoder.weight"] = encoder["embeddings.word_embeddings.weight"]
            state["cls.predictions.decoder.bias"] = torch.zeros(vocab_size)
    else:
        state = dict(encoder)
        state["pooler.dense.weight"] = 0.02 * torch.randn(hidden_size, hidden_size, generator=gen)
        state["pooler.dense.bias"] = torch.zeros(hidden_size)
    hf_config = {
        "_name_or_path": RANDOM_MARK,
        "alibi_starting_size": 512,
        "architectures": ["BertForMaskedLM"],
        "attention_probs_dropout_prob": 0.0,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "hidden_size": hidden_size,
        "initializer_range": 0.02,
        "intermediate_size": intermediate_size,
        "layer_norm_eps": 1e-12,
        "max_position_embeddings": 512,
        "num_attention_heads": num_heads,
        "num_hidden_layers": num_layers,
        "type_vocab_size": type_vocab_size,
        "vocab_size": vocab_size,
        "dna2gff_seed": seed,
    }
    out = Path(out_dir)
    tmp = make_temp_dir(out)
    try:
        write_json(tmp / "config.json", hf_config)
        name = "pytorch_model.bin" if weights_format == "bin" else "model.safetensors"
        with atomic_path(tmp / name) as weights:  # umask mode (safetensors alone makes 0600)
            if weights_format == "bin":
                torch.save(state, weights)
            else:
                from safetensors.torch import save_file

                # safetensors refuses shared storage: the tied MLM decoder becomes its own copy
                save_file({k: v.contiguous().clone() for k, v in state.items()}, str(weights))
        if tokenizer_dir is not None:
            for name in TOKENIZER_FILES:
                src = Path(tokenizer_dir) / name
                if src.is_file():
                    copy_file(src, tmp / name)
        check_replaceable(out)
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("wrote random dnabert2=%s format=%s bert_prefix=%s", out, weights_format, bert_prefix)
    return out


def make_tiny_dnabert2(
    out_dir: str | Path,
    *,
    tokenizer: str | Path | None = None,
    fasta: Sequence[str | Path] = (),
    vocab_size: int = 512,
    seed: int = 0,
    **layout: Any,
) -> Path:
    """A random DNABERT-2-layout checkpoint *with* a DNABERT-2-format tokenizer, for tests and demos.

    The tokenizer is ``tokenizer`` (folder or JSON, e.g. the real DNABERT-2 one) when given, else a
    BPE of ``vocab_size`` trained on the ``fasta`` genomes, else on 200 kbp of seeded random DNA. The
    checkpoint's vocabulary is the tokenizer's size; ``layout`` goes to ``write_random_dnabert2``
    (sizes, ``weights_format``, ``bert_prefix``).
    """
    from trainer.tokens.tokenizer import TOKENIZER_NAME, load_tokenizer, train_dna_tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        tok_dir = Path(tmp)
        if tokenizer is not None:
            tok = load_tokenizer(tokenizer)
            tok.save(str(tok_dir / TOKENIZER_NAME))
            src = Path(tokenizer) if Path(tokenizer).is_dir() else Path(tokenizer).parent
            if (src / "tokenizer_config.json").is_file():
                shutil.copyfile(src / "tokenizer_config.json", tok_dir / "tokenizer_config.json")
        else:
            seqs = _fasta_sequences(fasta) if fasta else _random_dna(seed)
            tok = train_dna_tokenizer(seqs, vocab_size, tok_dir)
        return write_random_dnabert2(
            out_dir,
            vocab_size=tok.get_vocab_size(with_added_tokens=True),
            seed=seed,
            tokenizer_dir=tok_dir,
            **layout,
        )


def _fasta_sequences(paths: Sequence[str | Path]) -> Iterator[str]:
    from baking.formats.fasta import read_fasta

    for path in paths:
        for _, seq in read_fasta(path):
            yield seq


def _random_dna(seed: int, length: int = 200_000) -> Iterator[str]:
    yield "".join(random.Random(seed).choices("ACGT", k=length))


__all__ = ["RANDOM_MARK", "make_tiny_dnabert2", "write_random_dnabert2"]
