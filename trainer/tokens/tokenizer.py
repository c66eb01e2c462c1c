"""Tokenizer tools: DNABERT-2's BPE plus annotation tokens, and target <-> id conversion.

Annotation tokens (``<CDS>``, ``<+>``, ``<7>`` ... from the baker's new-token file; opaque strings
here) are *added tokens* with ``normalized=False``: the tokenizer cuts them out of the text before
BPE runs, so they are never split and never merged with DNA. Targets are converted token by token
(``target_to_ids``), never through BPE. DNA must be upper-cased first: DNABERT-2 has no normalizer,
so lower-case bases and ``N`` become ``[UNK]``.

``train_dna_tokenizer`` makes a small tokenizer in DNABERT-2's format (ids 0-4 ``[UNK] [CLS] [SEP]
[PAD] [MASK]``, 5-8 ``A C G T``, Whitespace pre-tokenizer, ``[CLS] $A [SEP]``) for tests and demos.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers, processors, trainers

from baking.common.errors import InputError
from baking.common.files import atomic_path, write_json
from baking.formats.tokens_file import invisible_character

log = logging.getLogger(__name__)

DNABERT2_HUB_ID = "zhihan1996/DNABERT-2-117M"
TOKENIZER_NAME = "tokenizer.json"
SPECIAL_TOKENS = ("[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]")
DNA_ALPHABET = ("A", "C", "G", "T")
TOKENIZER_CONFIG = {
    "tokenizer_class": "PreTrainedTokenizerFast",
    "unk_token": "[UNK]",
    "cls_token": "[CLS]",
    "sep_token": "[SEP]",
    "pad_token": "[PAD]",
    "mask_token": "[MASK]",
}
_DNA_ONLY = re.compile(r"^[ACGTNacgtn]+$")
_NOT_ACGT = re.compile(r"[^ACGT]+")


def load_tokenizer(path: str | Path) -> Tokenizer:
    """A ``tokenizers.Tokenizer`` from a folder holding tokenizer.json, or the JSON file itself."""
    p = Path(path)
    if p.is_dir():
        p = p / TOKENIZER_NAME
    if not p.is_file():
        raise InputError(p, "tokenizer.json not found")
    try:
        return Tokenizer.from_file(str(p))
    except Exception as exc:  # tokenizers raises plain Exception subclasses on bad JSON
        raise InputError(p, f"not a tokenizers JSON file: {exc}") from exc


def resolve_base_tokenizer(base: str | Path) -> Path:
    """Path of a base tokenizer.json: a local folder/file, or a hub id fetched via huggingface_hub."""
    p = Path(base).expanduser()
    if p.exists():
        return p / TOKENIZER_NAME if p.is_dir() else p
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(str(base), TOKENIZER_NAME))
    except Exception as exc:  # offline, unknown id
        raise InputError(
            str(base),
            f"cannot fetch tokenizer.json from the Hugging Face hub ({type(exc).__name__}); "
            "pass --base with a local folder or tokenizer.json (e.g. a DNABERT-2-117M download)",
        ) from exc


def read_tokens_file(path: str | Path) -> list[str]:
    """Annotation tokens, one per line, in file order (duplicates dropped, blank lines skipped).

    Only the line break is removed; a token with inner or surrounding whitespace, an invisible
    character (zero-width space, BOM, control or format character), or one that is plain DNA (it
    would shadow BPE tokens), is an error naming the line.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise InputError(p, "tokens file not found") from exc
    except (UnicodeDecodeError, IsADirectoryError) as exc:
        raise InputError(p, f"not a UTF-8 text file ({type(exc).__name__})") from exc
    tokens: list[str] = []
    seen: set[str] = set()
    for lineno, line in enumerate(text.split("\n"), start=1):
        token = line.removesuffix("\r")
        if token == "":
            continue
        if any(c.isspace() for c in token):
            raise InputError(p, f"token {token!r} contains whitespace", lineno)
        bad = invisible_character(token)
        if bad is not None:
            raise InputError(
                p, f"token {token!r} contains an invisible character ({bad}): corrupt file", lineno
            )
        if _DNA_ONLY.match(token):
            raise InputError(
                p, f"token {token!r} is plain DNA and would collide with BPE tokens", lineno
            )
        if token in SPECIAL_TOKENS:
            continue
        if token not in seen:
            seen.add(token)
            tokens.append(token)
    if not tokens:
        raise InputError(p, "no tokens in file")
    return tokens


