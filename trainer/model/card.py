"""The model card: a model folder's ``README.md``, written with every save.

What a user of a shared model needs before running it: the base encoder, the genomes it was
trained on (windows, base pairs, genetic code), the target it writes (window length, feature types,
coordinate form), the decoding settings it was scored with, the scores measured, and what it is
for and not for. The hub shows this file as the model's page.

The card is rendered from facts, never edited by hand: the config and the decoding settings (their
own files) and ``CardFacts`` (training genomes, scores), which ride in the card's YAML front matter
under ``dna2gff:`` as one JSON object (JSON is YAML), so a later step (``tune_orf``,
``learn_synthetic``) can add a score and render the card again.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from baking.common.errors import InputError
from baking.common.files import read_json, write_text
from trainer.model.config import Dna2GffConfig
from trainer.model.generation import DecodingSettings
from trainer.model.hub import looks_like_hub_id

CARD_NAME = "README.md"
FACTS_KEY = "dna2gff:"
MANIFEST_NAME = "manifest.json"


@dataclass
class TrainingGenome:
    """One genome of the training data, as the baker's manifest counts it."""

    name: str
    bp: int | None = None
    train_windows: int | None = None
    """Training samples (windows; both strands count when the data was baked with ``--rc both``)."""
    val_windows: int | None = None
    transl_table: int | None = None
    features: dict[str, int] = field(default_factory=dict)


@dataclass
class CardFacts:
    """What the card says beyond the config and the decoding settings."""

    data: str | None = None
    """The baked data folder trained on (provenance)."""
    genomes: list[TrainingGenome] = field(default_factory=list)
    scores: dict[str, Any] = field(default_factory=dict)
    """Named scores the run measured (``evaluate`` / ``tune_orf`` figures), as given."""

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, data: Any) -> CardFacts:
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        genomes = [TrainingGenome(**g) for g in data.get("genomes") or []]
        return cls(data.get("data"), genomes, dict(data.get("scores") or {}))


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def facts_from_manifest(data_dir: str | Path) -> CardFacts:
    """The training genomes as the data folder's ``manifest.json`` counts them.

    Read as plain JSON with every field optional: the card states what the manifest says and
    leaves out what it does not, so a manifest of another format version still gives a card."""
    path = Path(data_dir) / MANIFEST_NAME
    manifest = read_json(path)
    if not isinstance(manifest, dict):
        raise InputError(path, "not a JSON object")
    genomes = []
    for name, g in sorted((manifest.get("genomes") or {}).items()):
        if not isinstance(g, dict) or g.get("status", "ok") != "ok":
            continue
        samples = _dict(g.get("samples"))
        features = _dict(g.get("features"))
        genomes.append(
            TrainingGenome(
                name=str(name),
                bp=_int(g.get("bp")),
                train_windows=_int(samples.get("train")),
                val_windows=_int(samples.get("val")),
                transl_table=_int(g.get("transl_table")),
                features={str(k): v for k, v in features.items() if _int(v) is not None},
            )
        )
    return CardFacts(data=str(data_dir), genomes=genomes)


def read_card_facts(folder: str | Path) -> CardFacts | None:
    """The facts in a folder's card; None without a card, or a card not written by dna2gff."""
    path = Path(folder) / CARD_NAME
    if not path.is_file():
        return None
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines or lines[0] != "---":
        return None
    for line in lines[1:]:
        if line == "---":
            break
        if line.startswith(FACTS_KEY):
            try:
                return CardFacts.from_json(json.loads(line[len(FACTS_KEY) :]))
            except (ValueError, TypeError) as exc:
                raise InputError(path, f"unreadable {FACTS_KEY} line in the card: {exc}") from exc
    return None


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join("" if v is None else str(v) for v in row) + " |" for row in rows]
    return out


