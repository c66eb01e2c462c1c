"""``Dna2GffModel``: the encoder-decoder module (DNABERT-2 encoder, decoder, optional MoE).

It is a ``transformers.PreTrainedModel`` (``config_class`` ``Dna2GffConfig``), registered with
``AutoModel`` in ``trainer/model/__init__.py``. This file is the module: structure and compute.
Its neighbours hold the rest:

- ``build.py``: the init recipe from a DNABERT-2 checkpoint (which part is copied from where);
- ``folder.py``: the model folder (``config.json`` + ``model.safetensors`` + tokenizer files,
  ``generation_config.json``, the ``README.md`` model card) and the canonical state dict (experts
  under global ids) it stores; ``save_pretrained`` / ``from_pretrained`` / ``push_to_hub`` /
  ``*canonical_state_dict`` below are thin delegates to it (``docs/model.md``: why not HF's own);
- ``moe.py``: the MoE layer, including the local <-> global expert-id mapping.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import PreTrainedModel

from trainer.distributed import expert_parallel_rank
from trainer.model.config import Dna2GffConfig
from trainer.model.decoder import Decoder, KVCache
from trainer.model.encoder import DNABert2Encoder, Embeddings
from trainer.model.moe import ExpertShard, MoEMLP
from trainer.model.pointer import (
    AUX_CLASSES,
    BASE_AUX_CLASSES,
    PointerHead,
    PointerInputs,
    PointerMemory,
    WindowBases,
)

IGNORE_INDEX = -100


@dataclass
class Seq2SeqOutput:
    loss: Tensor | None
    """Token cross-entropy over ``labels`` (ignore_index -100); the MoE aux loss is NOT included."""
    logits: Tensor
    """(B, T, V)"""
    aux_loss: Tensor
    """Sum of the MoE layers' load-balancing losses (0 without MoE); weight it in the trainer."""
    encoder_logits: Tensor | None = None
    """(B, S, AUX_CLASSES) per encoder token, when the config has ``encoder_aux_weight``."""
    base_logits: Tensor | None = None
    """(B, L, BASE_AUX_CLASSES) per base of the window, when the config has ``base_aux_weight``."""


@dataclass
class PointerStep:
    """What the decoder needs besides token ids once the bases are encoded: the batch's base
    memory, and per decoder position the pointed base (-1: a token step) and the anchor of the
    distance term."""

    memory: PointerMemory
    positions: Tensor
    """(B, T) base fed as input at each position, -1 where the input is a token"""
    anchors: Tensor
    """(B, T) anchor for the base logits predicted at each position"""


