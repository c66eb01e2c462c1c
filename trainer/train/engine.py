"""``train(cfg) -> TrainResult``: the DeepSpeed loop behind every launcher.

deepspeed, torchrun, mpirun and plain ``python`` all end here: the process group comes from the
launcher's environment (or a one-process gloo group), the model from ``init_model``'s folder, the
batches from ``trainer.data.loader``. ZeRO-2 and bf16 come from the DeepSpeed JSON; MoE parameters get their
own optimizer groups as DeepSpeed requires; ``--ep_size`` is checked before anything is built.

A run goes through named phases: set-up (process group, engine), resume (checkpoint), data,
then per step the step itself (``trainer.train.step``), its record (metrics, TensorBoard) and the
periodic work (validation, decode metric, export, checkpoint), and last the finish. Every rank runs
the same number of micro-batches and the same collectives in the same order (also for validation,
the decode metric, checkpoints and export), which is what keeps multi-rank jobs from hanging. Only
rank 0 writes logs, TensorBoard and markers.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from baking.common.errors import ConfigError, Dna2GffError, InputError
from baking.common.files import write_text
from trainer.data.examples import ExampleBuilder
from trainer.data.loader import (
    ShardBatches,
    ShardEntry,
    TokenIds,
    batches_per_epoch,
    check_batch_fits,
    iter_batches,
    make_loader,
    preflight,
    read_manifest,
    split_shards,
)
from trainer.distributed import from_rank0, join_launcher_group
from trainer.train import checkpoint as ckpt
from trainer.train import reshard, resume_check
from trainer.train.config import TrainConfig
from trainer.train.dsconfig import (
    check_ep_size,
    load_ds_config,
    resolve_ds_config,
    use_cpu_accelerator_if_no_gpu,
)
from trainer.train.export import export_model
from trainer.train.hooks import TrainHooks
from trainer.train.monitor import Monitor, peak_flops, train_flops
from trainer.train.run_lock import RunLock, check_not_running, take_run_lock
from trainer.train.step import StepInputs, StepStats, TrainingError, engine_scalars, run_step
from trainer.train.validation import decode_metric, validation_loss

__all__ = [
    "TrainResult",
    "TrainingError",
    "data_grammar",
    "param_groups",
    "target_vocab_ids",
    "train",
]

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


# ---------------------------------------------------------------------------------- set-up pieces


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Decay matrices only; then split MoE experts into their own groups (ZeRO needs that)."""
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.ndim >= 2 and "norm" not in name.lower() else no_decay).append(p)
    groups = [
        {"name": "decay", "params": decay, "weight_decay": weight_decay},
        {"name": "no_decay", "params": no_decay, "weight_decay": 0.0},
    ]
    groups = [g for g in groups if g["params"]]
    from deepspeed.moe.utils import split_params_into_different_moe_groups_for_optimizer

    return split_params_into_different_moe_groups_for_optimizer(groups)


def _restore_fp32_masters(module: torch.nn.Module, masters: dict[str, torch.Tensor]) -> None:
    """Put the exact fp32 starting weights back into ZeRO's fp32 master partitions.

    DeepSpeed casts the module to bf16 before it builds the fp32 masters, so without this the
    pre-trained weights would start rounded to bf16. Local to each rank (no collective).
    """
    if not masters:
        return
    from deepspeed.utils import safe_set_full_fp32_param

    for name, p in module.named_parameters():
        if name in masters:
            safe_set_full_fp32_param(p, masters[name].to(p.device))


def target_vocab_ids(tokenizer: Any, tokens: list[str] | None, eos_id: int) -> torch.Tensor:
    """Ids the decoder may predict: the target vocabulary plus ``[SEP]`` (sorted, unique).

    ``tokens`` comes from the baked data's grammar; without it, every added non-special token of
    the tokenizer (what ``init_tk`` / ``append_tk`` add) counts as an annotation token.
    """
    ids: set[int] = {eos_id}
    if tokens:
        from trainer.tokens.tokenizer import target_to_ids

        try:
            ids.update(target_to_ids(tokenizer, list(tokens)))
        except KeyError as exc:
            raise ConfigError(
                f"the data's targets use a token the model lacks: {exc.args[0]}"
            ) from None
    else:
        for i, added in tokenizer.get_added_tokens_decoder().items():
            if not added.special:
                ids.add(int(i))
    if len(ids) < 2:
        raise ConfigError(
            "no target vocabulary: the tokenizer has no annotation tokens (run init_tk)"
        )
    return torch.tensor(sorted(ids), dtype=torch.long)


