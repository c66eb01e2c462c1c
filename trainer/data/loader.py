"""Stream the baker's webdataset shards into padded batches, equal in number on every rank.

Why not the usual ``split_by_node`` over shard names: with uneven shards one rank runs dry first and
the others hang in the next collective. Here each loader *slot* (one DataLoader worker of one rank)
reads an infinite, deterministic stream -- passes over its shards, each pass in a seeded order
through a seeded shuffle buffer -- and the trainer takes exactly the same number of batches from
every rank. Shards are dealt to slots by sample count when that balances (least-loaded first);
otherwise (fewer shards than slots, or very unequal shards) every slot reads all shards and keeps
every k-th sample, trading read bandwidth for balance.

Because each slot's stream is a pure function of (seed, slot, pass), a resume only needs the number
of batches consumed: whole passes are skipped by arithmetic on the manifest's counts and the rest of
one pass is read without tokenising.

Each shard is checked against the sha256 and size ``manifest.json`` records for it, once per
process, while it is first read (the bytes pass through the hash on their way to the tar reader):
a shard altered after baking fails at its end, by name. A bad sample fails naming
``shard.tar: key: reason``. Errors raised in a DataLoader worker reach the trainer as the same
``InputError`` (``iter_batches``), not as the worker's traceback.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from baking.common.errors import ConfigError, InputError
from baking.shards.manifest import load_manifest
from trainer.model.seq2seq import IGNORE_INDEX

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ShardEntry:
    """One tar shard of a split: how many samples, bytes and which sha256 the manifest records."""

    path: str
    count: int
    sha256: str | None = None
    """None when the manifest has none (hand-made or older data): the shard is not checked."""
    size: int | None = None


@dataclass(frozen=True)
class SlotPlan:
    """What one loader slot reads: its shards whole (stride 1), or every ``stride``-th sample."""

    shards: tuple[ShardEntry, ...]
    stride: int
    offset: int

    @property
    def total(self) -> int:
        return sum(s.count for s in self.shards)

    def yield_in_pass(self, p: int) -> int:
        """Samples this slot takes from pass ``p`` (global sample index g = p * total + i)."""
        if self.stride == 1:
            return self.total
        lo, hi = p * self.total, (p + 1) * self.total
        return _count_congruent(hi, self.stride, self.offset) - _count_congruent(
            lo, self.stride, self.offset
        )


def _count_congruent(n: int, k: int, r: int) -> int:
    """How many g in [0, n) have g % k == r."""
    return (n - r + k - 1) // k if n > r else 0


# --------------------------------------------------------------------------------------- manifest


def read_manifest(data_dir: str | Path) -> dict[str, Any]:
    """The baker's manifest, read by the baker's own reader (it owns the format)."""
    return load_manifest(data_dir)


def split_shards(data_dir: str | Path, split: str) -> list[ShardEntry]:
    """The split's non-empty shards as absolute paths with counts, checked to exist."""
    root = Path(data_dir)
    manifest = read_manifest(root)
    entries = _split_entries(manifest, split, root / "manifest.json")
    shards: list[ShardEntry] = []
    for entry in entries:
        rel, count = entry.get("path"), entry.get("samples")
        if not isinstance(rel, str) or not isinstance(count, int) or count < 0:
            raise InputError(
                root / "manifest.json", f"bad shard entry in split {split!r}: {entry!r}"
            )
        path = (root / rel).resolve()
        if not path.is_file():
            raise InputError(path, f"shard listed in manifest.json (split {split!r}) is missing")
        sha, size = entry.get("sha256"), entry.get("bytes")
        if count:
            shards.append(
                ShardEntry(
                    str(path),
                    count,
                    sha if isinstance(sha, str) else None,
                    size if isinstance(size, int) else None,
                )
            )
    return shards


