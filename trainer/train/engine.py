"""``train(cfg) -> TrainResult``: the DeepSpeed loop behind every launcher.

deepspeed, torchrun, mpirun and plain ``python`` all end here: the process group comes from the
launcher's environment (or a one-process gloo group), the model from ``init_model``'s folder, the
batches from ``trainer.data.loader``. ZeRO-2 and bf16 come from the DeepSpeed JSON; MoE parameters get their
own optimizer groups as DeepSpeed requires; ``--ep_size`` is checked before anything is built.

A run is built in order, each part whole before the next: the set-up (``trainer.train.setup``:
every decision, frozen in a ``RunSetup``), the run folder and engine (``open_run``), the start
(fresh, or the checkpoint resumed: ``Start``), the feed (encoder, batches, what a step needs),
the monitor; only then the ``_Run`` that the phases share, constructed in one call. What changes
per step (``TrainerState``, the result, this run's throughput counters) is kept apart from what
never does. Per step: the step itself (``trainer.train.step``), its record (metrics,
TensorBoard) and the periodic work (validation, decode metric, export, checkpoint); last the
finish. Every rank runs the same number of micro-batches and the same collectives in the same
order (also for validation, the decode metric, checkpoints and export), which is what keeps
multi-rank jobs from hanging. Only rank 0 writes logs, TensorBoard and markers.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from baking.common.errors import InputError
from baking.shards.manifest import MANIFEST
from trainer.data.examples import ExampleBuilder
from trainer.data.loader import ShardBatches, iter_batches, make_loader
from trainer.train import checkpoint as ckpt
from trainer.train import reshard, resume_check
from trainer.train.config import TrainConfig
from trainer.train.ds_engine import TrainEngine
from trainer.train.export import export_model, export_scores
from trainer.train.monitor import Monitor, peak_flops, train_flops
from trainer.train.observe import TrainObserver
from trainer.train.run_folder import append_metrics, truncate_metrics
from trainer.train.setup import RunSetup, open_run, prepare
from trainer.train.step import StepInputs, StepStats, TrainingError, engine_scalars, run_step
from trainer.train.targets import make_encoder, orf_code
from trainer.train.validation import decode_metric, validation_loss

__all__ = ["Start", "TrainResult", "TrainingError", "resume_point", "train"]

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a finished (or cleanly stopped) run reports; losses are global means per step."""

    steps: int
    losses: list[float] = field(default_factory=list)
    val_loss: float | None = None
    nan_steps: int = 0
    stopped_by: str = "max_steps"
    checkpoint: str | None = None
    export_dir: str | None = None
    tokens_per_s: float = 0.0
    samples_per_s: float = 0.0


class _Stop:
    """SIGTERM/SIGUSR1 set a flag; the loop agrees on it across ranks and stops after a save."""

    def __init__(self) -> None:
        self.requested = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _Stop:
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            with contextlib.suppress(ValueError):  # not the main thread: no handler
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        log.warning("signal=%d received: checkpoint and stop after this step", signum)
        self.requested = True

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


# ------------------------------------------------------------------------------------- start


@dataclass(frozen=True)
class Start:
    """Where the run begins: a fresh state, or the one of the checkpoint it resumed."""

    state: ckpt.TrainerState
    """The loop's state from here on (the same object the loop advances)."""
    checkpoint: Path | None = None
    """The checkpoint loaded (None: a fresh start)."""
    changed: str | None = None
    """Settings changed since that checkpoint (stated in the log and TensorBoard)."""


def fresh_state(setup: RunSetup) -> ckpt.TrainerState:
    """Step 0 of this run's topology, carrying its resume record."""
    cfg, plan = setup.cfg, setup.plan
    return ckpt.TrainerState(
        world_size=setup.topo.world,
        num_workers=cfg.num_workers,
        micro_batch_size=plan.micro_batch,
        seed=cfg.seed,
        ep_size=cfg.ep_size,
        grad_accum=plan.grad_accum,
        record=setup.record,
    )


