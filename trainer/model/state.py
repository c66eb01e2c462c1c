"""Strict state-dict checks and atomic weight files, shared by the DNABERT-2 reader and model folders.

Loading with ``strict=False`` hid every mismatch in the recipe's upstream project; here every
missing, unexpected or misshaped tensor is an error that names it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from baking.common.errors import InputError
from baking.common.files import atomic_path

MAX_NAMES = 8  # names listed per kind of problem before "... and N more"


class CheckpointError(InputError):
    """A weight file (or state dict) does not match the model it is loaded into."""


def _names(keys: list[str]) -> str:
    shown = ", ".join(keys[:MAX_NAMES])
    return shown + (f" ... and {len(keys) - MAX_NAMES} more" if len(keys) > MAX_NAMES else "")


def state_dict_problems(
    expected: Mapping[str, tuple[int, ...] | torch.Size], got: Mapping[str, Tensor]
) -> list[str]:
    """Human-readable list of missing, unexpected and misshaped tensors (empty when they match)."""
    problems = []
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    if missing:
        problems.append(f"missing tensor(s): {_names(missing)}")
    if unexpected:
        problems.append(f"unexpected tensor(s): {_names(unexpected)}")
    misshaped = [
        f"{k} has shape {tuple(got[k].shape)}, expected {tuple(expected[k])}"
        for k in sorted(set(expected) & set(got))
        if tuple(got[k].shape) != tuple(expected[k])
    ]
    if misshaped:
        problems.append("misshaped tensor(s): " + "; ".join(misshaped[:MAX_NAMES]))
    return problems


def check_state_dict(
    source: str | Path,
    expected: Mapping[str, tuple[int, ...] | torch.Size],
    got: Mapping[str, Tensor],
) -> None:
    """Raise ``CheckpointError(source, ...)`` naming every mismatching tensor."""
    problems = state_dict_problems(expected, got)
    if problems:
        raise CheckpointError(source, "; ".join(problems))


def _own_storage(t: Tensor) -> Tensor:
    """safetensors refuses tensors sharing storage; copy only views (e.g. into ZeRO's flat buffers)."""
    if t.is_contiguous() and t.untyped_storage().nbytes() == t.numel() * t.element_size():
        return t
    return t.contiguous().clone()


def save_safetensors_atomic(tensors: Mapping[str, Tensor], path: str | Path) -> None:
    """Write a safetensors file atomically (``baking.common.files.atomic_path``)."""
    flat = {k: _own_storage(v.detach().cpu()) for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(flat, str(tmp), metadata={"format": "pt"})


def load_weights(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Tensor]:
    """Read ``.safetensors`` or a torch pickle (``weights_only``), wrapping failures as ``CheckpointError``."""
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path), device=str(map_location))
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # corrupt, truncated, wrong format
        raise CheckpointError(path, f"cannot read weights: {exc}") from exc
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointError(path, "not a state dict of tensors")
    return state
