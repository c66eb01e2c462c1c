"""A run's set-up: every decision made once, before the first step (``prepare``), then the run
folder and the DeepSpeed engine (``open_run``).

``prepare`` reads the model's config, the manifest and the DeepSpeed JSON, joins the launcher's
process group and settles the batch arithmetic, the target spec and the loss vocabulary; anything
that can reject the options runs here, before the run folder exists. What it returns,
``RunSetup``, is frozen: the loop, validation, checkpoints and export read it and none of them
changes it (what changes every step is ``checkpoint.TrainerState``, kept apart by the engine).
``open_run`` then takes rank 0's lock on the folder, logs the rank into it and builds the engine,
and undoes all three when the run ends, whatever way it ends.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch

from baking.common.errors import ConfigError, Dna2GffError, InputError
from baking.shards.manifest import MANIFEST, Manifest
from trainer.data.balance import GenomeBalance
from trainer.data.loader import (
    ShardEntry,
    TokenIds,
    batches_per_epoch,
    check_batch_fits,
    preflight,
    read_manifest,
    split_shards,
)
from trainer.distributed import from_rank0, join_launcher_group
from trainer.model.config import Dna2GffConfig
from trainer.train import checkpoint as ckpt
from trainer.train import resume_check
from trainer.train.config import TrainConfig
from trainer.train.ds_engine import TrainEngine, build_engine
from trainer.train.dsconfig import (
    ResolvedDSConfig,
    check_ep_size,
    load_ds_config,
    resolve_ds_config,
    use_cpu_accelerator_if_no_gpu,
)
from trainer.train.run_folder import METRICS, close_log, open_run_folder
from trainer.train.run_lock import check_not_running, take_run_lock
from trainer.train.targets import DataGrammar, data_grammar, make_encoder, target_vocab_ids

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class Topology:
    """Where this process sits in the job."""

    rank: int
    world: int
    local_rank: int
    accelerator: str
    """``cuda`` or ``cpu`` (DeepSpeed's accelerator name)."""
    device: torch.device


@dataclass(frozen=True)
class BatchPlan:
    """The batch arithmetic of the run (from the DeepSpeed JSON, the flags and the data)."""

    micro_batch: int
    grad_accum: int
    total_steps: int
    """The last step of this run (``--max_steps``, or fewer with ``--epochs``)."""
    samples_per_step: int
    """Samples of one optimizer step, all ranks together."""
    batches_per_epoch: int
    train_samples: int


@dataclass(frozen=True)
class RunSetup:
    """Everything a run decides before its folder appears; built once by ``prepare``."""

    cfg: TrainConfig
    model_cfg: Dna2GffConfig
    """The model's config with the data's target spec recorded (the export writes it)."""
    topo: Topology
    plan: BatchPlan
    ds: ResolvedDSConfig
    out: Path
    manifest: Manifest
    train_shards: list[ShardEntry]
    val_shards: list[ShardEntry]
    tokenizer: Any
    grammar: DataGrammar
    vocab: torch.Tensor | None
    """Target vocabulary of the loss (None: the whole vocabulary)."""
    record: dict[str, Any]
    """What a checkpoint of this run resumes (``resume_check``)."""

    @property
    def ckpt_root(self) -> Path:
        return self.out / "checkpoints"

    @property
    def metrics_file(self) -> Path:
        return self.out / METRICS

    @property
    def token_ids(self) -> TokenIds:
        m = self.model_cfg
        return TokenIds(m.bos_token_id, m.eos_token_id, m.pad_token_id)


def on_rank0(rank: int, check: Callable[[], T]) -> T | None:
    """``check()`` on rank 0 only; its refusal is raised on every rank (none waits for the others).

    Returns ``check``'s value on rank 0, None elsewhere.
    """
    value, problem = None, None
    if rank == 0:
        try:
            value = check()
        except Dna2GffError as exc:
            problem = str(exc)
    problem = from_rank0(problem)
    if problem is not None:
        raise ConfigError(problem)
    return value


def _join(cfg: TrainConfig, model_cfg: Dna2GffConfig, accelerator: str) -> Topology:
    """The launcher's process group, with ``--ep_size`` checked against it."""
    from deepspeed.accelerator import get_accelerator

    rank, world, local_rank = join_launcher_group(accelerator)
    check_ep_size(cfg.ep_size, world, model_cfg.num_experts if model_cfg.use_moe else None)
    if accelerator != "cpu":
        get_accelerator().set_device(local_rank)
    device = torch.device(
        get_accelerator().device_name(local_rank) if accelerator != "cpu" else "cpu"
    )
    return Topology(rank, world, local_rank, accelerator, device)


def _plan(
    cfg: TrainConfig, world: int, train_shards: list[ShardEntry]
) -> tuple[BatchPlan, ResolvedDSConfig]:
    """Micro batch, accumulation and the number of steps (``--epochs`` may cut ``--max_steps``)."""
    total_train = sum(s.count for s in train_shards)
    ds_raw = load_ds_config(cfg.deepspeed_config)
    probe = resolve_ds_config(ds_raw, cfg, world, cfg.max_steps)
    per_epoch = batches_per_epoch(total_train, world, probe.micro_batch_size)
    steps_per_epoch = max(1, per_epoch // probe.grad_accum)
    total_steps = cfg.max_steps
    if cfg.epochs is not None:
        total_steps = min(total_steps, max(1, math.ceil(cfg.epochs * steps_per_epoch)))
    ds = resolve_ds_config(ds_raw, cfg, world, total_steps)
    mb, ga = ds.micro_batch_size, ds.grad_accum
    check_batch_fits(train_shards, world, cfg.num_workers, mb)
    GenomeBalance.for_shards(train_shards, cfg.genome_balance, cfg.seed)  # refuses before any work
    plan = BatchPlan(
        micro_batch=mb,
        grad_accum=ga,
        total_steps=total_steps,
        samples_per_step=mb * ga * world,
        batches_per_epoch=per_epoch,
        train_samples=total_train,
    )
    return plan, ds


def _target_vocab(
    cfg: TrainConfig, model_cfg: Dna2GffConfig, tokenizer: Any, grammar: DataGrammar, device: Any
) -> torch.Tensor | None:
    """The loss's vocabulary (``--restrict_loss_vocab``): the target tokens of the model's types."""
    if not model_cfg.window_len or not model_cfg.feature_types:
        raise ConfigError(
            "the model needs the data's grammar (window_len, feature types) in manifest.json"
        )
    from baking.target_format.grammar import target_vocabulary

    target_tokens = target_vocabulary(model_cfg.feature_types)
    if not cfg.restrict_loss_vocab:
        return None
    return target_vocab_ids(tokenizer, target_tokens, model_cfg.eos_token_id).to(device)


def _record(
    cfg: TrainConfig,
    model_cfg: Dna2GffConfig,
    tokenizer: Any,
    manifest: Manifest,
    grammar: DataGrammar,
    plan: BatchPlan,
) -> dict[str, Any]:
    """What this run's checkpoints resume: model, data, target spec and the stated settings."""
    g = grammar
    return resume_check.make_record(
        model=resume_check.model_identity(model_cfg.to_dict(), tokenizer),
        data=resume_check.data_identity(manifest),
        target=resume_check.target_identity(g.window_len, g.feature_types, g.tokens),
        settings={
            "lr": cfg.lr,
            "min_lr": cfg.min_lr,
            "warmup_steps": cfg.warmup_steps,
            "weight_decay": cfg.weight_decay,
            "grad_clip": cfg.grad_clip,
            "total_steps": plan.total_steps,
            "global_batch": plan.samples_per_step,
            "max_src_tokens": cfg.max_src_tokens,
            "max_tgt_tokens": cfg.max_tgt_tokens,
            "genome_balance": cfg.genome_balance,
        },
    )


def prepare(cfg: TrainConfig) -> RunSetup:
    """Process group and every check of the options; nothing is written yet.

    Everything that can reject the options (data, model, ``--ep_size``, batch sizes, target
    vocabulary, an occupied run folder) runs here, before the run folder is created.
    """
    accelerator = use_cpu_accelerator_if_no_gpu()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from trainer.tokens.tokenizer import load_tokenizer

    model_cfg = Dna2GffConfig.load(cfg.model)
    manifest = read_manifest(cfg.data)
    train_shards = split_shards(cfg.data, "train")
    val_shards = split_shards(cfg.data, "val")
    if not train_shards:
        raise InputError(Path(cfg.data) / MANIFEST, "the train split has no samples")

    topo = _join(cfg, model_cfg, accelerator)
    out = Path(cfg.output)
    # rank 0 looks at the folder and tells the others (a network filesystem may lag on other nodes)
    found = from_rank0(ckpt.latest_checkpoint(out / "checkpoints") if topo.rank == 0 else None)
    if not (cfg.resume or cfg.export_only) and found is not None:
        on_rank0(topo.rank, lambda: check_not_running(out))  # a live run: say so, not "--resume"
        raise ConfigError(
            f"{out} already holds checkpoints of a run: pass --resume to continue "
            "it, or choose another --output"
        )
    plan, ds = _plan(cfg, topo.world, train_shards)
    tokenizer = load_tokenizer(str(cfg.model))
    grammar = data_grammar(manifest, tokenizer)
    model_cfg.record_target(grammar.window_len, grammar.feature_types)
    model_cfg.max_src_tokens = cfg.max_src_tokens  # annotate compares its windows with it
    vocab = _target_vocab(cfg, model_cfg, tokenizer, grammar, topo.device)
    setup = RunSetup(
        cfg=cfg,
        model_cfg=model_cfg,
        topo=topo,
        plan=plan,
        ds=ds,
        out=out,
        manifest=manifest,
        train_shards=train_shards,
        val_shards=val_shards,
        tokenizer=tokenizer,
        grammar=grammar,
        vocab=vocab,
        record=_record(cfg, model_cfg, tokenizer, manifest, grammar, plan),
    )
    encoder = make_encoder(cfg, model_cfg, str(cfg.model), setup.token_ids)
    preflight(encoder, [*train_shards, *val_shards])
    return setup


@contextlib.contextmanager
def open_run(setup: RunSetup) -> Iterator[TrainEngine]:
    """The run folder (rank 0's lock, this rank's log) and the DeepSpeed engine, for the run's
    length: the log is detached and the lock released when the block ends, however it ends."""
    cfg, rank = setup.cfg, setup.topo.rank
    # every option has passed its checks: only now does the run folder appear, this job's alone
    run_lock = on_rank0(rank, lambda: take_run_lock(setup.out))
    log_handler = None
    try:
        log_handler = open_run_folder(cfg, setup.out, rank)
        log.debug("deepspeed config %s", json.dumps(setup.ds.config, sort_keys=True))
        log.debug("train config %s", json.dumps(cfg.to_dict(), sort_keys=True))
        engine = build_engine(cfg, setup.ds, rank, setup.model_cfg)
        plan = setup.plan
        log.info(
            "train start rank=%d world=%d ep_size=%d micro_batch=%d grad_accum=%d steps=%d "
            "train_samples=%d batches_per_epoch=%d accelerator=%s",
            rank,
            setup.topo.world,
            cfg.ep_size,
            plan.micro_batch,
            plan.grad_accum,
            plan.total_steps,
            plan.train_samples,
            plan.batches_per_epoch,
            setup.topo.accelerator,
        )
        yield engine
    finally:
        close_log(log_handler)
        if run_lock is not None:
            run_lock.release()