@dataclass(frozen=True)
class DataGrammar:
    """What the baked data says about its targets (``manifest.json`` -> ``grammar``)."""

    window_len: int | None
    feature_types: list[str] | None
    tokens: list[str] | None


def data_grammar(manifest: dict[str, Any], tokenizer: Any) -> DataGrammar:
    """Window length, feature types and target tokens of the baked data.

    Feature types are kept only when the tokenizer knows their type token (what the model can
    emit); the token list falls back to the grammar's full vocabulary for those types.
    """
    g = manifest.get("grammar") or {}
    args = manifest.get("args") or {}
    window = g.get("window_len", args.get("window_len"))
    types = g.get("feature_types", args.get("types"))
    tokens = g.get("tokens")
    if types:
        from baking.target_format.grammar import target_vocabulary, type_token

        types = [t for t in types if tokenizer.token_to_id(type_token(t)) is not None]
        if tokens is None and window and types:
            tokens = list(target_vocabulary(types))
    return DataGrammar(int(window) if window else None, list(types) if types else None, tokens)


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop lines logged after ``step`` (by a run that died after its last checkpoint).

    A run killed mid-write leaves a torn last line: it, like any line that is not a step's
    record, is dropped with a warning rather than stopping the resume (the checkpoint, not this
    log, is what the run continues from)."""
    if not path.is_file():
        return
    keep, torn = [], 0
    for ln in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not ln:
            continue
        try:
            row = json.loads(ln)
            logged_step = int(row["step"])
        except (ValueError, TypeError, KeyError, RecursionError):
            torn += 1
            continue
        if logged_step <= step:
            keep.append(ln)
    if torn:
        log.warning("%s: %d line(s) that are no step record dropped (a torn write?)", path, torn)
    write_text(path, "".join(ln + "\n" for ln in keep))


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


# ------------------------------------------------------------------------------------- phases


@dataclass
class _Run:
    """What the phases of one run share, built by ``_set_up`` and ``_set_up_data``."""

    cfg: TrainConfig
    model_cfg: Any
    rank: int
    world: int
    local_rank: int
    accelerator: str
    device: torch.device
    out: Path
    latest: Path | None
    """The newest complete checkpoint (rank 0's view, shared); after ``_resume``, the one loaded."""
    engine: Any
    micro_batch: int
    grad_accum: int
    total_steps: int
    state: ckpt.TrainerState
    train_shards: list[ShardEntry]
    val_shards: list[ShardEntry]
    manifest: dict[str, Any]
    result: TrainResult
    log_handler: logging.Handler | None
    """This rank's ``train.rank{R}.log`` (removed again when ``train`` returns)."""
    run_lock: RunLock | None
    """Rank 0's lock on the run folder (released when ``train`` returns); None on other ranks."""
    tokenizer: Any
    grammar: DataGrammar
    vocab: torch.Tensor | None
    """Target vocabulary of the loss (None: the whole vocabulary)."""
    # filled by _set_up_data
    encoder: ExampleBuilder | None = None
    batches: Iterator[dict] | None = None
    step_inputs: StepInputs | None = None
    monitor: Monitor | None = None
    peak: float | None = None
    last_shapes: tuple[int, int] = (0, 0)
    """(S, T) of the last micro-batch (for the MFU estimate)."""
    run_tokens: float = 0.0
    run_samples: float = 0.0
    record: dict[str, Any] | None = None
    """What a checkpoint of this run resumes (``resume_check``)."""
    resume_note: str | None = None
    """Settings changed since the resumed checkpoint (stated in the log and TensorBoard)."""

    @property
    def ckpt_root(self) -> Path:
        return self.out / "checkpoints"

    @property
    def metrics_file(self) -> Path:
        return self.out / "metrics.jsonl"

    @property
    def samples_per_step(self) -> int:
        return self.micro_batch * self.grad_accum * self.world

    def validate(self) -> float:
        assert self.encoder is not None and self.step_inputs is not None
        how = self.step_inputs
        return validation_loss(
            self.engine,
            self.val_shards,
            self.encoder,
            rank=self.rank,
            world_size=self.world,
            micro_batch_size=self.micro_batch,
            batches=self.cfg.eval_batches,
            seed=self.cfg.seed,
            vocab=self.vocab,
            device=self.device,
            pad_id=how.pad_id,
            align=how.align,
            joint_from=how.joint_from,
        )

    def export(self) -> None:
        export_model(self.engine, self.out / "export", tokenizer_dir=self.cfg.model, rank=self.rank)

    def save(self) -> None:
        folder = ckpt.save_checkpoint(
            self.engine,
            self.ckpt_root,
            self.state,
            rank=self.rank,
            world=self.world,
            keep_last=self.cfg.keep_last,
        )
        self.result.checkpoint = str(folder)


def _open_run_folder(cfg: TrainConfig, out: Path, rank: int) -> logging.Handler:
    """Create the run folder (config, fresh metrics on rank 0) and log this rank into it."""
    out.mkdir(parents=True, exist_ok=True)
    if rank == 0:
        cfg.save(out / "train_config.json")
        if not cfg.resume:
            (out / "metrics.jsonl").unlink(missing_ok=True)
    handler = logging.FileHandler(out / f"train.rank{rank}.log")
    root = logging.getLogger()
    shown = next((h.formatter for h in root.handlers if h.formatter is not None), None)
    handler.setFormatter(
        shown or logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root.addHandler(handler)
    return handler


def _on_rank0(rank: int, check: Any) -> Any:
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


def _close_log(handler: logging.Handler | None) -> None:
    if handler is not None:
        logging.getLogger().removeHandler(handler)
        handler.close()


def _build_engine(cfg: TrainConfig, ds: Any, rank: int, model_cfg: Any) -> Any:
    """The model under DeepSpeed (seeded per rank), with the exact fp32 weights as ZeRO masters.

    The module carries the run's one config object (``model_cfg``, with the target spec recorded),
    so the export writes it as it is.
    """
    import deepspeed

    from trainer.model.seq2seq import Dna2GffModel

    torch.manual_seed(cfg.seed + rank)
    model = Dna2GffModel.from_pretrained(cfg.model, ep_size=cfg.ep_size)
    model.config = model_cfg
    groups = param_groups(model, cfg.weight_decay)
    client_opt = None
    if "optimizer" not in ds.config:
        client_opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.98), eps=1e-8)
    masters = {n: p.detach().clone() for n, p in model.named_parameters()} if ds.bf16 else {}
    engine, _, _, _ = deepspeed.initialize(
        model=model,
        model_parameters=groups if client_opt is None else None,
        optimizer=client_opt,
        config=ds.config,
    )
    _restore_fp32_masters(engine.module, masters)
    return engine


