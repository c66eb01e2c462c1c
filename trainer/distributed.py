"""Process-group helpers so DeepSpeed MoE works both under a launcher and in a plain process.

Under ``deepspeed``/``torchrun`` the trainer's ``deepspeed.initialize`` creates the expert-parallel
groups; a plain ``python`` process (tests, annotate) has no process group at all. DeepSpeed's MoE
forward needs none at ``ep_size=1``, but its group bookkeeping (``set_deepspeed_parallelism``) does,
so ``ensure_process_group`` makes a 1-process gloo world when nothing is initialised.
"""

from __future__ import annotations

import logging

import torch.distributed as dist

log = logging.getLogger(__name__)


def ensure_process_group(init_deepspeed: bool = True) -> bool:
    """Initialise a single-process gloo group if torch.distributed is not initialised.

    Returns True when it created one. With ``init_deepspeed`` DeepSpeed's communication layer is
    pointed at it too (``deepspeed.init_distributed`` reuses an existing torch group).
    """
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


def world_rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def expert_parallel_group(ep_size: int) -> dist.ProcessGroup | None:
    """DeepSpeed's expert-parallel group for ``ep_size`` once created, else None."""
    if ep_size <= 1 or not (dist.is_available() and dist.is_initialized()):
        return None
    from deepspeed.utils import groups

    return groups._get_expert_parallel_group_dict().get(f"ep_size_{ep_size}")


def expert_parallel_rank(ep_size: int) -> int:
    """This process's rank inside its expert-parallel group.

    DeepSpeed's default (expert-then-data) layout puts consecutive ranks in one expert group, so
    before the groups exist the rank is ``global_rank % ep_size``.
    """
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
