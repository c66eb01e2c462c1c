"""This project's own webdataset pipeline stages (each a function from an iterator to an iterator).

``webdataset`` supplies the tar reading (``tar_file_iterator``), the grouping of members into
samples (``group_by_keys``), the slicing, the per-sample ``map`` and the batching; what it has no
stage for, or none that keeps this project's behaviour, lives here:

- ``checked_shards``: opens each shard and passes its bytes through a sha256 on their way to the
  tar reader; at the shard's end the digest, size and sample count must match ``manifest.json``,
  or the shard is refused by name (a shard altered after baking never trains silently);
- ``tar_samples``: webdataset's tar iteration and grouping, one shard at a time, so that a
  damaged tar is one ``InputError`` naming the shard instead of a traceback with the stream's repr;
- ``take_every``: a slot's every ``stride``-th sample (the sample-level half of splitting a split
  over ranks and workers when whole shards would be uneven, see ``trainer.data.slots``);
- ``seeded_shuffle``: the shuffle buffer, in the order the loader has always drawn (below);
- ``equal_batches``: a rank's batch stream is endless and every batch is full, so every rank takes
  the same number of batches per epoch and none waits in a collective for a rank that ran dry.
"""

from __future__ import annotations

import hashlib
import random
import re
import tarfile
from collections.abc import Iterable, Iterator
from typing import Any

from baking.common.errors import InputError
from trainer.data.shards import ShardEntry

VERIFIED: set[str] = set()
"""Shards this process has read whole and found to match the manifest (hashed once per process)."""


class HashingReader:
    """A binary file whose reads also feed a sha256 (the tar reader reads through it)."""

    def __init__(self, f: Any) -> None:
        self.f = f
        self.hash = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.hash.update(data)
        self.size += len(data)
        return data

    def drain(self) -> None:
        while self.read(1 << 20):
            pass


def checked_shards(shards: Iterable[ShardEntry], *, verify: bool = True) -> Iterator[dict]:
    """The sha256 stage: ``{"url", "stream", "shard"}`` per shard, checked when it is done.

    The next stage (``tar_samples``) asks for the next shard only after reading the previous one
    to its end, so the check runs right there: the rest of the file is drained through the hash
    (the tar reader stops at the end-of-archive marker), then size, digest and the sample count
    the tar stage wrote into the record are compared with the manifest. ``verify=False`` reads
    without hashing (a preflight that reads a few samples per shard).
    """
    for shard in shards:
        with open(shard.path, "rb") as f:
            hashed = verify and bool(shard.sha256) and shard.path not in VERIFIED
            reader = HashingReader(f) if hashed else None
            record: dict[str, Any] = {"url": shard.path, "stream": reader or f, "shard": shard}
            yield record
            if reader is not None:
                _check_digest(shard, reader)
            read = record.get("samples")
            if verify and read is not None and shard.count >= 0 and read != shard.count:
                raise InputError(
                    shard.path, f"holds {read} samples but manifest.json says {shard.count}"
                )


def _check_digest(shard: ShardEntry, reader: HashingReader) -> None:
    reader.drain()
    if shard.size is not None and reader.size != shard.size:
        raise InputError(
            shard.path,
            f"size mismatch: {reader.size} bytes, manifest.json "
            f"says {shard.size} (altered or truncated after baking)",
        )
    digest = reader.hash.hexdigest()
    if digest != shard.sha256:
        raise InputError(
            shard.path,
            f"sha256 mismatch: {digest}, manifest.json says {shard.sha256} (altered after baking)",
        )
    VERIFIED.add(shard.path)


def tar_samples(sources: Iterable[dict]) -> Iterator[dict[str, Any]]:
    """Samples ``{"__key__", "__shard__", ext: bytes}`` of each opened shard, in file order.

    webdataset reads the tar and groups members ``key.ext`` by key; a tar it cannot read is an
    ``InputError`` naming the shard. The number of samples read is written into the shard's
    record (``samples``) for ``checked_shards`` to compare with the manifest.
    """
    from webdataset.tariterators import group_by_keys, tar_file_iterator

    for source in sources:
        path = source["url"]
        n = 0
        try:
            files = _tagged(tar_file_iterator(source["stream"]), path)
            for sample in group_by_keys(files, keys=split_key):
                del sample["__url__"]
                sample["__shard__"] = path
                n += 1
                yield sample
        except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
            reason = str(exc.args[0] if exc.args else exc).split(" @ ")[0]
            raise InputError(path, f"unreadable shard: {reason}") from None
        source["samples"] = n


_KEY_EXT = re.compile(r"^((?:.*/|)[^./]+)\.([^/]*)$")


def split_key(name: str) -> tuple[str | None, str | None]:
    """``dir/key.dna.txt`` -> (``dir/key``, ``dna.txt``), as webdataset's ``base_plus_ext`` but
    with the pattern compiled once (it runs for every tar member)."""
    m = _KEY_EXT.match(name)
    return (m.group(1), m.group(2)) if m else (None, None)


def _tagged(files: Iterable[dict[str, Any]], url: str) -> Iterator[dict[str, Any]]:
    """The tar members with the shard's name, as webdataset's grouping expects."""
    for f in files:
        f["__url__"] = url
        yield f


def take_every(samples: Iterable[dict], stride: int, offset: int, start: int) -> Iterator[dict]:
    """Keep the samples whose running index (from ``start``) is ``offset`` modulo ``stride``."""
    g = start
    for sample in samples:
        if g % stride == offset:
            yield sample
        g += 1


def seeded_shuffle(samples: Iterable[dict], buffer: int, rng: random.Random) -> Iterator[dict]:
    """A shuffle buffer of ``buffer`` samples: each new sample takes a random place in the buffer
    and the sample it displaces goes on; at the end the buffer is shuffled whole.

    Why not ``webdataset.shuffle``: it draws another order from the same seed (it picks from the
    buffer and refills it two at a time), so every run would see other batches than before this
    loader became a pipeline. Measured: with its order, the MoE runs of
    ``tests/test_elastic_resume.py`` part by 0.30 in an Adam moment after a topology change
    (tolerance 0.05, set on this order; 0.015 with it); with this stage the pipeline's batches are
    bit-identical to the loader's before (five rank / worker / resume layouts compared).
    """
    pool: list[dict] = []
    for sample in samples:
        if len(pool) < buffer:
            pool.append(sample)
            continue
        j = rng.randrange(len(pool))
        pool[j], sample = sample, pool[j]
        yield sample
    rng.shuffle(pool)
    yield from pool


def equal_batches(batches: Iterable[Any]) -> Iterator[Any]:
    """A rank's batches: the source must never end (every rank takes as many as the trainer asks
    for); a source that ends would leave this rank's peers waiting, so it is an error here."""
    yield from batches
    raise RuntimeError("a loader slot's stream ended: the rank would run dry (a loader bug)")