def _set_up(cfg: TrainConfig) -> _Run:
    """Process group, option checks, then the run folder and the DeepSpeed engine.

    Everything that can reject the options (data, model, ``--ep_size``, batch sizes, target
    vocabulary, an occupied run folder) runs before the run folder is created.
    """
    accelerator = use_cpu_accelerator_if_no_gpu()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from deepspeed.accelerator import get_accelerator

    from trainer.model.config import Dna2GffConfig
    from trainer.tokens.tokenizer import load_tokenizer

    model_cfg = Dna2GffConfig.load(cfg.model)
    manifest = read_manifest(cfg.data)
    train_shards = split_shards(cfg.data, "train")
    val_shards = split_shards(cfg.data, "val")
    if not train_shards:
        raise InputError(Path(cfg.data) / "manifest.json", "the train split has no samples")

    rank, world, local_rank = join_launcher_group(accelerator)
    check_ep_size(cfg.ep_size, world, model_cfg.num_experts if model_cfg.use_moe else None)
    if accelerator != "cpu":
        get_accelerator().set_device(local_rank)
    device = torch.device(
        get_accelerator().device_name(local_rank) if accelerator != "cpu" else "cpu"
    )
    out = Path(cfg.output)
    # rank 0 looks at the folder and tells the others (a network filesystem may lag on other nodes)
    latest = from_rank0(ckpt.latest_checkpoint(out / "checkpoints") if rank == 0 else None)
    if not (cfg.resume or cfg.export_only) and latest is not None:
        _on_rank0(rank, lambda: check_not_running(out))  # a live run: say so, not "--resume"
        raise ConfigError(
            f"{out} already holds checkpoints of a run: pass --resume to continue "
            "it, or choose another --output"
        )
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
    tokenizer = load_tokenizer(str(cfg.model))
    grammar = data_grammar(manifest, tokenizer)
    model_cfg.record_target(grammar.window_len, grammar.feature_types)
    model_cfg.max_src_tokens = cfg.max_src_tokens  # annotate compares its windows with it
    vocab = None
    if not model_cfg.window_len or not model_cfg.feature_types:
        raise ConfigError(
            "the model needs the data's grammar (window_len, feature types) in manifest.json"
        )
    from baking.target_format.grammar import target_vocabulary

    target_tokens = target_vocabulary(model_cfg.feature_types)
    if cfg.restrict_loss_vocab:
        vocab = target_vocab_ids(tokenizer, target_tokens, model_cfg.eos_token_id).to(device)
    ids = TokenIds(model_cfg.bos_token_id, model_cfg.eos_token_id, model_cfg.pad_token_id)
    preflight(make_encoder(cfg, model_cfg, str(cfg.model), ids), [*train_shards, *val_shards])

    # every option has passed its checks: only now does the run folder appear, this job's alone
    run_lock = _on_rank0(rank, lambda: take_run_lock(out))
    try:
        log_handler = _open_run_folder(cfg, out, rank)
    except BaseException:
        if run_lock is not None:
            run_lock.release()
        raise
    log.debug("deepspeed config %s", json.dumps(ds.config, sort_keys=True))
    log.debug("train config %s", json.dumps(cfg.to_dict(), sort_keys=True))
    try:
        engine = _build_engine(cfg, ds, rank, model_cfg)
    except BaseException:
        _close_log(log_handler)
        if run_lock is not None:
            run_lock.release()
        raise
    log.info(
        "train start rank=%d world=%d ep_size=%d micro_batch=%d grad_accum=%d steps=%d "
        "train_samples=%d batches_per_epoch=%d accelerator=%s",
        rank,
        world,
        cfg.ep_size,
        mb,
        ga,
        total_steps,
        total_train,
        per_epoch,
        accelerator,
    )
    state = ckpt.TrainerState(
        world_size=world,
        num_workers=cfg.num_workers,
        micro_batch_size=mb,
        seed=cfg.seed,
        ep_size=cfg.ep_size,
        grad_accum=ga,
    )
    return _Run(
        cfg=cfg,
        model_cfg=model_cfg,
        rank=rank,
        world=world,
        local_rank=local_rank,
        accelerator=accelerator,
        device=device,
        out=out,
        latest=latest,
        engine=engine,
        micro_batch=mb,
        grad_accum=ga,
        total_steps=total_steps,
        state=state,
        train_shards=train_shards,
        val_shards=val_shards,
        manifest=manifest,
        result=TrainResult(steps=0),
        log_handler=log_handler,
        run_lock=run_lock,
        tokenizer=tokenizer,
        grammar=grammar,
        vocab=vocab,
    )