def resume_point(setup: RunSetup, engine: TrainEngine) -> Start:
    """Load the newest intact checkpoint into the engine (``--resume``, ``--export_only``).

    Checkpoints whose files do not match their record are skipped with a warning naming the file.
    Before any DeepSpeed file is read, the checkpoint's record is compared with this run: another
    model, other data or another target spec is refused (``resume_check``).
    """
    cfg, topo, plan = setup.cfg, setup.topo, setup.plan
    latest = ckpt.choose_checkpoint(setup.ckpt_root, rank=topo.rank, world=topo.world)
    if latest is None and cfg.export_only:
        raise InputError(setup.ckpt_root, "--export_only needs a complete checkpoint here")
    if latest is None:
        log.warning(
            "resume requested but no complete checkpoint in %s: starting fresh", setup.ckpt_root
        )
        return Start(fresh_state(setup))
    saved = ckpt.read_state(latest)
    resume_check.check_identity(
        saved.record,
        setup.record,
        checkpoint=latest,
        model_path=str(Path(cfg.model) / "config.json"),
        manifest_path=str(Path(cfg.data) / MANIFEST),
    )
    saved_ep = saved.ep_size
    if saved.record is None and setup.model_cfg.use_moe:  # an older trainer did not record it
        saved_ep = reshard.checkpoint_ep_size(latest)
    if (saved.world_size, saved_ep) != (topo.world, cfg.ep_size):
        state = reshard.load_elastic(
            engine,
            latest,
            rank=topo.rank,
            world=topo.world,
            ep_size=cfg.ep_size,
            micro_batch=plan.micro_batch,
            num_workers=cfg.num_workers,
        )
    else:
        state = ckpt.load_checkpoint(engine, latest, rank=topo.rank)
        if (state.num_workers, state.micro_batch_size) != (cfg.num_workers, plan.micro_batch):
            log.warning(
                "workers or micro batch changed since the checkpoint: "
                "the data order continues from a new plan"
            )
    changed = resume_check.changed_settings(saved.record, setup.record)
    if changed and topo.rank == 0:
        log.warning(
            "resume from %s with changed settings: %s (applied from step %d on)",
            latest.name,
            changed,
            state.step + 1,
        )
    # from here on the state describes this run's topology
    state.record, state.world_size, state.ep_size = setup.record, topo.world, cfg.ep_size
    state.num_workers, state.micro_batch_size = cfg.num_workers, plan.micro_batch
    state.grad_accum = plan.grad_accum
    if topo.rank == 0:
        truncate_metrics(setup.metrics_file, state.step)
    return Start(state, latest, changed)


# -------------------------------------------------------------------------------------- feed


@dataclass(frozen=True)
class Feed:
    """What every step draws on: the batches (from the start's data position) and how to use them."""

    encoder: ExampleBuilder
    batches: Iterator[dict]
    step_inputs: StepInputs


def make_feed(setup: RunSetup, state: ckpt.TrainerState) -> Feed:
    """The loader from the state's data position, and the step's fixed inputs."""
    cfg, model_cfg, topo, plan = setup.cfg, setup.model_cfg, setup.topo, setup.plan
    ids = setup.token_ids
    encoder = make_encoder(cfg, model_cfg, str(cfg.model), ids)
    dataset = ShardBatches(
        setup.train_shards,
        encoder,
        rank=topo.rank,
        world_size=topo.world,
        num_workers=cfg.num_workers,
        micro_batch_size=plan.micro_batch,
        seed=cfg.seed,
        shuffle_buffer=cfg.shuffle_buffer,
        start_batch=state.micro_batches,
        genome_balance=cfg.genome_balance,
    )
    step_inputs = StepInputs(
        grad_accum=plan.grad_accum,
        device=topo.device,
        pad_id=ids.pad,
        align=model_cfg.use_moe and cfg.ep_size > 1,  # equal (B, T) across each expert group
        vocab=setup.vocab,
        aux_coef=model_cfg.moe_aux_loss_coef if model_cfg.use_moe else 0.0,
        joint_from=model_cfg.vocab_size,
        encoder_aux_weight=model_cfg.encoder_aux_weight,
        base_aux_weight=model_cfg.base_aux_weight,
        base_aux_class_weight=model_cfg.base_aux_class_weight,
    )
    batches = iter_batches(make_loader(dataset, cfg.num_workers, seed=cfg.seed))
    return Feed(encoder, batches, step_inputs)


