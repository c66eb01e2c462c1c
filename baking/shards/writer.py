"""Write webdataset tar shards that are byte-identical for identical input.

A webdataset sample is the run of tar members sharing a key (the member name up to its first dot):
``KEY.dna.txt``, ``KEY.features.json``, ``KEY.json``. We write POSIX ustar headers ourselves (five times
faster than ``tarfile``, which copies a TarInfo per member) and fix everything that would vary
between runs: mtime 0, uid/gid 0, empty user/group names, mode 0644, members in sample order.
(webdataset's ``TarWriter`` stamps the current time unless given ``mtime``, and a user name.)
``tarfile`` and webdataset read them.

Each shard is written under a hidden temporary name in its final folder; ``finalise`` renames all
shards of a run at once, so a failed run leaves no shard behind and never touches a previous run's.
Temporary names follow one pattern (``TEMP_NAME``), so a run that was killed (SIGKILL, power loss)
before it could delete its temporaries is cleaned up by the next run into the folder
(``sweep_temps``, called under the folder's lock). A write that fails (a full disk) names the
shard: a bare "no space left on device" would not say which file system.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import re
from collections.abc import Collection
from pathlib import Path

from baking.bake_config import ShardInfo
from baking.common.errors import OutputError
from baking.common.files import commit

log = logging.getLogger(__name__)

_BLOCK = 512
_SAFE = re.compile(r"[^A-Za-z0-9_-]+")
SPLIT_DIRS = ("train", "val")
# ``.PREFIX-00000.tar.tmp``: the writer's temporary shard (PREFIX is a ``safe_name``)
TEMP_NAME = re.compile(r"\.([A-Za-z0-9_-]+)-\d{5}\.tar\.tmp")


def safe_name(name: str) -> str:
    """``name`` reduced to ``[A-Za-z0-9_-]`` (no dots: webdataset keys end at the first dot),
    at most 60 characters (longer names are cut and made unique with a hash)."""
    out = _SAFE.sub("_", name).strip("_") or "genome"
    if len(out) > 60:  # tar member names must stay under 100 bytes
        out = out[:51] + "_" + hashlib.blake2b(name.encode(), digest_size=4).hexdigest()
    return out


def _tar_size(payload: int) -> int:
    return _BLOCK + -(-payload // _BLOCK) * _BLOCK


class ShardWriter:
    """Write samples to ``OUT/SPLIT/PREFIX-00000.tar``, ``-00001``, ... of at most ``max_bytes``.

    Shards are kept under temporary names (``.PREFIX-00000.tar.tmp``) until ``finalise`` (or the
    caller) renames them; ``abort`` deletes them.
    """

    def __init__(self, out_dir: str | Path, split: str, prefix: str, max_bytes: int) -> None:
        if max_bytes < 10 * _BLOCK:
            raise ValueError(f"shard_size must be at least {10 * _BLOCK} bytes, got {max_bytes}")
        self.out_dir = Path(out_dir)
        self.split = split
        self.prefix = prefix
        self.max_bytes = max_bytes
        self.shards: list[ShardInfo] = []
        self.temp_paths: list[Path] = []
        self._fh: io.BufferedWriter | None = None
        self._hash = hashlib.sha256()
        self._bytes = 0
        self._samples = 0

    def _failed(self, exc: OSError) -> OutputError:
        """``OutputError`` naming the shard being written (``exc`` often names no file)."""
        final = self.out_dir / self.split / f"{self.prefix}-{len(self.shards):05d}.tar"
        reason = exc.strerror or str(exc) or type(exc).__name__
        return OutputError(final, f"cannot write shard: {reason[:1].lower()}{reason[1:]}")

    def _open(self) -> None:
        folder = self.out_dir / self.split
        name = f"{self.prefix}-{len(self.shards):05d}.tar"
        tmp = folder / f".{name}.tmp"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            self._fh = open(tmp, "wb")  # noqa: SIM115 - closed in _close
        except OSError as exc:
            raise self._failed(exc) from exc
        self.temp_paths.append(tmp)
        self._hash = hashlib.sha256()
        self._bytes = 2 * _BLOCK  # end-of-archive blocks
        self._samples = 0

    def _emit(self, data: bytes) -> None:
        assert self._fh is not None
        try:
            self._fh.write(data)
        except OSError as exc:
            raise self._failed(exc) from exc
        self._hash.update(data)

    def _close(self) -> None:
        if self._fh is None:
            return
        self._emit(bytes(2 * _BLOCK))
        try:
            self._fh.close()
        except OSError as exc:
            raise self._failed(exc) from exc
        self._fh = None
        tmp = self.temp_paths[-1]
        final = f"{self.split}/{tmp.name[1:-4]}"
        self.shards.append(ShardInfo(final, self._samples, self._bytes, self._hash.hexdigest()))

    def write(self, key: str, fields: dict[str, bytes]) -> None:
        """Add one sample; ``fields`` maps extension (``dna.txt``) to content bytes."""
        size = sum(_tar_size(len(v)) for v in fields.values())
        if self._fh is not None and self._samples and self._bytes + size > self.max_bytes:
            self._close()
        if self._fh is None:
            self._open()
        parts = []
        for ext, data in fields.items():
            parts.append(ustar_header(f"{key}.{ext}", len(data)))
            parts.append(data)
            pad = -len(data) % _BLOCK
            if pad:
                parts.append(bytes(pad))
        self._emit(b"".join(parts))
        self._bytes += size
        self._samples += 1

    def close(self) -> list[ShardInfo]:
        """Finish the open shard; returns every shard of this writer (still under temp names)."""
        self._close()
        return self.shards

    def abort(self) -> None:
        """Close and delete every temporary shard of this writer."""
        if self._fh is not None:
            with contextlib.suppress(OSError):  # fails again on a full disk: the file goes anyway
                self._fh.close()
            self._fh = None
        for p in self.temp_paths:
            p.unlink(missing_ok=True)


_HEADER_TAIL = (
    b"ustar\x0000" + bytes(32) + bytes(32) + b"0000000\x00" + b"0000000\x00" + bytes(155 + 12)
)


def ustar_header(name: str, size: int) -> bytes:
    """A POSIX ustar header for a regular file with fixed mode, owner and time."""
    raw = name.encode("utf-8")
    if len(raw) > 100:
        raise ValueError(f"tar member name longer than 100 bytes: {name!r}")
    size_field = b"%011o\x00" % size
    chksum = _FIXED_SUM + sum(raw) + sum(size_field)
    return raw.ljust(100, b"\0") + _MODE_IDS + size_field + _MTIME + b"%06o\x00 " % chksum + _REST


_MODE_IDS = b"0000644\x000000000\x000000000\x00"  # mode, uid, gid
_MTIME = b"00000000000\x00"
_REST = b"0" + bytes(100) + _HEADER_TAIL  # typeflag: regular file; no link name
_FIXED_SUM = sum(_MODE_IDS) + sum(_MTIME) + sum(_REST) + 8 * 32  # checksum field counts as spaces


def temp_path(out_dir: str | Path, shard_path: str) -> Path:
    """The temporary file of a shard given its final relative path."""
    final = Path(out_dir) / shard_path
    return final.with_name(f".{final.name}.tmp")


def finalise(out_dir: str | Path, shards: list[ShardInfo]) -> None:
    """Move every temporary shard onto its final name (fsync, umask mode, rename: ``commit``)."""
    for s in shards:
        commit(temp_path(out_dir, s.path), Path(out_dir) / s.path)


def remove_temps(out_dir: str | Path, shards: list[ShardInfo]) -> None:
    for s in shards:
        temp_path(out_dir, s.path).unlink(missing_ok=True)


def sweep_temps(out_dir: str | Path, prefixes: Collection[str] | None = None) -> tuple[int, int]:
    """Delete temporary shards under ``out_dir/{train,val}``: those of ``prefixes`` (a run's own
    genomes, on failure), or every one (``None``: a new run under the folder's lock, whose
    predecessor may have been killed). Returns (files, bytes) removed."""
    files = size = 0
    for split in SPLIT_DIRS:
        folder = Path(out_dir) / split
        try:
            entries = list(os.scandir(folder))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for e in entries:
            m = TEMP_NAME.fullmatch(e.name)
            if m is None or (prefixes is not None and m.group(1) not in prefixes):
                continue
            try:
                n = e.stat(follow_symlinks=False).st_size
                os.unlink(e.path)
            except FileNotFoundError:
                continue
            files, size = files + 1, size + n
    return files, size


def sample_fields(dna: str, features: bytes, meta: dict) -> dict[str, bytes]:
    """The three fields of a sample as the architecture's contract spells them (``features``:
    the window's ``features.json``, ``baking.target_format.sample_features``)."""
    return {
        "dna.txt": dna.encode("ascii"),
        "features.json": features,
        "json": json.dumps(meta, separators=(",", ":")).encode("utf-8"),
    }
