"""Are two annotations (or an annotation and a FASTA) about the same genome?

Why: scoring a prediction of one genome against the reference of another gives F1 0.000 and exit
0, which reads like "the model is bad" when the real mistake is a wrong file. Sequence ids are what
GFF3 coordinates hang on, so no id in common means nothing can match; the check names both files
and a few ids of each so the mix-up is visible.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from baking.common.errors import InputError
from baking.evaluate.metrics import Feature

log = logging.getLogger(__name__)

SHOWN = 3


def seqids_of(features: Iterable[Feature], lengths: Mapping[str, int]) -> list[str]:
    """Sequence ids of an annotation: its ``##sequence-region`` ids, then those of its features."""
    return list(dict.fromkeys([*lengths, *(f.seqid for f in features)]))


def _few(ids: Sequence[str]) -> str:
    shown = ", ".join(ids[:SHOWN])
    return shown + (f", ... ({len(ids)} in all)" if len(ids) > SHOWN else "")


def check_same_genome(
    ref_path: str | Path,
    ref_ids: Sequence[str],
    pred_path: str | Path,
    pred_ids: Sequence[str],
    *,
    allow_disjoint: bool = False,
) -> None:
    """Refuse a prediction sharing no sequence id with the reference (``allow_disjoint``: warn).

    An empty prediction (no ids at all) is a legitimate result and passes with a warning.
    """
    if not pred_ids:
        log.warning("prediction=%s has no features: every reference feature is missed", pred_path)
        return
    if not ref_ids or set(ref_ids) & set(pred_ids):
        return
    message = (
        f"no sequence id in common with the reference {ref_path} (reference: {_few(ref_ids)}; "
        f"prediction: {_few(pred_ids)}): annotations of different genomes?"
    )
    if not allow_disjoint:
        raise InputError(pred_path, message + " (--allow_disjoint scores them anyway)")
    log.warning("prediction=%s %s", pred_path, message)


def check_fasta_matches(
    fasta_path: str | Path,
    sequences: Sequence[tuple[str, str]],
    ref_path: str | Path,
    ref_ids: Sequence[str],
    ref_lengths: Mapping[str, int],
) -> None:
    """The baseline's FASTA must hold every reference sequence, at the reference's length.

    Lengths come from the reference's ``##sequence-region`` lines (when it has them). Extra FASTA
    sequences are allowed (a plasmid the reference leaves out) but logged.
    """
    have = {seqid: len(seq) for seqid, seq in sequences}
    missing = [s for s in ref_ids if s not in have]
    if missing:
        raise InputError(
            fasta_path,
            f"does not hold the sequences of the reference {ref_path}: missing {_few(missing)} "
            f"(the FASTA has {_few(list(have)) or 'no sequences'})",
        )
    for seqid, length in ref_lengths.items():
        if have[seqid] != length:
            raise InputError(
                fasta_path,
                f"sequence {seqid} is {have[seqid]} bp here but {length} bp in the reference "
                f"{ref_path} (##sequence-region): another assembly?",
            )
    extra = [s for s in have if s not in set(ref_ids)]
    if extra:
        log.warning("fasta=%s sequences absent from the reference: %s", fasta_path, _few(extra))
