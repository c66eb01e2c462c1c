"""Training checkpoints that a crash cannot corrupt, that resume checks, and exact resume.

Layout: ``RUN_DIR/checkpoints/step_N/`` holds DeepSpeed's own files (model, optimizer, scheduler,
per-rank ZeRO and expert partitions), our ``trainer_state.json`` (step, data position, counters), one
``rng_rank{r}.safetensors`` per rank (python, numpy, torch CPU and CUDA generators: DeepSpeed's top-2
gate draws from the global torch RNG, so a resume without them diverges), and last a ``COMPLETE``
marker written atomically by rank 0 after every rank has finished. The ranks write into
``step_N.partial/``, which rank 0 renames to ``step_N/`` once ``COMPLETE`` is in it: a crash in the
middle of a save leaves the previous checkpoint as the latest one, and a failed save (a full disk)
removes its partial folder on every rank and says why in one line.

``COMPLETE`` records the size and sha256 of every other file of the folder; resume checks them
(``choose_checkpoint``) and falls back to the newest intact checkpoint, naming the bad file.

Nothing here unpickles: our own files are JSON and safetensors (an old ``rng_rank{r}.pt`` is never
loaded), and DeepSpeed's ``.pt`` files are read with ``torch.load(weights_only=True)`` and an
allow-list of the three DeepSpeed classes its ZeRO-2 files hold (``_safe_deepspeed_loads``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import pickle
import random
import re
import shutil
import types
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from baking.common.errors import InputError, OutputError
from baking.common.files import read_json, replace_dir, write_bytes, write_json
from trainer.distributed import all_gather, barrier, from_rank0
from trainer.train.ds_engine import TrainEngine

log = logging.getLogger(__name__)

COMPLETE = "COMPLETE"
STATE_FILE = "trainer_state.json"
RECORD_FORMAT = "dna2gff-checkpoint/1"
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
    ep_size: int = 1
    grad_accum: int = 1
    record: dict[str, Any] | None = None
    """What this checkpoint resumes (model, data, target spec, settings): ``resume_check``."""

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


def rng_file(folder: str | Path, rank: int) -> Path:
    return Path(folder) / f"rng_rank{rank}.safetensors"


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


def rng_to_safetensors(state: dict[str, Any]) -> bytes:
    """The RNG states as safetensors bytes: generators as tensors, the rest as JSON metadata.

    No pickle: python's state is a version, 625 ints and an optional float; numpy's MT19937 state
    is 624 words, a position and the cached Gaussian.
    """
    from safetensors.torch import save

    version, internal, gauss = state["python"]
    kind, keys, pos, has_gauss, cached = state["numpy"]
    tensors = {
        "torch": state["torch"].contiguous(),
        "numpy_keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
    }
    for i, t in enumerate(state.get("cuda", [])):
        tensors[f"cuda_{i}"] = t.cpu().contiguous()
    meta = {
        "python": json.dumps([version, list(internal), gauss]),
        "numpy": json.dumps([kind, int(pos), int(has_gauss), float(cached)]),
    }
    return save(tensors, metadata=meta)


def rng_from_safetensors(path: Path) -> dict[str, Any]:
    """Read what ``rng_to_safetensors`` wrote; a malformed file is an ``InputError``."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (no __iter__)
        version, internal, gauss = json.loads(meta["python"])
        kind, pos, has_gauss, cached = json.loads(meta["numpy"])
        keys = tensors["numpy_keys"].numpy().astype(np.uint32)
        state: dict[str, Any] = {
            "python": (int(version), tuple(int(v) for v in internal), gauss),
            "numpy": (str(kind), keys, int(pos), int(has_gauss), float(cached)),
            "torch": tensors["torch"],
        }
    except (SafetensorError, OSError, KeyError, ValueError, TypeError) as exc:
        raise InputError(path, f"unreadable RNG state: {exc}") from None
    cuda = sorted((int(k.split("_")[1]), t) for k, t in tensors.items() if k.startswith("cuda_"))
    if cuda:
        state["cuda"] = [t for _, t in cuda]
    return state


# ------------------------------------------------------------------------------ file records