class Dna2GffModel(PreTrainedModel):
    """Encoder-decoder over one vocabulary: DNA BPE tokens in; out, annotation tokens and
    pointers at the window's bases (``trainer.model.pointer``)."""

    config_class = Dna2GffConfig
    config: Dna2GffConfig
    base_model_prefix = "dna2gff"
    """No submodule carries this name: the whole model is the base model (there is no head
    variant to load it into), which is what HF concludes from a prefix it does not find."""
    main_input_name = "input_ids"
    _tied_weights_keys = {"lm_head.weight": "embeddings.word_embeddings.weight"}  # noqa: RUF012
    """HF ties these when ``config.tie_word_embeddings``: the head's weight IS the embedding
    matrix (one Parameter), as the explicit tie this replaced did."""

    def __init__(self, config: Dna2GffConfig, ep_size: int = 1, ep_rank: int | None = None) -> None:
        """``ep_rank`` (default: derived from torch.distributed, see ``trainer.distributed``) picks
        which experts this process holds when ``ep_size > 1``."""
        super().__init__(config)
        if ep_rank is not None and not 0 <= ep_rank < ep_size:
            raise ValueError(f"ep_rank={ep_rank} outside 0..{ep_size - 1}")
        self._ep_rank = ep_rank
        if ep_size < 1 or (config.use_moe and config.num_experts % ep_size):
            raise ValueError(f"ep_size={ep_size} must divide num_experts={config.num_experts}")
        self.ep_size = ep_size if config.use_moe else 1
        self.embeddings = Embeddings(config)
        self.encoder = DNABert2Encoder(config)
        self.decoder = Decoder(config, self.ep_size)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.pointer_head = PointerHead(config)
        self.encoder_aux = (
            nn.Linear(config.hidden_size, AUX_CLASSES) if config.encoder_aux_weight > 0 else None
        )
        self.base_aux = (
            nn.Linear(config.hidden_size, BASE_AUX_CLASSES) if config.base_aux_weight > 0 else None
        )
        self.decoding: Any = None
        """The decoding settings the model was tuned and scored with (``generation.py``), read from
        and written to the folder's ``generation_config.json``; None = annotate's own defaults."""
        self.card: Any = None
        """What the model card says beyond the config (training genomes, scores; ``card.py``)."""
        self.post_init()  # HF: tied-weight bookkeeping, ``_init_weights`` (ours keeps weights), tie

    # ----------------------------------------------------------------- structure
    def _init_weights(self, module: nn.Module) -> None:
        """Leave every weight as its module's constructor drew it.

        HF's ``post_init`` calls this on each module to (re)draw weights from the global random
        stream. Ours are set by the init recipe instead (``build.py``: copied from DNABERT-2, the
        new parts from their own seeded streams), and a folder's weights overwrite everything, so a
        redraw here would only change the global random stream the recipe forks from.
        """

    @property
    def ep_rank(self) -> int:
        return self._ep_rank if self._ep_rank is not None else expert_parallel_rank(self.ep_size)

    def moe_layers(self) -> dict[int, MoEMLP]:
        return {
            i: layer.mlp
            for i, layer in enumerate(self.decoder.layers())
            if isinstance(layer.mlp, MoEMLP)
        }

    # ----------------------------------------------------------------- compute
    def encode(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """DNA token ids (B, S) + mask (1 = real) -> encoder hidden states (B, S, H)."""
        return self.encoder(self.embeddings(input_ids), attention_mask)

    def pointer_memory(self, enc: Tensor, bases: WindowBases) -> PointerMemory:
        """Per-base keys and inputs of the windows (see ``trainer.model.pointer``)."""
        return self.pointer_head.memory(enc, bases)

    def _decode(
        self,
        decoder_input_ids: Tensor,
        encoder_hidden: Tensor,
        encoder_attention_mask: Tensor,
        decoder_attention_mask: Tensor | None,
        cache: KVCache | None,
        pointer: PointerStep | None = None,
    ) -> tuple[Tensor, KVCache, Tensor]:
        x = self.embeddings(decoder_input_ids)  # (B, T, H)
        if pointer is not None:
            x = self.pointer_head.step_inputs(x, pointer.memory, pointer.positions)
        h, new_cache, aux = self.decoder(
            x,
            encoder_hidden,
            encoder_attention_mask,
            self.encoder.alibi_slopes,
            decoder_attention_mask,
            cache,
        )
        logits = self.lm_head(h)  # (B, T, V)
        if pointer is not None:
            base = self.pointer_head.logits(h, pointer.memory, pointer.anchors)  # (B, T, L)
            logits = torch.cat([logits.float(), base.float()], dim=-1)  # joint (B, T, V + L)
        return logits, new_cache, aux

    def decode(
        self,
        decoder_input_ids: Tensor,
        encoder_hidden: Tensor,
        encoder_attention_mask: Tensor,
        past_key_values: KVCache | None = None,
        use_cache: bool = False,
        decoder_attention_mask: Tensor | None = None,
        pointer: PointerStep | None = None,
    ) -> tuple[Tensor, KVCache | None]:
        """Logits (B, T, V) for new decoder tokens (joint (B, T, V + L) with ``pointer``), and
        the cache (with ``use_cache``).

        Step by step: pass the whole prefix once (or just ``[CLS]``), then only the newest token
        with ``past_key_values`` = the returned cache; results equal a full forward.
        ``decoder_attention_mask`` (B, past + T) is optional (1 = real token).
        """
        logits, cache, _ = self._decode(
            decoder_input_ids,
            encoder_hidden,
            encoder_attention_mask,
            decoder_attention_mask,
            past_key_values,
            pointer,
        )
        return logits, (cache if use_cache else None)

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        decoder_input_ids: Tensor,
        decoder_attention_mask: Tensor | None = None,
        labels: Tensor | None = None,
        pointer: PointerInputs | None = None,
    ) -> Seq2SeqOutput:
        """Teacher-forced pass. ``decoder_input_ids`` = [CLS] + target, ``labels`` = target + [SEP]
        (already shifted by the caller; pads as -100). ``pointer`` carries the windows' bases and
        per decoder position the pointed base and the anchor; the logits and labels are then
        joint (``V + b`` = base ``b``), masked to ``pointer.allowed`` when set (a constrained
        loss). Without it the model scores target tokens only (logits (B, T, V))."""
        enc = self.encode(input_ids, attention_mask)
        step = None
        base_logits = None
        decoder_allowed = None
        if pointer is not None:
            memory = self.pointer_memory(enc, pointer.bases)
            step = PointerStep(memory, pointer.positions, pointer.anchors)
            decoder_allowed = pointer.allowed
            if self.base_aux is not None:
                base_logits = self.base_aux(memory.keys)
        logits, _, aux = self._decode(
            decoder_input_ids, enc, attention_mask, decoder_attention_mask, None, step
        )
        if decoder_allowed is not None:
            logits = logits.masked_fill(~decoder_allowed, torch.finfo(logits.dtype).min / 2)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(
                logits.float().reshape(-1, logits.shape[-1]),
                labels.reshape(-1),
                ignore_index=IGNORE_INDEX,
            )
        enc_logits = self.encoder_aux(enc) if self.encoder_aux is not None else None
        return Seq2SeqOutput(
            loss=loss,
            logits=logits,
            aux_loss=aux,
            encoder_logits=enc_logits,
            base_logits=base_logits,
        )

    def expert_load(self) -> dict[int, Tensor]:
        """Per MoE decoder layer: fraction of routed token slots each global expert got last forward."""
        return {i: mlp.last_load.clone() for i, mlp in self.moe_layers().items()}

    @property
    def num_local_experts(self) -> int:
        return self.config.num_experts // self.ep_size

    def expert_shard(self) -> ExpertShard:
        """Which global experts this process holds (maps state-dict keys, see ``moe.py``)."""
        return ExpertShard(self.config.num_experts, self.ep_size, self.ep_rank)

    # ----------------------------------------------------------------- state (folder.py)
    def canonical_state_dict(self, gather: bool = False) -> dict[str, Tensor]:
        """State dict with experts under global ids, tied head left out (``folder.py``)."""
        from trainer.model.folder import canonical_state_dict

        return canonical_state_dict(self, gather)

    def load_canonical_state_dict(
        self,
        sd: dict[str, Tensor],
        strict: bool = True,
        source: str = "<state dict>",
        assign: bool = False,
    ) -> None:
        """Load a canonical state dict, keeping this rank's experts (``folder.py``)."""
        from trainer.model.folder import load_canonical_state_dict

        load_canonical_state_dict(self, sd, strict=strict, source=source, assign=assign)

    def save_pretrained(  # type: ignore[override]
        self,
        save_directory: str | Path,
        tokenizer_dir: str | Path | None = None,
        **hf_kwargs: Any,
    ) -> None:
        """Write the model folder (``folder.save_model_folder``); call on every rank.

        HF's keyword arguments (``max_shard_size``, ``safe_serialization``, ...) are accepted and
        have nothing to change: the folder is always one safetensors file, written atomically.
        ``push_to_hub=True`` is refused: use ``push_to_hub`` (one way to upload)."""
        from trainer.model.folder import save_model_folder

        if hf_kwargs.pop("push_to_hub", False):
            raise ValueError("save_pretrained(push_to_hub=True): call model.push_to_hub(repo_id)")
        save_model_folder(self, save_directory, tokenizer_dir)

    @classmethod
    def from_pretrained(  # type: ignore[override]
        cls,
        pretrained_model_name_or_path: str | Path,
        *model_args: Any,
        ep_size: int = 1,
        map_location: str | torch.device = "cpu",
        ep_rank: int | None = None,
        **hf_kwargs: Any,
    ) -> Dna2GffModel:
        """Rebuild a saved model exactly (``folder.load_model_folder``): a local folder, or a hub
        id fetched through ``huggingface_hub`` (``revision``, ``cache_dir``, ``token``,
        ``local_files_only`` are passed on; ``HF_HUB_OFFLINE=1`` answers from the cache or fails
        at once). ``transformers.AutoModel.from_pretrained`` lands here. Never runs code from
        the checkpoint: ``trust_remote_code`` is refused."""
        from trainer.model.folder import load_model_folder

        return load_model_folder(
            pretrained_model_name_or_path,
            ep_size=ep_size,
            map_location=map_location,
            ep_rank=ep_rank,
            model_class=cls,
            model_args=model_args,
            hf_kwargs=hf_kwargs,
        )

    def push_to_hub(  # type: ignore[override]
        self,
        repo_id: str,
        *,
        tokenizer_dir: str | Path | None = None,
        commit_message: str = "Upload dna2gff model",
        private: bool | None = None,
        token: str | bool | None = None,
        revision: str | None = None,
        create_pr: bool = False,
    ) -> Any:
        """Save the folder (card included) to a temporary folder and upload it as one commit.

        HF's own ``push_to_hub`` would replace the folder's ``README.md`` with a generic card;
        this one uploads exactly what ``save_pretrained`` writes (``folder.push_model_folder``)."""
        from trainer.model.folder import push_model_folder

        return push_model_folder(
            self,
            repo_id,
            tokenizer_dir=tokenizer_dir,
            commit_message=commit_message,
            private=private,
            token=token,
            revision=revision,
            create_pr=create_pr,
        )


__all__ = [
    "IGNORE_INDEX",
    "Dna2GffModel",
    "KVCache",
    "PointerInputs",
    "PointerStep",
    "Seq2SeqOutput",
    "WindowBases",
]
