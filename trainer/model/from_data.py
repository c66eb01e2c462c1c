"""A model fitted to a bake: the annotation tokens, the target spec and the genetic codes that
``OUT_DIR/manifest.json`` records, read by ``init_model --data`` and by the trainer.

Why: the recipe used to need three extra steps between baking and training (``init_tk``,
``append_tk``, ``resize_model``) plus the feature types repeated by hand; the manifest already
holds all of it. ``fit_model_to_data`` does what those steps did, with the same functions
(``add_annotation_tokens``, ``resize_token_embeddings``), so both routes give the same weights and
the same tokenizer. ``data_grammar`` is the one reading of the manifest's grammar that the
trainer (``trainer.train.setup``) and ``init_model`` share.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from baking.shards.manifest import Manifest
from trainer.model.resize import resize_token_embeddings
from trainer.model.seq2seq import Dna2GffModel
from trainer.tokens.tokenizer import add_annotation_tokens

log = logging.getLogger(__name__)

GENETIC_CODES = "genetic_codes"
"""``config.extra`` key: the genetic codes of the bake's genomes (what the ORF layer decodes)."""


@dataclass(frozen=True)
class DataGrammar:
    """What the baked data says about its targets (``manifest.json`` -> ``grammar``)."""

    window_len: int | None
    feature_types: list[str] | None
    tokens: list[str] | None


def data_grammar(manifest: Manifest, tokenizer: Any) -> DataGrammar:
    """Window length, feature types and target tokens of the baked data.

    Feature types are kept only when the tokenizer knows their type token (what the model can
    emit); the token list falls back to the grammar's full vocabulary for those types.
    """
    g = manifest.grammar
    window = g.window_len
    types = list(g.feature_types) if g.feature_types else None
    tokens = list(g.tokens) if g.tokens is not None else None
    if types:
        from baking.target_format.grammar import target_vocabulary, type_token

        types = [t for t in types if tokenizer.token_to_id(type_token(t)) is not None]
        if tokens is None and window and types:
            tokens = list(target_vocabulary(types))
    return DataGrammar(int(window) if window else None, types or None, tokens)


def annotation_tokens(manifest: Manifest) -> list[str]:
    """The tokens the bake's targets use, in the order ``bake_data --extract_tokens`` writes
    them (so the ids match a model grown by ``append_tk`` from that file)."""
    g = manifest.grammar
    if g.tokens is not None:
        return list(g.tokens)
    from baking.target_format.grammar import target_vocabulary

    types = g.types_in_targets or g.feature_types
    if not types:
        return []
    return list(target_vocabulary(list(types)))


def genetic_codes(manifest: Manifest) -> list[int]:
    """The genetic codes the bake's genomes were baked under (sorted, unique)."""
    codes = {
        g.get("transl_table")
        for g in (manifest.genomes or {}).values()
        if isinstance(g, dict) and g.get("status") == "ok"
    }
    return sorted(c for c in codes if isinstance(c, int))


def fit_model_to_data(model: Dna2GffModel, tokenizer: Any, manifest: Manifest) -> list[str]:
    """Grow ``tokenizer`` (in place) and ``model`` to the bake's annotation tokens and record its
    target spec and genetic codes in ``model.config``; returns the tokens added.

    New embedding rows start at the mean of the old ones (``resize_token_embeddings``); a token
    the tokenizer already has keeps its id, so fitting twice changes nothing.
    """
    added = add_annotation_tokens(tokenizer, annotation_tokens(manifest))
    resize_token_embeddings(model, tokenizer.get_vocab_size(with_added_tokens=True))
    grammar = data_grammar(manifest, tokenizer)
    model.config.record_target(grammar.window_len, grammar.feature_types)
    codes = genetic_codes(manifest)
    if codes:
        model.config.extra[GENETIC_CODES] = codes
    log.info(
        "fitted to data: added=%d vocab=%d window_len=%s types=%s genetic_codes=%s",
        len(added),
        model.config.vocab_size,
        grammar.window_len,
        ",".join(grammar.feature_types or []),
        codes,
    )
    return added


def save_fitted_model(
    model: Dna2GffModel, tokenizer_dir: Path, manifest: Manifest, out_dir: str | Path
) -> list[str]:
    """``fit_model_to_data`` on ``model`` and the tokenizer of ``tokenizer_dir`` (DNABERT-2's
    folder), then save both as the model folder ``out_dir``; returns the tokens added.

    The grown tokenizer is staged in a temporary folder beside DNABERT-2's other tokenizer files,
    so the model folder receives it through the same atomic copy as an unfitted one.
    """
    from trainer.model.folder import copy_tokenizer
    from trainer.tokens.tokenizer import TOKENIZER_NAME, load_tokenizer, save_tokenizer

    tokenizer = load_tokenizer(tokenizer_dir / TOKENIZER_NAME)
    added = fit_model_to_data(model, tokenizer, manifest)
    with tempfile.TemporaryDirectory(prefix="dna2gff-tokenizer-") as tmp:
        copy_tokenizer(tokenizer_dir, Path(tmp))
        save_tokenizer(tokenizer, Path(tmp))
        model.save_pretrained(out_dir, tokenizer_dir=tmp)
    return added
