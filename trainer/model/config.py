"""The model's one configuration: sizes, special token ids, MoE and target settings.

Everything needed to rebuild a ``Dna2GffModel`` lives here, so a model folder is ``config.json`` +
``model.safetensors`` and nothing else has to be remembered. Field names follow DNABERT-2's
``config.json`` where they overlap so the two are easy to compare.

It is a ``transformers.PreTrainedConfig`` (``model_type`` "dna2gff"): ``AutoConfig`` reads a model
folder's ``config.json`` once ``trainer.model`` is imported, and the folder is what the hub expects.
Transformers 5 makes every config class a keyword-only dataclass, so the fields below are ordinary
dataclass fields with the names and JSON keys of the dataclass this replaced (old ``config.json``
files read unchanged). The defaults ARE the recommended model (DNABERT-2-117M's sizes, pointer
coordinates with 20 bp of base context, encoder loss 0.5: ``docs/learning.md``), as in every
model library: ``init_model`` takes its defaults from here.
"""

from __future__ import annotations

import logging
from dataclasses import field, fields
from pathlib import Path
from typing import Any, ClassVar

from transformers import PreTrainedConfig

from baking.common.errors import ConfigError, InputError
from baking.common.files import read_json, write_json

CONFIG_NAME = "config.json"
MODEL_TYPE = "dna2gff"
COORDINATE_FORMS = ("pointer",)
"""The one target form (issue 16 retired ``digits``); the field stays so old folders are checked."""

#: Keys transformers itself writes into or passes to a config (``to_dict``, ``from_pretrained``);
#: they are HF's bookkeeping, not model settings, so the strict unknown-key check lets them through.
HF_KEYS = frozenset(
    {
        "model_type",
        "transformers_version",
        "architectures",
        "_name_or_path",
        "name_or_path",
        "_commit_hash",
        "output_attentions",
        "attn_implementation",
        "experts_implementation",
        "torch_dtype",
        "num_labels",
        "use_cache",
    }
)

#: What a ``config.json`` written before the defaults became the recommended model meant by a
#: key it left out (it wrote every key it knew; these came later or changed default). Applied only
#: to a file of that era: ``extra`` and ``model_type`` (the dataclass wrote both, always) and no
#: ``transformers_version`` (every file since has it).
LEGACY_DEFAULTS: dict[str, Any] = {
    "coordinate_form": "digits",
    "pointer_context_bp": 0,
    "encoder_aux_weight": 0.0,
    "base_aux_weight": 0.0,
}

log = logging.getLogger(__name__)