# ------------------------------------------------------------------------------------- phases


@dataclass
class Progress:
    """This run's own throughput counters (not resumed: a resumed run reports its own speed)."""

    tokens: float = 0.0
    samples: float = 0.0
    last_shapes: tuple[int, int] = (0, 0)
    """(S, T) of the last micro-batch (for the MFU estimate)."""


@dataclass
class _Run:
    """What the phases of one run share, constructed whole once every part exists.

    ``setup``, ``engine``, ``start``, ``feed``, ``monitor`` and ``observer`` are fixed for the
    run; ``state``, ``result`` and ``progress`` change as it goes."""

    setup: RunSetup
    engine: TrainEngine
    start: Start
    feed: Feed
    monitor: Monitor
    peak: float | None
    """The accelerator's peak FLOP/s (MFU's denominator; None off GPU)."""
    observer: TrainObserver | None
    state: ckpt.TrainerState
    result: TrainResult
    progress: Progress = field(default_factory=Progress)

    @property
    def cfg(self) -> TrainConfig:
        return self.setup.cfg

    def validate(self) -> float:
        s, how = self.setup, self.feed.step_inputs
        return validation_loss(
            self.engine,
            s.val_shards,
            self.feed.encoder,
            rank=s.topo.rank,
            world_size=s.topo.world,
            micro_batch_size=s.plan.micro_batch,
            batches=s.cfg.eval_batches,
            seed=s.cfg.seed,
            vocab=s.vocab,
            device=s.topo.device,
            pad_id=how.pad_id,
            align=how.align,
            joint_from=how.joint_from,
        )

    def export(self) -> None:
        s = self.setup
        export_model(
            self.engine,
            s.out / "export",
            tokenizer_dir=s.cfg.model,
            rank=s.topo.rank,
            data_dir=s.cfg.data,
            scores=export_scores(self.state.step, self.result.val_loss),
        )

    def save(self) -> None:
        s = self.setup
        folder = ckpt.save_checkpoint(
            self.engine,
            s.ckpt_root,
            self.state,
            rank=s.topo.rank,
            world=s.topo.world,
            keep_last=s.cfg.keep_last,
        )
        self.result.checkpoint = str(folder)


def _take_step(run: _Run, stop_requested: bool) -> StepStats:
    """One optimizer step on every rank; returns its sums over all ranks and advances the state."""
    state, plan = run.state, run.setup.plan
    local, shapes = run_step(
        run.engine, run.feed.batches, run.feed.step_inputs, run.observer, state.step + 1
    )
    state.micro_batches += plan.grad_accum
    local.stop = 1.0 if stop_requested else 0.0
    total = local.all_reduced(run.setup.topo.device)
    state.step += 1
    state.samples += plan.samples_per_step
    state.tokens += int(total.tokens)
    run.progress.tokens += total.tokens
    run.progress.samples += plan.samples_per_step
    run.progress.last_shapes = shapes
    return total


