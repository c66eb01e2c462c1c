"""Split a split over loader slots (one DataLoader worker of one rank) and stream each slot.

Why not webdataset's ``split_by_node`` / ``split_by_worker``: they deal shard names round-robin,
so slots read very unequal shares (on the 21 shared genomes, one shard each, 8 slots would
read 1,553 to 5,354 windows a pass; dealt by count below, 3,044 to 3,408), and with finite
streams one rank runs dry first while the others hang in the next collective. Here each slot
reads an endless, deterministic stream -- passes over its shards, each pass in a seeded order
through a seeded shuffle buffer -- and the trainer takes the same number of batches from every
rank. Shards are dealt to slots by sample count when that
balances (least-loaded first); otherwise (fewer shards than slots, or very unequal shards) every
slot reads all shards and keeps every k-th sample, trading read bandwidth for balance.

A pass is a ``webdataset.DataPipeline`` of stages: the slot's shards in the pass's order ->
``checked_shards`` (sha256) -> ``tar_samples`` (webdataset's tar reading and grouping) ->
``take_every`` (strided plans) -> genome balancing (``trainer.data.balance``) ->
``seeded_shuffle`` -> ``webdataset.slice`` (the rest of a resumed pass).

Because a slot's stream is a pure function of (seed, slot, pass), a resume only needs the number
of samples consumed: whole passes are skipped by arithmetic on the manifest's counts and the rest
of one pass is read without tokenising.
"""

from __future__ import annotations

import functools
import itertools
import random
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import webdataset as wds

from baking.common.errors import ConfigError
from trainer.data.balance import GenomeBalance
from trainer.data.shards import ShardEntry
from trainer.data.stages import checked_shards, seeded_shuffle, take_every, tar_samples


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


# ------------------------------------------------------------------------------------- a slot


def pass_order(plan: SlotPlan, seed: int, slot: int, p: int) -> list[ShardEntry]:
    """The slot's shards in pass ``p``'s seeded order (strided slots share one order per pass)."""
    order = list(plan.shards)
    random.Random(f"{seed}:order:{p}:{slot if plan.stride == 1 else 'all'}").shuffle(order)
    return order


def pass_genome_counts(plan: SlotPlan, seed: int, slot: int, p: int) -> Counter[str]:
    """Samples per genome the slot takes in pass ``p`` (before balancing), from the manifest."""
    counts: Counter[str] = Counter()
    g = p * plan.total
    for shard in pass_order(plan, seed, slot, p):
        lo, hi = g, g + shard.count
        if plan.stride == 1:
            n = shard.count
        else:
            k, r = plan.stride, plan.offset
            n = _count_congruent(hi, k, r) - _count_congruent(lo, k, r)
        counts[shard.genome or ""] += n
        g = hi
    return counts


def pass_yield(
    plan: SlotPlan, seed: int, slot: int, p: int, balance: GenomeBalance | None = None
) -> int:
    """Samples a slot's stream holds in pass ``p``."""
    if balance is None:
        return plan.yield_in_pass(p)
    return balance.pass_yield(pass_genome_counts(plan, seed, slot, p), slot, p)


def pass_pipeline(
    plan: SlotPlan,
    seed: int,
    slot: int,
    p: int,
    buffer: int,
    *,
    balance: GenomeBalance | None = None,
    skip: int = 0,
) -> wds.DataPipeline:
    """Pass ``p`` of a slot as webdataset stages (see the module doc); ``skip``: samples of the
    pass already consumed (a resume), dropped before any tokenising."""
    return wds.DataPipeline(
        functools.partial(iter, pass_order(plan, seed, slot, p)),  # (a list would be stages)
        checked_shards,
        tar_samples,
        (
            functools.partial(
                take_every, stride=plan.stride, offset=plan.offset, start=p * plan.total
            )
            if plan.stride > 1
            else None
        ),
        functools.partial(balance.stage, slot=slot, p=p) if balance is not None else None,
        functools.partial(
            seeded_shuffle, buffer=buffer, rng=random.Random(f"{seed}:buffer:{slot}:{p}")
        ),
        wds.slice(skip, None) if skip else None,
    )


def slot_stream(
    plan: SlotPlan,
    seed: int,
    slot: int,
    buffer: int,
    skip: int = 0,
    balance: GenomeBalance | None = None,
) -> Iterator[dict]:
    """The slot's endless sample stream, starting after ``skip`` samples."""
    first = 0
    while skip:  # whole passes: arithmetic only
        n = pass_yield(plan, seed, slot, first, balance)
        if skip < n:
            break
        skip -= n
        first += 1
    for p in itertools.count(first):
        yield from pass_pipeline(plan, seed, slot, p, buffer, balance=balance, skip=skip)
        skip = 0