def file_record(path: Path) -> dict[str, Any]:
    """``{"bytes": size, "sha256": hex}`` of one file (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
            size += len(block)
    return {"bytes": size, "sha256": h.hexdigest()}


def _checked_files(folder: Path) -> list[str]:
    """Every file of a checkpoint folder but the marker and temporaries, as sorted relative names."""
    names = []
    for p in folder.rglob("*"):
        if p.is_file() and p.name != COMPLETE and not p.name.startswith("."):
            names.append(p.relative_to(folder).as_posix())
    return sorted(names)


def _digest_files(folder: Path, names: list[str], rank: int, world: int) -> dict[str, Any]:
    """Records of ``names``, each rank hashing every ``world``-th file (collective when world > 1).

    Every rank gets the merged records (one small all-gather of the digests).
    """
    mine = {n: file_record(folder / n) for i, n in enumerate(names) if i % world == rank}
    if world == 1:
        return mine
    merged: dict[str, Any] = {}
    for part in all_gather(mine):
        merged.update(part)
    return merged


def _record_problem(folder: Path, rank: int, world: int) -> str | None:
    """Why ``folder`` fails its ``COMPLETE`` record (``FILE: reason``), or None when it passes.

    Collective: rank 0 reads the record and checks sizes (cheap), then every rank hashes its share.
    A marker without a record (written by an older trainer) passes unchecked, with a warning.
    """
    plan: Any = None
    if rank == 0:
        plan = _size_plan(folder)
    plan = from_rank0(plan)
    if plan is None or isinstance(plan, str):
        return plan
    found = _digest_files(folder, sorted(plan), rank, world)
    for name in sorted(plan):
        if found[name]["sha256"] != plan[name]["sha256"]:
            return f"{name}: checksum mismatch"
    return None


def _older_marker(path: Path) -> bool:
    """Whether ``path`` is an older trainer's marker (``ok``, before markers held a record)."""
    try:
        with open(path, "rb") as fh:
            return fh.read(8).strip() == b"ok"
    except OSError:
        return False


def _size_plan(folder: Path) -> dict[str, Any] | str | None:
    """Rank 0's half of the check: the record's files if they exist with their sizes, else why not."""
    try:
        record = read_json(folder / COMPLETE)
    except InputError as exc:
        if not _older_marker(folder / COMPLETE):  # damaged: fall back like any bad checkpoint
            return f"{COMPLETE}: {exc.reason}"
        record = None
    if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT:
        log.warning("checkpoint %s has no file record (older trainer): not verified", folder.name)
        return None
    files = record.get("files")
    if not isinstance(files, dict):
        return f"{COMPLETE}: malformed file record"
    for name, want in sorted(files.items()):
        if not isinstance(want, dict) or not isinstance(want.get("sha256"), str):
            return f"{COMPLETE}: malformed record for {name}"
        path = folder / name
        if not path.is_file():
            return f"{name}: missing"
        size = path.stat().st_size
        if size != want.get("bytes"):
            return f"{name}: size mismatch ({size} bytes, recorded {want.get('bytes')})"
    return files


def choose_checkpoint(root: str | Path, *, rank: int, world: int) -> Path | None:
    """The newest complete checkpoint whose files match their record (collective, rank 0 decides).

    A bad one is named in a warning and skipped (``checkpoint step_N: FILE: checksum mismatch,
    falling back to step_M``). None when there is no complete checkpoint at all; an
    ``InputError`` naming every bad file when there are some but none is intact.
    """
    root = Path(root)
    candidates = from_rank0([p for _, p in reversed(list_checkpoints(root))] if rank == 0 else None)
    bad: list[str] = []
    for folder in candidates:
        problem = _record_problem(folder, rank, world)
        if problem is None:
            if rank == 0:
                for line in bad:
                    log.warning("checkpoint %s, falling back to %s", line, folder.name)
            return folder
        bad.append(f"{folder.name}: {problem}")
    if bad:
        raise InputError(root, "no intact checkpoint to resume: " + "; ".join(bad))
    return None


# ------------------------------------------------------------------------------------ save / load


