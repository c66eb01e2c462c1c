"""Stream the baker's webdataset shards into padded batches, equal in number on every rank.

A rank's loader is a ``webdataset.DataPipeline``: each DataLoader worker (a *slot*, see
``trainer.data.slots``) reads its endless, deterministic sample stream -- shards in a seeded
order, sha256-checked, read and grouped by webdataset, strided, genome-balanced
(``trainer.data.balance``), shuffled -- then ``map`` turns each sample into model inputs (the
encoder's per-sample function), ``batched`` pads full micro-batches and ``equal_batches`` keeps
the stream endless, so the trainer takes the same number of batches from every rank.

Each shard is checked against the sha256 and size ``manifest.json`` records for it, once per
process, while it is first read (the bytes pass through the hash on their way to the tar reader):
a shard altered after baking fails at its end, by name. A bad sample fails naming
``shard.tar: key: reason``. Errors raised in a DataLoader worker reach the trainer as the same
``InputError`` (``iter_batches``), not as the worker's traceback.
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from baking.common.errors import InputError
from trainer.data.balance import GenomeBalance
from trainer.data.shards import ShardEntry, read_manifest, split_shards
from trainer.data.slots import (
    SlotPlan,
    _count_congruent,
    batches_per_epoch,
    check_batch_fits,
    plan_slots,
    slot_stream,
)
from trainer.data.stages import checked_shards, equal_batches, tar_samples
from trainer.model.seq2seq import IGNORE_INDEX

__all__ = [
    "IGNORE_INDEX",
    "ShardEntry",
    "SlotPlan",
    "batches_per_epoch",
    "check_batch_fits",
    "plan_slots",
    "read_manifest",
    "slot_stream",
    "split_shards",
]

log = logging.getLogger(__name__)


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

    ``genome_balance`` (``trainer.data.balance``): each genome's share of a pass is proportional
    to its windows to that power (1.0: to its size, as without balancing).
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
        genome_balance: float = 1.0,
    ) -> None:
        super().__init__()
        self.workers = max(num_workers, 1)
        if not repeats_ok:  # validation may repeat a small split; its batch is the train batch
            check_batch_fits(shards, world_size, num_workers, micro_batch_size)
        self.plans = plan_slots(shards, world_size * self.workers)
        self.balance = GenomeBalance.for_shards(shards, genome_balance, seed)
        self.examples = examples
        self.rank = rank
        self.mb = micro_batch_size
        self.seed = seed
        self.buffer = shuffle_buffer
        self.start_batch = start_batch

    def pipeline(self, logical: int) -> wds.DataPipeline:
        """Logical worker ``logical``'s batches: its slot's samples -> model inputs -> batches."""
        done = _count_congruent(self.start_batch, self.workers, logical)
        slot = self.rank * self.workers + logical
        samples = functools.partial(
            slot_stream,
            self.plans[slot],
            self.seed,
            slot,
            self.buffer,
            skip=done * self.mb,
            balance=self.balance,
        )
        return wds.DataPipeline(
            samples,
            wds.map(self.examples.build),
            wds.batched(self.mb, collation_fn=self.examples.collate, partial=False),
            equal_batches,
        )

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        w = info.id if info is not None else 0
        batches = iter(self.pipeline((w + self.start_batch) % self.workers))
        while True:
            try:
                batch = next(batches)
            except InputError as exc:
                if info is None:
                    raise
                # DataLoader would re-raise it as a RuntimeError holding the worker's traceback
                yield {_ERROR: (exc.path, exc.reason, exc.line)}
                return
            yield batch


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
        samples = tar_samples(checked_shards([shard], verify=False))
        for sample in itertools.islice(samples, per_shard):
            examples.build(sample)


def first_samples(shards: Sequence[ShardEntry], n: int) -> list[dict[str, Any]]:
    """The first ``n`` raw samples of a split in path order (for the greedy-decode metric)."""
    out: list[dict[str, Any]] = []
    ordered = sorted(shards, key=lambda s: s.path)
    for sample in itertools.islice(tar_samples(checked_shards(ordered)), n):
        text_field(sample, "dna.txt", "ascii")  # a bad sample is named here, not a KeyError
        text_field(sample, "features.json", "utf-8")
        out.append(sample)
    return out
