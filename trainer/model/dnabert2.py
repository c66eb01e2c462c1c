"""Read a DNABERT-2 checkpoint by name (no ``trust_remote_code``), strictly.

A checkpoint is a folder (or hub id resolved through ``huggingface_hub``) with DNABERT-2's
``config.json`` and ``pytorch_model.bin`` or ``model.safetensors``. Keys may carry the ``bert.``
prefix (``BertForMaskedLM``) or not (bare ``BertModel``); the MLM head (``cls.*``) and the pooler are
ignored; anything else missing, unexpected or misshaped is a ``CheckpointError`` naming the tensor.

Random checkpoints in the same layout (tests, demo) are written by ``trainer/random_checkpoint.py``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from baking.common.errors import InputError
from baking.common.files import read_json
from trainer.model.config import Dna2GffConfig
from trainer.model.encoder import DNABert2Model, alibi_slopes, attention_bias
from trainer.model.hub import resolve_folder
from trainer.model.state import CheckpointError, check_state_dict, load_weights

log = logging.getLogger(__name__)

DNABERT2_HUB_ID = "zhihan1996/DNABERT-2-117M"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
IGNORED_PREFIXES = ("cls.", "pooler.")


def resolve_checkpoint(path_or_id: str | Path) -> Path:
    """A local folder as is; otherwise a hub id downloaded (or found in the cache) via huggingface_hub
    (``hub.resolve_folder``: DNABERT-2's config, weights and tokenizer only, never its code)."""
    return resolve_folder(
        path_or_id,
        ["config.json", *WEIGHT_FILES, *TOKENIZER_FILES],
        what="DNABERT-2 checkpoint (config.json + pytorch_model.bin or model.safetensors)",
    )


def read_dnabert2_config(folder: Path) -> dict[str, Any]:
    path = folder / "config.json"
    if not path.is_file():
        raise InputError(folder, "no config.json in the DNABERT-2 folder")
    data = read_json(path)
    need = (
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "intermediate_size",
        "vocab_size",
    )
    missing = [k for k in need if k not in data]
    if missing:
        raise InputError(path, f"missing DNABERT-2 config field(s): {', '.join(missing)}")
    return data


def encoder_config(hf: dict[str, Any], **overrides: Any) -> Dna2GffConfig:
    """Our config from DNABERT-2's ``config.json`` (decoder depth defaults to the encoder's)."""
    fields: dict[str, Any] = dict(
        vocab_size=hf["vocab_size"],
        hidden_size=hf["hidden_size"],
        num_encoder_layers=hf["num_hidden_layers"],
        num_decoder_layers=hf["num_hidden_layers"],
        num_attention_heads=hf["num_attention_heads"],
        intermediate_size=hf["intermediate_size"],
        layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
        hidden_dropout=hf.get("hidden_dropout_prob", 0.1),
        attention_dropout=hf.get("attention_probs_dropout_prob", 0.0),
        type_vocab_size=hf.get("type_vocab_size", 2),
    )
    fields.update({k: v for k, v in overrides.items() if v is not None})
    return Dna2GffConfig(**fields)


def weights_file(folder: Path) -> Path:
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    raise InputError(folder, f"no weights: expected one of {', '.join(WEIGHT_FILES)}")


def read_encoder_state(
    folder: Path, expected: dict[str, torch.Size], num_heads: int
) -> dict[str, Tensor]:
    """DNABERT-2 tensors under our names (``embeddings.*``, ``encoder.layer.N.*``), checked strictly."""
    path = weights_file(folder)
    raw = load_weights(path)
    state: dict[str, Tensor] = {}
    for key, value in raw.items():
        name = key.removeprefix("bert.")
        if name.startswith(IGNORED_PREFIXES):
            continue
        if name in state:
            raise CheckpointError(path, f"tensor {name} appears both with and without 'bert.'")
        state[name] = value
    _check_derived_buffers(path, state, num_heads)
    check_state_dict(path, expected, state)
    return state


def _check_derived_buffers(path: Path, state: dict[str, Tensor], num_heads: int) -> None:
    """Buffers the published code may save (``encoder.alibi``, ``embeddings.token_type_ids``) are not
    weights: we recompute them, so we only check they agree with ours and drop them."""
    alibi = state.pop("encoder.alibi", None)
    if alibi is not None:
        n = alibi.shape[-1]
        want = attention_bias(torch.tensor(alibi_slopes(num_heads)), n, n, causal=False)
        if alibi.shape != want.shape or not torch.allclose(alibi.float(), want, atol=1e-4):
            raise CheckpointError(
                path, "encoder.alibi differs from the ALiBi bias of DNABERT-2's slopes"
            )
    type_ids = state.pop("embeddings.token_type_ids", None)
    if type_ids is not None and bool(type_ids.any()):
        raise CheckpointError(path, "embeddings.token_type_ids buffer is not all zeros")


def load_dnabert2(path_or_id: str | Path) -> tuple[DNABert2Model, Dna2GffConfig, Path]:
    """Build ``DNABert2Model`` from a checkpoint; returns model, derived config and the folder."""
    folder = resolve_checkpoint(path_or_id)
    config = encoder_config(read_dnabert2_config(folder), source_checkpoint=str(path_or_id))
    model = DNABert2Model(config)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    state = read_encoder_state(folder, expected, config.num_attention_heads)
    model.load_state_dict(state, strict=True)
    log.info("loaded dnabert2=%s tensors=%d", folder, len(state))
    return model, config, folder