def add_annotation_tokens(tokenizer: Tokenizer, tokens: Iterable[str]) -> list[str]:
    """Add the tokens not yet in the vocabulary (ids appended in order); returns those added."""
    new = [t for t in dict.fromkeys(tokens) if tokenizer.token_to_id(t) is None]
    if new:
        before = tokenizer.get_vocab_size(with_added_tokens=True)
        tokenizer.add_tokens(
            [
                AddedToken(t, single_word=False, lstrip=False, rstrip=False, normalized=False)
                for t in new
            ]
        )
        after = tokenizer.get_vocab_size(with_added_tokens=True)
        if after != before + len(new):
            raise RuntimeError(f"vocabulary grew by {after - before}, expected {len(new)}")
    return new


def save_tokenizer(tokenizer: Tokenizer, out: str | Path) -> Path:
    """Write tokenizer.json (``out`` a folder or a .json path) atomically, plus tokenizer_config.json
    beside it when missing so ``transformers`` can load the folder too."""
    p = Path(out)
    if p.suffix != ".json":
        p = p / TOKENIZER_NAME
    with atomic_path(p) as tmp:
        tokenizer.save(str(tmp))
    config = p.parent / "tokenizer_config.json"
    if not config.exists():
        write_json(config, TOKENIZER_CONFIG)
    return p


def init_tokenizer(
    tokens_file: str | Path, out_dir: str | Path, base: str | Path = DNABERT2_HUB_ID
) -> Path:
    """``init_tk``: base DNABERT-2 tokenizer + the file's annotation tokens -> ``out_dir/tokenizer.json``."""
    tokens = read_tokens_file(tokens_file)
    tokenizer = load_tokenizer(resolve_base_tokenizer(base))
    added = add_annotation_tokens(tokenizer, tokens)
    path = save_tokenizer(tokenizer, out_dir)
    log.info(
        "init_tk out=%s base=%s added=%d vocab=%d",
        path,
        base,
        len(added),
        tokenizer.get_vocab_size(with_added_tokens=True),
    )
    return path


def append_tokens(tokens_file: str | Path, tokenizer_json: str | Path) -> list[str]:
    """``append_tk``: add only tokens not present, keep every id, rewrite atomically (idempotent)."""
    tokens = read_tokens_file(tokens_file)
    path = Path(tokenizer_json)
    if path.is_dir():
        path = path / TOKENIZER_NAME
    tokenizer = load_tokenizer(path)
    added = add_annotation_tokens(tokenizer, tokens)
    if added:
        save_tokenizer(tokenizer, path)
    log.info(
        "append_tk tokenizer=%s added=%d vocab=%d", path, len(added), tokenizer.get_vocab_size(True)
    )
    return added


def target_to_ids(tokenizer: Tokenizer, target_tokens: Sequence[str]) -> list[int]:
    """Exact id of each annotation token (never BPE); an unknown token is a ``KeyError`` naming it."""
    ids = []
    for token in target_tokens:
        i = tokenizer.token_to_id(token)
        if i is None:
            raise KeyError(f"target token {token!r} is not in the tokenizer (run append_tk)")
        ids.append(i)
    return ids


def ids_to_target(tokenizer: Tokenizer, ids: Iterable[int]) -> list[str]:
    """Token strings for ids (the inverse of ``target_to_ids``); an unknown id is a ``KeyError``."""
    out = []
    for i in ids:
        token = tokenizer.id_to_token(int(i))
        if token is None:
            raise KeyError(f"id {i} is outside the tokenizer's vocabulary")
        out.append(token)
    return out


@dataclass(frozen=True)
class SourceTokens:
    """A window's DNA as the encoder reads it: BPE ids and the bases each one covers."""

    body: list[int]
    """BPE ids of the whole window's DNA (no special tokens): never cut (``check_source_length``)."""
    offsets: list[tuple[int, int]]
    """``(start, end)`` base span of each id in ``body`` (what pointer coordinates need)."""

    def ids(self, bos_id: int, eos_id: int) -> list[int]:
        """Encoder input ``[CLS] dna [SEP]``."""
        return [bos_id, *self.body, eos_id]

    @property
    def length(self) -> int:
        """Encoder positions with ``[CLS]`` and ``[SEP]``."""
        return len(self.body) + 2


