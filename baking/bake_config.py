"""What a bake run is asked to do and what it produced: the types the pipeline and the manifest share.

They live apart from the pipeline (``baking.bake``) so that the manifest writer, which records
both, imports them from below instead of from the module that calls it.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

from baking.common.errors import ConfigError, Dna2GffError
from baking.target_format.grammar import DEFAULT_FEATURE_TYPES, type_token

DEFAULT_WINDOW = 2000  # DNABERT-2 reads ~4.5-4.7 bp/token on bacteria: 2000 bp -> ~470 tokens max
SPLITS = ("train", "val")

log = logging.getLogger(__name__)

TRAIN_MAX_SRC_TOKENS = 512
"""The trainer's ``--max_src_tokens`` default (``trainer.train.config``; baking imports no
trainer): it refuses a longer window, never cuts it."""
TRAIN_MAX_TGT_TOKENS = 512
"""The trainer's ``--max_tgt_tokens`` default: it refuses a longer target, never cuts it."""
MIN_BP_PER_TOKEN = 4.2
"""Fewest bases per DNABERT-2 token measured on the project's genomes (C. crescentus, 67% GC:
2000 bp windows are at most 468 tokens; low-GC genomes make fewer tokens, Carsonella at 14.6% GC
at most 397). Bake has no tokenizer: it estimates a window's tokens from this, and counts every
base other than ACGT as one token of its own (an ``N`` run is one ``[UNK]`` per base)."""


def length_totals(genomes: Iterable[GenomeResult | dict]) -> dict[str, int]:
    """The manifest's length figures over genomes (results, or their ``to_json`` entries; an entry
    written before these figures existed counts as 0)."""
    entries = [g if isinstance(g, dict) else g.to_json() for g in genomes]
    return {
        "max_target_tokens": max((e.get("max_target_tokens", 0) for e in entries), default=0),
        "long_targets": sum(e.get("long_targets", 0) for e in entries),
        "long_windows_estimate": sum(e.get("long_windows_estimate", 0) for e in entries),
    }


def encoder_tokens_estimate(dna: str) -> int:
    """An estimate on the high side of a window's DNABERT-2 encoder tokens with ``[CLS]``/``[SEP]``."""
    acgt = sum(dna.count(c) for c in "ACGTacgt")
    return math.ceil(acgt / MIN_BP_PER_TOKEN) + (len(dna) - acgt) + 2


@dataclass
class ShardInfo:
    """A finished shard: path relative to the output folder, samples, bytes and sha256."""

    path: str
    samples: int
    bytes: int
    sha256: str

    def to_json(self) -> dict:
        return {
            "path": self.path,
            "samples": self.samples,
            "bytes": self.bytes,
            "sha256": self.sha256,
        }


RC_MODES = ("none", "both", "random")
# What to do with sequences without a feature of the chosen types (docs/baking.md "Unannotated")
UNANNOTATED = ("refuse", "skip", "keep")