def save_checkpoint(
    engine: TrainEngine,
    root: str | Path,
    state: TrainerState,
    *,
    rank: int,
    world: int = 1,
    keep_last: int,
) -> Path:
    """Save on every rank (collective) into ``step_N.partial``; rank 0 renames it once complete.

    Every rank writes into the temporary folder; the ranks then agree on whether all of them
    succeeded. On any failure (a full disk, a quota, a read-only mount) every rank removes the
    partial folder and raises one ``OutputError`` naming the checkpoint, the file and the OS's
    reason, so ``--resume`` finds the previous checkpoint and nothing half-written is left. The
    record and ``COMPLETE`` are written inside the temporary folder and the rename to ``step_N``
    is the one atomic moment a checkpoint appears.
    """
    root = Path(root)
    folder = step_dir(root, state.step)
    tmp = partial_dir(root, state.step)
    if rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        for left in root.glob(f"step_*{PARTIAL}"):  # a save killed earlier (SIGKILL, power)
            shutil.rmtree(left, ignore_errors=True)
    barrier()
    problem: str | None = None
    try:
        with _SaveGuard(engine) as guard:
            engine.save_checkpoint(str(root), tag=tmp.name, save_latest=False)
        problem = guard.problem
        if problem is None:
            tmp.mkdir(parents=True, exist_ok=True)
            write_bytes(rng_file(tmp, rank), rng_to_safetensors(capture_rng()))
            if rank == 0:
                write_bytes(tmp / STATE_FILE, json.dumps(asdict(state), indent=2).encode())
    except (OSError, OutputError) as exc:  # the atomic writer reports an OSError as OutputError
        problem = _describe_failure(tmp / "?", exc)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _agree_or_fail(problem, tmp, folder, root, world)
    names = from_rank0(_checked_files(tmp) if rank == 0 else None)
    files = _digest_files(tmp, names, rank, world)
    problem = None
    if rank == 0:
        try:
            write_json(tmp / COMPLETE, {"format": RECORD_FORMAT, "files": files}, indent=1)
            if folder.exists():  # the same step saved again: the new save replaces it
                (folder / COMPLETE).unlink(missing_ok=True)
            replace_dir(tmp, folder)
        except (OSError, OutputError) as exc:
            problem = _describe_failure(tmp / COMPLETE, exc)
    _agree_or_fail(from_rank0(problem), tmp, folder, root, world, gathered=True)
    if rank == 0:
        rotate(root, keep_last)
        log.info("checkpoint saved step=%d path=%s", state.step, folder)
    barrier()
    return folder


PARTIAL = ".partial"


def partial_dir(root: str | Path, step: int) -> Path:
    """Where the ranks write step ``step`` before it is complete (never listed as a checkpoint)."""
    return Path(root) / f"step_{step}{PARTIAL}"


class _SaveGuard:
    """Catch the first failing write inside DeepSpeed's ``save_checkpoint``; skip the rest.

    DeepSpeed's save runs collectives (a barrier at its end): a rank that raised out of it would
    leave the others waiting there. So its checkpoint engine's ``save`` is wrapped on the
    instance for the duration: the first failure is recorded (``PATH: reason``), later writes of
    this save are skipped, and every rank leaves ``save_checkpoint`` through the same collectives.
    """

    def __init__(self, engine: TrainEngine) -> None:
        self.ce = getattr(engine, "checkpoint_engine", None)
        self.problem: str | None = None
        self._had_own = False

    def __enter__(self) -> _SaveGuard:
        if self.ce is None or not hasattr(self.ce, "save"):
            return self
        self._had_own = "save" in vars(self.ce)
        self._own = vars(self.ce).get("save")
        original = self.ce.save

        def save(state_dict: Any, path: Any, *args: Any, **kwargs: Any) -> Any:
            if self.problem is not None:
                return None
            try:
                return original(state_dict, path, *args, **kwargs)
            except Exception as exc:  # torch.save reports a full disk as a RuntimeError
                self.problem = _describe_failure(Path(str(path)), exc)
                return None

        self.ce.save = save
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.ce is None or not hasattr(self.ce, "save"):
            return
        if self._had_own:
            self.ce.save = self._own
        else:
            with contextlib.suppress(AttributeError):
                del self.ce.save