def _record_step(run: _Run, stats: StepStats, lr: float, dt: float) -> None:
    """metrics.jsonl, the progress bar, TensorBoard scalars; then the NaN guard."""
    s = run.setup
    state, cfg, model_cfg, world = run.state, s.cfg, s.model_cfg, s.topo.world
    if stats.skipped:
        state.nan_steps += 1
        log.warning("non-finite loss: step=%d skipped (total=%d)", state.step, state.nan_steps)
    step_loss = stats.loss
    run.result.losses.append(step_loss)
    # model FLOPs of the step over all ranks (MFU's numerator; benchmarks read it back)
    flops = train_flops(
        model_cfg, int(stats.src_tokens), int(stats.tgt_tokens), *run.progress.last_shapes
    )
    if s.topo.rank == 0:
        append_metrics(
            s.metrics_file,
            {
                "step": state.step,
                "loss": step_loss,
                "lr": lr,
                "skipped": stats.skipped,
                "tokens": int(stats.tokens),
                "src_tokens": int(stats.src_tokens),
                "flops": flops,
                "seconds": round(dt, 6),
            },
        )
    run.monitor.step(state.step, step_loss, lr)
    if state.step % cfg.log_every == 0 or state.step == s.plan.total_steps:
        values = {
            "train/loss": step_loss,
            "train/lr": lr,
            "train/nan_steps": state.nan_steps,
            "perf/tokens_per_s": stats.tokens / dt,
            "perf/samples_per_s": s.plan.samples_per_step / dt,
        }
        values.update(engine_scalars(run.engine, model_cfg.use_moe, stats, s.topo.device, world))
        if model_cfg.encoder_aux_weight > 0:
            values["train/encoder_aux_loss"] = stats.encoder_aux / world
        if model_cfg.base_aux_weight > 0:
            values["train/base_aux_loss"] = stats.base_aux / world
        if run.peak:
            values["perf/mfu"] = flops / dt / (run.peak * world)
        run.monitor.scalars(state.step, values)
    if state.nan_steps > cfg.max_nan_steps:
        raise TrainingError(
            f"{state.nan_steps} steps had a NaN/inf loss (max_nan_steps={cfg.max_nan_steps}):"
            " lower the learning rate or check the data"
        )


def _periodic(run: _Run, stopping: bool) -> None:
    """Validation, decode metric, export and checkpoint when their step has come (or on a stop)."""
    s = run.setup
    cfg, step = s.cfg, run.state.step
    if cfg.eval_every and step % cfg.eval_every == 0 and s.val_shards:
        run.result.val_loss = run.validate()
        run.monitor.scalars(step, {"val/loss": run.result.val_loss})
    if cfg.decode_every and step % cfg.decode_every == 0 and s.val_shards:
        exact = decode_metric(
            run.engine,
            s.tokenizer,
            s.val_shards,
            windows=cfg.decode_windows,
            window_len=s.model_cfg.window_len,
            feature_types=s.model_cfg.feature_types,
            max_new_tokens=cfg.max_tgt_tokens,
            device=s.topo.device,
            orf_code=orf_code(cfg),
        )
        if exact is not None:
            run.monitor.scalars(step, exact)
    if cfg.export_every and step % cfg.export_every == 0:
        run.export()
    if stopping or (cfg.save_every and step % cfg.save_every == 0):
        run.save()


def _loop(run: _Run) -> None:
    """Steps until ``total_steps`` or a stop signal (agreed on by all ranks, then saved)."""
    cfg, observer = run.cfg, run.observer
    run.engine.train()
    with _Stop() as stop:
        while run.state.step < run.setup.plan.total_steps:
            t0 = time.perf_counter()
            lr = float(run.engine.get_lr()[0]) if run.engine.get_lr() else cfg.lr  # this step's
            stats = _take_step(run, stop.requested)
            dt = time.perf_counter() - t0
            if observer is not None:
                observer.step_end(run.state.step, run.engine, lr)
            _record_step(run, stats, lr, dt)
            stopping = stats.stop > 0
            _periodic(run, stopping)
            if observer is not None:
                observer.step_done(run.state.step)
            if stopping:
                run.result.stopped_by = "signal"
                break