def render_card(
    config: Dna2GffConfig, decoding: DecodingSettings | None, facts: CardFacts | None
) -> str:
    """The card's text (YAML front matter + Markdown)."""
    facts = facts or CardFacts()
    base = config.source_checkpoint
    front = ["---", "library_name: dna2gff"]
    front += ["tags:", "- genomics", "- genome-annotation", "- gff3", "- dnabert-2"]
    if base and looks_like_hub_id(base):
        front.append(f"base_model: {base}")
    front += [FACTS_KEY + " " + facts.to_json(), "---", ""]
    body = ["# dna2gff model", ""]
    body += [
        "An encoder-decoder that writes genome annotations: DNA windows in, GFF3 features out. "
        "The encoder is DNABERT-2, re-implemented faithfully in plain PyTorch (ALiBi attention, "
        "no Triton kernel, no remote code); the decoder was initialised from it.",
        "",
        "## Base encoder",
        "",
        f"- source checkpoint: `{base or 'unknown'}`",
        f"- {config.num_encoder_layers} encoder / {config.num_decoder_layers} decoder layers, "
        f"hidden {config.hidden_size}, {config.num_attention_heads} heads, vocabulary "
        f"{config.vocab_size}"
        + (
            f", decoder MLPs as {config.num_experts} experts (top-{config.moe_top_k})"
            if config.use_moe
            else ""
        ),
        "",
        "## Target",
        "",
        f"- window length: {config.window_len or 'not recorded (untrained)'} bp",
        f"- feature types: {', '.join(config.feature_types or []) or 'not recorded (untrained)'}",
        f"- coordinates: {config.coordinate_form}"
        + (
            f" (pointer context {config.pointer_context_bp} bp)"
            if config.coordinate_form == "pointer"
            else ""
        ),
        "",
        "## Training genomes",
        "",
    ]
    if facts.genomes:
        rows = [
            [
                g.name,
                g.bp,
                g.train_windows,
                g.val_windows,
                g.transl_table,
                ", ".join(f"{k} {v}" for k, v in sorted(g.features.items())),
            ]
            for g in facts.genomes
        ]
        body += _table(
            ["genome", "bp", "train windows", "val windows", "genetic code", "features"], rows
        )
        codes = sorted({g.transl_table for g in facts.genomes if g.transl_table is not None})
        body += ["", f"Genetic codes (NCBI transl_table): {', '.join(map(str, codes)) or '?'}."]
        if facts.data:
            body += ["", f"Data folder: `{facts.data}`."]
    else:
        body.append("Not recorded: this folder was not written by a training run's export.")
    body += ["", "## Decoding settings (`generation_config.json`)", ""]
    recorded = decoding.recorded() if decoding else {}
    if recorded:
        body += [f"- {k}: {v}" for k, v in sorted(recorded.items())]
        body += ["", "`annotate` uses these as its defaults; a command-line flag still wins."]
    else:
        body.append("None recorded: `annotate` uses its own defaults.")
    body += ["", "## Scores", ""]
    if facts.scores:
        body += _table(["score", "value"], [[k, v] for k, v in sorted(facts.scores.items())])
    else:
        body.append("None measured yet (`tune_orf` and the learning benchmark record theirs).")
    body += [
        "",
        "## Intended use and limits",
        "",
        "- For: annotating CDS (and the RNA types above) in bacterial and archaeal genomes of the "
        "kind it was trained on, with `annotate` (`pip install dna2gff`; "
        "`annotate --model THIS_FOLDER --fasta G.fna --out G.gff3`), scored with `evaluate` next "
        "to Prodigal.",
        "- Not for: eukaryotic genes (no introns in the target), genetic codes it was not trained "
        "on, or calls used without checking: it is a research model, its scores are those above "
        "on the genomes named there.",
        "- Load: `import trainer; transformers.AutoModel.from_pretrained(FOLDER)` or "
        "`trainer.model.Dna2GffModel.from_pretrained(FOLDER)`; decoding is dna2gff's own "
        "(pointer beam search under the grammar and ORF constraints), not `generate()`.",
        "",
    ]
    return "\n".join(front + body)


def write_card(
    folder: str | Path,
    config: Dna2GffConfig,
    decoding: DecodingSettings | None,
    facts: CardFacts | None,
) -> Path:
    """Write ``folder/README.md`` atomically."""
    return write_text(Path(folder) / CARD_NAME, render_card(config, decoding, facts))


def record_scores(folder: str | Path, scores: dict[str, Any]) -> Path:
    """Add ``scores`` to a model folder's card and render it again from the folder's files."""
    from trainer.model.generation import load_decoding

    facts = read_card_facts(folder) or CardFacts()
    facts.scores.update(scores)
    return write_card(folder, Dna2GffConfig.load(folder), load_decoding(folder), facts)


__all__ = [
    "CARD_NAME",
    "CardFacts",
    "TrainingGenome",
    "facts_from_manifest",
    "read_card_facts",
    "record_scores",
    "render_card",
    "write_card",
]