def _split_entries(manifest: dict[str, Any], split: str, where: Path) -> list[dict[str, Any]]:
    """``manifest["splits"][split]["shards"]`` (baking.shards.manifest's layout); [] when absent."""
    node = (manifest.get("splits") or {}).get(split)
    if node is None:
        return []
    shards = node.get("shards") if isinstance(node, dict) else None
    if not isinstance(shards, list):
        raise InputError(where, f"split {split!r} must list its shards")
    return shards


# ------------------------------------------------------------------------------------------- plan


def plan_slots(
    shards: Sequence[ShardEntry], num_slots: int, tolerance: float = 0.2
) -> list[SlotPlan]:
    """Deal shards to ``num_slots`` slots by count, or stride over all when that would be uneven.

    Whole shards are used only when every slot gets some and the heaviest slot holds at most
    ``1 + tolerance`` times the lightest, so no slot repeats its data much more often than another.
    """
    if num_slots < 1:
        raise ValueError(f"num_slots must be >= 1, got {num_slots}")
    if not shards:
        raise ValueError("no non-empty shards to read")
    ordered = sorted(shards, key=lambda s: (-s.count, s.path))
    loads = [0] * num_slots
    dealt: list[list[ShardEntry]] = [[] for _ in range(num_slots)]
    for shard in ordered:
        i = min(range(num_slots), key=lambda j: (loads[j], j))
        dealt[i].append(shard)
        loads[i] += shard.count
    if min(loads) > 0 and max(loads) <= (1 + tolerance) * min(loads):
        return [SlotPlan(tuple(sorted(d, key=lambda s: s.path)), 1, 0) for d in dealt]
    every = tuple(sorted(shards, key=lambda s: s.path))
    return [SlotPlan(every, num_slots, i) for i in range(num_slots)]


