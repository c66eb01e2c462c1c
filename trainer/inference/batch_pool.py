"""Whole batches of windows decoded by persistent forked processes, one core each (annotate on a CPU).

Why: ``generate_targets`` alone splits *one* batch over the cores (``decode_workers``): the parts
finish at different times and the first to finish waits, the parent forks a child for every
batch (~20 ms CPU, ~70 ms wall on this box), and the parent's own work between batches
(tokenising the next batch, reading the last one's features) runs while the other core idles.
Here the processes are forked once per genome and each takes the next whole batch as soon as it
is free, so no core waits on another; a batch is decoded exactly as one process decodes it
(the same windows together, ``workers=1``), so the output is the one-process output.

The children inherit the loaded model copy-on-write at the fork (nothing is pickled but the
batch's DNA going out and its targets coming back); a child's error is raised in the caller.
Where the platform cannot fork, or fewer batches than processes are left, the caller decodes
batch by batch as before (``batch_processes`` says how many processes to use).
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from trainer.inference.generate import GeneratedTarget, splittable

DecodeBatch = Callable[[Sequence[str]], list[GeneratedTarget]]

_JOB: DecodeBatch | None = None
"""The batch decoder handed to forked children by inheritance (a closure does not pickle)."""


def batch_processes(model: Any, device: str | torch.device, batches: int) -> int:
    """Processes to decode ``batches`` batches with: torch's thread count on a CPU where a batch
    may run on one core (``generate.splittable``: not on an accelerator, not with MoE layers,
    not under autocast or inside torch.distributed), at most one per batch; 1 = decode here."""
    if "fork" not in multiprocessing.get_all_start_methods() or not splittable(model, device):
        return 1
    return max(1, min(torch.get_num_threads(), batches))


def _decode_in_child(batch: Sequence[str]) -> list[GeneratedTarget]:
    assert _JOB is not None, "only called in a child forked by decoded_batches"
    return _JOB(batch)


def _child_init() -> None:
    torch.set_num_threads(1)  # one core each: a waiting OpenMP thread spins on the other's core


@contextmanager
def decoded_batches(
    decode: DecodeBatch, batches: Iterable[Sequence[str]], processes: int
) -> Iterator[Iterator[list[GeneratedTarget]]]:
    """Each batch's targets, in the order of ``batches``, decoded by ``processes`` forked children
    (``processes`` <= 1: here, one batch after another). The children are stopped on leaving."""
    global _JOB
    if processes <= 1:
        yield (decode(b) for b in batches)
        return
    _JOB = decode
    try:
        with multiprocessing.get_context("fork").Pool(processes, initializer=_child_init) as pool:
            # chunksize 1: a batch is seconds of work, balance matters more than the hand-off
            yield pool.imap(_decode_in_child, batches, chunksize=1)
    finally:
        _JOB = None
