"""Elastic resume: load a ZeRO-2 checkpoint saved at another world size and/or ``ep_size``.

DeepSpeed refuses this (ZeRO-2 partitions the fp32 master weights and the Adam moments over the
data-parallel ranks; its universal checkpoint, which could re-partition them, rejects MoE,
deepspeed#5716). But a ZeRO-1/2 optimizer file says exactly where each parameter's fragment lies:
``param_slice_mappings`` names every parameter of a group with its ``(start, numel)`` inside that
rank's flat fp32 partition, and the Adam moments share the partition's layout. So:

1. **Read.** For every saved rank ``r`` and group ``g``, cut each named fragment out of the fp32
   partition and of ``exp_avg`` / ``exp_avg_sq``; concatenating a parameter's fragments in rank
   order gives the full flat tensor (ZeRO splits a group's flat buffer over its data-parallel
   ranks in rank order). Expert parameters carry *local* names (``deepspeed_experts.0`` on every
   expert-parallel rank); rank ``r`` holds expert-parallel rank ``r % ep_size``'s experts
   (DeepSpeed's default group layout), so its names map to global expert ids
   (``ExpertShard.to_global``). Expert groups are partitioned over the ranks that hold the same
   experts (``r, r + ep_size, ...``), which the rank order also respects.
2. **Write.** The new engine was built for the new topology; each of its parameters has a
   ``_hp_mapping`` saying which slice of the full tensor this rank's partition holds and where.
   Those slices of the full fp32 master, ``exp_avg`` and ``exp_avg_sq`` are copied into the
   partition and a fresh Adam state (with the saved step count), and the bf16 module weights are
   set to the fp32 masters rounded to bf16 -- what ZeRO's step leaves them as.
3. **The rest** of DeepSpeed's state is topology-free: the LR scheduler position and the step /
   sample counters come from ``mp_rank_00_model_states.pt``.

No DeepSpeed load function runs (they assume the saved partitioning); DeepSpeed's files are read
with ``torch.load(weights_only=True)`` and the checkpoint module's allow-list. Every rank reads
every optimizer file but keeps only the fragments of its own parameters (non-expert parameters,
and the experts it holds), so its memory is bounded by its own share of the model in fp32 x 3.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from baking.common.errors import InputError
from trainer.train.ds_engine import TrainEngine

log = logging.getLogger(__name__)

_OPTIM_FILE = re.compile(r"^(?:bf16_|fp16_)?zero_pp_rank_(\d+)_mp_rank_00_optim_states\.pt$")
_MOE_GROUP = re.compile(r"^ep_size_(\d+)$")
MOMENTS = ("exp_avg", "exp_avg_sq")


@dataclass
class FullState:
    """Unpartitioned fp32 master weights and Adam moments, by canonical (global-expert) name."""

    fp32: dict[str, torch.Tensor] = field(default_factory=dict)
    exp_avg: dict[str, torch.Tensor] = field(default_factory=dict)
    exp_avg_sq: dict[str, torch.Tensor] = field(default_factory=dict)
    step: torch.Tensor | None = None
    """Adam's step count (the same in every group: they all step together)."""
    world_size: int = 1
    ep_size: int = 1


def optimizer_files(folder: Path) -> dict[int, Path]:
    """``{rank: path}`` of a checkpoint's ZeRO optimizer files."""
    found: dict[int, Path] = {}
    for p in folder.iterdir():
        m = _OPTIM_FILE.match(p.name)
        if m:
            found[int(m.group(1))] = p
    return dict(sorted(found.items()))


def _saved_ep_size(osd: dict[str, Any]) -> int:
    """The ``ep_size`` of the run that wrote an optimizer file (its MoE group names), 1 if dense."""
    for group in osd["base_optimizer_state"]["param_groups"]:
        m = _MOE_GROUP.match(str(group.get("name", "")))
        if group.get("moe") and m:
            return int(m.group(1))
    return 1


def checkpoint_ep_size(folder: str | Path) -> int:
    """The ``ep_size`` a checkpoint was saved with, from its rank-0 optimizer file.

    For checkpoints of trainers that did not record it in ``trainer_state.json``.
    """
    from trainer.train.checkpoint import safe_torch_load

    files = optimizer_files(Path(folder))
    if 0 not in files:
        raise InputError(folder, "no ZeRO optimizer file of rank 0")
    try:
        return _saved_ep_size(safe_torch_load(files[0])["optimizer_state_dict"])
    except (KeyError, TypeError) as exc:
        raise InputError(files[0], f"not a ZeRO-1/2 optimizer state ({exc})") from None


