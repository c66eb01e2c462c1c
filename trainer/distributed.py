"""The one home of the process-group helpers: join or make a group, sum, broadcast, barrier, port.

Under ``deepspeed``/``torchrun`` the trainer's ``deepspeed.initialize`` creates the expert-parallel
groups; a plain ``python`` process (tests, annotate) has no process group at all. DeepSpeed's MoE
forward needs none at ``ep_size=1``, but its group bookkeeping (``set_deepspeed_parallelism``) does,
so ``ensure_process_group`` makes a 1-process gloo world when nothing is initialised.

The collectives here (``all_sum``, ``from_rank0``, ``barrier``) are no-ops without a process group,
so code that calls them runs unchanged in one process. ``torch.distributed`` is imported inside the
functions: ``free_port`` serves launchers (the demo) that never load torch.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    import torch.distributed as dist

log = logging.getLogger(__name__)


def free_port() -> int:
    """A TCP port on 127.0.0.1 free right now (for a one-machine rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _initialized() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def ensure_process_group(init_deepspeed: bool = True) -> bool:
    """Initialise a single-process gloo group if torch.distributed is not initialised.

    Returns True when it created one. With ``init_deepspeed`` DeepSpeed's communication layer is
    pointed at it too (``deepspeed.init_distributed`` reuses an existing torch group).
    """
    import torch.distributed as dist

    created = False
    if not dist.is_initialized():
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
        created = True
        log.debug("process_group=gloo world_size=1 created=true")
    if init_deepspeed:
        import deepspeed
        from deepspeed.accelerator import get_accelerator

        if get_accelerator().device_name() == "cpu":
            disable_cpu_shm_comm()  # else ~50 s compiling a comm op
        deepspeed.init_distributed(dist_backend=dist.get_backend(), auto_mpi_discovery=False)
    return created


def join_launcher_group(accelerator: str) -> tuple[int, int, int]:
    """Join the launcher's process group (or make a one-process one); returns rank, world, local.

    deepspeed, torchrun and mpirun leave their world in the environment; plain ``python`` has none,
    so a one-rank world on a free local port stands in.
    """
    import deepspeed
    import torch.distributed as dist

    under_mpi = "OMPI_COMM_WORLD_RANK" in os.environ or "PMI_RANK" in os.environ
    if "RANK" not in os.environ and not under_mpi:
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", LOCAL_SIZE="1")
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(free_port()))
    if accelerator == "cpu":
        disable_cpu_shm_comm()
    if not dist.is_initialized():
        backend = "gloo" if accelerator == "cpu" else None
        deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=under_mpi)
    rank, world = dist.get_rank(), dist.get_world_size()
    local = int(os.environ.get("LOCAL_RANK", "0"))
    return rank, world, local


def join_torchrun_group() -> tuple[int, int, int, bool]:
    """Join ``torchrun``'s world when it has more than one process;
    ``(rank, world, local rank, created)``.

    A light join for inference (no DeepSpeed): gloo over ``env://``, since only pickled Python
    objects cross ranks, which gloo carries for CPU and GPU runs alike. Plain ``python`` (or a
    one-process ``torchrun``) makes no group: ``(0, 1, 0, False)``. ``created`` says whether this
    call made the group, so that only its maker destroys it (``leave_process_group``).
    """
    import torch.distributed as dist

    created = False
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not _initialized():
        dist.init_process_group("gloo", init_method="env://")
        created = True
        log.debug("process_group=gloo world_size=%d joined", dist.get_world_size())
    if not _initialized():
        return 0, 1, 0, False
    rank, world = dist.get_rank(), dist.get_world_size()
    return rank, world, int(os.environ.get("LOCAL_RANK", "0")), created


def leave_process_group(created: bool) -> None:
    """Destroy the process group this process made (a rank then exits without gloo's teardown).

    Why only a group it made: a caller's own group (a training run's, which DeepSpeed caches its
    sub-groups on) must outlive an annotate call made in the same process.
    """
    import torch.distributed as dist

    if created and _initialized():
        dist.destroy_process_group()


