"""What the baked data says about its targets, and what the loss and the loader make of it.

Set-up reads the manifest's grammar once (``data_grammar``, from ``trainer.model.from_data``,
which ``init_model --data`` shares), records it in the model's config,
picks the loss's vocabulary (``target_vocab_ids``) and the sample encoder for the model's form
(``make_encoder``). Validation's decoding takes the same ORF constraint as the loss
(``orf_code``). Kept apart from the loop because a benchmark's plain-PyTorch loop needs the very
same vocabulary and encoder as the trainer, without DeepSpeed.
"""

from __future__ import annotations

from typing import Any

import torch

from baking.common.errors import ConfigError
from trainer.data.examples import ExampleBuilder
from trainer.data.loader import TokenIds
from trainer.model.from_data import DataGrammar, data_grammar
from trainer.train.config import TrainConfig

__all__ = [
    "DataGrammar",
    "data_grammar",
    "loss_constraint",
    "make_encoder",
    "orf_code",
    "target_vocab_ids",
]


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
        constrain=loss_constraint(cfg),
    )


def loss_constraint(cfg: TrainConfig) -> Any:
    """What the pointer loss is constrained by: the ORF layer's genetic code, the plain grammar
    (``True``), or nothing (``None``)."""
    if cfg.constrained_loss == "orf":
        from baking.orfs import genetic_code

        return genetic_code(cfg.transl_table)
    return True if cfg.constrained_loss == "grammar" else None


def orf_code(cfg: TrainConfig) -> Any:
    """The code val windows are decoded under by default (None: no ORF layer) -- only when the
    loss is ORF-constrained; each window's own genome code wins (``decode_metric``)."""
    return loss_constraint(cfg) if cfg.constrained_loss == "orf" else None
