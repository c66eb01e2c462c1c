"""Training checkpoints that a crash cannot corrupt, and exact resume.

Layout: ``RUN_DIR/checkpoints/step_N/`` holds DeepSpeed's own files (model, optimizer, scheduler,
per-rank ZeRO and expert partitions), our ``trainer_state.json`` (step, data position, counters), one
``rng_rank{r}.pt`` per rank (python, numpy, torch CPU and CUDA generators: DeepSpeed's top-2 gate
draws from the global torch RNG, so a resume without them diverges), and last a ``COMPLETE`` marker
written atomically by rank 0 after every rank has finished. Only folders with the marker count, so a
crash in the middle of a save leaves the previous checkpoint as the latest one.
"""

from __future__ import annotations

import json
import logging
import random
import re
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from baking.common.errors import InputError
from baking.common.files import read_json, write_bytes

log = logging.getLogger(__name__)

COMPLETE = "COMPLETE"
STATE_FILE = "trainer_state.json"
_STEP_DIR = re.compile(r"^step_(\d+)$")


@dataclass
class TrainerState:
    """What the loop needs to continue where it stopped (besides DeepSpeed's own state)."""

    step: int = 0
    micro_batches: int = 0
    """Micro-batches this rank has taken from its loader (the same on every rank)."""
    samples: int = 0
    """Training samples seen, all ranks together."""
    tokens: int = 0
    """Non-pad encoder + decoder tokens seen, all ranks together."""
    nan_steps: int = 0
    world_size: int = 1
    num_workers: int = 0
    micro_batch_size: int = 1
    seed: int = 0

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainerState:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def step_dir(root: str | Path, step: int) -> Path:
    return Path(root) / f"step_{step}"


def list_checkpoints(root: str | Path, complete_only: bool = True) -> list[tuple[int, Path]]:
    """``(step, folder)`` pairs in step order; by default only those with the marker."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _STEP_DIR.match(p.name)
        if m and p.is_dir() and (not complete_only or (p / COMPLETE).is_file()):
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(root: str | Path) -> Path | None:
    done = list_checkpoints(root)
    return done[-1][1] if done else None


# ------------------------------------------------------------------------------------------ RNG


def capture_rng() -> dict[str, Any]:
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ------------------------------------------------------------------------------------ save / load


def save_checkpoint(
    engine: Any,
    root: str | Path,
    state: TrainerState,
    *,
    rank: int,
    barrier: Callable[[], None],
    keep_last: int,
) -> Path:
    """Save on every rank (collective); rank 0 marks it complete and rotates old ones."""
    root = Path(root)
    folder = step_dir(root, state.step)
    if rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        if folder.exists():  # an earlier, interrupted save of the same step (or a re-save)
            shutil.rmtree(folder)
    barrier()
    engine.save_checkpoint(str(root), tag=folder.name, save_latest=False)
    folder.mkdir(parents=True, exist_ok=True)
    buf = _torch_bytes(capture_rng())
    write_bytes(folder / f"rng_rank{rank}.pt", buf)
    if rank == 0:
        write_bytes(folder / STATE_FILE, json.dumps(asdict(state), indent=2).encode())
    barrier()
    if rank == 0:
        write_bytes(folder / COMPLETE, b"ok\n")
        rotate(root, keep_last)
        log.info("checkpoint saved step=%d path=%s", state.step, folder)
    barrier()
    return folder


def _torch_bytes(obj: Any) -> bytes:
    import io

    bio = io.BytesIO()
    torch.save(obj, bio)
    return bio.getvalue()


def rotate(root: str | Path, keep_last: int) -> list[Path]:
    """Delete all but the newest ``keep_last`` complete checkpoints, and incomplete leftovers."""
    complete = list_checkpoints(root)
    removed: list[Path] = []
    doomed = [p for _, p in complete[: max(len(complete) - keep_last, 0)]]
    newest = complete[-1][0] if complete else None
    for step, p in list_checkpoints(root, complete_only=False):
        if not (p / COMPLETE).is_file() and newest is not None and step < newest:
            doomed.append(p)
    for p in doomed:
        (p / COMPLETE).unlink(
            missing_ok=True
        )  # first un-mark, so a crash here leaves no half state
        shutil.rmtree(p, ignore_errors=True)
        removed.append(p)
    return removed


def read_state(folder: str | Path) -> TrainerState:
    """The trainer state of a checkpoint folder (no DeepSpeed involved)."""
    path = Path(folder) / STATE_FILE
    if not path.is_file():
        raise InputError(path, "checkpoint has no trainer state")
    return TrainerState.from_dict(read_json(path, "trainer state JSON"))


def load_checkpoint(engine: Any, folder: str | Path, *, rank: int) -> TrainerState:
    """Restore DeepSpeed state, the trainer state and this rank's RNG from a complete checkpoint."""
    folder = Path(folder)
    if not (folder / COMPLETE).is_file():
        raise InputError(folder, "checkpoint is incomplete (no COMPLETE marker)")
    load_path, _ = engine.load_checkpoint(
        str(folder.parent),
        tag=folder.name,
        load_optimizer_states=True,
        load_lr_scheduler_states=True,
    )
    if load_path is None:
        raise InputError(folder, "DeepSpeed could not load this checkpoint")
    state = read_state(folder)
    rng_file = folder / f"rng_rank{rank}.pt"
    if rng_file.is_file():
        restore_rng(torch.load(rng_file, weights_only=False))
    else:
        log.warning(
            "no RNG state for rank=%d in %s: the resumed run will not be bit-exact", rank, folder
        )
    log.info("checkpoint loaded step=%d path=%s", state.step, folder)
    return state
