"""``train(cfg) -> TrainResult``: the DeepSpeed loop behind every launcher.

deepspeed, torchrun, mpirun and plain ``python`` all end here: the process group comes from the
launcher's environment (or a one-process gloo group), the model from ``init_model``'s folder, the
batches from ``trainer.data.loader``. ZeRO-2 and bf16 come from the DeepSpeed JSON; MoE parameters get their
own optimizer groups as DeepSpeed requires; ``--ep_size`` is checked before anything is built.

Every rank runs the same number of micro-batches and the same collectives in the same order (also
for validation, the decode metric, checkpoints and export), which is what keeps multi-rank jobs
from hanging. Only rank 0 writes logs, TensorBoard and markers.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import signal
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from baking.common.errors import ConfigError, Dna2GffError, InputError
from trainer.data.loader import (
    IGNORE_INDEX,
    Encoder,
    ShardBatches,
    TokenIds,
    batches_per_epoch,
    make_loader,
    pad_decoder,
    read_manifest,
    split_shards,
)
from trainer.distributed import disable_cpu_shm_comm
from trainer.train import checkpoint as ckpt
from trainer.train.config import TrainConfig
from trainer.train.dsconfig import (
    check_ep_size,
    load_ds_config,
    resolve_ds_config,
    use_cpu_accelerator_if_no_gpu,
)
from trainer.train.export import export_model
from trainer.train.monitor import Monitor, peak_flops, train_flops
from trainer.train.observe import TrainObserver
from trainer.train.validation import decode_metric, expert_load_scalars, validation_loss

log = logging.getLogger(__name__)


class TrainingError(Dna2GffError):
    """The run cannot go on (too many NaN steps, nothing to train on)."""


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


# ------------------------------------------------------------------------------ process group


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _init_distributed(accelerator: str) -> tuple[int, int, int]:
    """Join the launcher's process group (or make a one-process one); returns rank, world, local."""
    import deepspeed
    import torch.distributed as dist

    under_mpi = "OMPI_COMM_WORLD_RANK" in os.environ or "PMI_RANK" in os.environ
    if "RANK" not in os.environ and not under_mpi:
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", LOCAL_SIZE="1")
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
    if accelerator == "cpu":
        disable_cpu_shm_comm()
    if not dist.is_initialized():
        backend = "gloo" if accelerator == "cpu" else None
        deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=under_mpi)
    rank, world = dist.get_rank(), dist.get_world_size()
    local = int(os.environ.get("LOCAL_RANK", "0"))
    return rank, world, local


