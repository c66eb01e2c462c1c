"""Grow a model's vocabulary to its tokenizer after annotation tokens were added (``resize_model``).

Old rows keep their values (the pre-trained DNA embeddings must not move); new rows start at the
mean of the old rows, so a new token begins as an "average token" instead of N(0, 1) noise whose
norm dwarfs every trained row. A tied head stays tied (it is the same Parameter); an untied head
grows the same way from its own rows.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from baking.common.errors import InputError
from trainer.model.folder import save_model_folder
from trainer.model.seq2seq import Dna2GffModel
from trainer.tokens.tokenizer import TOKENIZER_NAME, load_tokenizer

log = logging.getLogger(__name__)


def _grow_rows(weight: torch.Tensor, new_rows: int) -> torch.Tensor:
    """``weight`` (V, H) -> (V + new_rows, H): old rows unchanged, new rows = mean of old rows."""
    mean = weight.detach().mean(dim=0, keepdim=True)
    return torch.cat([weight.detach(), mean.expand(new_rows, -1)], dim=0).contiguous()


def resize_token_embeddings(model: Dna2GffModel, new_vocab_size: int) -> int:
    """Resize embeddings and head in place to ``new_vocab_size`` rows; returns rows added.

    Shrinking is refused: it would drop trained rows that token ids still point to.
    """
    old = model.config.vocab_size
    if new_vocab_size < old:
        raise ValueError(f"cannot shrink the vocabulary from {old} to {new_vocab_size}")
    if new_vocab_size == old:
        return 0
    added = new_vocab_size - old
    emb = model.embeddings.word_embeddings
    new_emb = nn.Embedding(
        new_vocab_size, emb.embedding_dim, device=emb.weight.device, dtype=emb.weight.dtype
    )
    new_emb.weight.data.copy_(_grow_rows(emb.weight, added))
    model.embeddings.word_embeddings = new_emb
    head = model.lm_head
    new_head = nn.Linear(
        head.in_features,
        new_vocab_size,
        bias=False,
        device=head.weight.device,
        dtype=head.weight.dtype,
    )
    if not model.config.tie_word_embeddings:
        new_head.weight.data.copy_(_grow_rows(head.weight, added))
    model.lm_head = new_head
    model.config.vocab_size = new_vocab_size
    model.tie_weights()
    return added


def check_tokenizer_extends(old_json: Path, new_json: Path) -> None:
    """Every token of the model's current tokenizer must keep its id in the new one."""
    old_vocab = load_tokenizer(old_json).get_vocab(with_added_tokens=True)
    new_vocab = load_tokenizer(new_json).get_vocab(with_added_tokens=True)
    moved = [t for t, i in old_vocab.items() if new_vocab.get(t) != i]
    if moved:
        shown = ", ".join(repr(t) for t in sorted(moved)[:5])
        raise InputError(
            new_json,
            f"does not extend the model's tokenizer {old_json}: {len(moved)} token(s) missing or "
            f"with another id ({shown})",
        )


def resize_model(
    model_dir: str | Path, tokenizer_path: str | Path, out_dir: str | Path | None = None
) -> int:
    """``resize_model``: grow the saved model to the tokenizer, copy the tokenizer in, save.

    Writes to ``out_dir`` (default: in place, each file atomically). Returns the rows added.
    """
    model_dir = Path(model_dir)
    tok_path = Path(tokenizer_path)
    if tok_path.is_dir():
        tok_path = tok_path / TOKENIZER_NAME
    tokenizer = load_tokenizer(tok_path)
    current = model_dir / TOKENIZER_NAME
    if current.is_file() and current.resolve() != tok_path.resolve():
        check_tokenizer_extends(current, tok_path)
    model = Dna2GffModel.from_pretrained(model_dir)
    new_size = tokenizer.get_vocab_size(with_added_tokens=True)
    if new_size < model.config.vocab_size:
        raise InputError(
            tok_path,
            f"has {new_size} tokens, fewer than the model's {model.config.vocab_size}: "
            "not a tokenizer grown from the model's",
        )
    added = resize_token_embeddings(model, new_size)
    save_model_folder(model, out_dir or model_dir, tokenizer_dir=tok_path)
    log.info("resize_model model=%s vocab=%d added=%d", out_dir or model_dir, new_size, added)
    return added
