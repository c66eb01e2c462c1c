"""One baking run per output folder: an exclusive ``flock`` on ``OUT_DIR/.bake.lock``.

Two runs into one folder would race: each renames its own shards and writes ``manifest.json``, the
last manifest wins and the other run's shards stay unlisted. So a run takes the lock before it
writes anything and a second run fails at once with a clear error. The lock file mechanics (a
killed holder blocks nobody, a removed file is never locked by mistake) are
``baking.common.locks``'.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from baking.common.errors import ConfigError
from baking.common.locks import release, try_lock

LOCK_NAME = ".bake.lock"


@contextmanager
def output_lock(out_dir: str | Path) -> Iterator[Path]:
    """Hold ``out_dir/.bake.lock`` for the ``with`` block; ``ConfigError`` if another run has it."""
    path = Path(out_dir) / LOCK_NAME
    fd = try_lock(path)
    if fd is None:
        raise ConfigError(
            f"{Path(out_dir)}: another bake_data run is writing to this folder ({LOCK_NAME} is "
            "locked); wait for it to finish or bake into another folder"
        )
    try:
        yield path
    finally:
        release(path, fd)
