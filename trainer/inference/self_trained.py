"""The no-model control of ``annotate --adapt``: a genome's own statistics alone.

Why: ``--adapt`` combines the model's windows with statistics the genome teaches about itself
(``adapt.py``). Whether the model adds anything to them is only known by running the statistics
with no model at all: seeds from long ORFs, the same coding and start scores, the same
candidates and selection. ``orf_rule --self_trained`` writes this as GFF3 laid out as annotate's
(``benchmarks/learn_real.py`` scores it as a row next to the model).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from baking.common.errors import ConfigError
from baking.common.files import check_output
from baking.formats.gff3 import GFFFeature, write_gff3
from baking.orfs import genetic_code
from trainer.inference.adapt import self_trained_predictions
from trainer.inference.annotate import gene_lines, read_genome, region_line

log = logging.getLogger(__name__)


def annotate_self_trained(
    fasta: str | Path,
    out: str | Path,
    *,
    transl_table: int = 11,
    circular: Iterable[str] = (),
) -> int:
    """Annotate a genome FASTA with its own statistics alone; write GFF3 atomically; return the
    number of CDS. ``circular`` as annotate's (ids, or ``("all",)``)."""
    t0 = time.perf_counter()
    check_output(out, [fasta])
    seqs = read_genome(fasta)
    circ = set(circular)
    unknown = sorted(circ - {"all"} - {sid for sid, _ in seqs})
    if unknown:
        raise ConfigError(f"circular names sequences not in {Path(fasta).name}: {unknown}")
    seqs = [(sid, s) for sid, s in seqs if s]
    flags = ["all" in circ or sid in circ for sid, _ in seqs]
    counts: Counter[str] = Counter()
    chosen = self_trained_predictions(seqs, genetic_code(transl_table), flags, counts=counts)
    features: list[GFFFeature] = []
    regions: dict[str, tuple[int, int]] = {}
    n = 0
    for (sid, s), is_circ, preds in zip(seqs, flags, chosen):
        regions[sid] = (1, len(s))
        features.append(region_line(sid, len(s), is_circ))
        for p, _ in preds:
            n += 1
            features.extend(gene_lines(n, p, "", score_type=None))
    comment = f"dna2gff self_trained transl_table={transl_table}"
    write_gff3(out, features, regions, [comment])
    log.info("self_trained cds=%d seconds=%.1f %s", n, time.perf_counter() - t0, dict(counts))
    return n
