"""``Dna2GffModel``: DNABERT-2 encoder + a decoder initialised from it, with an optional MoE.

| part | init |
|---|---|
| embeddings (shared by encoder and decoder), encoder layers | copied from DNABERT-2 |
| decoder self-attention (``Wqkv``, ``dense``) + its norm | copied from the same-index encoder layer |
| cross-attention (``q``, ``kv``, ``dense``) | random N(0, 0.02), zero biases; norm copied (decoder.py) |
| decoder MLP + norm | copied; MoE experts are copies of it, router random |
| output head ``lm_head`` (no bias) | the word embedding itself when tied, else a copy of it |

The model folder is ``config.json`` + ``model.safetensors`` (+ tokenizer files). Experts are stored
under *global* indices ("canonical" state dict), so a folder saved at one expert-parallel size loads
at any other: rank r of an ``ep_size``-way group keeps experts ``r*local .. (r+1)*local - 1``.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from baking.common.errors import InputError
from baking.common.files import copy_file
from trainer.distributed import expert_parallel_group, expert_parallel_rank
from trainer.model.config import CONFIG_NAME, Dna2GffConfig
from trainer.model.decoder import CROSS_INIT_STD, Decoder, KVCache
from trainer.model.dnabert2 import TOKENIZER_FILES, load_dnabert2
from trainer.model.encoder import Embeddings, Encoder, GatedMLP, alibi_slopes
from trainer.model.moe import EXPERTS_PREFIX, ROUTER_INIT_STD, MoEMLP
from trainer.model.state import (
    CheckpointError,
    check_state_dict,
    load_weights,
    save_safetensors_atomic,
)

log = logging.getLogger(__name__)

WEIGHTS_NAME = "model.safetensors"
HEAD_KEY = "lm_head.weight"
IGNORE_INDEX = -100
_EXPERT_KEY = re.compile(
    r"^(decoder\.layer\.\d+\.mlp\." + re.escape(EXPERTS_PREFIX) + r")(\d+)\.(.+)$"
)


@dataclass
class Seq2SeqOutput:
    loss: Tensor | None
    """Token cross-entropy over ``labels`` (ignore_index -100); the MoE aux loss is NOT included."""
    logits: Tensor
    """(B, T, V)"""
    aux_loss: Tensor
    """Sum of the MoE layers' load-balancing losses (0 without MoE); weight it in the trainer."""