def _nothing_to_train(run: _Run) -> TrainResult:
    """The checkpoint is already at (or past) the last step: no step, no save; export refreshed."""
    s = run.setup
    if s.topo.rank == 0:
        log.warning(
            "nothing to train: checkpoint %s is at step %d and this run ends at step %d "
            "(raise --max_steps to continue)%s",
            run.start.checkpoint.name if run.start.checkpoint else "-",
            run.state.step,
            s.plan.total_steps,
            "; export/ brought up to date" if s.cfg.export else "",
        )
    export_dir = None
    if s.cfg.export:
        run.export()
        export_dir = str(s.out / "export")
    return TrainResult(
        steps=run.state.step,
        nan_steps=run.state.nan_steps,
        stopped_by="max_steps",
        checkpoint=str(run.start.checkpoint) if run.start.checkpoint else None,
        export_dir=export_dir,
    )


def _finish(run: _Run, elapsed: float) -> TrainResult:
    """Final validation, checkpoint and export (not after a stop signal); the result."""
    s = run.setup
    cfg, state, result = s.cfg, run.state, run.result
    if result.stopped_by != "signal":
        result.stopped_by = "epochs" if s.plan.total_steps < cfg.max_steps else "max_steps"
        if s.val_shards:
            result.val_loss = run.validate()
            run.monitor.scalars(state.step, {"val/loss": result.val_loss})
        if result.checkpoint is None or not result.checkpoint.endswith(f"step_{state.step}"):
            run.save()
        if cfg.export:
            result.export_dir = str(s.out / "export")
            run.export()
    elapsed = max(elapsed, 1e-9)
    result.steps = state.step
    result.nan_steps = state.nan_steps
    result.tokens_per_s = run.progress.tokens / elapsed
    result.samples_per_s = run.progress.samples / elapsed
    return result


# ------------------------------------------------------------------------------------- train


def train(cfg: TrainConfig, observer: TrainObserver | None = None) -> TrainResult:
    """Run (or resume) a training run described by ``cfg``; every rank calls this.

    ``observer`` (``trainer.train.observe``) is called at fixed points of every step; nothing
    else changes what a run does (no environment variable is read for it).
    """
    setup = prepare(cfg)
    with open_run(setup) as engine:
        if cfg.resume or cfg.export_only:
            start = resume_point(setup, engine)
        else:
            start = Start(fresh_state(setup))
        feed = make_feed(setup, start.state)
        monitor = Monitor(
            setup.out,
            rank=setup.topo.rank,
            total_steps=setup.plan.total_steps,
            start_step=start.state.step,
        )
        peak = None
        if setup.topo.accelerator == "cuda":
            peak = peak_flops(torch.cuda.get_device_name(setup.topo.local_rank))
        run = _Run(
            setup=setup,
            engine=engine,
            start=start,
            feed=feed,
            monitor=monitor,
            peak=peak,
            observer=observer,
            state=start.state,
            result=TrainResult(steps=start.state.step, nan_steps=start.state.nan_steps),
        )
        return _run(run)


def _run(run: _Run) -> TrainResult:
    cfg = run.cfg
    if run.start.changed and run.monitor.writer is not None:
        run.monitor.writer.add_text("resume/changed", run.start.changed, run.state.step)
    try:
        if run.state.step >= run.setup.plan.total_steps and not cfg.export_only:
            return _nothing_to_train(run)
        if cfg.export_only:
            run.export()
            return TrainResult(
                steps=run.state.step,
                nan_steps=run.state.nan_steps,
                stopped_by="export_only",
                checkpoint=str(run.start.checkpoint),
                export_dir=str(run.setup.out / "export"),
            )
        t_start = time.perf_counter()
        _loop(run)
        result = _finish(run, time.perf_counter() - t_start)
    finally:
        run.monitor.close()
    log.info(
        "train done steps=%d stopped_by=%s tokens_per_s=%.1f",
        result.steps,
        result.stopped_by,
        result.tokens_per_s,
    )
    return result