def slot_samples(plans: Sequence[SlotPlan]) -> int:
    """The fewest samples any slot reads in one pass (a slot with stride ``k`` of ``T`` samples
    reads ``T // k`` or one more)."""
    return min(p.total if p.stride == 1 else p.total // p.stride for p in plans)


def check_batch_fits(
    shards: Sequence[ShardEntry], world_size: int, num_workers: int, micro_batch_size: int
) -> None:
    """Refuse a micro-batch larger than what one loader slot reads per pass.

    Why: a slot fills each batch from its own stream, which loops over its samples endlessly, so
    a batch larger than the slot's share repeats samples inside one batch; and the batch's memory
    grows with the request, not with the data (``--micro_batch_size 100000`` on 408 windows
    built a 22.8 GB batch before the kernel killed the run).
    """
    workers = max(num_workers, 1)
    total = sum(s.count for s in shards)
    fits = slot_samples(plan_slots(shards, world_size * workers))
    if micro_batch_size <= fits:
        return
    ranks = f"{world_size} rank{'s' if world_size > 1 else ''}"
    if workers == 1:
        where = f"each rank reads {fits} of the {total} train samples ({ranks})"
        fix = f"use at most {fits}"
    else:
        where = (
            f"each of the {workers} loader workers (--num_workers) of a rank reads {fits} of "
            f"the {total} train samples ({ranks})"
        )
        fix = f"use at most {fits}, or fewer --num_workers"
    raise ConfigError(
        f"--micro_batch_size {micro_batch_size} is larger than the data: {where}, so one batch "
        f"would repeat samples; {fix}"
    )


def batches_per_epoch(total_samples: int, world_size: int, micro_batch_size: int) -> int:
    """Micro-batches each rank takes per pass over the split (the same on every rank, >= 1)."""
    return max(1, total_samples // (world_size * micro_batch_size))


# ---------------------------------------------------------------------------------------- samples


_VERIFIED: set[str] = set()
"""Shards this process has read whole and found to match the manifest."""


class _HashingReader:
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


def _check_digest(shard: ShardEntry, reader: _HashingReader) -> None:
    reader.drain()  # the tar reader may stop before the end-of-archive padding
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
    _VERIFIED.add(shard.path)


def _iter_tar(shard: ShardEntry | str) -> Iterator[dict[str, Any]]:
    """Raw samples of one shard in file order, with the shard named in any error.

    The first whole read of a shard with a recorded sha256 checks it (at the end of the shard).
    """
    from webdataset.tariterators import tar_file_iterator

    if isinstance(shard, str):
        shard = ShardEntry(shard, -1)
    path = shard.path
    with open(path, "rb") as f:
        reader = _HashingReader(f) if shard.sha256 and path not in _VERIFIED else None
        try:
            yield from _group(tar_file_iterator(reader or f))
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise InputError(path, f"unreadable shard: {exc}") from None
        if reader is not None:
            _check_digest(shard, reader)


_KEY_EXT = re.compile(r"^((?:.*/|)[^./]+)\.([^/]*)$")


def _group(files: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Group a tar's members ``key.ext`` into samples ``{"__key__": key, ext: bytes}``."""
    current: dict[str, Any] | None = None
    for f in files:
        m = _KEY_EXT.match(f["fname"])
        if m is None:
            continue
        key, ext = m.group(1), m.group(2)
        if current is None or current["__key__"] != key:
            if current is not None:
                yield current
            current = {"__key__": key}
        current[ext] = f["data"]
    if current is not None:
        yield current


def _pass_samples(plan: SlotPlan, seed: int, slot: int, p: int, buffer: int) -> Iterator[dict]:
    """Pass ``p`` of a slot: shards in a seeded order, stride filter, seeded shuffle buffer."""
    order = list(plan.shards)
    random.Random(f"{seed}:order:{p}:{slot if plan.stride == 1 else 'all'}").shuffle(order)
    rng = random.Random(f"{seed}:buffer:{slot}:{p}")
    pool: list[dict] = []
    g = p * plan.total
    for shard in order:
        n = 0
        for sample in _iter_tar(shard):
            sample["__shard__"] = shard.path
            n += 1
            keep = plan.stride == 1 or g % plan.stride == plan.offset
            g += 1
            if not keep:
                continue
            if len(pool) < buffer:
                pool.append(sample)
                continue
            j = rng.randrange(len(pool))
            pool[j], sample = sample, pool[j]
            yield sample
        if n != shard.count:
            raise InputError(shard.path, f"holds {n} samples but manifest.json says {shard.count}")
    rng.shuffle(pool)
    yield from pool


def slot_stream(plan: SlotPlan, seed: int, slot: int, buffer: int, skip: int = 0) -> Iterator[dict]:
    """The slot's endless sample stream, starting after ``skip`` samples."""
    p = 0
    while skip and skip >= plan.yield_in_pass(p):  # whole passes: arithmetic only
        skip -= plan.yield_in_pass(p)
        p += 1
    while True:
        for sample in _pass_samples(plan, seed, slot, p, buffer):
            if skip:
                skip -= 1
                continue
            yield sample
        p += 1


# ------------------------------------------------------------------------------------ tokenising


@dataclass(frozen=True)
class TokenIds:
    """The special ids the batch layout needs."""

    bos: int
    eos: int
    pad: int


class ExampleSteps(Protocol):
    """What the loader runs on samples: one sample -> one example, a list of examples -> a
    padded batch (``trainer.data.examples.ExampleBuilder``)."""

    def build(self, sample: dict[str, Any]) -> Any: ...

    def collate(self, examples: Sequence[Any]) -> dict: ...


def sample_meta(sample: dict[str, Any]) -> dict[str, Any]:
    """The sample's ``json`` metadata (``{}`` when it has none); a damaged one is an
    ``InputError`` naming shard and sample key."""
    if "json" not in sample:
        return {}
    try:
        meta = json.loads(sample["json"])
    except (ValueError, UnicodeDecodeError) as exc:
        raise sample_error(sample, f"json: not valid JSON ({exc})") from None
    except RecursionError:
        raise sample_error(sample, "json: nested too deeply (damaged?)") from None
    if not isinstance(meta, dict):
        raise sample_error(sample, "json: must be an object")
    return meta


def sample_transl_table(sample: dict[str, Any]) -> int | None:
    """The genetic code the baker recorded for the sample's genome (``json`` ``transl_table``);
    None for a sample baked before codes were recorded. A value the ORF layer does not know is
    an ``InputError`` naming the sample: training it under another code would teach wrong stops."""
    table = sample_meta(sample).get("transl_table")
    if table is None:
        return None
    from baking.orfs import GENETIC_CODES

    if isinstance(table, bool) or not isinstance(table, int) or table not in GENETIC_CODES:
        known = ", ".join(str(t) for t in sorted(GENETIC_CODES))
        raise sample_error(sample, f"json: transl_table={table!r} is not a known code ({known})")
    return table


def sample_error(sample: dict[str, Any], reason: str) -> InputError:
    """``shard.tar: key: reason`` (the shard is attached by the stream that read the sample)."""
    return InputError(sample.get("__shard__", "?"), f"{sample.get('__key__', '?')}: {reason}")


def text_field(sample: dict[str, Any], name: str, encoding: str) -> str:
    if name not in sample:
        raise sample_error(sample, f"no {name} in this sample")
    try:
        return bytes(sample[name]).decode(encoding)
    except UnicodeDecodeError as exc:
        raise sample_error(
            sample, f"{name}: not {encoding} text ({exc.reason} at byte {exc.start})"
        ) from None


def pad_decoder(
    batch: dict[str, torch.Tensor], length: int, pad_id: int
) -> dict[str, torch.Tensor]:
    """Right-pad the decoder tensors to ``length`` (pads ignored by attention and loss).

    Expert-parallel MoE needs it: DeepSpeed sizes each all-to-all from the local token count, so
    every rank of an expert group must present the same (B, T).
    """
    extra = length - batch["decoder_input_ids"].shape[1]
    if extra <= 0:
        return batch
    out = dict(batch)
    out["decoder_input_ids"] = torch.nn.functional.pad(
        batch["decoder_input_ids"], (0, extra), value=pad_id
    )
    out["decoder_attention_mask"] = torch.nn.functional.pad(
        batch["decoder_attention_mask"], (0, extra)
    )
    out["labels"] = torch.nn.functional.pad(batch["labels"], (0, extra), value=IGNORE_INDEX)
    for key in ("decoder_positions", "decoder_anchors"):  # pointer batches
        if key in batch:
            out[key] = torch.nn.functional.pad(batch[key], (0, extra), value=-1)
    if "decoder_allowed" in batch:  # (B, T, V + L): pad steps have no label, allow everything
        allowed = batch["decoder_allowed"]
        more = allowed.new_ones((allowed.shape[0], extra, allowed.shape[2]))
        out["decoder_allowed"] = torch.cat([allowed, more], dim=1)
    return out


# --------------------------------------------------------------------------------------- dataset


class ShardBatches(IterableDataset):
    """Endless padded micro-batches for one rank; workers are slots ``rank * W + logical``.

    A micro-batch larger than a slot's share of the data is refused (``check_batch_fits``) unless
    ``repeats_ok``, so a batch's memory is bounded by the data, never by the request.

    ``start_batch`` (batches this rank already consumed) makes the loader resume exactly: the
    DataLoader hands out batches round-robin from worker 0, so worker ``w`` plays logical worker
    ``(w + start_batch) % W`` and skips what that logical worker already produced.
    """

    def __init__(
        self,
        shards: Sequence[ShardEntry],
        examples: ExampleSteps,
        *,
        rank: int,
        world_size: int,
        num_workers: int,
        micro_batch_size: int,
        seed: int,
        shuffle_buffer: int,
        start_batch: int = 0,
        repeats_ok: bool = False,
    ) -> None:
        super().__init__()
        self.workers = max(num_workers, 1)
        if not repeats_ok:  # validation may repeat a small split; its batch is the train batch
            check_batch_fits(shards, world_size, num_workers, micro_batch_size)
        self.plans = plan_slots(shards, world_size * self.workers)
        self.examples = examples
        self.rank = rank
        self.mb = micro_batch_size
        self.seed = seed
        self.buffer = shuffle_buffer
        self.start_batch = start_batch

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        w = info.id if info is not None else 0
        logical = (w + self.start_batch) % self.workers
        done = _count_congruent(self.start_batch, self.workers, logical)
        slot = self.rank * self.workers + logical
        stream = slot_stream(self.plans[slot], self.seed, slot, self.buffer, skip=done * self.mb)
        while True:
            try:
                built = [self.examples.build(next(stream)) for _ in range(self.mb)]
            except InputError as exc:
                if info is None:
                    raise
                # DataLoader would re-raise it as a RuntimeError holding the worker's traceback
                yield {_ERROR: (exc.path, exc.reason, exc.line)}
                return
            yield self.examples.collate(built)


_ERROR = "__input_error__"


def iter_batches(loader: Any) -> Iterator[dict]:
    """The loader's batches; a data error from a worker is raised here as an ``InputError``."""
    for batch in loader:
        if _ERROR in batch:
            path, reason, line = batch[_ERROR]
            raise InputError(path, reason, line)
        yield batch


def make_loader(dataset: ShardBatches, num_workers: int, seed: int = 0) -> DataLoader:
    """A DataLoader over already-batched items (workers tokenise and pad).

    Its own generator keeps it from drawing a base seed from the global torch RNG when the
    iterator starts, which would shift the RNG stream of a resumed run against an uninterrupted one.
    """
    return DataLoader(
        dataset,
        batch_size=None,
        num_workers=num_workers,
        persistent_workers=False,
        prefetch_factor=4 if num_workers else None,
        generator=torch.Generator().manual_seed(seed),
        worker_init_fn=_own_process_group if num_workers else None,
    )


def _own_process_group(worker_id: int) -> None:
    """Move a loader worker out of the launcher's process group.

    A cluster's preemption SIGTERM often goes to a whole process group; a worker dying of it turns
    the trainer's clean "save and exit" into a DataLoader error. In its own group the worker only
    hears its parent, which stops it as usual (torch's worker handler exits quietly on the
    parent's SIGTERM) and which it watches anyway, so it cannot outlive the trainer.
    """
    os.setpgid(0, 0)


def preflight(examples: ExampleSteps, shards: Sequence[ShardEntry], per_shard: int = 4) -> None:
    """Build the first samples of every shard: a window or target over the limits fails now.

    Why: the loader refuses such a sample where it meets it, which may be hours into a run; the
    usual cause (windows baked longer than ``--max_src_tokens`` allows, or a dense annotation's
    long targets) shows in the first windows of a genome's shard, so it is caught before any
    work. Reads a few tar headers per shard (no hashing: the loader checks whole shards).
    """
    for shard in shards:
        for n, sample in enumerate(_iter_tar(ShardEntry(shard.path, shard.count))):
            if n == per_shard:
                break
            sample["__shard__"] = shard.path
            examples.build(sample)


def first_samples(shards: Sequence[ShardEntry], n: int) -> list[dict[str, Any]]:
    """The first ``n`` raw samples of a split in path order (for the greedy-decode metric)."""
    out: list[dict[str, Any]] = []
    for shard in sorted(shards, key=lambda s: s.path):
        for sample in _iter_tar(shard):
            sample["__shard__"] = shard.path
            text_field(sample, "dna.txt", "ascii")  # a bad sample is named here, not a KeyError
            text_field(sample, "features.json", "utf-8")
            out.append(sample)
            if len(out) == n:
                return out
    return out
