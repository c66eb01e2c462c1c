"""One baking run per output folder: an exclusive ``flock`` on ``OUT_DIR/.bake.lock``.

Two runs into one folder would race: each renames its own shards and writes ``manifest.json``, the
last manifest wins and the other run's shards stay unlisted. So a run takes the lock before it
writes anything and a second run fails at once with a clear error. ``flock`` belongs to the open
file: the kernel drops it when the process ends, so a crashed run leaves at most an unlocked file
that the next run simply locks again. A finished run removes the file; since a waiting run could
have opened it just before, a run that gets the lock checks that its file is still the one at
the path (same inode) and otherwise tries again.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from baking.common.errors import ConfigError

LOCK_NAME = ".bake.lock"


def _try_lock(path: Path) -> int | None:
    """A locked file descriptor for ``path``, or None when another process holds the lock."""
    for _ in range(10):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())  # who holds it, for a curious user
            return fd
        os.close(fd)  # the holder removed the file after we opened it: lock the new one
    raise ConfigError(f"{path}: cannot lock (the file keeps being replaced)")


@contextmanager
def output_lock(out_dir: str | Path) -> Iterator[Path]:
    """Hold ``out_dir/.bake.lock`` for the ``with`` block; ``ConfigError`` if another run has it."""
    path = Path(out_dir) / LOCK_NAME
    fd = _try_lock(path)
    if fd is None:
        raise ConfigError(
            f"{Path(out_dir)}: another bake_data run is writing to this folder ({LOCK_NAME} is "
            "locked); wait for it to finish or bake into another folder"
        )
    try:
        yield path
    finally:
        try:
            path.unlink(missing_ok=True)
        finally:
            os.close(fd)