def _resume_record(run: _Run) -> dict[str, Any]:
    """What this run's checkpoints resume: model, data, target spec and the stated settings."""
    cfg, g = run.cfg, run.grammar
    return resume_check.make_record(
        model=resume_check.model_identity(run.model_cfg.to_dict(), run.tokenizer),
        data=resume_check.data_identity(run.manifest),
        target=resume_check.target_identity(g.window_len, g.feature_types, g.tokens),
        settings={
            "lr": cfg.lr,
            "min_lr": cfg.min_lr,
            "warmup_steps": cfg.warmup_steps,
            "weight_decay": cfg.weight_decay,
            "grad_clip": cfg.grad_clip,
            "total_steps": run.total_steps,
            "global_batch": run.samples_per_step,
            "max_src_tokens": cfg.max_src_tokens,
            "max_tgt_tokens": cfg.max_tgt_tokens,
        },
    )


def _resume(run: _Run) -> None:
    """Load the newest intact checkpoint into the engine and ``run.state`` (when asked to).

    Checkpoints whose files do not match their record are skipped with a warning naming the file.
    Before any DeepSpeed file is read, the checkpoint's record is compared with this run: another
    model, other data or another target spec is refused (``resume_check``).
    """
    cfg = run.cfg
    latest = run.latest = ckpt.choose_checkpoint(run.ckpt_root, rank=run.rank, world=run.world)
    if latest is None and cfg.export_only:
        raise InputError(run.ckpt_root, "--export_only needs a complete checkpoint here")
    if latest is None:
        log.warning(
            "resume requested but no complete checkpoint in %s: starting fresh", run.ckpt_root
        )
        return
    saved = ckpt.read_state(latest)
    assert run.record is not None
    resume_check.check_identity(
        saved.record,
        run.record,
        checkpoint=latest,
        model_path=str(Path(cfg.model) / "config.json"),
        manifest_path=str(Path(cfg.data) / "manifest.json"),
    )
    saved_ep = saved.ep_size
    if saved.record is None and run.model_cfg.use_moe:  # an older trainer did not record it
        saved_ep = reshard.checkpoint_ep_size(latest)
    if (saved.world_size, saved_ep) != (run.world, cfg.ep_size):
        run.state = reshard.load_elastic(
            run.engine,
            latest,
            rank=run.rank,
            world=run.world,
            ep_size=cfg.ep_size,
            micro_batch=run.micro_batch,
            num_workers=cfg.num_workers,
        )
    else:
        run.state = ckpt.load_checkpoint(run.engine, latest, rank=run.rank)
        if (run.state.num_workers, run.state.micro_batch_size) != (
            cfg.num_workers,
            run.micro_batch,
        ):
            log.warning(
                "workers or micro batch changed since the checkpoint: "
                "the data order continues from a new plan"
            )
    run.resume_note = resume_check.changed_settings(saved.record, run.record)
    if run.resume_note and run.rank == 0:
        log.warning(
            "resume from %s with changed settings: %s (applied from step %d on)",
            latest.name,
            run.resume_note,
            run.state.step + 1,
        )
    state = run.state  # from here on it describes this run's topology
    state.record, state.world_size, state.ep_size = run.record, run.world, cfg.ep_size
    state.num_workers, state.micro_batch_size = cfg.num_workers, run.micro_batch
    state.grad_accum = run.grad_accum
    if run.rank == 0:
        _truncate_metrics(run.metrics_file, run.state.step)


