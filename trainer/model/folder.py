"""The model folder: ``config.json`` + ``model.safetensors`` (+ tokenizer files,
``generation_config.json``, the ``README.md`` model card), and its state dict.

The files are the ones a Hugging Face model folder has, so ``AutoConfig`` / ``AutoModel`` and the
hub read them; the writing and reading stay here, beside HF's, for what HF's do not do: experts
stored under global ids at any expert-parallel size (gathered across ranks when saving), a strict
load that names every missing, unexpected or misshaped tensor and any tensor holding NaN/inf
(HF only warns), atomic files, and never code from a checkpoint.

A folder holds the *canonical* state dict: experts under global ids (``moe.ExpertShard`` maps a
rank's local ids), the tied head left out (it is the embedding). So a folder saved at one
expert-parallel size loads at any other, and a tied model stores its largest matrix once.

Every file is written under a temporary name and renamed, so a crash never leaves half a file.
Loading builds the model on the meta device and assigns the tensors read (no random init to throw
away), then rebuilds what is not saved (ALiBi slopes, last expert load); it is strict: every
missing, unexpected or misshaped tensor is a ``CheckpointError`` naming it.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol, TypeVar

import torch
from torch import Tensor

from baking.common.errors import ConfigError, InputError
from baking.common.files import copy_file
from trainer.distributed import world_rank
from trainer.model.card import CARD_NAME, read_card_facts, write_card
from trainer.model.config import CONFIG_NAME, Dna2GffConfig
from trainer.model.dnabert2 import TOKENIZER_FILES
from trainer.model.encoder import alibi_slopes
from trainer.model.generation import GENERATION_CONFIG_NAME, load_decoding, save_decoding
from trainer.model.hub import HUB_KWARGS, looks_like_hub_id, resolve_folder
from trainer.model.moe import gather_experts
from trainer.model.state import (
    CheckpointError,
    check_state_dict,
    load_weights,
    save_safetensors_atomic,
)


class FolderModel(Protocol):
    """What a model must offer to be saved to and loaded from a folder.

    Structural, so this file imports no model class: ``FolderModel`` (``seq2seq.py``) calls into
    it for ``save_pretrained`` / ``from_pretrained``, and never the reverse.
    """

    config: Dna2GffConfig
    ep_size: int
    encoder: Any
    decoding: Any
    card: Any

    def expert_shard(self) -> Any: ...
    def moe_layers(self) -> dict[int, Any]: ...
    def tie_weights(self) -> None: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state_dict: Any, strict: bool = ..., assign: bool = ...) -> Any: ...
    def named_parameters(self) -> Iterator[tuple[str, torch.nn.Parameter]]: ...
    def named_buffers(self) -> Iterator[tuple[str, Tensor]]: ...


M = TypeVar("M", bound=FolderModel)

log = logging.getLogger(__name__)

WEIGHTS_NAME = "model.safetensors"
HEAD_KEY = "lm_head.weight"


def _is_tied_head(model: FolderModel, key: str) -> bool:
    return key == HEAD_KEY and model.config.tie_word_embeddings


def canonical_state_dict(model: FolderModel, gather: bool = False) -> dict[str, Tensor]:
    """State dict with experts under global ids; the tied head is left out (it is the embedding).

    At ``ep_size > 1`` each rank holds only its experts; with ``gather`` (a collective: every rank
    of the expert group must call it) the other ranks' experts are fetched too, so the result is
    the whole model on every rank.
    """
    shard = model.expert_shard()
    out: dict[str, Tensor] = {}
    for key, value in model.state_dict().items():
        if _is_tied_head(model, key):
            continue
        out[shard.to_global(key)] = value
    if gather and model.ep_size > 1:
        out = gather_experts(out, model.ep_size)
    return out


def expected_canonical_shapes(model: FolderModel) -> dict[str, torch.Size]:
    """Names and shapes a complete canonical state dict must have (all experts, no tied head)."""
    shard = model.expert_shard()
    shapes: dict[str, torch.Size] = {}
    for key, value in model.state_dict().items():
        if _is_tied_head(model, key):
            continue
        for name in shard.all_global(key):
            shapes[name] = value.shape
    return shapes


def load_canonical_state_dict(
    model: FolderModel,
    sd: dict[str, Tensor],
    strict: bool = True,
    source: str = "<state dict>",
    assign: bool = False,
) -> None:
    """Load a canonical state dict into ``model``, keeping this expert-parallel rank's experts only.

    A tied head key, if present, is ignored (the head is the embedding). ``strict`` checks every
    name and shape first and raises ``CheckpointError`` naming each mismatch.
    """
    sd = {k: v for k, v in sd.items() if not _is_tied_head(model, k)}
    if strict:
        check_state_dict(source, expected_canonical_shapes(model), sd)
    shard = model.expert_shard()
    mine: dict[str, Tensor] = {}
    for key, value in sd.items():
        local = shard.to_local(key)
        if local is not None:
            mine[local] = value
    # DeepSpeed tags expert parameters (``allreduce``, ``group_name``); assign=True makes new
    # Parameter objects, so carry those attributes over
    tags = {n: dict(p.__dict__) for n, p in model.named_parameters() if p.__dict__}
    result = model.load_state_dict(mine, strict=False, assign=assign)
    for name, param in model.named_parameters():
        for attr, value in tags.get(name, {}).items():
            setattr(param, attr, value)
    missing = [k for k in result.missing_keys if not _is_tied_head(model, k)]
    if strict and (missing or result.unexpected_keys):
        raise CheckpointError(source, f"missing={missing} unexpected={result.unexpected_keys}")
    model.tie_weights()


def copy_tokenizer(src: Path, out: Path) -> None:
    """Copy a tokenizer (folder, or tokenizer JSON file of any name) into a model folder atomically."""
    tok_file = src if src.is_file() else src / "tokenizer.json"
    if not tok_file.is_file():
        raise InputError(src, "no tokenizer.json to copy into the model folder")
    copies = {tok_file: out / "tokenizer.json"}
    for name in TOKENIZER_FILES[1:]:
        if (tok_file.parent / name).is_file():
            copies[tok_file.parent / name] = out / name
    for src_file, dst in copies.items():
        copy_file(src_file, dst)


def save_model_folder(
    model: FolderModel,
    out_dir: str | Path,
    tokenizer_dir: str | Path | None = None,
    *,
    card_always: bool = False,
) -> None:
    """Write ``config.json`` + ``model.safetensors`` (+ tokenizer files), the model's decoding
    settings (``generation_config.json``) and its model card (``README.md``) when it has them
    (a trained model has a card: the export gives it one; ``push_to_hub`` always writes one),
    each file atomically.

    Call on every rank at ``ep_size > 1`` (experts are gathered); only rank 0 writes.
    """
    state = canonical_state_dict(model, gather=model.ep_size > 1)
    if world_rank() != 0:
        return
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_safetensors_atomic(state, out / WEIGHTS_NAME)
    if tokenizer_dir is not None:
        copy_tokenizer(Path(tokenizer_dir), out)
    model.config.save(out)
    decoding = getattr(model, "decoding", None)
    if decoding is not None:
        save_decoding(out, decoding)
    card = getattr(model, "card", None)
    if card is not None or card_always:
        write_card(out, model.config, decoding, card)
    log.info("saved model=%s tensors=%d", out, len(state))


MODEL_FILES = (
    CONFIG_NAME,
    WEIGHTS_NAME,
    GENERATION_CONFIG_NAME,
    CARD_NAME,
    *TOKENIZER_FILES,
)
"""What a hub download of a model folder fetches: data files only, never ``*.py``."""


def resolve_model_folder(model_dir: str | Path, hub_kwargs: dict[str, Any] | None = None) -> Path:
    """A local model folder as is, or a hub id downloaded (``hub.resolve_folder``)."""
    local = Path(model_dir).expanduser()
    if not local.exists() and not looks_like_hub_id(str(model_dir)):
        raise InputError(local, "model folder not found")
    return resolve_folder(model_dir, MODEL_FILES, what="dna2gff model", hub_kwargs=hub_kwargs)


AUTO_BOOKKEEPING = ("config", "trust_remote_code", "adapter_kwargs", "_from_auto", "_from_pipeline")
"""What ``AutoModel.from_pretrained`` passes on besides the hub's arguments; ``config`` is the
folder's own (read again here), the rest has no meaning for a dna2gff model. An argument left at
an empty value is not a request (transformers 5.25's ``AutoModel`` passes ``subfolder=""``)."""


def _hub_kwargs(hf_kwargs: dict[str, Any]) -> dict[str, Any]:
    """Split HF's ``from_pretrained`` keyword arguments: the hub's go on, code is refused, the
    rest (``AutoModel``'s own bookkeeping) has nothing to change and is dropped."""
    if hf_kwargs.get("trust_remote_code"):
        raise InputError(
            "trust_remote_code", "dna2gff models never run code from a checkpoint; leave it off"
        )
    hub = {k: hf_kwargs[k] for k in HUB_KWARGS if hf_kwargs.get(k) is not None}
    config = hf_kwargs.get("config")
    if config is not None and not isinstance(config, Dna2GffConfig):
        raise ConfigError(
            f"from_pretrained: config is not a dna2gff config: {type(config).__name__}"
        )
    unused = sorted(
        k
        for k, v in hf_kwargs.items()
        if k not in (*HUB_KWARGS, *AUTO_BOOKKEEPING) and v not in (None, {}, False, "")
    )
    if unused:  # e.g. dtype, device_map: silently ignoring them would surprise
        raise ConfigError(
            f"from_pretrained does not take {', '.join(unused)} for a dna2gff model "
            "(it takes map_location, ep_size, ep_rank and the hub's revision, cache_dir, token, "
            "local_files_only); convert after loading, e.g. model.to(torch.bfloat16)"
        )
    return hub


def load_model_folder(
    model_dir: str | Path,
    *,
    ep_size: int = 1,
    map_location: str | torch.device = "cpu",
    ep_rank: int | None = None,
    model_class: Callable[..., M],
    model_args: tuple[Any, ...] = (),
    hf_kwargs: dict[str, Any] | None = None,
) -> M:
    """Rebuild a saved model exactly (same logits); at ``ep_size > 1`` keeps this rank's experts.

    ``model_dir`` is a folder or a hub id; ``hf_kwargs`` are HF ``from_pretrained``'s (see
    ``_hub_kwargs``). The folder's decoding settings and card facts ride on the model
    (``model.decoding``, ``model.card``) so a later ``save_pretrained`` keeps them."""
    if model_args:
        raise InputError(str(model_dir), "from_pretrained takes no positional model arguments")
    folder = resolve_model_folder(model_dir, _hub_kwargs(hf_kwargs or {}))
    if not folder.is_dir():
        raise InputError(folder, "model folder not found")
    config = Dna2GffConfig.load(folder)
    weights = folder / WEIGHTS_NAME
    if not weights.is_file():
        raise InputError(folder, f"no {WEIGHTS_NAME} in the model folder")
    decoding = load_decoding(folder)
    card = read_card_facts(folder)
    with torch.device("meta"):  # no random init of weights about to be overwritten
        model = model_class(config, ep_size=ep_size, ep_rank=ep_rank)
    state = load_weights(weights, map_location)
    check_finite(state, weights)
    load_canonical_state_dict(model, state, source=str(weights), assign=True)
    _rebuild_derived_state(model, torch.device(map_location))
    model.decoding = decoding
    model.card = card
    config.name_or_path = str(model_dir)
    return model


def push_model_folder(
    model: FolderModel,
    repo_id: str,
    *,
    tokenizer_dir: str | Path | None = None,
    commit_message: str = "Upload dna2gff model",
    private: bool | None = None,
    token: str | bool | None = None,
    revision: str | None = None,
    create_pr: bool = False,
) -> Any:
    """Save the folder to a temporary folder and upload exactly those files as one commit.

    Every rank calls it at ``ep_size > 1`` (the save gathers experts); rank 0 uploads and returns
    ``huggingface_hub``'s commit info, the others None."""
    from huggingface_hub import CommitOperationAdd, HfApi

    with tempfile.TemporaryDirectory(prefix="dna2gff-push-") as tmp:
        save_model_folder(model, tmp, tokenizer_dir, card_always=True)
        if world_rank() != 0:
            return None
        api = HfApi(token=token)
        repo = api.create_repo(repo_id, private=private, exist_ok=True, token=token)
        names = sorted(os.listdir(tmp))
        log.info("uploading model=%s files=%s", repo.repo_id, names)
        operations = [
            CommitOperationAdd(path_in_repo=n, path_or_fileobj=str(Path(tmp) / n)) for n in names
        ]
        return api.create_commit(
            repo.repo_id,
            operations,
            commit_message=commit_message,
            revision=revision,
            create_pr=create_pr,
            token=token,
        )


def check_finite(state: dict[str, Tensor], source: str | Path) -> None:
    """``CheckpointError`` naming the file and the first tensor holding NaN or inf.

    Why at load: such weights load and run, and only fail far away (annotate's decoder met a
    NaN logit as "item '<cut>' not allowed", naming no file). One pass over the weights (~0.1 s
    for the 117M model) names the culprit instead.
    """
    for name, t in state.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise CheckpointError(
                source,
                f"tensor {name} holds {bad} NaN/inf value(s) of {t.numel()}: damaged weights "
                "(a diverged run?)",
            )


def _rebuild_derived_state(model: FolderModel, device: torch.device) -> None:
    """Recreate what is not saved (ALiBi slopes, last expert load) after a meta-device build."""
    slopes = torch.tensor(alibi_slopes(model.config.num_attention_heads), device=device)
    model.encoder.alibi_slopes = slopes
    for mlp in model.moe_layers().values():
        mlp.last_load = torch.zeros(model.config.num_experts, device=device)
    on_meta = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if on_meta:
        raise CheckpointError("<model>", f"tensors left unloaded: {', '.join(on_meta[:8])}")


__all__ = [
    "CONFIG_NAME",
    "HEAD_KEY",
    "WEIGHTS_NAME",
    "canonical_state_dict",
    "check_finite",
    "copy_tokenizer",
    "expected_canonical_shapes",
    "load_canonical_state_dict",
    "load_model_folder",
    "push_model_folder",
    "resolve_model_folder",
    "save_model_folder",
]
