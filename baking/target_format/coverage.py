"""Does the annotation cover the genome? Sequences without a feature of the chosen types.

A window without features teaches the model "no gene here". That is right for a gene-free stretch
of an annotated sequence, and wrong when the annotation simply says nothing: a ``--types`` typo
(``CDs``), a GFF3 of only ``gene`` lines, a plasmid record the GFF3 never mentions (its copy of a
real gene would be taught as gene-free). Those baked without a word before. The policy
(``BakeConfig.unannotated``, docs/baking.md "Unannotated sequences"):

``refuse`` (default)  a genome with no feature of the types at all, or with FASTA records that no
                      GFF3 line mentions, is an ``InputError`` naming the GFF3 and what it holds;
                      a record the GFF3 declares (a ``region`` or ``##sequence-region`` line)
                      but gives no such feature is baked gene-free with a warning (draft
                      assemblies' short contigs);
``skip``              every sequence without a feature of the types is left out (warned, counted);
``keep``              every sequence is baked; those without features are warned about, counted.

A type in ``types`` that differs only in case from a type the file has is always refused: GFF3
types are case-sensitive and nobody means ``CDs``.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

from baking.common.errors import InputError

log = logging.getLogger(__name__)


@dataclass
class Coverage:
    """Which sequences a genome bakes without features, and which it leaves out."""

    gene_free: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def _few(items: Sequence[str], n: int = 4) -> str:
    return ", ".join(items[:n]) + (f" and {len(items) - n} more" if len(items) > n else "")


def _counts(present: Counter) -> str:
    return ", ".join(f"{t} {n}" for t, n in present.most_common(8)) + (
        ", ..." if len(present) > 8 else ""
    )


def check_coverage(
    gff_path: str,
    types: Sequence[str],
    present: Counter,
    kept: Mapping[str, int],
    mentioned: Collection[str],
    lengths: Mapping[str, int],
    policy: str,
) -> Coverage:
    """Apply ``policy`` to a genome (``present``: every feature type of the GFF3 with its count;
    ``kept``: chosen features per seqid; ``mentioned``: seqids with any GFF3 line or
    ``##sequence-region``; ``lengths``: the FASTA's sequences). Raises ``InputError``."""
    for t in types:
        if not present[t]:
            twin = [p for p in present if p.lower() == t.lower()]
            if twin:
                raise InputError(
                    gff_path,
                    f"--types has {t!r} but the file has {twin[0]!r} ({present[twin[0]]} "
                    "features); feature types are case-sensitive",
                )
    bare = [s for s in lengths if not kept.get(s)]
    if not bare:
        return Coverage()
    bp = sum(lengths[s] for s in bare)
    if len(bare) == len(lengths) and policy != "keep":
        found = f"it has {_counts(present)}" if present else "it has no features"
        raise InputError(
            gff_path,
            f"no feature of --types {','.join(types)}: {found}; every window would be taught "
            "as gene-free (check --types, or --unannotated keep to bake it anyway)",
        )
    if policy == "skip":
        log.warning(
            "%s: leaving out %d of %d sequences (%d bp) without a feature of --types: %s",
            gff_path,
            len(bare),
            len(lengths),
            bp,
            _few(bare),
        )
        return Coverage(skipped=bare)
    silent = [s for s in bare if s not in mentioned]
    if silent and policy == "refuse":
        raise InputError(
            gff_path,
            f"never mentions {len(silent)} of the FASTA's {len(lengths)} sequences "
            f"({_few([f'{s} ({lengths[s]} bp)' for s in silent])}); their windows would be "
            "taught as gene-free: --unannotated skip leaves them out, keep bakes them gene-free",
        )
    log.warning(
        "%s: %d of %d sequences (%d bp) have no feature of --types (pseudogenes aside) and are "
        "baked as gene-free windows: %s",
        gff_path,
        len(bare),
        len(lengths),
        bp,
        _few(bare),
    )
    return Coverage(gene_free=bare)