def make_encoder(
    cfg: TrainConfig, model_cfg: Any, tokenizer_path: str, ids: TokenIds
) -> ExampleBuilder:
    """The loader's example builder for the model (its target spec, vocabulary, loss constraint)."""
    assert model_cfg.window_len and model_cfg.feature_types
    return ExampleBuilder(
        tokenizer_path,
        ids,
        cfg.max_src_tokens,
        cfg.max_tgt_tokens,
        cfg.pad_multiple,
        vocab_size=model_cfg.vocab_size,
        feature_types=model_cfg.feature_types,
        with_encoder_labels=model_cfg.encoder_aux_weight > 0 or model_cfg.base_aux_weight > 0,
        constrain=_loss_constraint(cfg),
    )


def _loss_constraint(cfg: TrainConfig) -> Any:
    """What the pointer loss is constrained by: the ORF layer's genetic code, the plain grammar
    (``True``), or nothing (``None``)."""
    if cfg.constrained_loss == "orf":
        from baking.orfs import genetic_code

        return genetic_code(cfg.transl_table)
    return True if cfg.constrained_loss == "grammar" else None


def _orf_code(cfg: TrainConfig) -> Any:
    """The code val windows are decoded under by default (None: no ORF layer) -- only when the
    loss is ORF-constrained; each window's own genome code wins (``decode_metric``)."""
    return _loss_constraint(cfg) if cfg.constrained_loss == "orf" else None


def _set_up_data(run: _Run) -> None:
    """The loader (from the resumed data position), the monitor, what every step needs."""
    cfg, model_cfg = run.cfg, run.model_cfg
    tokenizer_path = str(cfg.model)
    ids = TokenIds(model_cfg.bos_token_id, model_cfg.eos_token_id, model_cfg.pad_token_id)
    run.encoder = make_encoder(cfg, model_cfg, tokenizer_path, ids)
    dataset = ShardBatches(
        run.train_shards,
        run.encoder,
        rank=run.rank,
        world_size=run.world,
        num_workers=cfg.num_workers,
        micro_batch_size=run.micro_batch,
        seed=cfg.seed,
        shuffle_buffer=cfg.shuffle_buffer,
        start_batch=run.state.micro_batches,
    )
    run.batches = iter_batches(make_loader(dataset, cfg.num_workers, seed=cfg.seed))
    run.monitor = Monitor(
        run.out, rank=run.rank, total_steps=run.total_steps, start_step=run.state.step
    )
    if run.accelerator == "cuda":
        run.peak = peak_flops(torch.cuda.get_device_name(run.local_rank))
    run.step_inputs = StepInputs(
        grad_accum=run.grad_accum,
        device=run.device,
        pad_id=ids.pad,
        align=model_cfg.use_moe and cfg.ep_size > 1,  # equal (B, T) across each expert group
        vocab=run.vocab,
        aux_coef=model_cfg.moe_aux_loss_coef if model_cfg.use_moe else 0.0,
        joint_from=model_cfg.vocab_size,
        encoder_aux_weight=model_cfg.encoder_aux_weight,
        base_aux_weight=model_cfg.base_aux_weight,
        base_aux_class_weight=model_cfg.base_aux_class_weight,
    )
    run.result = TrainResult(steps=run.state.step, nan_steps=run.state.nan_steps)