class Dna2GffModel(nn.Module):
    """Encoder-decoder over one vocabulary: DNA BPE tokens in, annotation tokens out."""

    def __init__(self, config: Dna2GffConfig, ep_size: int = 1, ep_rank: int | None = None) -> None:
        """``ep_rank`` (default: derived from torch.distributed, see ``trainer.distributed``) picks
        which experts this process holds when ``ep_size > 1``."""
        super().__init__()
        if ep_rank is not None and not 0 <= ep_rank < ep_size:
            raise ValueError(f"ep_rank={ep_rank} outside 0..{ep_size - 1}")
        self._ep_rank = ep_rank
        if ep_size < 1 or (config.use_moe and config.num_experts % ep_size):
            raise ValueError(f"ep_size={ep_size} must divide num_experts={config.num_experts}")
        self.config = config
        self.ep_size = ep_size if config.use_moe else 1
        self.embeddings = Embeddings(config)
        self.encoder = Encoder(config)
        self.decoder = Decoder(config, self.ep_size)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.tie_weights()

    # ----------------------------------------------------------------- structure
    def tie_weights(self) -> None:
        """With ``tie_word_embeddings`` the head's weight IS the embedding matrix (one Parameter)."""
        if self.config.tie_word_embeddings:
            self.lm_head.weight = self.embeddings.word_embeddings.weight

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

    def _decode(
        self,
        decoder_input_ids: Tensor,
        encoder_hidden: Tensor,
        encoder_attention_mask: Tensor,
        decoder_attention_mask: Tensor | None,
        cache: KVCache | None,
    ) -> tuple[Tensor, KVCache, Tensor]:
        x = self.embeddings(decoder_input_ids)  # (B, T, H)
        h, new_cache, aux = self.decoder(
            x,
            encoder_hidden,
            encoder_attention_mask,
            self.encoder.alibi_slopes,
            decoder_attention_mask,
            cache,
        )
        return self.lm_head(h), new_cache, aux  # (B, T, V)

    def decode(
        self,
        decoder_input_ids: Tensor,
        encoder_hidden: Tensor,
        encoder_attention_mask: Tensor,
        past_key_values: KVCache | None = None,
        use_cache: bool = False,
        decoder_attention_mask: Tensor | None = None,
    ) -> tuple[Tensor, KVCache | None]:
        """Logits (B, T, V) for new decoder tokens, and the cache (with ``use_cache``).

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
        )
        return logits, (cache if use_cache else None)

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        decoder_input_ids: Tensor,
        decoder_attention_mask: Tensor | None = None,
        labels: Tensor | None = None,
    ) -> Seq2SeqOutput:
        """Teacher-forced pass. ``decoder_input_ids`` = [CLS] + target, ``labels`` = target + [SEP]
        (already shifted by the caller; pads as -100)."""
        enc = self.encode(input_ids, attention_mask)
        logits, _, aux = self._decode(
            decoder_input_ids, enc, attention_mask, decoder_attention_mask, None
        )
        loss = None
        if labels is not None:
            loss = F.cross_entropy(
                logits.float().reshape(-1, logits.shape[-1]),
                labels.reshape(-1),
                ignore_index=IGNORE_INDEX,
            )
        return Seq2SeqOutput(loss=loss, logits=logits, aux_loss=aux)

    def expert_load(self) -> dict[int, Tensor]:
        """Per MoE decoder layer: fraction of routed token slots each global expert got last forward."""
        return {i: mlp.last_load.clone() for i, mlp in self.moe_layers().items()}

    # ----------------------------------------------------------------- state
    def canonical_state_dict(self, gather: bool = False) -> dict[str, Tensor]:
        """State dict with experts under global indices; the tied head is left out (it is the embedding).

        At ``ep_size > 1`` each rank holds only its experts; with ``gather`` (a collective: every rank
        of the expert group must call it) the other ranks' experts are fetched too, so the result is
        the whole model on every rank.
        """
        local = self.num_local_experts
        offset = self.ep_rank * local
        out: dict[str, Tensor] = {}
        for key, value in self.state_dict().items():
            if key == HEAD_KEY and self.config.tie_word_embeddings:
                continue
            match = _EXPERT_KEY.match(key)
            if match:
                key = f"{match.group(1)}{offset + int(match.group(2))}.{match.group(3)}"
            out[key] = value
        if gather and self.ep_size > 1:
            out = self._gather_experts(out)
        return out

    @property
    def num_local_experts(self) -> int:
        return self.config.num_experts // self.ep_size

    def _gather_experts(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        import torch.distributed as dist

        group = expert_parallel_group(self.ep_size)
        mine = {k: v.detach().cpu() for k, v in state.items() if _EXPERT_KEY.match(k)}
        parts: list[Any] = [None] * self.ep_size
        dist.all_gather_object(parts, mine, group=group)
        for part in parts:
            state.update(part)
        return state

    def expected_canonical_shapes(self) -> dict[str, torch.Size]:
        """Names and shapes a complete canonical state dict must have (all experts, no tied head)."""
        shapes: dict[str, torch.Size] = {}
        for key, value in self.state_dict().items():
            if key == HEAD_KEY and self.config.tie_word_embeddings:
                continue
            match = _EXPERT_KEY.match(key)
            if match:
                if int(match.group(2)) != 0:
                    continue
                for e in range(self.config.num_experts):
                    shapes[f"{match.group(1)}{e}.{match.group(3)}"] = value.shape
                continue
            shapes[key] = value.shape
        return shapes

    def load_canonical_state_dict(
        self,
        sd: dict[str, Tensor],
        strict: bool = True,
        source: str = "<state dict>",
        assign: bool = False,
    ) -> None:
        """Load a canonical state dict, keeping this expert-parallel rank's experts only.

        A tied head key, if present, is ignored (the head is the embedding). ``strict`` checks every
        name and shape first and raises ``CheckpointError`` naming each mismatch.
        """
        sd = {
            k: v for k, v in sd.items() if not (k == HEAD_KEY and self.config.tie_word_embeddings)
        }
        if strict:
            check_state_dict(source, self.expected_canonical_shapes(), sd)
        local = self.num_local_experts
        first = self.ep_rank * local
        mine: dict[str, Tensor] = {}
        for key, value in sd.items():
            match = _EXPERT_KEY.match(key)
            if match:
                e = int(match.group(2))
                if not first <= e < first + local:
                    continue
                key = f"{match.group(1)}{e - first}.{match.group(3)}"
            mine[key] = value
        # DeepSpeed tags expert parameters (``allreduce``, ``group_name``); assign=True makes new
        # Parameter objects, so carry those attributes over
        tags = {n: dict(p.__dict__) for n, p in self.named_parameters() if p.__dict__}
        result = self.load_state_dict(mine, strict=False, assign=assign)
        for name, param in self.named_parameters():
            for attr, value in tags.get(name, {}).items():
                setattr(param, attr, value)
        missing = [
            k
            for k in result.missing_keys
            if not (k == HEAD_KEY and self.config.tie_word_embeddings)
        ]
        if strict and (missing or result.unexpected_keys):
            raise CheckpointError(source, f"missing={missing} unexpected={result.unexpected_keys}")
        self.tie_weights()

    def save_pretrained(self, out_dir: str | Path, tokenizer_dir: str | Path | None = None) -> None:
        """Write ``config.json`` + ``model.safetensors`` (+ tokenizer files), each file atomically.

        Call on every rank at ``ep_size > 1`` (experts are gathered); only rank 0 writes.
        """
        from trainer.distributed import world_rank

        state = self.canonical_state_dict(gather=self.ep_size > 1)
        if world_rank() != 0:
            return
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        save_safetensors_atomic(state, out / WEIGHTS_NAME)
        if tokenizer_dir is not None:
            _copy_tokenizer(Path(tokenizer_dir), out)
        self.config.save(out)
        log.info("saved model=%s tensors=%d", out, len(state))

    @classmethod
    def from_pretrained(
        cls,
        model_dir: str | Path,
        ep_size: int = 1,
        map_location: str | torch.device = "cpu",
        ep_rank: int | None = None,
    ) -> Dna2GffModel:
        """Rebuild a saved model exactly (same logits); at ``ep_size > 1`` keeps this rank's experts."""
        folder = Path(model_dir)
        if not folder.is_dir():
            raise InputError(folder, "model folder not found")
        config = Dna2GffConfig.load(folder)
        weights = folder / WEIGHTS_NAME
        if not weights.is_file():
            raise InputError(folder, f"no {WEIGHTS_NAME} in the model folder")
        with torch.device("meta"):  # no random init of weights about to be overwritten
            model = cls(config, ep_size=ep_size, ep_rank=ep_rank)
        state = load_weights(weights, map_location)
        model.load_canonical_state_dict(state, source=str(weights), assign=True)
        model._rebuild_derived_state(torch.device(map_location))
        return model

    def _rebuild_derived_state(self, device: torch.device) -> None:
        """Recreate what is not saved (ALiBi slopes, last expert load) after a meta-device build."""
        slopes = torch.tensor(alibi_slopes(self.config.num_attention_heads), device=device)
        self.encoder.alibi_slopes = slopes
        for mlp in self.moe_layers().values():
            mlp.last_load = torch.zeros(self.config.num_experts, device=device)
        on_meta = [n for n, t in [*self.named_parameters(), *self.named_buffers()] if t.is_meta]
        if on_meta:
            raise CheckpointError("<model>", f"tensors left unloaded: {', '.join(on_meta[:8])}")