def read_full_state(
    folder: str | Path,
    *,
    num_experts: int | None,
    wanted: set[str] | None = None,
) -> FullState:
    """Rebuild the full fp32 masters and Adam moments from every rank's ZeRO-1/2 optimizer file.

    ``num_experts``: experts per MoE layer (None for a dense model). ``wanted``: canonical names to
    keep (None: all). A missing rank file, a fragment that does not add up, or a file that is not
    a ZeRO-1/2 optimizer state is an ``InputError`` naming the file.
    """
    from trainer.model.moe import ExpertShard
    from trainer.train.checkpoint import safe_torch_load

    folder = Path(folder)
    files = optimizer_files(folder)
    world = len(files)
    if world == 0 or sorted(files) != list(range(world)):
        raise InputError(
            folder, f"ZeRO optimizer files for ranks 0..N-1 expected, found {sorted(files)}"
        )
    pieces: dict[str, list[dict[str, torch.Tensor]]] = {}
    state = FullState(world_size=world)
    for rank, path in files.items():
        try:
            osd = safe_torch_load(path)["optimizer_state_dict"]
            ep = _saved_ep_size(osd)
            shard = ExpertShard(num_experts or ep, ep, rank % ep)
            base = osd["base_optimizer_state"]
            for g, mapping in enumerate(osd["param_slice_mappings"]):
                flat = osd["single_partition_of_fp32_groups"][g]
                key = base["param_groups"][g]["params"][0]
                adam = base["state"].get(key, {})
                if state.step is None and "step" in adam:
                    state.step = adam["step"].clone()
                for name, frag in mapping.items():
                    canonical = shard.to_global(name)
                    if wanted is not None and canonical not in wanted:
                        continue
                    # copies, not views: the rest of this file is freed before the next one
                    part = {"fp32": flat.narrow(0, frag.start, frag.numel).clone()}
                    for m in MOMENTS:
                        moment = adam.get(m)
                        part[m] = (
                            moment.narrow(0, frag.start, frag.numel).clone()
                            if moment is not None
                            else torch.zeros(frag.numel)
                        )
                    pieces.setdefault(canonical, []).append(part)
        except (KeyError, IndexError, TypeError, AttributeError, RuntimeError) as exc:
            why = (str(exc).splitlines() or [""])[0][:160]
            raise InputError(
                path, f"not a ZeRO-1/2 optimizer state ({type(exc).__name__}: {why})"
            ) from None
        state.ep_size = ep
    for name, parts in pieces.items():
        state.fp32[name] = torch.cat([p["fp32"] for p in parts]).float()
        state.exp_avg[name] = torch.cat([p["exp_avg"] for p in parts]).float()
        state.exp_avg_sq[name] = torch.cat([p["exp_avg_sq"] for p in parts]).float()
    return state


def load_resharded(engine: TrainEngine, folder: str | Path) -> FullState:
    """Put a checkpoint saved at another topology into ``engine`` (this rank's share of it).

    Local to this rank (no collective). Returns the full state it read (for logging and tests).
    """
    from trainer.train.checkpoint import apply_schedule, safe_torch_load

    folder = Path(folder)
    module = engine.module
    shard = module.expert_shard() if hasattr(module, "expert_shard") else None
    names = {id(p): n for n, p in module.named_parameters()}
    canonical = {n: (shard.to_global(n) if shard is not None else n) for n in names.values()}
    num_experts = module.config.num_experts if getattr(module.config, "use_moe", False) else None
    full = read_full_state(folder, num_experts=num_experts, wanted=set(canonical.values()))
    missing = sorted(c for c in canonical.values() if c not in full.fp32)
    if missing:
        raise InputError(folder, f"the checkpoint has no optimizer state for {missing[0]}")
    for n, p in module.named_parameters():
        want = full.fp32[canonical[n]]
        if want.numel() != p.numel():
            raise InputError(
                folder, f"{canonical[n]}: {want.numel()} values saved, the model has {p.numel()}"
            )
    _write_partitions(engine.optimizer, names, canonical, full)
    with torch.no_grad():
        for n, p in module.named_parameters():
            p.data.copy_(full.fp32[canonical[n]].view_as(p).to(p.dtype))
    model_file = folder / "mp_rank_00_model_states.pt"
    saved = safe_torch_load(model_file)
    try:
        if engine.lr_scheduler is not None and saved.get("lr_scheduler") is not None:
            engine.lr_scheduler.load_state_dict(saved["lr_scheduler"])
        apply_schedule(engine)
        engine.global_steps = int(saved["global_steps"])
        engine.global_samples = int(saved.get("global_samples", 0))
        engine.skipped_steps = int(saved.get("skipped_steps", 0))
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(model_file, f"not a DeepSpeed model state ({exc})") from None
    return full