def _take_step(run: _Run, stop_requested: bool, hooks: TrainHooks) -> StepStats:
    """One optimizer step on every rank; returns its sums over all ranks and advances the state."""
    assert run.batches is not None and run.step_inputs is not None
    state = run.state
    poison = hooks.poison_loss(state.step + 1)
    local, shapes = run_step(
        run.engine, run.batches, run.step_inputs, poison, hooks.observer, state.step + 1
    )
    state.micro_batches += run.grad_accum
    local.stop = 1.0 if stop_requested else 0.0
    total = local.all_reduced(run.device)
    state.step += 1
    state.samples += run.samples_per_step
    state.tokens += int(total.tokens)
    run.run_tokens += total.tokens
    run.run_samples += run.samples_per_step
    run.last_shapes = shapes
    return total


def _record_step(run: _Run, stats: StepStats, lr: float, dt: float) -> None:
    """metrics.jsonl, the progress bar, TensorBoard scalars; then the NaN guard."""
    assert run.monitor is not None
    state, cfg = run.state, run.cfg
    if stats.skipped:
        state.nan_steps += 1
        log.warning("non-finite loss: step=%d skipped (total=%d)", state.step, state.nan_steps)
    step_loss = stats.loss
    run.result.losses.append(step_loss)
    # model FLOPs of the step over all ranks (MFU's numerator; benchmarks read it back)
    flops = train_flops(
        run.model_cfg, int(stats.src_tokens), int(stats.tgt_tokens), *run.last_shapes
    )
    if run.rank == 0:
        with open(run.metrics_file, "a") as f:
            f.write(
                json.dumps(
                    {
                        "step": state.step,
                        "loss": step_loss,
                        "lr": lr,
                        "skipped": stats.skipped,
                        "tokens": int(stats.tokens),
                        "src_tokens": int(stats.src_tokens),
                        "flops": flops,
                        "seconds": round(dt, 6),
                    }
                )
                + "\n"
            )
    run.monitor.step(state.step, step_loss, lr)
    if state.step % cfg.log_every == 0 or state.step == run.total_steps:
        values = {
            "train/loss": step_loss,
            "train/lr": lr,
            "train/nan_steps": state.nan_steps,
            "perf/tokens_per_s": stats.tokens / dt,
            "perf/samples_per_s": run.samples_per_step / dt,
        }
        values.update(
            engine_scalars(run.engine, run.model_cfg.use_moe, stats, run.device, run.world)
        )
        if run.model_cfg.encoder_aux_weight > 0:
            values["train/encoder_aux_loss"] = stats.encoder_aux / run.world
        if run.model_cfg.base_aux_weight > 0:
            values["train/base_aux_loss"] = stats.base_aux / run.world
        if run.peak:
            values["perf/mfu"] = flops / dt / (run.peak * run.world)
        run.monitor.scalars(state.step, values)
    if state.nan_steps > cfg.max_nan_steps:
        raise TrainingError(
            f"{state.nan_steps} steps had a NaN/inf loss (max_nan_steps={cfg.max_nan_steps}):"
            " lower the learning rate or check the data"
        )


def _periodic(run: _Run, stopping: bool) -> None:
    """Validation, decode metric, export and checkpoint when their step has come (or on a stop)."""
    assert run.monitor is not None
    cfg, step = run.cfg, run.state.step
    if cfg.eval_every and step % cfg.eval_every == 0 and run.val_shards:
        run.result.val_loss = run.validate()
        run.monitor.scalars(step, {"val/loss": run.result.val_loss})
    if cfg.decode_every and step % cfg.decode_every == 0 and run.val_shards:
        exact = decode_metric(
            run.engine,
            run.tokenizer,
            run.val_shards,
            windows=cfg.decode_windows,
            window_len=run.model_cfg.window_len,
            feature_types=run.model_cfg.feature_types,
            max_new_tokens=cfg.max_tgt_tokens,
            device=run.device,
            orf_code=_orf_code(cfg),
        )
        if exact is not None:
            run.monitor.scalars(step, exact)
    if cfg.export_every and step % cfg.export_every == 0:
        run.export()
    if stopping or (cfg.save_every and step % cfg.save_every == 0):
        run.save()