class Dna2GffConfig(PreTrainedConfig):
    """Encoder-decoder built from DNABERT-2: encoder as published, decoder initialised from it."""

    model_type: ClassVar[str] = MODEL_TYPE  # type: ignore[misc]
    is_encoder_decoder: bool = True

    vocab_size: int = 4096
    """Rows of the shared embedding table (DNA BPE tokens + annotation tokens); DNABERT-2's 4096
    until ``resize_model`` adds the annotation tokens."""
    hidden_size: int = 768
    num_encoder_layers: int = 12
    num_decoder_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    """Width of one branch of the gated-GELU MLP (``gated_layers`` has twice as many rows)."""
    layer_norm_eps: float = 1e-12
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.0
    type_vocab_size: int = 2
    pad_token_id: int = 3  # [PAD]
    bos_token_id: int = 1  # [CLS]: first decoder input
    eos_token_id: int = 2  # [SEP]: the decoder's stop token
    tie_word_embeddings: bool = True
    """Output head shares the input embedding matrix (same storage); else it starts as a copy."""
    use_moe: bool = False
    num_experts: int = 8
    moe_top_k: int = 2
    moe_layers: list[int] | None = None
    """Decoder layers whose MLP becomes a MoE layer; None = every decoder layer."""
    moe_capacity_factor: float = 1.25
    """Training-time expert capacity (DeepSpeed: capacity = factor * k * tokens / experts)."""
    moe_eval_capacity_factor: float = 2.0
    """Passed to DeepSpeed for completeness; evaluation never drops tokens (see ``moe.py``)."""
    moe_min_capacity: int = 4
    moe_drop_tokens: bool = True
    """Drop tokens over capacity while training (faster, the usual GShard setting)."""
    moe_aux_loss_coef: float = 0.01
    """Weight the trainer gives ``Seq2SeqOutput.aux_loss``; the model itself never adds it."""
    source_checkpoint: str | None = None
    """Where the encoder came from (hub id or folder), for provenance only."""
    window_len: int | None = None
    """Window length (bp) the model was trained on; written by the trainer, read by annotate."""
    feature_types: list[str] | None = None
    """Feature types of the target grammar the model was trained on (trainer / annotate)."""
    max_src_tokens: int | None = None
    """Longest encoder input (tokens with ``[CLS]``/``[SEP]``) training accepted; written by the
    trainer. The encoder always sees whole windows (``tokenizer.encode_sources``); annotate counts
    and reports its windows longer than this, which the model never saw in training."""
    coordinate_form: str = "pointer"
    """How the decoder writes coordinates: it points at a base of the window
    (``baking.target_format.pointers``). Only ``pointer`` is accepted: a ``digits`` model folder
    (spelled-out coordinates, retired in issue 16) is refused on load."""
    pointer_context_bp: int = 20
    """Bases each side of a base that the pointer's key sees directly (a small convolution over
    the window's bases); 0 = none, as in models made before it existed (their ``config.json``
    says 0, so they load as they were). A BPE token blurs the
    few bases around a start codon (the ribosome-binding site 5-15 bp upstream), and those are
    what tells a gene's start from the other start codons of its reading frame."""
    base_aux_weight: float = 0.0
    """Pointer models: weight of the per-base loss on the pointer keys (is this base where a CDS
    begins, where one ends, or neither); 0 = no head. Why: a window holds ~1-2 CDS starts among
    ~100 start codons, and the decoder's loss sees only the gold one; this loss sees every base of
    the window at every step, on the very keys the pointer scores. The trainer adds it."""
    base_aux_class_weight: float = 1.0
    """Weight of the begin and end classes against "neither" in that per-base loss (1 = plain
    cross-entropy). Why: about 1 base in 500 begins or ends a CDS, so unweighted the loss is soon
    near zero by calling every base "neither" and the few bases that matter weigh little in it."""
    encoder_aux_weight: float = 0.5
    """Weight of the per-token encoder loss (coding frame/strand, start/stop codon, RNA); 0 = no
    head. The trainer adds it; the model's ``loss`` never includes it."""
    min_orf_codons: int | None = None
    """Legacy home of ``tune_orf``'s ORF minimum (folders written before the decoding settings
    moved to ``generation_config.json``, see ``generation.py``); still read by annotate when the
    folder's generation config does not say, never written by this version."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form metadata other tools may store (kept verbatim through save/load)."""

    def __post_init__(self, **kwargs: Any) -> None:
        model_type = kwargs.pop("model_type", MODEL_TYPE)
        if model_type != MODEL_TYPE:
            raise ConfigError(f"model_type must be {MODEL_TYPE!r}, got {model_type!r}")
        unknown = sorted(set(kwargs) - HF_KEYS)
        if unknown:  # a typo must never silently fall back to a default
            raise ConfigError(f"unknown config field(s): {', '.join(unknown)}")
        self._check()
        super().__post_init__(**kwargs)

    def _check(self) -> None:
        """Refuse settings no model can be built with, naming the field."""
        positive = (
            "vocab_size",
            "hidden_size",
            "num_encoder_layers",
            "num_attention_heads",
            "intermediate_size",
            "type_vocab_size",
        )
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.num_decoder_layers, int) or self.num_decoder_layers <= 0:
            raise ConfigError(
                f"num_decoder_layers must be a positive integer, got {self.num_decoder_layers!r}"
            )
        if self.num_decoder_layers > self.num_encoder_layers:
            raise ConfigError(
                f"num_decoder_layers={self.num_decoder_layers} exceeds num_encoder_layers="
                f"{self.num_encoder_layers}: decoder layer i is initialised from encoder layer i"
            )
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(
                f"hidden_size={self.hidden_size} is not divisible by "
                f"num_attention_heads={self.num_attention_heads}"
            )
        for name in ("hidden_dropout", "attention_dropout"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"{name} must be in [0, 1), got {value!r}")
        if not self.layer_norm_eps > 0:
            raise ConfigError(f"layer_norm_eps must be > 0, got {self.layer_norm_eps!r}")
        for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
            value = getattr(self, name)
            if not 0 <= value < self.vocab_size:
                raise ConfigError(
                    f"{name}={value!r} is outside the vocabulary (0..{self.vocab_size - 1})"
                )
        if self.num_experts < 1:
            raise ConfigError(f"num_experts must be >= 1, got {self.num_experts!r}")
        if self.moe_top_k not in (1, 2):
            raise ConfigError(
                f"moe_top_k must be 1 or 2 (DeepSpeed MoE gating), got {self.moe_top_k!r}"
            )
        if self.use_moe and self.moe_top_k > self.num_experts:
            raise ConfigError(f"moe_top_k={self.moe_top_k} exceeds num_experts={self.num_experts}")
        if self.moe_layers is not None:
            self.moe_layers = sorted({int(i) for i in self.moe_layers})
            bad = [i for i in self.moe_layers if not 0 <= i < self.num_decoder_layers]
            if bad:
                raise ConfigError(
                    f"moe_layers={bad} outside the decoder layers 0..{self.num_decoder_layers - 1}"
                )
        for name in ("moe_capacity_factor", "moe_eval_capacity_factor"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if self.moe_min_capacity < 0:
            raise ConfigError(f"moe_min_capacity must be >= 0, got {self.moe_min_capacity!r}")
        if self.moe_aux_loss_coef < 0:
            raise ConfigError(f"moe_aux_loss_coef must be >= 0, got {self.moe_aux_loss_coef!r}")
        if self.window_len is not None and self.window_len <= 0:
            raise ConfigError(f"window_len must be positive, got {self.window_len!r}")
        if self.coordinate_form not in COORDINATE_FORMS:
            raise ConfigError(
                f"coordinate_form={self.coordinate_form!r} is retired: dna2gff models point at "
                "bases (coordinate_form 'pointer'); build a new model with launch/init_model.py"
            )
        if (
            not isinstance(self.pointer_context_bp, int)
            or isinstance(self.pointer_context_bp, bool)
            or self.pointer_context_bp < 0
        ):
            raise ConfigError(
                f"pointer_context_bp must be an integer >= 0, got {self.pointer_context_bp!r}"
            )
        if not self.base_aux_weight >= 0:
            raise ConfigError(f"base_aux_weight must be >= 0, got {self.base_aux_weight!r}")
        if not self.base_aux_class_weight > 0:
            raise ConfigError(
                f"base_aux_class_weight must be > 0, got {self.base_aux_class_weight!r}"
            )
        if not self.encoder_aux_weight >= 0:
            raise ConfigError(f"encoder_aux_weight must be >= 0, got {self.encoder_aux_weight!r}")
        if self.min_orf_codons is not None and (
            not isinstance(self.min_orf_codons, int)
            or isinstance(self.min_orf_codons, bool)
            or self.min_orf_codons < 2
        ):
            raise ConfigError(
                f"min_orf_codons must be an integer >= 2 (a start and a stop codon), "
                f"got {self.min_orf_codons!r}"
            )

    def record_target(self, window_len: int | None, feature_types: list[str] | None) -> None:
        """Set the target spec (window length, feature types) the model is being trained for.

        The config is the one owner of the spec: the trainer records it here once at set-up from
        the baked data, the loader, the decode metric and the export read it from here, and
        annotate reads it back from the model folder's ``config.json``.
        """
        if window_len is not None:
            self._replace("window_len", int(window_len))
        if feature_types is not None:
            self._replace("feature_types", list(feature_types))

    def _replace(self, name: str, value: object) -> None:
        old = getattr(self, name)
        if old is not None and old != value:
            log.warning("model config %s=%s replaced by the data's %s", name, old, value)
        setattr(self, name, value)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def is_moe_layer(self, index: int) -> bool:
        """Whether decoder layer ``index`` uses a MoE MLP."""
        return self.use_moe and (self.moe_layers is None or index in self.moe_layers)

    def __eq__(self, other: object) -> bool:
        """Equal when every dna2gff field is (HF's bookkeeping, e.g. the version, is not compared)."""
        if not isinstance(other, Dna2GffConfig):
            return NotImplemented
        return self.own_dict() == other.own_dict()

    __hash__ = None  # type: ignore[assignment]  # mutable, as the dataclass was

    @classmethod
    def own_fields(cls) -> list[str]:
        """The dna2gff fields, in declaration order (HF's inherited ones left out)."""
        declared = Dna2GffConfig.__dict__["__annotations__"]
        return [
            f.name for f in fields(cls) if f.name in declared and f.name != "is_encoder_decoder"
        ]

    def own_dict(self) -> dict[str, Any]:
        """The dna2gff fields as plain JSON values."""
        return {name: _plain(getattr(self, name)) for name in self.own_fields()}

    @classmethod
    def default(cls, name: str) -> Any:
        """A field's default: the recommended model's value (``init_model`` uses these)."""
        for f in fields(cls):
            if f.name == name:
                return f.default_factory() if callable(f.default_factory) else f.default
        raise KeyError(name)

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs: Any) -> Any:
        """Build from a dict (HF's ``from_dict``; ``AutoConfig`` calls it too), refusing unknown
        keys (``__post_init__``). A file written before this was a HF config means the old
        defaults by a key it lacks (``LEGACY_DEFAULTS``); any other dict, the current ones."""
        data = dict(config_dict)
        if "transformers_version" not in data and {"extra", "model_type"} <= set(data):
            data = {**LEGACY_DEFAULTS, **data}
        try:
            return super().from_dict(data, **kwargs)
        except TypeError as exc:  # positional misuse, a value of the wrong kind
            raise ConfigError(f"bad model config: {exc}") from exc

    def to_dict(self) -> dict[str, Any]:
        """The dna2gff fields and ``model_type``: the dict the dataclass this replaced gave.

        Why not HF's (which adds its bookkeeping: ``transformers_version``, ``id2label``, ...):
        records compare it (a resumed run checks its model is the one it started with,
        ``resume_check.model_identity``), and a run started before this change must still match.
        ``config.json`` gets HF's keys too (``json_dict``)."""
        return {**self.own_dict(), "model_type": MODEL_TYPE}

    def json_dict(self) -> dict[str, Any]:
        """What ``config.json`` holds: every dna2gff field explicitly, plus HF's keys
        (``model_type``, ``transformers_version``, ``architectures``) so ``AutoConfig`` reads it."""
        from transformers import __version__

        data = {"transformers_version": __version__, **self.to_dict()}
        if self.architectures:
            data["architectures"] = list(self.architectures)
        return data

    def save(self, out_dir: str | Path) -> Path:
        """Write ``out_dir/config.json`` atomically (``baking.common.files.write_json``)."""
        return write_json(Path(out_dir) / CONFIG_NAME, self.json_dict(), sort_keys=True)

    @classmethod
    def load(cls, model_dir: str | Path) -> Dna2GffConfig:
        """Read ``model_dir/config.json`` (or a path to the JSON file itself)."""
        path = Path(model_dir)
        if path.is_dir():
            path = path / CONFIG_NAME
        if not path.is_file():
            raise InputError(path, "no model config (config.json) found")
        data = read_json(path)
        if not isinstance(data, dict) or data.get("model_type") != MODEL_TYPE:
            raise InputError(
                path,
                f"not a dna2gff model config (model_type={data.get('model_type')!r})"
                if isinstance(data, dict)
                else "not a JSON object",
            )
        try:
            return cls.from_dict(data)
        except ConfigError as exc:
            raise InputError(path, str(exc)) from exc


def _plain(value: Any) -> Any:
    """Tuples as lists, as JSON reads them back."""
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value