def _write_partitions(
    opt: Any, names: dict[int, str], canonical: dict[str, str], full: FullState
) -> None:
    """Copy this rank's slices of the full state into ZeRO's flat fp32 partitions and Adam state."""
    base = opt.optimizer
    for g, params in enumerate(opt.bit16_groups):
        flat = opt.single_partition_of_fp32_groups[g]
        adam = {m: torch.zeros_like(flat) for m in MOMENTS}
        for p in params:
            mapping = getattr(p, "_hp_mapping", None)
            if mapping is None:  # no fragment of this parameter in this rank's partition
                continue
            lp, hp = mapping.lp_fragment_address, mapping.hp_fragment_address
            name = canonical[names[id(p)]]
            with torch.no_grad():
                flat.narrow(0, hp.start, hp.numel).copy_(
                    full.fp32[name].narrow(0, lp.start, lp.numel)
                )
                for m in MOMENTS:
                    adam[m].narrow(0, hp.start, hp.numel).copy_(
                        getattr(full, m)[name].narrow(0, lp.start, lp.numel)
                    )
        step = full.step.clone() if full.step is not None else torch.tensor(0.0)
        base.state[flat] = {"step": step, **adam}
        for p in params:
            mapping = getattr(p, "_hp_mapping", None)
            if mapping is not None:
                mapping.set_optim_state_fragment(flat, base.state[flat])


def load_elastic(
    engine: TrainEngine,
    folder: str | Path,
    *,
    rank: int,
    world: int,
    ep_size: int,
    micro_batch: int,
    num_workers: int,
) -> Any:
    """Elastic resume of one rank: weights, masters, moments, schedule, RNG, data position.

    The data position is carried as *samples seen*: this rank's loader starts at
    ``samples / (micro_batch x world)`` micro-batches. The loader deals the shards to
    ``world x workers`` slots, so the order is exactly the uninterrupted run's when that product
    and the micro batch are unchanged (2 ranks x 1 worker -> 1 rank x 2 workers); otherwise the
    data continues from a new plan at the same point of the epoch (a warning says so).
    Returns the ``TrainerState`` to continue with.
    """
    from trainer.train.checkpoint import read_state, restore_rng, rng_file, rng_from_safetensors

    folder = Path(folder)
    saved = read_state(folder)
    full = load_resharded(engine, folder)
    if full.world_size != saved.world_size:
        raise InputError(
            folder / "trainer_state.json",
            f"says {saved.world_size} ranks saved this checkpoint, but it holds ZeRO optimizer "
            f"files of {full.world_size}",
        )
    rng = rng_file(folder, rank)
    if rng.is_file():
        restore_rng(rng_from_safetensors(rng))
    else:
        log.info(
            "rank=%d has no saved RNG state (%d ranks saved): seeded afresh", rank, full.world_size
        )
    per_batch = micro_batch * world
    state = read_state(folder)
    state.micro_batches = saved.samples // per_batch
    slots_before = saved.world_size * max(saved.num_workers, 1)
    slots_now = world * max(num_workers, 1)
    if (
        saved.samples % per_batch
        or slots_before != slots_now
        or saved.micro_batch_size != micro_batch
    ):
        log.warning(
            "elastic resume: the data continues from a new plan at sample %d of the run "
            "(exact only with the same micro batch and world x num_workers: saved %d x %d, now "
            "%d x %d)",
            saved.samples,
            saved.world_size,
            max(saved.num_workers, 1),
            world,
            max(num_workers, 1),
        )
    if rank == 0:
        log.info(
            "elastic resume step=%d from world=%d ep_size=%d to world=%d ep_size=%d: %d "
            "parameters resharded (fp32 masters, Adam moments), data at sample %d",
            saved.step,
            full.world_size,
            full.ep_size,
            world,
            ep_size,
            len(full.fp32),
            saved.samples,
        )
    return state