def _loop(run: _Run, hooks: TrainHooks) -> None:
    """Steps until ``total_steps`` or a stop signal (agreed on by all ranks, then saved)."""
    cfg = run.cfg
    run.engine.train()
    with _Stop() as stop:
        while run.state.step < run.total_steps:
            t0 = time.perf_counter()
            lr = float(run.engine.get_lr()[0]) if run.engine.get_lr() else cfg.lr  # this step's
            stats = _take_step(run, stop.requested, hooks)
            dt = time.perf_counter() - t0
            if hooks.observer is not None:
                hooks.observer.step_end(run.state.step, run.engine, lr)
            _record_step(run, stats, lr, dt)
            stopping = stats.stop > 0
            _periodic(run, stopping)
            hooks.after_step(run.state.step)
            if stopping:
                run.result.stopped_by = "signal"
                break


def _nothing_to_train(run: _Run) -> TrainResult:
    """The checkpoint is already at (or past) the last step: no step, no save; export refreshed."""
    if run.rank == 0:
        log.warning(
            "nothing to train: checkpoint %s is at step %d and this run ends at step %d "
            "(raise --max_steps to continue)%s",
            run.latest.name if run.latest else "-",
            run.state.step,
            run.total_steps,
            "; export/ brought up to date" if run.cfg.export else "",
        )
    export_dir = None
    if run.cfg.export:
        run.export()
        export_dir = str(run.out / "export")
    return TrainResult(
        steps=run.state.step,
        nan_steps=run.state.nan_steps,
        stopped_by="max_steps",
        checkpoint=str(run.latest) if run.latest else None,
        export_dir=export_dir,
    )


def _finish(run: _Run, elapsed: float) -> TrainResult:
    """Final validation, checkpoint and export (not after a stop signal); the result."""
    assert run.monitor is not None
    cfg, state, result = run.cfg, run.state, run.result
    if result.stopped_by != "signal":
        result.stopped_by = "epochs" if run.total_steps < cfg.max_steps else "max_steps"
        if run.val_shards:
            result.val_loss = run.validate()
            run.monitor.scalars(state.step, {"val/loss": result.val_loss})
        if result.checkpoint is None or not result.checkpoint.endswith(f"step_{state.step}"):
            run.save()
        if cfg.export:
            result.export_dir = str(run.out / "export")
            run.export()
    elapsed = max(elapsed, 1e-9)
    result.steps = state.step
    result.nan_steps = state.nan_steps
    result.tokens_per_s = run.run_tokens / elapsed
    result.samples_per_s = run.run_samples / elapsed
    return result


# ------------------------------------------------------------------------------------- train


def train(cfg: TrainConfig, hooks: TrainHooks | None = None) -> TrainResult:
    """Run (or resume) a training run described by ``cfg``; every rank calls this.

    ``hooks`` inject faults for tests (``trainer.train.hooks``); by default they come from the
    test-only ``DNA2GFF_TEST_FAULTS`` variable, and do nothing when it is unset.
    """
    hooks = hooks if hooks is not None else TrainHooks.from_env()
    run = _set_up(cfg)
    try:
        return _run(run, hooks)
    finally:
        _close_log(run.log_handler)
        if run.run_lock is not None:
            run.run_lock.release()


def _run(run: _Run, hooks: TrainHooks) -> TrainResult:
    cfg = run.cfg
    run.record = run.state.record = _resume_record(run)
    if cfg.resume or cfg.export_only:
        _resume(run)
    _set_up_data(run)
    assert run.monitor is not None
    if run.resume_note and run.monitor.writer is not None:
        run.monitor.writer.add_text("resume/changed", run.resume_note, run.state.step)
    try:
        if run.state.step >= run.total_steps and not cfg.export_only:
            return _nothing_to_train(run)
        if cfg.export_only:
            run.export()
            return TrainResult(
                steps=run.state.step,
                nan_steps=run.state.nan_steps,
                stopped_by="export_only",
                checkpoint=str(run.latest),
                export_dir=str(run.out / "export"),
            )
        t_start = time.perf_counter()
        _loop(run, hooks)
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