def _all_sum(values: list[float], device: torch.device) -> list[float]:
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def _from_rank0(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (one small broadcast), so all ranks take the same branch."""
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _barrier() -> None:
    import torch.distributed as dist

    dist.barrier()


# ------------------------------------------------------------------------------------- pieces


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
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


def token_loss(
    logits: torch.Tensor, labels: torch.Tensor, vocab: torch.Tensor | None
) -> tuple[torch.Tensor, int]:
    """Mean cross-entropy over non-ignored labels (optionally softmax over ``vocab`` only).

    Returns the loss and the number of label tokens. With ``vocab`` the logits are cut to those
    columns and labels are remapped; a label outside the vocabulary is a data error.
    """
    logits = logits.float()  # (B, T, V)
    if vocab is not None:
        lookup = torch.full((logits.shape[-1],), -1, dtype=torch.long, device=labels.device)
        lookup[vocab] = torch.arange(len(vocab), device=labels.device)
        keep = labels != IGNORE_INDEX
        mapped = torch.where(keep, lookup[labels.clamp(min=0)], IGNORE_INDEX)  # (B, T)
        if bool(((mapped < 0) & keep).any()):
            raise TrainingError(
                "a target token is outside the target vocabulary: rebuild the tokenizer"
            )
        logits = logits.index_select(-1, vocab.to(logits.device))  # (B, T, K)
        labels = mapped
    n = int((labels != IGNORE_INDEX).sum())
    loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX)
    return loss, n


def prepare_batch(
    batch: dict[str, torch.Tensor], device: torch.device, pad_id: int, align: bool
) -> dict[str, torch.Tensor]:
    """Move a batch to the device; with ``align`` pad the decoder to the longest across ranks."""
    if align:
        import torch.distributed as dist

        t = torch.tensor([batch["decoder_input_ids"].shape[1]], device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        batch = pad_decoder(batch, int(t.item()), pad_id)
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def forward_batch(engine: Any, batch: dict[str, torch.Tensor]) -> Any:
    """The model's forward on a prepared batch (labels stay out: the loss is ``token_loss``)."""
    return engine(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        decoder_input_ids=batch["decoder_input_ids"],
        decoder_attention_mask=batch["decoder_attention_mask"],
    )


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
        from baking.target.grammar import target_vocabulary, type_token

        types = [t for t in types if tokenizer.token_to_id(type_token(t)) is not None]
        if tokens is None and window and types:
            tokens = list(target_vocabulary(types, int(window)))
    return DataGrammar(int(window) if window else None, list(types) if types else None, tokens)


def _step(
    engine: Any,
    batches: Iterator[dict],
    ga: int,
    device: torch.device,
    pad_id: int,
    align: bool,
    vocab: torch.Tensor | None,
    coef: float,
    poison: bool,
    observer: TrainObserver | None = None,
    step: int = 0,
) -> tuple[list[float], tuple[int, int]]:
    """One optimizer step over ``ga`` micro-batches (DeepSpeed steps at the boundary).

    Returns this rank's sums ``[loss*n, n, aux, non-finite, src tokens, tgt tokens, 0]`` (the last
    slot is for the stop flag) and the last batch's (S, T). A non-finite loss is still
    back-propagated: ZeRO sees the non-finite gradients and skips the step on every rank.
    ``poison`` makes the loss NaN (tests of that path). ``observer`` (tests) sees each prepared
    micro-batch and the reduced gradients of optimizer step ``step``.
    """
    sums = [0.0] * 7
    shapes = (0, 0)
    for micro in range(ga):
        batch = prepare_batch(next(batches), device, pad_id, align)
        if observer is not None:
            observer.micro_batch(step, micro, batch)
        outputs = forward_batch(engine, batch)
        ce, n = token_loss(outputs.logits, batch["labels"], vocab)
        aux = outputs.aux_loss.float() if torch.is_tensor(outputs.aux_loss) else torch.zeros(())
        if poison:
            ce = ce * float("nan")
        loss = ce + coef * aux
        engine.backward(loss)
        if observer is not None and micro == ga - 1:
            observer.gradients(step, engine)
        engine.step()
        finite = bool(torch.isfinite(loss.detach()))
        sums[0] += float(ce.detach()) * n if finite else 0.0
        sums[1] += n if finite else 0
        sums[2] += float(aux.detach()) / ga
        sums[3] += 0.0 if finite else 1.0
        sums[4] += float(batch["attention_mask"].sum())
        sums[5] += float(batch["decoder_attention_mask"].sum())
        shapes = (batch["input_ids"].shape[1], batch["labels"].shape[1])
    return sums, shapes


def _engine_scalars(
    engine: Any, model_cfg: Any, g: list[float], device: torch.device, world: int
) -> dict[str, float]:
    """Gradient norm and, for MoE, aux loss and per-expert load (a collective when MoE)."""
    values: dict[str, float] = {}
    norm = engine.get_global_grad_norm()
    if norm is not None and math.isfinite(float(norm)):
        values["train/grad_norm"] = float(norm)
    if model_cfg.use_moe:
        values["moe/aux_loss"] = g[2] / world
        values.update(expert_load_scalars(engine.module, device, world))
    return values


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop lines logged after ``step`` (by a run that died after its last checkpoint)."""
    if not path.is_file():
        return
    keep = [ln for ln in path.read_text().splitlines() if ln and json.loads(ln)["step"] <= step]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(ln + "\n" for ln in keep))
    os.replace(tmp, path)


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


# ------------------------------------------------------------------------------------- train


def train(cfg: TrainConfig, observer: TrainObserver | None = None) -> TrainResult:
    """Run (or resume) a training run described by ``cfg``; every rank calls this.

    ``observer`` (tests only, see ``trainer.train.observe``) watches every step; None in production.
    """
    accelerator = use_cpu_accelerator_if_no_gpu()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import deepspeed
    from deepspeed.accelerator import get_accelerator

    from trainer.model.config import Dna2GffConfig
    from trainer.model.seq2seq import Dna2GffModel
    from trainer.tokens.tokenizer import load_tokenizer

    model_cfg = Dna2GffConfig.load(cfg.model)
    manifest = read_manifest(cfg.data)
    train_shards = split_shards(cfg.data, "train")
    val_shards = split_shards(cfg.data, "val")
    if not train_shards:
        raise InputError(Path(cfg.data) / "manifest.json", "the train split has no samples")

    rank, world, local_rank = _init_distributed(accelerator)
    check_ep_size(cfg.ep_size, world, model_cfg.num_experts if model_cfg.use_moe else None)
    if accelerator != "cpu":
        get_accelerator().set_device(local_rank)
    device = torch.device(
        get_accelerator().device_name(local_rank) if accelerator != "cpu" else "cpu"
    )
    out = Path(cfg.output)
    # rank 0 looks at the folder and tells the others (a network filesystem may lag on other nodes)
    latest = _from_rank0(ckpt.latest_checkpoint(out / "checkpoints") if rank == 0 else None)
    if not (cfg.resume or cfg.export_only) and latest is not None:
        raise ConfigError(f"{out} already holds checkpoints of a run: pass --resume to continue "
                          "it, or choose another --output")  # fmt: skip
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        cfg.save(out / "train_config.json")
        if not cfg.resume:
            (out / "metrics.jsonl").unlink(missing_ok=True)

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
    log.debug("deepspeed config %s", json.dumps(ds.config, sort_keys=True))
    log.debug("train config %s", json.dumps(cfg.to_dict(), sort_keys=True))

    torch.manual_seed(cfg.seed + rank)
    model = Dna2GffModel.from_pretrained(cfg.model, ep_size=cfg.ep_size)
    groups = _param_groups(model, cfg.weight_decay)
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
    log.info(
        "train start rank=%d world=%d ep_size=%d micro_batch=%d grad_accum=%d steps=%d "
        "train_samples=%d batches_per_epoch=%d accelerator=%s",
        rank, world, cfg.ep_size, mb, ga, total_steps, total_train, per_epoch, accelerator,
    )  # fmt: skip

    _restore_fp32_masters(engine.module, masters)
    del masters
    state = ckpt.TrainerState(world_size=world, num_workers=cfg.num_workers, micro_batch_size=mb,
                              seed=cfg.seed)  # fmt: skip
    ckpt_root = out / "checkpoints"
    if cfg.resume or cfg.export_only:
        if latest is None and cfg.export_only:
            raise InputError(ckpt_root, "--export_only needs a complete checkpoint here")
        if latest is None:
            log.warning(
                "resume requested but no complete checkpoint in %s: starting fresh", ckpt_root
            )
        else:
            saved_world = ckpt.read_state(latest).world_size
            if saved_world != world:
                raise ConfigError(
                    f"{latest} was saved by {saved_world} ranks but this job has {world}: ZeRO "
                    f"cannot re-partition its optimizer state; run with {saved_world} ranks, or "
                    "start a new run from the exported model folder"
                )
            state = ckpt.load_checkpoint(engine, latest, rank=rank)
            if rank == 0:
                _truncate_metrics(out / "metrics.jsonl", state.step)
            if (state.num_workers, state.micro_batch_size) != (cfg.num_workers, mb):
                log.warning("workers or micro batch changed since the checkpoint: "
                            "the data order continues from a new plan")  # fmt: skip

    tokenizer_path = str(cfg.model)
    tokenizer = load_tokenizer(tokenizer_path)
    grammar = data_grammar(manifest, tokenizer)
    window_len, feature_types = grammar.window_len, grammar.feature_types
    ids = TokenIds(model_cfg.bos_token_id, model_cfg.eos_token_id, model_cfg.pad_token_id)
    vocab = None
    if cfg.restrict_loss_vocab:
        vocab = target_vocab_ids(tokenizer, grammar.tokens, ids.eos)
        vocab = vocab.to(device)
    encoder = Encoder(tokenizer_path, ids, cfg.max_src_tokens, cfg.max_tgt_tokens, cfg.pad_multiple)
    dataset = ShardBatches(train_shards, encoder, rank=rank, world_size=world,
                           num_workers=cfg.num_workers, micro_batch_size=mb, seed=cfg.seed,
                           shuffle_buffer=cfg.shuffle_buffer, start_batch=state.micro_batches)  # fmt: skip
    batches: Iterator[dict] = iter(make_loader(dataset, cfg.num_workers, seed=cfg.seed))

    monitor = Monitor(out, rank=rank, total_steps=total_steps, start_step=state.step)
    metrics_file = out / "metrics.jsonl"
    peak = peak_flops(torch.cuda.get_device_name(local_rank)) if accelerator == "cuda" else None
    coef = model_cfg.moe_aux_loss_coef if model_cfg.use_moe else 0.0
    align = model_cfg.use_moe and cfg.ep_size > 1  # equal (B, T) across each expert group
    result = TrainResult(steps=state.step, nan_steps=state.nan_steps)

    def validate() -> float:
        return validation_loss(engine, val_shards, encoder, rank=rank, world_size=world,
                               micro_batch_size=mb, batches=cfg.eval_batches, seed=cfg.seed,
                               vocab=vocab, device=device, pad_id=ids.pad, align=align)  # fmt: skip

    def export() -> None:
        export_model(engine, model_cfg, out / "export", tokenizer_dir=cfg.model,
                     window_len=window_len, feature_types=feature_types, rank=rank)  # fmt: skip

    def save() -> None:
        result.checkpoint = str(ckpt.save_checkpoint(engine, ckpt_root, state, rank=rank,
                                                     barrier=_barrier, keep_last=cfg.keep_last))  # fmt: skip

    if cfg.export_only:
        export()
        monitor.close()
        return TrainResult(steps=state.step, nan_steps=state.nan_steps, stopped_by="export_only",
                           checkpoint=str(latest), export_dir=str(out / "export"))  # fmt: skip

    t_start = time.perf_counter()
    run_tokens = run_samples = 0.0
    engine.train()
    with _Stop() as stop:
        while state.step < total_steps:
            t0 = time.perf_counter()
            lr = float(engine.get_lr()[0]) if engine.get_lr() else cfg.lr  # the lr this step uses
            poison = state.step + 1 in cfg.nan_at_steps
            sums, shapes = _step(engine, batches, ga, device, ids.pad, align, vocab, coef, poison,
                                 observer, state.step + 1)  # fmt: skip
            state.micro_batches += ga
            sums[6] = 1.0 if stop.requested else 0.0
            g = _all_sum(sums, device)
            state.step += 1
            if observer is not None:
                observer.step_end(state.step, engine, lr)
            state.samples += mb * ga * world
            tokens = g[4] + g[5]
            state.tokens += int(tokens)
            run_tokens += tokens
            run_samples += mb * ga * world
            dt = time.perf_counter() - t0
            if g[3] > 0:
                state.nan_steps += 1
                log.warning(
                    "non-finite loss: step=%d skipped (total=%d)", state.step, state.nan_steps
                )
            step_loss = g[0] / g[1] if g[1] else float("nan")
            result.losses.append(step_loss)
            if rank == 0:
                with open(metrics_file, "a") as f:
                    f.write(json.dumps({"step": state.step, "loss": step_loss, "lr": lr,
                                        "skipped": g[3] > 0, "tokens": int(tokens),
                                        "seconds": round(dt, 6)}) + "\n")  # fmt: skip
            monitor.step(state.step, step_loss, lr)
            if state.step % cfg.log_every == 0 or state.step == total_steps:
                values = {
                    "train/loss": step_loss,
                    "train/lr": lr,
                    "train/nan_steps": state.nan_steps,
                    "perf/tokens_per_s": tokens / dt,
                    "perf/samples_per_s": mb * ga * world / dt,
                }
                values.update(_engine_scalars(engine, model_cfg, g, device, world))
                if peak:
                    flops = train_flops(model_cfg, int(g[4]), int(g[5]), *shapes)
                    values["perf/mfu"] = flops / dt / (peak * world)
                monitor.scalars(state.step, values)
            if state.nan_steps > cfg.max_nan_steps:
                monitor.close()
                raise TrainingError(
                    f"{state.nan_steps} steps had a NaN/inf loss (max_nan_steps={cfg.max_nan_steps}):"
                    " lower the learning rate or check the data"
                )
            if cfg.eval_every and state.step % cfg.eval_every == 0 and val_shards:
                result.val_loss = validate()
                monitor.scalars(state.step, {"val/loss": result.val_loss})
            if cfg.decode_every and state.step % cfg.decode_every == 0 and val_shards:
                exact = decode_metric(engine, tokenizer, val_shards, windows=cfg.decode_windows,
                                      window_len=window_len, feature_types=feature_types,
                                      max_new_tokens=cfg.max_tgt_tokens, device=device)  # fmt: skip
                if exact is not None:
                    monitor.scalars(state.step, exact)
            if cfg.export_every and state.step % cfg.export_every == 0:
                export()
            stopping = g[6] > 0
            if stopping or (cfg.save_every and state.step % cfg.save_every == 0):
                save()
            if cfg.fail_at_step is not None and state.step == cfg.fail_at_step:
                monitor.close()
                raise RuntimeError(f"fail_at_step={cfg.fail_at_step}: simulated crash")
            if stopping:
                result.stopped_by = "signal"
                break
    if result.stopped_by != "signal":
        result.stopped_by = "epochs" if total_steps < cfg.max_steps else "max_steps"
        if val_shards:
            result.val_loss = validate()
            monitor.scalars(state.step, {"val/loss": result.val_loss})
        if result.checkpoint is None or not result.checkpoint.endswith(f"step_{state.step}"):
            save()
        if cfg.export:
            result.export_dir = str(out / "export")
            export()
    elapsed = max(time.perf_counter() - t_start, 1e-9)
    result.steps = state.step
    result.nan_steps = state.nan_steps
    result.tokens_per_s = run_tokens / elapsed
    result.samples_per_s = run_samples / elapsed
    monitor.close()
    log.info("train done steps=%d stopped_by=%s tokens_per_s=%.1f", result.steps,
             result.stopped_by, result.tokens_per_s)  # fmt: skip
    return result