def _copy_tokenizer(src: Path, out: Path) -> None:
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


def _init_new_parts(model: Dna2GffModel, seed: int) -> None:
    """Draw the random parts from their own seeded streams: cross-attention N(0, 0.02) with zero
    biases, routers N(0, 0.02). So the cross-attention of a MoE model equals a dense model's."""
    cross = torch.Generator().manual_seed(seed)
    router = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for layer in model.decoder.layers():
            att = layer.crossattention
            for linear in (att.q, att.kv, att.output.dense):
                linear.weight.copy_(
                    torch.randn(linear.weight.shape, generator=cross) * CROSS_INIT_STD
                )
                linear.bias.zero_()
            if isinstance(layer.mlp, MoEMLP):
                w = layer.mlp.router.weight
                w.copy_(torch.randn(w.shape, generator=router) * ROUTER_INIT_STD)


def build_from_dnabert2(
    dnabert_path: str,
    *,
    num_decoder_layers: int | None = None,
    use_moe: bool = False,
    num_experts: int = 8,
    moe_top_k: int = 2,
    moe_layers: list[int] | None = None,
    tie_weights: bool = False,
    seed: int = 0,
    **config_overrides: Any,
) -> Dna2GffModel:
    """The recipe's ``init_model``: DNABERT-2 encoder -> encoder-decoder (see the module table).

    ``seed`` fixes the random parts (cross-attention, routers). Extra keyword arguments go to
    ``Dna2GffConfig`` (e.g. ``moe_capacity_factor``).
    """
    with torch.random.fork_rng(devices=[]):  # the caller's random stream is left untouched
        torch.manual_seed(seed)
        source, enc_config, _ = load_dnabert2(dnabert_path)
        fields = enc_config.to_dict()
        fields.update(
            num_decoder_layers=num_decoder_layers or enc_config.num_encoder_layers,
            use_moe=use_moe,
            num_experts=num_experts,
            moe_top_k=moe_top_k,
            moe_layers=moe_layers,
            tie_word_embeddings=tie_weights,
            source_checkpoint=str(dnabert_path),
        )
        fields.update(config_overrides)
        config = Dna2GffConfig.from_dict(fields)
        model = Dna2GffModel(config)
    model.embeddings.load_state_dict(source.embeddings.state_dict())
    model.encoder.load_state_dict(source.encoder.state_dict())
    for i, layer in enumerate(model.decoder.layers()):
        src = source.encoder.layers()[i]
        layer.attention.load_state_dict(src.attention.state_dict())
        layer.crossattention.output.LayerNorm.load_state_dict(
            src.attention.output.LayerNorm.state_dict()
        )
        if isinstance(layer.mlp, MoEMLP):
            layer.mlp.upcycle(src.mlp)
            layer.mlp.layernorm.load_state_dict(src.mlp.layernorm.state_dict())
        else:
            assert isinstance(layer.mlp, GatedMLP)
            layer.mlp.load_state_dict(src.mlp.state_dict())
    _init_new_parts(model, seed)
    if not tie_weights:
        with torch.no_grad():
            model.lm_head.weight.copy_(model.embeddings.word_embeddings.weight)
    model.tie_weights()
    log.info(
        "built model source=%s enc_layers=%d dec_layers=%d moe=%s experts=%d top_k=%d tied=%s",
        dnabert_path,
        config.num_encoder_layers,
        config.num_decoder_layers,
        use_moe,
        num_experts,
        moe_top_k,
        tie_weights,
    )
    return model


__all__ = [
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "Dna2GffModel",
    "KVCache",
    "Seq2SeqOutput",
    "build_from_dnabert2",
]
