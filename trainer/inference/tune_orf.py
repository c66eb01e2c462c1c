"""Choose a model's ORF-layer minimum (the shortest whole CDS it may call) on an annotated genome.

Why: under the ORF constraint every ORF of the window is a candidate gene, and the shortest one
allowed decides how many short genes a model can call against how many short non-genes it
calls by mistake. Where that balance lies depends on the model (one that has learned short
genes well wants a low N), so it is measured for each model on a genome it was not trained on,
and recorded in the model folder's ``generation_config.json`` (with the decoding options it was
tuned under) and its model card, where ``annotate`` reads it as its default.

The choice is the best CDS stop F1, then exact F1; a tie goes to the larger N (fewer, longer
calls: the prior of every ORF-length rule).
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from baking.common.errors import ConfigError, InputError
from baking.evaluate.genome_match import check_fasta_matches, seqids_of
from baking.evaluate.load import load_features
from baking.evaluate.metrics import compare
from baking.formats.fasta import read_fasta
from baking.formats.gff3 import write_gff3
from baking.target_format.pointers import MIN_ORF_CODONS_CANDIDATES
from trainer.inference.annotate import (
    AnnotateOptions,
    annotate_sequences,
    load_model,
    resolve_grammar,
)
from trainer.model.card import record_scores
from trainer.model.config import Dna2GffConfig
from trainer.model.generation import record_decoding

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TuneRow:
    """One candidate N and how the model scores with it."""

    min_orf_codons: int
    exact_f1: float
    stop_f1: float
    predicted: int
    reference: int
    seconds: float


@dataclass(frozen=True)
class TuneResult:
    rows: tuple[TuneRow, ...]
    chosen: int

    def as_dict(self) -> dict:
        return {"chosen": self.chosen, "rows": [asdict(r) for r in self.rows]}


def check_candidates(candidates: Sequence[int]) -> tuple[int, ...]:
    """Sorted, unique, each at least a start and a stop codon; refuses an empty list."""
    out = tuple(sorted(set(candidates)))
    if not out:
        raise ConfigError("no min_orf_codons candidates given")
    bad = [n for n in out if n < 2]
    if bad:
        raise ConfigError(
            f"min_orf_codons candidates must be >= 2 (a start and a stop codon), got {bad}"
        )
    return out


def choose(rows: Sequence[TuneRow]) -> int:
    """Best stop F1, then exact F1 (both to 3 decimals: closer is noise), then the larger N."""
    best = max(rows, key=lambda r: (round(r.stop_f1, 3), round(r.exact_f1, 3), r.min_orf_codons))
    return best.min_orf_codons


def tune_min_orf_codons(
    model_dir: str | Path,
    fasta: str | Path,
    reference: str | Path,
    candidates: Sequence[int] = MIN_ORF_CODONS_CANDIDATES,
    options: AnnotateOptions | None = None,
) -> TuneResult:
    """Annotate ``fasta`` once per candidate N and score each against ``reference`` (GFF3)."""
    ns = check_candidates(candidates)
    options = options or AnnotateOptions()
    fasta, reference = Path(fasta), Path(reference)
    for path in (fasta, reference):
        if not path.is_file():
            raise InputError(path, "no such file")
    model, tokenizer = load_model(model_dir, options.device)
    if not options.orf_constraint:
        raise ConfigError("tuning the ORF layer needs the ORF constraint on")
    seqs = list(read_fasta(fasta))
    if not seqs:
        raise InputError(fasta, "no sequences (expected FASTA)")
    ref, lengths = load_features(reference)
    check_fasta_matches(fasta, seqs, reference, seqids_of(ref, lengths), lengths)
    window_len, types = resolve_grammar(model, tokenizer, options)
    if "CDS" not in types:
        raise ConfigError(f"{model_dir}: the model does not write CDS (its types: {types})")
    rows = []
    with tempfile.TemporaryDirectory(prefix="dna2gff_tune_") as tmp:
        for n in ns:
            t0 = time.perf_counter()
            opts = replace(options, min_orf_codons=n, progress=False)
            features, regions, _ = annotate_sequences(
                model, tokenizer, seqs, opts, window_len, types
            )
            pred_path = Path(tmp) / f"pred_n{n}.gff3"
            write_gff3(pred_path, features, regions, [])
            pred, _ = load_features(pred_path)
            (cds,) = compare(ref, pred, ["CDS"], lengths)
            row = TuneRow(
                min_orf_codons=n,
                exact_f1=cds.exact.f1,
                stop_f1=cds.stop.f1,
                predicted=cds.n_pred,
                reference=cds.n_ref,
                seconds=time.perf_counter() - t0,
            )
            log.info(
                "min_orf_codons=%d CDS exact_f1=%.3f stop_f1=%.3f predicted=%d reference=%d "
                "seconds=%.1f",
                n,
                row.exact_f1,
                row.stop_f1,
                row.predicted,
                row.reference,
                row.seconds,
            )
            rows.append(row)
    return TuneResult(tuple(rows), choose(rows))


def record_min_orf_codons(
    model_dir: str | Path,
    n: int,
    options: AnnotateOptions | None = None,
    row: TuneRow | None = None,
    genome: str | None = None,
) -> Path:
    """Record ``n`` (and the decoding ``options`` it was tuned under) in the model folder's
    ``generation_config.json``, and ``row``'s scores in its card; returns the settings file.

    Why the options too: the N is best for the decoding it was measured with, so annotate's
    defaults become that decoding (beams, overlap, votes, selection) as a whole."""
    Dna2GffConfig.load(model_dir)  # refuses a folder no ORF layer applies to (a digit model)
    tuned: dict = {"min_orf_codons": int(n)}
    if options is not None:
        tuned.update(
            num_beams=options.num_beams,
            overlap=options.overlap,
            min_votes=options.min_votes,
            selection=options.selection,
        )
    path = record_decoding(model_dir, **tuned)
    if row is not None:
        where = f" on {genome}" if genome else ""
        record_scores(
            model_dir,
            {
                f"tune_orf CDS exact F1{where} (N={row.min_orf_codons})": round(row.exact_f1, 4),
                f"tune_orf CDS stop F1{where} (N={row.min_orf_codons})": round(row.stop_f1, 4),
            },
        )
    return path
