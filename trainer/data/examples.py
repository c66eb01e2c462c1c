"""Training examples: a shard sample -> encoder ids, base layout, pointer target, labels; batches.

A sample holds the window's DNA and its features (``features.json``,
``baking.target_format.sample_features``). ``build_example`` writes the features as the pointer
target (``baking.target_format.pointers``) and maps every position onto "this encoder token, this
base inside it" with the tokenizer's offsets (``trainer.data.layout``), directly: no target text is
parsed and re-encoded. ``ExampleBuilder`` is the loader's per-sample step (``build``) and its
batch step (``collate``).

Joint label space (``trainer.model.pointer``): a token label is its vocabulary id, base ``b`` is
``vocab_size + b``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from baking.orfs import GeneticCode, genetic_code
from baking.target_format.grammar import PHASED_TYPES, GrammarError, WindowFeature
from baking.target_format.pointers import (
    CUT,
    END_SLOT,
    START_SLOT,
    Item,
    encode_pointer_target,
    is_position,
)
from baking.target_format.sample_features import FEATURES_FIELD, features_from_json
from trainer.data.layout import BaseLayout, base_layout
from trainer.data.loader import (
    TokenIds,
    sample_error,
    sample_meta,
    sample_transl_table,
    text_field,
)
from trainer.model.pointer import NO_CODON
from trainer.model.seq2seq import IGNORE_INDEX
from trainer.tokens.tokenizer import WindowTooLong, check_source_length, encode_sources

log = logging.getLogger(__name__)


def clip_features(features: Sequence[WindowFeature], length: int) -> list[WindowFeature]:
    """The features of a window seen only up to base ``length`` (the encoder's truncation)."""
    out = []
    for f in features:
        if f.start >= length:
            continue
        if f.end < length:
            out.append(f)
            continue
        phase = f.phase
        if phase is not None and f.strand == "-":  # the piece's 5' end moves left
            phase = (phase - (f.end - (length - 1))) % 3
        out.append(WindowFeature(f.start, length - 1, f.strand, f.type, phase, f.cut_left, True))
    return out


def feature_slots(items: Sequence[Item]) -> list[int]:
    """The slot (0 type .. 4 phase) of every item of a valid pointer target."""
    out = []
    slot = 0
    ftype = ""
    for item in items:
        out.append(slot)
        if slot == 0:
            ftype = str(item)[1:-1]
        slot += 1
        if slot == 5 or (slot == 4 and ftype not in PHASED_TYPES):
            slot = 0
    return out


def anchors_for(items: Sequence[Item], length: int) -> list[int]:
    """The anchor before each item and after the last (``len(items) + 1`` values): the base of
    the last coordinate written (-1 at first; a cut START is the left edge -1, a cut END the
    right edge ``length``)."""
    slots = feature_slots(items)
    out = [-1]
    anchor = -1
    for item, slot in zip(items, slots):
        if slot == START_SLOT:
            anchor = -1 if item == CUT else int(item)
        elif slot == END_SLOT:
            anchor = length if item == CUT else int(item)
        out.append(anchor)
    return out


def encoder_labels(
    features: Sequence[WindowFeature], layout: BaseLayout, n_tokens: int
) -> list[int]:
    """Per encoder position ([CLS] .. [SEP]) the auxiliary class of its bases (-100: special).

    Per base: 1-3 / 4-6 codon position of a ``+`` / ``-`` CDS, 7 inside a start codon of a CDS
    whose 5' end is in the window, 8 inside its stop codon, 9 an RNA gene, 0 nothing; a token
    takes the highest class of its bases in the order start/stop > coding > RNA > nothing.
    """
    n = layout.length
    base = [0] * n
    prio = {0: 0, 9: 1, 1: 2, 2: 2, 3: 2, 4: 2, 5: 2, 6: 2, 7: 3, 8: 3}
    for f in features:
        if f.type not in PHASED_TYPES:
            for b in range(f.start, f.end + 1):
                if prio[base[b]] < 1:
                    base[b] = 9
            continue
        phase = f.phase or 0
        for b in range(f.start, f.end + 1):
            if f.strand == "+":
                pos = (b - f.start - phase) % 3
                cls = 1 + pos
            else:
                pos = (f.end - b - phase) % 3
                cls = 4 + pos
            if prio[base[b]] < 2:
                base[b] = cls
        five_closed = not (f.cut_left if f.strand == "+" else f.cut_right)
        three_closed = not (f.cut_right if f.strand == "+" else f.cut_left)
        if five_closed:
            span = range(f.start, f.start + 3) if f.strand == "+" else range(f.end - 2, f.end + 1)
            for b in span:
                if 0 <= b < n:
                    base[b] = 7
        if three_closed:
            span = range(f.end - 2, f.end + 1) if f.strand == "+" else range(f.start, f.start + 3)
            for b in span:
                if 0 <= b < n and base[b] != 7:
                    base[b] = 8
    labels = [IGNORE_INDEX] * n_tokens
    for b, tok in enumerate(layout.token):
        cur = labels[tok]
        if cur == IGNORE_INDEX or prio[base[b]] > prio[cur]:
            labels[tok] = base[b]
    return labels


def base_labels(features: Sequence[WindowFeature], length: int) -> list[int]:
    """Per base: 1 where a CDS begins (the base its 5' coordinate names), 2 where it ends (3'),
    0 elsewhere; an end cut by the window edge is no label (``BASE_AUX_CLASSES``)."""
    labels = [0] * length
    for f in features:
        if f.type not in PHASED_TYPES:
            continue
        five, three = (f.start, f.end) if f.strand == "+" else (f.end, f.start)
        five_cut, three_cut = (
            (f.cut_left, f.cut_right) if f.strand == "+" else (f.cut_right, f.cut_left)
        )
        if not five_cut and 0 <= five < length:
            labels[five] = 1
        if not three_cut and 0 <= three < length:
            labels[three] = 2
    return labels


@dataclass
class Example:
    """One window as a training example (lists; ``collate_examples`` pads)."""

    src: list[int]
    dec_in: list[int]
    positions: list[int]
    anchors: list[int]
    labels: list[int]
    layout: BaseLayout
    enc_labels: list[int] | None
    allowed: list[tuple[list[int], range | tuple[int, ...]]] | None = None
    """Per label: the token ids and bases the constrained decoder would allow there (the loss is
    then the constrained distribution's, as decoding scores it); None = unconstrained."""
    base_labels: list[int] | None = None
    """Per base (``base_labels``), made with the encoder labels."""


def allowed_steps(
    items: Sequence[Item],
    length: int,
    dna: str,
    feature_types: Sequence[str],
    token_ids: dict[str, int],
    eos: int,
    code: Any,
) -> list[tuple[list[int], range | tuple[int, ...]]]:
    """What the decoder may write at each step of the gold target (and its END), under the
    pointer grammar with the ORF layer -- or without it when the gold target breaks the ORF rule
    (a reference CDS that is not an ORF of the window must stay learnable)."""
    from baking.target_format.grammar import END
    from baking.target_format.pointers import MIN_ORF_CODONS, OrfSites, PointerAutomaton

    automaton = PointerAutomaton(list(feature_types), length)
    orf = None
    if code is not None:
        orf = OrfSites(dna[:length], code.starts, code.stops, MIN_ORF_CODONS)
    for layer in (orf, None) if orf is not None else (None,):
        state = automaton.start(length, layer)
        out: list[tuple[list[int], range | tuple[int, ...]]] = []
        try:
            for item in [*items, END]:
                allowed = state.allowed()
                if item not in allowed and not (item == END and state.accepting):
                    raise GrammarError(f"gold item {item!r} not allowed")
                ids = [eos if t == END else token_ids[t] for t in allowed.tokens]
                out.append((ids, allowed.positions))
                state = state.advance(item)
        except GrammarError:
            continue
        return out
    raise GrammarError("gold target does not follow the pointer grammar")


def build_example(
    dna: str,
    features: Sequence[WindowFeature],
    *,
    tokenizer: Any,
    token_ids: dict[str, int],
    bos: int,
    eos: int,
    max_src: int,
    vocab_size: int,
    with_encoder_labels: bool,
    constrain: Any = None,
    feature_types: Sequence[str] = (),
) -> Example:
    """Build a training example from a window's DNA and its features (window coordinates).

    ``constrain`` (a genetic code, or ``True`` for the plain grammar) also records the allowed
    set at every step (``Example.allowed``) for a constrained loss."""
    dna = dna.upper()
    source = encode_sources(tokenizer, [dna])[0]
    check_source_length(source, len(dna), max_src)  # the whole window, or refused
    body = source.body
    layout = base_layout(dna, source.offsets, len(body))
    length = layout.length
    feats = list(features)
    if length < len(dna):
        feats = clip_features(feats, length)
    items = encode_pointer_target(feats, length) if length else []
    src = source.ids(bos, eos)
    dec_in, positions, labels = [bos], [-1], []
    for item in items:
        if is_position(item):
            dec_in.append(eos)  # any id: the pointed base's input replaces its embedding
            positions.append(int(item))
            labels.append(vocab_size + int(item))
        else:
            tid = token_ids[str(item)]
            dec_in.append(tid)
            positions.append(-1)
            labels.append(tid)
    labels.append(eos)
    anchors = anchors_for(items, length)
    enc_labels = encoder_labels(feats, layout, len(src)) if with_encoder_labels else None
    per_base = base_labels(feats, length) if with_encoder_labels else None
    allowed = None
    if constrain is not None and length:
        code = None if constrain is True else constrain
        allowed = allowed_steps(items, length, dna, feature_types, token_ids, eos, code)
    return Example(src, dec_in, positions, anchors, labels, layout, enc_labels, allowed, per_base)


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def collate_examples(
    samples: Sequence[Example],
    pad: int,
    max_tgt: int,
    multiple: int = 1,
    vocab_size: int | None = None,
) -> dict[str, torch.Tensor]:
    """Pad a batch: encoder ``[CLS] dna [SEP]``; decoder in ``[CLS] t``; labels ``t [SEP]``; per
    decoder position the pointed base and the anchor; the base arrays (``WindowBases.BATCH_KEYS``).

    ``max_tgt`` only caps the padding (``ExampleBuilder.build`` refuses longer targets). Lengths
    are rounded up to ``multiple``: fewer distinct shapes means fewer kernel compilations (oneDNN
    JIT on CPUs, autotuning on GPUs) and tensor-core friendly sizes, for a few pad tokens."""
    b = len(samples)
    src_len = _round_up(max(len(s.src) for s in samples), multiple)
    tgt_len = min(_round_up(max(len(s.labels) for s in samples), multiple), max_tgt)
    n_bases = max(1, max(s.layout.length for s in samples))
    out = {
        "input_ids": torch.full((b, src_len), pad, dtype=torch.long),
        "attention_mask": torch.zeros((b, src_len), dtype=torch.long),
        "decoder_input_ids": torch.full((b, tgt_len), pad, dtype=torch.long),
        "decoder_attention_mask": torch.zeros((b, tgt_len), dtype=torch.long),
        "labels": torch.full((b, tgt_len), IGNORE_INDEX, dtype=torch.long),
        "decoder_positions": torch.full((b, tgt_len), -1, dtype=torch.long),
        "decoder_anchors": torch.full((b, tgt_len), -1, dtype=torch.long),
        "base_token": torch.zeros((b, n_bases), dtype=torch.long),
        "base_offset": torch.zeros((b, n_bases), dtype=torch.long),
        "codon5": torch.full((b, n_bases), NO_CODON, dtype=torch.long),
        "codon3": torch.full((b, n_bases), NO_CODON, dtype=torch.long),
        "base_mask": torch.zeros((b, n_bases), dtype=torch.bool),
    }
    with_enc = all(s.enc_labels is not None for s in samples)
    if with_enc:
        out["encoder_labels"] = torch.full((b, src_len), IGNORE_INDEX, dtype=torch.long)
    with_base = all(s.base_labels is not None for s in samples)
    if with_base:
        out["base_labels"] = torch.full((b, n_bases), IGNORE_INDEX, dtype=torch.long)
    if vocab_size is not None and all(s.allowed is not None for s in samples):
        allowed = torch.zeros((b, tgt_len, vocab_size + n_bases), dtype=torch.bool)
        for i, s in enumerate(samples):
            assert s.allowed is not None
            for t, (ids, pos) in enumerate(s.allowed[:tgt_len]):
                allowed[i, t, ids] = True
                if isinstance(pos, range):
                    allowed[i, t, vocab_size + pos.start : vocab_size + pos.stop] = True
                elif pos:
                    allowed[i, t, [vocab_size + p for p in pos]] = True
            allowed[i, len(s.allowed[:tgt_len]) :] = True  # pads: no constraint (no label)
        out["decoder_allowed"] = allowed
    for i, s in enumerate(samples):
        out["input_ids"][i, : len(s.src)] = torch.tensor(s.src)
        out["attention_mask"][i, : len(s.src)] = 1
        d = s.dec_in[:tgt_len]
        out["decoder_input_ids"][i, : len(d)] = torch.tensor(d)
        out["decoder_attention_mask"][i, : len(d)] = 1
        out["decoder_positions"][i, : len(d)] = torch.tensor(s.positions[:tgt_len])
        out["decoder_anchors"][i, : len(d)] = torch.tensor(s.anchors[:tgt_len])
        y = s.labels[:tgt_len]
        out["labels"][i, : len(y)] = torch.tensor(y)
        n = s.layout.length
        if n:
            out["base_token"][i, :n] = torch.tensor(s.layout.token)
            out["base_offset"][i, :n] = torch.tensor(s.layout.offset)
            out["codon5"][i, :n] = torch.tensor(s.layout.codon5)
            out["codon3"][i, :n] = torch.tensor(s.layout.codon3)
            out["base_mask"][i, :n] = True
        if with_enc:
            assert s.enc_labels is not None
            out["encoder_labels"][i, : len(s.enc_labels)] = torch.tensor(s.enc_labels)
        if with_base and n:
            assert s.base_labels is not None
            out["base_labels"][i, :n] = torch.tensor(s.base_labels)
    return out


class ExampleBuilder:
    """The loader's two steps: a shard sample -> an ``Example`` (``build``), and examples -> a
    padded batch (``collate``). The tokenizer loads lazily, once per loader worker."""

    def __init__(
        self,
        tokenizer_path: str,
        ids: TokenIds,
        max_src: int,
        max_tgt: int,
        pad_multiple: int = 1,
        *,
        vocab_size: int,
        feature_types: Sequence[str],
        with_encoder_labels: bool = False,
        constrain: Any = None,
    ) -> None:
        self.tokenizer_path = tokenizer_path
        self.ids = ids
        self.max_src = max_src
        self.max_tgt = max_tgt
        self.pad_multiple = pad_multiple
        self.constrain = constrain
        self.vocab_size = vocab_size
        self.feature_types = list(feature_types)
        self.with_encoder_labels = with_encoder_labels
        self._tok: Any = None
        self._token_ids: dict[str, int] | None = None

    @property
    def tokenizer(self) -> Any:
        if self._tok is None:
            from trainer.tokens.tokenizer import load_tokenizer

            self._tok = load_tokenizer(self.tokenizer_path)
        return self._tok

    @property
    def token_ids(self) -> dict[str, int]:
        """Vocabulary id of every target token of the model's feature types."""
        if self._token_ids is None:
            from baking.target_format.grammar import target_vocabulary
            from trainer.tokens.tokenizer import target_to_ids

            vocab = target_vocabulary(self.feature_types)
            self._token_ids = dict(zip(vocab, target_to_ids(self.tokenizer, vocab)))
        return self._token_ids

    def sample_constraint(self, sample: dict[str, Any]) -> Any:
        """The constraint of this sample's loss: with the ORF layer on, the genetic code of the
        sample's own genome (its ``json``; the configured code for samples baked without one),
        so a batch may mix codes and a code-4 genome is never trained under code 11."""
        if not isinstance(self.constrain, GeneticCode):
            return self.constrain
        table = sample_transl_table(sample)
        return self.constrain if table is None else genetic_code(table)

    def sample_features(self, sample: dict[str, Any], length: int) -> list[WindowFeature]:
        """The sample's window features; a shard baked before ``features.json`` existed (its
        samples hold a digit ``target.txt``) is named with the command that re-bakes it."""
        if FEATURES_FIELD not in sample and "target.txt" in sample:
            raise sample_error(
                sample,
                f"no {FEATURES_FIELD}: the shard was baked in the retired digit-target format; "
                "bake the data again (launch/bake_data.py)",
            )
        text = text_field(sample, FEATURES_FIELD, "utf-8")
        try:
            feats = features_from_json(text, length)
        except GrammarError as exc:
            raise sample_error(sample, f"{FEATURES_FIELD}: {exc}") from None
        known = set(self.feature_types)
        for f in feats:
            if f.type not in known:
                raise sample_error(
                    sample,
                    f"{FEATURES_FIELD}: feature type {f.type!r} is not one of the model's "
                    f"({', '.join(self.feature_types)})",
                )
        return feats

    def check_target_length(self, sample: dict[str, Any], positions: int) -> None:
        """Refuse a target longer than the decoder's limit (a cut would drop features)."""
        if positions > self.max_tgt:
            raise sample_error(
                sample,
                f"{FEATURES_FIELD}: {positions} decoder positions with [CLS], over "
                f"--max_tgt_tokens {self.max_tgt} (a cut would drop the window's last features): "
                "raise --max_tgt_tokens or bake shorter windows (bake_data --window_len)",
            )

    def build(self, sample: dict[str, Any]) -> Example:
        """One raw shard sample -> its ``Example``; a bad field is an ``InputError`` naming shard
        and sample key."""
        dna = text_field(sample, "dna.txt", "ascii")
        features = self.sample_features(sample, len(dna))
        sample_meta(sample)  # a damaged ``json`` is named here, whatever the loss reads of it
        constrain = self.sample_constraint(sample)
        try:
            out = build_example(
                dna,
                features,
                tokenizer=self.tokenizer,
                token_ids=self.token_ids,
                bos=self.ids.bos,
                eos=self.ids.eos,
                max_src=self.max_src,
                vocab_size=self.vocab_size,
                with_encoder_labels=self.with_encoder_labels,
                constrain=constrain,
                feature_types=self.feature_types,
            )
        except WindowTooLong as exc:
            raise sample_error(sample, f"dna.txt: {exc}") from None
        except (GrammarError, KeyError, ValueError) as exc:
            raise sample_error(sample, f"{FEATURES_FIELD}: {exc}") from None
        self.check_target_length(sample, len(out.labels))
        return out

    def collate(self, examples: Sequence[Example]) -> dict[str, torch.Tensor]:
        """Pad a micro-batch of ``build`` results (``collate_examples``)."""
        vocab = self.vocab_size if self.constrain is not None else None
        return collate_examples(examples, self.ids.pad, self.max_tgt, self.pad_multiple, vocab)