def _describe_failure(path: Path, exc: BaseException) -> str:
    """``FILE: reason`` for a failed write of ``path``, the reason in the OS's words when it has one.

    ``torch.save`` reports a full disk as ``RuntimeError: ... unexpected pos``; a small write
    beside the file then asks the OS, which answers ``No space left on device`` (or a quota, or
    a read-only filesystem) -- the reason a user can act on.
    """
    if isinstance(exc, OutputError):
        return f"{Path(exc.path).name}: {exc.reason}"
    if isinstance(exc, OSError) and exc.strerror:
        name = Path(str(exc.filename)).name if exc.filename else path.name
        return f"{name}: {exc.strerror.lower()}"
    reason = _probe_write(path.parent)
    if reason is None:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        reason = f"write failed ({first[:200]})"
    return f"{path.name}: {reason}"


def _probe_write(folder: Path) -> str | None:
    """The OS's reason why 1 MiB cannot be written in ``folder`` now, or None when it can."""
    probe = folder / f".probe-{os.getpid()}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError as exc:
        return (exc.strerror or str(exc)).lower()
    try:
        block = b"\0" * (1 << 16)
        for _ in range(16):
            os.write(fd, block)
        os.fsync(fd)
    except OSError as exc:
        return (exc.strerror or str(exc)).lower()
    finally:
        os.close(fd)
        probe.unlink(missing_ok=True)
    return None


def _agree_or_fail(
    problem: str | None,
    tmp: Path,
    folder: Path,
    root: Path,
    world: int,
    *,
    gathered: bool = False,
) -> None:
    """Every rank learns whether any rank failed; then all remove the partial folder and raise.

    ``gathered``: ``problem`` is already the same on every rank (no all-gather needed).
    """
    problems = [problem] if gathered or world == 1 else all_gather(problem)
    found = [p for p in problems if p is not None]
    if not found:
        return
    shutil.rmtree(tmp, ignore_errors=True)
    previous = latest_checkpoint(root)
    after = (
        f"--resume continues from {previous.name}"
        if previous is not None
        else "there is no earlier checkpoint"
    )
    raise OutputError(
        folder,
        f"checkpoint not saved: {found[0]}; the partial folder was removed, {after}",
    )


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
    data = read_json(path, "trainer state JSON")
    if not isinstance(data, dict):
        raise InputError(path, "trainer state is not a JSON object")
    for f in fields(TrainerState):
        value = data.get(f.name)
        if value is None:
            continue
        if f.name == "record":
            ok = isinstance(value, dict)
        else:
            ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
        if not ok:
            raise InputError(path, f"trainer state field {f.name!r} is malformed: {value!r:.60}")
    return TrainerState.from_dict(data)


def load_checkpoint(engine: TrainEngine, folder: str | Path, *, rank: int) -> TrainerState:
    """Restore DeepSpeed state, the trainer state and this rank's RNG from a complete checkpoint."""
    folder = Path(folder)
    if not (folder / COMPLETE).is_file():
        raise InputError(folder, "checkpoint is incomplete (no COMPLETE marker)")
    _safe_deepspeed_loads(engine)
    own = _own_optimizer_settings(engine)
    load_path, _ = engine.load_checkpoint(
        str(folder.parent),
        tag=folder.name,
        load_optimizer_states=True,
        load_lr_scheduler_states=True,
    )
    if load_path is None:
        raise InputError(folder, "DeepSpeed could not load this checkpoint")
    _restore_optimizer_settings(engine, own)
    apply_schedule(engine)
    state = read_state(folder)
    path = rng_file(folder, rank)
    if path.is_file():
        restore_rng(rng_from_safetensors(path))
    else:
        old = (
            " (an old pickled rng_rank*.pt is never loaded)"
            if (folder / f"rng_rank{rank}.pt").exists()
            else ""
        )
        log.warning(
            "no RNG state for rank=%d in %s%s: the resumed run will not be bit-exact",
            rank,
            folder,
            old,
        )
    log.info("checkpoint loaded step=%d path=%s", state.step, folder)
    return state