def world_rank() -> int:
    """This process's global rank (0 without a process group)."""
    import torch.distributed as dist

    return dist.get_rank() if _initialized() else 0


def all_sum(values: list[float], device: torch.device) -> list[float]:
    """Element-wise sum of ``values`` over all ranks (float64; ``values`` itself in one process)."""
    import torch
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=device)
    if _initialized():
        dist.all_reduce(t)
    return t.tolist()


def all_max(value: int, device: torch.device) -> int:
    """The largest ``value`` over all ranks."""
    import torch
    import torch.distributed as dist

    if not _initialized():
        return value
    t = torch.tensor([value], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


def from_rank0(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (one small broadcast), so all ranks take the same branch."""
    import torch.distributed as dist

    if not _initialized():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather(value: Any) -> list[Any]:
    """Every rank's ``value``, in rank order, on every rank (``[value]`` in one process)."""
    import torch.distributed as dist

    if not _initialized():
        return [value]
    box: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(box, value)
    return box


def barrier() -> None:
    """Wait for every rank (nothing to wait for in one process)."""
    import torch.distributed as dist

    if _initialized():
        dist.barrier()


def expert_parallel_group(ep_size: int) -> dist.ProcessGroup | None:
    """DeepSpeed's expert-parallel group for ``ep_size`` once created, else None."""
    if ep_size <= 1 or not _initialized():
        return None
    from deepspeed.utils import groups

    return groups._get_expert_parallel_group_dict().get(f"ep_size_{ep_size}")


def expert_parallel_rank(ep_size: int) -> int:
    """This process's rank inside its expert-parallel group.

    DeepSpeed's default (expert-then-data) layout puts consecutive ranks in one expert group, so
    before the groups exist the rank is ``global_rank % ep_size``.
    """
    import torch.distributed as dist

    if ep_size <= 1:
        return 0
    group = expert_parallel_group(ep_size)
    if group is not None:
        return dist.get_rank(group=group)
    return world_rank() % ep_size


def disable_cpu_shm_comm() -> None:
    """Stop DeepSpeed's CPU backend from compiling its shared-memory comm op (~50 s per start).

    ``deepspeed.comm.torch.build_shm_op`` only builds the op when ``deepspeed.ops.__compatible_ops__``
    marks ``deepspeed_shm_comm`` compatible; that dict is probed lazily and cached in the module, so
    seeding it here (before ``init_distributed``) makes the backend use plain gloo collectives, which
    is what CI-sized CPU runs want. No effect on GPU accelerators, which never build this op.
    """
    import deepspeed.ops as ds_ops

    compatible = ds_ops.__dict__.get("__compatible_ops__")
    if compatible is None:
        ds_ops.__dict__["__compatible_ops__"] = {"deepspeed_shm_comm": False}
    else:
        compatible["deepspeed_shm_comm"] = False
    log.debug("deepspeed shm comm op disabled")


def exit_process(code: int) -> None:
    """End a launched rank with exactly ``code``, skipping interpreter teardown after an error.

    A rank that leaves with an error while its gloo process group is still alive can abort in
    teardown (``terminate called without an active exception``, exit -6) instead of returning the
    ``2`` its error line promised, so the launcher reports a crash. After an error there is nothing
    left to finalise (checkpoints are written atomically), so streams are flushed and the process
    ends with ``os._exit``; a clean exit is a plain ``sys.exit``.
    """
    import sys

    if code != 0:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    leave_all_groups()
    sys.exit(code)


def leave_all_groups() -> None:
    """Destroy every process group before a clean exit.

    Why: a gloo group still alive at interpreter teardown can abort the rank after its work is
    done (``terminate called without an active exception``, exit -6; seen once in 700 test runs of
    a 2-rank training that had finished and saved), and the launcher then reports a crash.
    """
    import torch.distributed as dist

    if _initialized():
        with contextlib.suppress(Exception):  # teardown only: the work is already saved
            dist.destroy_process_group()
