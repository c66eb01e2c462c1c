"""Exclusive ``flock`` on a lock file that is removed when its holder is done.

Shared by the bake's one-run-per-folder lock (``baking.shards.lock``) and the ``--extract_tokens``
merge (``baking.formats.tokens_file``), whose read-modify-write lost tokens when two bakes shared
the file. ``flock`` belongs to the open file: the kernel drops it when the process dies, so a
killed holder leaves at most an unlocked file that the next process simply locks again. A holder
removes the file when done; since a waiting process could have opened it just before, a process
that gets the lock checks that its file is still the one at the path (same inode) and otherwise
locks the new one.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from baking.common.errors import ConfigError, OutputError


def try_lock(path: Path, *, wait: bool = False) -> int | None:
    """A file descriptor holding an exclusive lock on ``path``; None when another process holds it
    and ``wait`` is False (with ``wait`` it blocks until the holder is done)."""
    for _ in range(100):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise OutputError(path, f"cannot create lock file ({exc.strerror or exc})") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
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


def release(path: Path, fd: int) -> None:
    """Remove the lock file, then drop the lock (in this order: see the module docstring)."""
    try:
        path.unlink(missing_ok=True)
    finally:
        os.close(fd)


@contextmanager
def waiting_lock(path: str | Path) -> Iterator[Path]:
    """Hold an exclusive lock on ``path`` for the ``with`` block, waiting for another holder."""
    p = Path(path)
    fd = try_lock(p, wait=True)
    assert fd is not None
    try:
        yield p
    finally:
        release(p, fd)