def _own_optimizer_settings(engine: TrainEngine) -> tuple[float | None, list[float]]:
    """This run's clipping norm and per-group weight decay, before a checkpoint overwrites them.

    DeepSpeed's ZeRO load puts back the *saved* ``clip_grad`` and the saved optimizer groups
    (weight decay included), so a changed ``--grad_clip`` or ``--weight_decay`` would be ignored
    without a word; the learning rate is set by the scheduler from this run's settings anyway.
    """
    opt = getattr(engine, "optimizer", None)
    base = getattr(opt, "optimizer", None)
    groups = getattr(base, "param_groups", None) or []
    return getattr(opt, "clip_grad", None), [g.get("weight_decay", 0.0) for g in groups]


def _restore_optimizer_settings(engine: TrainEngine, own: tuple[float | None, list[float]]) -> None:
    """Apply this run's clipping and weight decay again after the checkpoint's were loaded."""
    clip, decays = own
    opt = getattr(engine, "optimizer", None)
    if clip is not None and opt is not None:
        opt.clip_grad = clip
    groups = getattr(getattr(opt, "optimizer", None), "param_groups", None) or []
    if len(groups) == len(decays):
        for group, decay in zip(groups, decays, strict=True):
            group["weight_decay"] = decay


def apply_schedule(engine: TrainEngine) -> None:
    """Set the optimizer's learning rates from the (just loaded) scheduler position.

    DeepSpeed's load restores the *saved* group learning rates, which the old settings computed;
    re-applying the scheduler at its position makes a changed ``--lr`` / schedule count from the
    first resumed step, and gives the very same rates when nothing changed.
    """
    sched = getattr(engine, "lr_scheduler", None)
    position = getattr(sched, "last_batch_iteration", None)
    if sched is None or position is None:
        return
    sched.step(position)


# ------------------------------------------------------------------------- DeepSpeed's files


def _deepspeed_globals() -> list[Any]:
    """The classes DeepSpeed's ZeRO-1/2 checkpoint files pickle (deepspeed 0.19), nothing else.

    Each is plain data (an int enum, a dataclass of two ints, loss-scaler state); the
    ``weights_only`` unpickler only sets their attributes, it calls none of their code.
    """
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [ZeroStageEnum, fragment_address, LossScaler, DynamicLossScaler]


def _safe_deepspeed_loads(engine: TrainEngine) -> None:
    """Make DeepSpeed read its checkpoint files with ``torch.load(weights_only=True)``.

    deepspeed 0.19's ``TorchCheckpointEngine.load`` calls ``torch.load(weights_only=False)``,
    which runs whatever a crafted pickle asks for. Its engine loads every model, optimizer and expert
    file through ``engine.checkpoint_engine.load``, so replacing that one method on the instance
    covers them all. A file that needs any other class fails with an ``InputError`` naming it.
    """
    ce = getattr(engine, "checkpoint_engine", None)
    if ce is None:
        return
    from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import TorchCheckpointEngine

    if not isinstance(ce, TorchCheckpointEngine):
        log.warning(
            "checkpoint engine %s loads DeepSpeed's files itself (may unpickle code)",
            type(ce).__name__,
        )
        return

    def load(self: Any, path: str, map_location: Any = None) -> Any:
        return safe_torch_load(path, map_location)

    ce.load = types.MethodType(load, ce)


def safe_torch_load(path: str | Path, map_location: Any = "cpu") -> Any:
    """``torch.load(weights_only=True)`` of one of DeepSpeed's files, allowing its plain-data classes.

    A file that needs anything else is an ``InputError`` naming it (nothing in it has run).
    """
    try:
        with torch.serialization.safe_globals(_deepspeed_globals()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        why = str(exc).split("\n")
        hint = next((ln.strip() for ln in why if "GLOBAL" in ln or "Unsupported" in ln), why[0])
        raise InputError(path, f"refused to unpickle (not plain checkpoint data): {hint}") from None
    except (OSError, RuntimeError, EOFError) as exc:
        raise InputError(path, f"unreadable checkpoint file: {str(exc).splitlines()[0]}") from None