@dataclass
class BakeConfig:
    """Every option that shapes the baked data (recorded in the manifest)."""

    window_len: int = DEFAULT_WINDOW
    stride: int | None = None  # None: window_len (each base in exactly one window per pass)
    offset: int = 0
    types: tuple[str, ...] = DEFAULT_FEATURE_TYPES
    include_pseudo: bool = False
    keep_empty: float = 1.0
    rc: str = "none"
    seed: int = 0
    shard_size: int = 256 * 1024 * 1024
    val_genomes: tuple[str, ...] = ()
    val_fraction: float = 0.0
    on_error: str = "stop"
    workers: int = 1
    unannotated: str = "refuse"
    progress: bool = True

    def __post_init__(self) -> None:
        if self.window_len < 1:
            raise ConfigError(f"window_len must be >= 1, got {self.window_len}")
        if self.stride is None:
            self.stride = self.window_len
        if not 1 <= self.stride <= self.window_len:
            raise ConfigError(
                f"stride must be in 1..window_len ({self.window_len}), got {self.stride}"
            )
        if self.offset < 0:
            raise ConfigError(f"offset must be >= 0, got {self.offset}")
        self.types = tuple(dict.fromkeys(self.types))
        if not self.types:
            raise ConfigError("types must name at least one feature type")
        for t in self.types:
            try:
                type_token(t)
            except Dna2GffError as exc:
                raise ConfigError(f"types: {exc}") from exc
        if not 0.0 <= self.keep_empty <= 1.0:
            raise ConfigError(f"keep_empty must be in [0, 1], got {self.keep_empty}")
        if self.rc not in RC_MODES:
            raise ConfigError(f"rc must be one of {RC_MODES}, got {self.rc!r}")
        if self.shard_size < 16384:
            raise ConfigError(f"shard_size must be >= 16384 bytes, got {self.shard_size}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.val_fraction and self.val_genomes:
            raise ConfigError("use either val_genomes or val_fraction, not both")
        if self.on_error not in ("stop", "skip"):
            raise ConfigError(f"on_error must be 'stop' or 'skip', got {self.on_error!r}")
        if self.workers < 1:
            raise ConfigError(f"workers must be >= 1, got {self.workers}")
        if self.unannotated not in UNANNOTATED:
            raise ConfigError(f"unannotated must be one of {UNANNOTATED}, got {self.unannotated!r}")
        self.val_genomes = tuple(self.val_genomes)

    def to_json(self) -> dict:
        d = asdict(self)
        d.pop("progress")
        d["types"] = list(self.types)
        d["val_genomes"] = list(self.val_genomes)
        return d


@dataclass(frozen=True)
class GenomeSpec:
    """One genome to bake: a unique name, its FASTA and GFF3 files and, when its list names one,
    its genetic code (None: the GFF3's ``transl_table=``, else 11; ``baking.target_format.transl_table``)."""

    name: str
    fasta: str
    gff: str
    transl_table: int | None = None


@dataclass
class GenomeResult:
    """What baking one genome produced (shards still under temporary names)."""

    name: str
    fasta: str
    gff: str
    status: str = "ok"
    error: str | None = None
    transl_table: int | None = None  # the genetic code baked under (None: the genome failed first)
    transl_table_source: str | None = None  # "list", "gff" or "default"
    sequences: list[dict] = field(default_factory=list)
    bp: int = 0
    windows: int = 0
    samples: Counter = field(default_factory=Counter)
    empty_windows_dropped: int = 0
    features: Counter = field(default_factory=Counter)
    window_features: Counter = field(default_factory=Counter)
    partial_window_features: int = 0
    pseudo_dropped: int = 0
    duplicates_dropped: int = 0
    target_tokens: int = 0
    max_target_tokens: int = 0
    long_targets: int = 0
    """Samples whose target with ``[CLS]`` exceeds ``TRAIN_MAX_TGT_TOKENS`` (exact)."""
    long_windows: int = 0
    """Samples whose DNA is estimated over ``TRAIN_MAX_SRC_TOKENS`` (``encoder_tokens_estimate``)."""
    shards: list[ShardInfo] = field(default_factory=list)
    seconds: float = 0.0
    input_error: tuple[str, str, int | None] | None = None  # (path, reason, line) of an InputError
    output_error: tuple[str, str] | None = None  # (path, reason) of an OutputError: stops the run
    gene_free_sequences: list[str] = field(default_factory=list)  # baked, no feature of the types
    skipped_sequences: list[str] = field(default_factory=list)  # left out (--unannotated skip)

    def to_json(self) -> dict:
        d = {
            "fasta": self.fasta,
            "gff": self.gff,
            "status": self.status,
            "transl_table": self.transl_table,
            "transl_table_source": self.transl_table_source,
            "sequences": self.sequences,
            "bp": self.bp,
            "windows": self.windows,
            "samples": dict(sorted(self.samples.items())),
            "empty_windows_dropped": self.empty_windows_dropped,
            "features": dict(sorted(self.features.items())),
            "window_features": dict(sorted(self.window_features.items())),
            "partial_window_features": self.partial_window_features,
            "pseudo_dropped": self.pseudo_dropped,
            "duplicates_dropped": self.duplicates_dropped,
            "target_tokens": self.target_tokens,
            "mean_target_tokens": round(self.target_tokens / max(1, sum(self.samples.values())), 2),
            "max_target_tokens": self.max_target_tokens,
            "long_targets": self.long_targets,
            "long_windows_estimate": self.long_windows,
            "shards": [s.path for s in self.shards],
            "gene_free_sequences": self.gene_free_sequences,
            "skipped_sequences": self.skipped_sequences,
        }
        if self.error is not None:
            d["error"] = self.error
        return d


def warn_lengths(totals: dict, window_len: int) -> None:
    """Say which samples the trainer's default limits would refuse (it refuses, never cuts)."""
    n = totals["samples"]
    if totals["long_windows_estimate"]:
        log.warning(
            "%d of %d windows (%d bp) are likely over %d DNABERT-2 encoder tokens (estimated at "
            "%.1f bp/token, every non-ACGT base a token): train refuses such a window unless "
            "--max_src_tokens covers it; bake shorter windows (--window_len) to fit the default",
            totals["long_windows_estimate"],
            n,
            window_len,
            TRAIN_MAX_SRC_TOKENS,
            MIN_BP_PER_TOKEN,
        )
    if totals["long_targets"]:
        log.warning(
            "%d of %d targets are over %d decoder tokens (longest %d): train refuses such a "
            "target unless --max_tgt_tokens covers it; bake shorter windows (--window_len)",
            totals["long_targets"],
            n,
            TRAIN_MAX_TGT_TOKENS,
            totals["max_target_tokens"] + 1,
        )
