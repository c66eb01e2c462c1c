"""Samples of a pointer model: the shard's window -> encoder ids, base arrays, pointer target.

The shards stay as the baker writes them (DNA + the digit target): the digit target is decoded to
window features (``baking.grammar``), re-encoded in the pointer form (``baking.target_format.pointers``) and
every position mapped to "this encoder token, this base inside it" with the tokenizer's offsets.
So one bake serves both coordinate forms, and the pointer target is exact by construction (the
round trip is tested on every window of the shared genomes).

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
from baking.target_format.grammar import PHASED_TYPES, GrammarError, WindowFeature, decode_target
from baking.target_format.pointers import (
    CUT,
    END_SLOT,
    START_SLOT,
    Item,
    encode_pointer_target,
    is_position,
)
from trainer.data.loader import (
    SampleEncoder,
    TokenIds,
    sample_error,
    sample_transl_table,
    text_field,
)
from trainer.model.pointer import NO_CODON
from trainer.model.seq2seq import IGNORE_INDEX
from trainer.tokens.tokenizer import WindowTooLong, check_source_length, encode_sources

log = logging.getLogger(__name__)

_BASE_CODE = {"A": 0, "C": 1, "G": 2, "T": 3}


@dataclass
class BaseLayout:
    """Per base of a window: the encoder position of its token ([CLS] is 0), its offset inside
    the token and the codons starting / ending at it (0..63, ``NO_CODON``)."""

    token: list[int]
    offset: list[int]
    codon5: list[int]
    codon3: list[int]

    @property
    def length(self) -> int:
        return len(self.token)


def _codons(dna: str) -> tuple[list[int], list[int]]:
    n = len(dna)
    code = [_BASE_CODE.get(c, -1) for c in dna]
    five = [NO_CODON] * n
    for i in range(n - 2):
        a, b, c = code[i], code[i + 1], code[i + 2]
        if a >= 0 and b >= 0 and c >= 0:
            five[i] = 16 * a + 4 * b + c
    three = [NO_CODON, NO_CODON, *five[: max(0, n - 2)]][:n]
    return five, three


def base_layout(dna: str, offsets: Sequence[tuple[int, int]], max_tokens: int) -> BaseLayout:
    """Map bases to tokens from the tokenizer's character ``offsets`` (no special tokens).

    Only the first ``max_tokens`` tokens reach the encoder; the bases they cover are the
    window the model sees (a prefix of ``dna``).
    """
    token: list[int] = []
    offset: list[int] = []
    for j, (a, b) in enumerate(offsets[:max_tokens]):
        if a != len(token):
            raise ValueError(
                f"token {j} starts at {a}, expected {len(token)}: offsets not contiguous"
            )
        token.extend([j + 1] * (b - a))
        offset.extend(range(b - a))
    five, three = _codons(dna[: len(token)])
    return BaseLayout(token, offset, five, three)


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
class PointerSample:
    """One window as a pointer model's training example (lists; ``collate_pointer`` pads)."""

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


def pointer_sample(
    dna: str,
    target: Sequence[str],
    *,
    window_len: int,
    tokenizer: Any,
    token_ids: dict[str, int],
    bos: int,
    eos: int,
    max_src: int,
    vocab_size: int,
    with_encoder_labels: bool,
    constrain: Any = None,
    feature_types: Sequence[str] = (),
) -> PointerSample:
    """Build a pointer sample from a shard's DNA and digit target tokens.

    ``constrain`` (a genetic code, or ``True`` for the plain grammar) also records the allowed
    set at every step (``PointerSample.allowed``) for a constrained loss."""
    dna = dna.upper()
    source = encode_sources(tokenizer, [dna])[0]
    check_source_length(source, len(dna), max_src)  # the whole window, or refused
    body = source.body
    layout = base_layout(dna, source.offsets, len(body))
    length = layout.length
    feats = decode_target(list(target), window_len, len(dna))
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
    return PointerSample(
        src, dec_in, positions, anchors, labels, layout, enc_labels, allowed, per_base
    )


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def collate_pointer(
    samples: Sequence[PointerSample],
    pad: int,
    max_tgt: int,
    multiple: int = 1,
    vocab_size: int | None = None,
) -> dict[str, torch.Tensor]:
    """Pad a batch of pointer samples (the digit batch's keys plus the base arrays)."""
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


def layout_tensors(
    layouts: Sequence[BaseLayout], device: torch.device | str
) -> dict[str, torch.Tensor]:
    """The base arrays of a batch of windows (inference), padded to the longest."""
    b = len(layouts)
    n_bases = max(1, max(x.length for x in layouts))
    out = {
        "base_token": torch.zeros((b, n_bases), dtype=torch.long),
        "base_offset": torch.zeros((b, n_bases), dtype=torch.long),
        "codon5": torch.full((b, n_bases), NO_CODON, dtype=torch.long),
        "codon3": torch.full((b, n_bases), NO_CODON, dtype=torch.long),
        "base_mask": torch.zeros((b, n_bases), dtype=torch.bool),
    }
    for i, x in enumerate(layouts):
        n = x.length
        if n:
            out["base_token"][i, :n] = torch.tensor(x.token)
            out["base_offset"][i, :n] = torch.tensor(x.offset)
            out["codon5"][i, :n] = torch.tensor(x.codon5)
            out["codon3"][i, :n] = torch.tensor(x.codon3)
            out["base_mask"][i, :n] = True
    return {k: v.to(device) for k, v in out.items()}


class PointerEncoder(SampleEncoder):
    """The loader's sample encoder for pointer models (see the module doc)."""

    def __init__(
        self,
        tokenizer_path: str,
        ids: TokenIds,
        max_src: int,
        max_tgt: int,
        pad_multiple: int = 1,
        *,
        window_len: int,
        vocab_size: int,
        feature_types: Sequence[str],
        with_encoder_labels: bool = False,
        constrain: Any = None,
    ) -> None:
        super().__init__(tokenizer_path, ids, max_src, max_tgt, pad_multiple)
        self.constrain = constrain
        self.window_len = window_len
        self.vocab_size = vocab_size
        self.feature_types = list(feature_types)
        self.with_encoder_labels = with_encoder_labels
        self._token_ids: dict[str, int] | None = None

    @property
    def token_ids(self) -> dict[str, int]:
        if self._token_ids is None:
            from baking.target_format.pointers import pointer_vocabulary
            from trainer.tokens.tokenizer import target_to_ids

            vocab = pointer_vocabulary(self.feature_types)
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

    def encode(self, sample: dict[str, Any]) -> PointerSample:  # type: ignore[override]
        dna = text_field(sample, "dna.txt", "ascii")
        target = text_field(sample, "target.txt", "utf-8")
        constrain = self.sample_constraint(sample)
        try:
            out = pointer_sample(
                dna,
                target.split(),
                window_len=self.window_len,
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
            raise sample_error(sample, f"target.txt: {exc}") from None
        self.check_target_length(sample, len(out.labels))
        return out

    def collate(self, samples: Sequence[Any]) -> dict:
        vocab = self.vocab_size if self.constrain is not None else None
        return collate_pointer(samples, self.ids.pad, self.max_tgt, self.pad_multiple, vocab)
