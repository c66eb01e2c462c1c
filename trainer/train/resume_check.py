"""What a checkpoint resumes, recorded at save and compared at ``--resume``.

A checkpoint holds weights for one model architecture and tokenizer, a data position that only
means something in one baked data set, and a target spec the decoder learnt. Resuming it with
another ``--model``, ``--data`` or target spec either crashes deep inside DeepSpeed (tensor
shapes) or, worse, carries on silently with the saved data position applied to other data. So
every checkpoint records these identities (``trainer_state.json`` -> ``record``) and ``--resume``
compares them before any DeepSpeed file is read: a difference is one error line naming what
differs.

Settings that may legitimately change between chunks of a run (learning rate, schedule length,
warmup, weight decay, clipping, batch shape) are applied and *stated*: one warning line in the
log and a ``resume/changed`` text entry in TensorBoard, so a changed ``--lr`` is never silent.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from baking.common.errors import ConfigError, InputError
from baking.shards.manifest import Manifest

log = logging.getLogger(__name__)

TARGET_FIELDS = ("window_len", "feature_types")
"""Model-config fields that come from the data (the target spec), not from the model folder."""
STATED = (
    "lr",
    "min_lr",
    "warmup_steps",
    "weight_decay",
    "grad_clip",
    "total_steps",
    "global_batch",
    "max_src_tokens",
    "max_tgt_tokens",
    "genome_balance",
)
"""Settings applied as given at resume, and named in the log when they differ."""


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def model_identity(model_cfg: dict[str, Any], tokenizer: Any) -> dict[str, Any]:
    """The architecture (config without the target spec) and a digest of the tokenizer's vocabulary."""
    arch = {k: v for k, v in model_cfg.items() if k not in TARGET_FIELDS}
    vocab = sorted(tokenizer.get_vocab(with_added_tokens=True).items())
    return {"config": arch, "vocab_sha256": _digest(vocab)}


def data_identity(manifest: Manifest) -> dict[str, Any]:
    """The train split as baked: each shard's path, sample count and sha256 (what the position indexes)."""
    rows = [[s.path, s.samples, s.sha256] for s in manifest.split("train")]
    return {
        "train_sha256": _digest(rows),
        "train_shards": len(rows),
        "train_samples": sum(s.samples for s in manifest.split("train")),
    }


def target_identity(
    window_len: int | None, feature_types: list[str] | None, tokens: list[str] | None
) -> dict[str, Any]:
    return {
        "window_len": window_len,
        "feature_types": list(feature_types) if feature_types else None,
        "tokens_sha256": _digest(list(tokens)) if tokens else None,
    }


def make_record(
    *,
    model: dict[str, Any],
    data: dict[str, Any],
    target: dict[str, Any],
    settings: dict[str, Any],
) -> dict[str, Any]:
    """The record a checkpoint carries (JSON)."""
    return {"model": model, "data": data, "target": target, "settings": settings}


def check_identity(
    saved: dict[str, Any] | None,
    current: dict[str, Any],
    *,
    checkpoint: Path,
    model_path: str,
    manifest_path: str,
) -> None:
    """Refuse a resume whose model, data or target spec is not the checkpoint's (one error).

    ``checkpoint``: its folder (named in the messages).
    ``saved`` None (a checkpoint from before this record existed) passes with a warning.
    """
    if saved is not None and not all(
        isinstance(saved.get(k, {}), dict) for k in ("model", "data", "target", "settings")
    ):
        raise InputError(checkpoint / "trainer_state.json", "malformed resume record")
    if not saved:
        log.warning(
            "checkpoint %s has no resume record (older trainer): model, data and target spec "
            "not verified",
            checkpoint.name,
        )
        return
    name = checkpoint.name
    old, new = saved.get("model") or {}, current["model"]
    diff = _dict_diff(old.get("config") or {}, new["config"])
    if diff:
        raise InputError(
            model_path,
            f"not the model of checkpoint {name} ({diff}): resume with the run's --model, "
            "or start a new run",
        )
    if old.get("vocab_sha256") != new["vocab_sha256"]:
        raise InputError(
            model_path,
            f"the tokenizer differs from the one checkpoint {name} was trained with "
            "(token ids would change meaning): resume with the run's --model",
        )
    old_data, new_data = saved.get("data") or {}, current["data"]
    if old_data.get("train_sha256") != new_data["train_sha256"]:
        raise InputError(
            manifest_path,
            f"not the data of checkpoint {name}: its train split had "
            f"{old_data.get('train_samples')} samples in {old_data.get('train_shards')} shards, "
            f"this one {new_data['train_samples']} in {new_data['train_shards']} (or other "
            "shard contents); the saved data position means nothing here: resume with the run's "
            "--data, or start a new run from RUN_DIR/export",
        )
    diff = _dict_diff(saved.get("target") or {}, current["target"])
    if diff:
        raise ConfigError(
            f"the target spec differs from checkpoint {name}'s ({diff}): the decoder was "
            "trained for the other one; resume with the run's --data"
        )


def changed_settings(saved: dict[str, Any] | None, current: dict[str, Any]) -> str | None:
    """``lr 0.001 -> 0.0005, total_steps 8 -> 12`` for the stated settings that differ, else None."""
    old = (saved or {}).get("settings") or {}  # a checked record (``check_identity``)
    parts = [
        f"{k} {old[k]} -> {current['settings'][k]}"
        for k in STATED
        if k in old and k in current["settings"] and old[k] != current["settings"][k]
    ]
    return ", ".join(parts) if parts else None


def _dict_diff(old: dict[str, Any], new: dict[str, Any], limit: int = 4) -> str:
    """``key old -> new`` for the first ``limit`` keys that differ (sorted), '' when equal."""
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    parts = [f"{k} {_short(old.get(k))} -> {_short(new.get(k))}" for k in keys[:limit]]
    if len(keys) > limit:
        parts.append(f"{len(keys) - limit} more")
    return ", ".join(parts)


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."
