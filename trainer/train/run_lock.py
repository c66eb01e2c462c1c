"""One training run per run folder: an exclusive ``flock`` on ``RUN_DIR/.train.lock``, held by rank 0.

Two ``train`` jobs writing one ``--output`` (a SLURM requeue while the old job still runs, a job
submitted twice) interleave ``metrics.jsonl``, write two TensorBoard files and overwrite each
other's checkpoints and export, and both exit 0. So the job's global rank 0 takes this lock before
the run folder is written and keeps it until ``train`` returns; a second job's rank 0 finds it
taken and every rank of that job stops with one line naming the folder and the holder.

Why rank 0 only: the ranks of one job share the folder by design, so they must not exclude each
other, and on a multi-node job every node may see the folder through a shared filesystem; one
holder per job is exactly what is wanted. ``flock`` belongs to the open file: the kernel drops it
when the holder dies (SIGKILL, OOM, a node reboot), so a killed run leaves an unlocked file that
the next run simply locks again. On NFS Linux maps ``flock`` onto the server's byte-range locks,
so it works across nodes; Lustre needs the ``flock`` mount option (without it ``flock`` fails
with an error, which is reported rather than ignored).

The file is never removed (removing it would let a waiting job lock a file no longer at the path);
it holds the current holder's ``pid`` and ``host`` for the next job's message.
"""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path

from baking.common.errors import ConfigError, OutputError

LOCK_NAME = ".train.lock"


def _holder(fd: int) -> str:
    """What the lock file says about its holder (``pid=N host=H``), or a plain phrase."""
    try:
        text = os.pread(fd, 256, 0).decode("utf-8", "replace").strip()
    except OSError:
        text = ""
    return text if text else "an unknown process"


def _refusal(out: Path, holder: str) -> ConfigError:
    return ConfigError(
        f"{out}: another train run is using this run folder ({LOCK_NAME} held by {holder}); "
        "wait for it to end, stop it, or choose another --output"
    )


class RunLock:
    """The held lock (an open, flocked file descriptor); ``release`` ends it."""

    def __init__(self, fd: int, path: Path) -> None:
        self.fd = fd
        self.path = path

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # closing the descriptor drops the flock
            self.fd = -1


def take_run_lock(out: str | Path) -> RunLock:
    """Create ``out`` if needed and lock it for this process; ``ConfigError`` when another run has it.

    Only the job's rank 0 calls this (see the module docstring).
    """
    folder = Path(out)
    path = folder / LOCK_NAME
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise OutputError(path, (exc.strerror or str(exc)).lower()) from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(fd)
        os.close(fd)
        raise _refusal(folder, holder) from None
    except OSError as exc:  # e.g. a filesystem without flock support
        os.close(fd)
        raise OutputError(path, f"cannot lock the run folder: {exc.strerror or exc}") from exc
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid={os.getpid()} host={socket.gethostname()}\n".encode(), 0)
    return RunLock(fd, path)


def check_not_running(out: str | Path) -> None:
    """``ConfigError`` when a live run holds ``out``'s lock (a probe: takes nothing).

    For refusals decided before the lock is taken, so that a folder in use is reported as such
    instead of as a folder to ``--resume``.
    """
    path = Path(out) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        raise _refusal(Path(out), _holder(fd)) from None
    except OSError:
        return
    finally:
        os.close(fd)