class WindowTooLong(Exception):
    """A window's DNA is more encoder tokens than the limit (``--max_src_tokens``)."""

    def __init__(self, bases: int, tokens: int, limit: int, unseen: int) -> None:
        self.bases, self.tokens, self.limit, self.unseen = bases, tokens, limit, unseen
        share = round(100 * unseen / max(1, bases))
        super().__init__(
            f"{bases} bp are {tokens} encoder tokens with [CLS]/[SEP], over --max_src_tokens "
            f"{limit} (a cut would hide {share}% of the window from the encoder): raise "
            "--max_src_tokens or bake shorter windows (bake_data --window_len)"
        )


def encode_sources(tokenizer: Tokenizer, windows_dna: Sequence[str]) -> list[SourceTokens]:
    """The one DNA -> encoder-tokens path, for training and inference alike: the whole window.

    The length rule: the encoder sees every base of its window, in training and in annotate, so
    both see exactly the same bases. A window over the trainer's limit is refused
    (``check_source_length``), never cut: a cut hid the window's tail from the encoder while its
    target still described it (a 3000 bp window is 540-690 DNABERT-2 tokens on bacteria; cut at 512 the
    model was taught features it could not see, and annotate then fed it all of them).

    Upper-cased first (the vocabulary is upper-case); the tokenizer adds no special tokens, the
    caller wraps ``body`` in ``[CLS] .. [SEP]`` with ``ids()``. ``encode_batch`` runs on the
    tokenizer's Rust threads.
    """
    encoded = tokenizer.encode_batch([d.upper() for d in windows_dna], add_special_tokens=False)
    return [SourceTokens(list(e.ids), list(e.offsets)) for e in encoded]


def check_source_length(source: SourceTokens, bases: int, max_len: int) -> None:
    """``WindowTooLong`` when ``source`` (a window of ``bases`` bp) exceeds ``max_len`` positions."""
    if source.length <= max_len:
        return
    keep = max(0, max_len - 2)
    seen = source.offsets[keep - 1][1] if keep else 0
    raise WindowTooLong(bases, source.length, max_len, bases - seen)


def encode_dna(tokenizer: Tokenizer, dna: str, add_special_tokens: bool = True) -> list[int]:
    """Token ids of a DNA string, upper-cased first (``[CLS] ... [SEP]`` with special tokens)."""
    return tokenizer.encode(dna.upper(), add_special_tokens=add_special_tokens).ids


def train_dna_tokenizer(
    sequences: Iterable[str], vocab_size: int, out_dir: str | Path | None = None, chunk: int = 1000
) -> Tokenizer:
    """Train a BPE tokenizer in DNABERT-2's format on DNA (upper-cased, split at non-ACGT, chunked).

    ``vocab_size`` counts the 5 specials and 4 bases. Writes ``out_dir/tokenizer.json`` (+ config)
    when ``out_dir`` is given.
    """
    if vocab_size < len(SPECIAL_TOKENS) + len(DNA_ALPHABET):
        raise ValueError(f"vocab_size must be >= 9 (specials + ACGT), got {vocab_size}")

    def pieces() -> Iterable[str]:
        for seq in sequences:
            for run in _NOT_ACGT.split(seq.upper()):
                for start in range(0, len(run), chunk):
                    yield run[start : start + chunk]

    tokenizer = Tokenizer(models.BPE(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=list(DNA_ALPHABET),
        limit_alphabet=len(DNA_ALPHABET),
        max_token_length=32,
        show_progress=False,
    )
    tokenizer.train_from_iterator(pieces(), trainer=trainer)
    got = [tokenizer.id_to_token(i) for i in range(9)]
    if got != [*SPECIAL_TOKENS, *DNA_ALPHABET]:
        raise RuntimeError(f"unexpected first ids {got}")
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    if out_dir is not None:
        save_tokenizer(tokenizer, out_dir)
    return tokenizer
