"""The decoding settings a model was tuned and scored with, kept in its ``generation_config.json``.

Why they travel with the weights: the scores in ``docs/learning.md`` are measured with beam 3 and
1024 bp of window overlap and a tuned ORF minimum, while ``annotate``'s own defaults are greedy with
half-window overlap, so a user's plain ``annotate`` scored lower than the table. A model folder now
says how it was scored, as a Hugging Face folder's ``generation_config.json`` says how to
``generate()``; ``annotate`` and ``tune_orf`` take these as their defaults and a command-line flag
still wins. A folder without the file (every folder written before it existed) keeps annotate's
own defaults, so it annotates exactly as before.

The file is a valid ``transformers.GenerationConfig`` JSON: ``num_beams`` is HF's own key, the others
(``overlap``, ``min_votes``, ``min_orf_codons``, ``selection``, ``adapt``) are extra attributes HF keeps as
they are. Reading it here is strict: a value of the wrong kind is one error naming the file.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from baking.common.errors import ConfigError, InputError
from baking.common.files import read_json, write_json

GENERATION_CONFIG_NAME = "generation_config.json"
SELECTIONS = ("votes", "genome")
"""How annotate chooses CDS after snapping (``trainer.inference.annotate``)."""
HF_GENERATION_KEYS = frozenset({"transformers_version", "_from_model_config"})
"""Bookkeeping transformers writes into the file; not a setting, ignored on reading."""


@dataclass(frozen=True)
class DecodingSettings:
    """``annotate``'s options a model was tuned with; None = not recorded (annotate's default)."""

    num_beams: int | None = None
    overlap: int | None = None
    """Bases shared by neighbouring windows."""
    min_votes: float | None = None
    min_orf_codons: int | None = None
    """The ORF layer's shortest whole CDS in codons, start and stop included (``tune_orf``)."""
    selection: str | None = None
    adapt: bool | None = None
    """``annotate --adapt``: the genome's own statistics choose the CDS with the model's votes."""

    def __post_init__(self) -> None:
        for name, low in (("num_beams", 1), ("overlap", 0), ("min_orf_codons", 2)):
            value = getattr(self, name)
            if value is not None and (
                not isinstance(value, int) or isinstance(value, bool) or value < low
            ):
                raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")
        if self.min_votes is not None and (
            not isinstance(self.min_votes, int | float)
            or isinstance(self.min_votes, bool)
            or not math.isfinite(self.min_votes)
            or not 0.0 <= self.min_votes <= 1.0
        ):
            raise ConfigError(f"min_votes must be a share in [0, 1], got {self.min_votes!r}")
        if self.adapt is not None and not isinstance(self.adapt, bool):
            raise ConfigError(f"adapt must be true or false, got {self.adapt!r}")
        if self.selection is not None and self.selection not in SELECTIONS:
            raise ConfigError(
                f"selection must be one of {', '.join(SELECTIONS)}, got {self.selection!r}"
            )

    def recorded(self) -> dict[str, Any]:
        """The settings that are recorded (not None), by name."""
        return {k: v for k, v in asdict(self).items() if v is not None}

    def updated(self, **changes: Any) -> DecodingSettings:
        """These settings with ``changes`` applied (a None in ``changes`` leaves a setting)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


def save_decoding(folder: str | Path, settings: DecodingSettings) -> Path:
    """Write ``folder/generation_config.json`` atomically (HF's ``GenerationConfig`` can read it)."""
    from transformers import __version__

    data = {**settings.recorded(), "transformers_version": __version__}
    return write_json(Path(folder) / GENERATION_CONFIG_NAME, data, sort_keys=True)


def load_decoding(folder: str | Path) -> DecodingSettings | None:
    """The folder's recorded settings; None when it has no ``generation_config.json``."""
    path = Path(folder) / GENERATION_CONFIG_NAME
    if not path.is_file():
        return None
    data = read_json(path)
    if not isinstance(data, dict):
        raise InputError(path, "not a JSON object")
    known = {f.name for f in fields(DecodingSettings)}
    unknown = sorted(set(data) - known - HF_GENERATION_KEYS)
    if unknown:
        raise InputError(
            path,
            f"unknown decoding setting(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})",
        )
    try:
        return DecodingSettings(**{k: v for k, v in data.items() if k in known})
    except ConfigError as exc:
        raise InputError(path, str(exc)) from exc


def record_decoding(folder: str | Path, **changes: Any) -> Path:
    """Merge ``changes`` into the folder's recorded settings (``tune_orf``, ``learn_synthetic``)."""
    current = load_decoding(folder) or DecodingSettings()
    return save_decoding(folder, current.updated(**changes))


__all__ = [
    "GENERATION_CONFIG_NAME",
    "SELECTIONS",
    "DecodingSettings",
    "load_decoding",
    "record_decoding",
    "save_decoding",
]
