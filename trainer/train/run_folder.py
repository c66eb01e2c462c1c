"""The run folder's own files: the rank's log file, ``train_config.json`` and ``metrics.jsonl``.

Checkpoints (``checkpoint``), TensorBoard (``monitor``), the lock (``run_lock``) and the export
(``export``) have modules of their own; what is left is small and shared by set-up (create the
folder, log into it), resume (cut the metrics back to the checkpoint) and the loop (append a
step's record).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from baking.common.files import write_text
from trainer.train.config import TrainConfig

log = logging.getLogger(__name__)

METRICS = "metrics.jsonl"


def open_run_folder(cfg: TrainConfig, out: Path, rank: int) -> logging.Handler:
    """Create the run folder (config, fresh metrics on rank 0) and log this rank into it."""
    out.mkdir(parents=True, exist_ok=True)
    if rank == 0:
        cfg.save(out / "train_config.json")
        if not cfg.resume:
            (out / METRICS).unlink(missing_ok=True)
    handler = logging.FileHandler(out / f"train.rank{rank}.log")
    root = logging.getLogger()
    shown = next((h.formatter for h in root.handlers if h.formatter is not None), None)
    handler.setFormatter(
        shown or logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root.addHandler(handler)
    return handler


def close_log(handler: logging.Handler | None) -> None:
    """Detach and close the rank's log file (``train`` returns, or set-up failed)."""
    if handler is not None:
        logging.getLogger().removeHandler(handler)
        handler.close()


def append_metrics(path: Path, row: dict[str, Any]) -> None:
    """One step's record, one JSON line (rank 0 only)."""
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


def truncate_metrics(path: Path, step: int) -> None:
    """Drop lines logged after ``step`` (by a run that died after its last checkpoint).

    A run killed mid-write leaves a torn last line: it, like any line that is not a step's
    record, is dropped with a warning rather than stopping the resume (the checkpoint, not this
    log, is what the run continues from)."""
    if not path.is_file():
        return
    keep, torn = [], 0
    for ln in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not ln:
            continue
        try:
            row = json.loads(ln)
            logged_step = int(row["step"])
        except (ValueError, TypeError, KeyError, RecursionError):
            torn += 1
            continue
        if logged_step <= step:
            keep.append(ln)
    if torn:
        log.warning("%s: %d line(s) that are no step record dropped (a torn write?)", path, torn)
    write_text(path, "".join(ln + "\n" for ln in keep))
