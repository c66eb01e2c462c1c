"""Which reference CDS break the ORF rule, and why.

The ORF rule: a CDS is one interval that starts with a start codon of its table (``baking.orfs``'
starts), ends on the first in-frame stop (stop included) and is a whole number of codons. A decoder
that may only emit ORFs cannot write a CDS that breaks it, so the count of breakers bounds what such
a decoder can score exactly; the causes say which are lost on purpose (pseudogenes, which scoring
drops anyway) and which are biology a bacterial ORF model does not cover.

Causes, first match wins, in this order (declared reasons before inferred ones):

``pseudogene``     ``pseudo=true`` / pseudogene biotype on the CDS or an ancestor (the marks of
                   ``baking.target_format.features``, which baking and scoring share)
``transl_except``  a declared translation exception (selenocysteine, a stop read through)
``exception``      ``exception=`` (ribosomal slippage, ...) or a CDS written as several pieces
``edge``           ``partial=true`` / ``start_range`` / ``end_range``, or a CDS touching the end of a
                   linear sequence (its start or stop lies outside the sequence)
``start_codon``    a start codon outside the table's usual starts (e.g. ATT, CTG), otherwise an ORF
``other``          anything else: internal stop, no stop at the end, length not a multiple of 3
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from baking.formats.fasta import reverse_complement
from baking.formats.gff3 import GFFFeature
from baking.orfs import GeneticCode, OrfIndex, genetic_code
from baking.target_format.features import is_pseudo_marked, pseudo_ids

CAUSES = ("pseudogene", "transl_except", "exception", "edge", "start_codon", "other")


@dataclass(frozen=True)
class CdsCheck:
    """One reference CDS (all its pieces) against the ORF rule."""

    seqid: str
    cds_id: str
    start: int
    end: int
    strand: str
    pieces: int
    transl_table: int
    valid: bool
    cause: str
    """``"ok"`` for a valid ORF, otherwise one of ``CAUSES``."""
    problems: tuple[str, ...]
    """What is wrong with the joined sense sequence (empty when it is an ORF)."""
    start_codon: str


def sense_problems(sense: str, code: GeneticCode) -> list[str]:
    """Why a CDS's sense sequence (5' to 3', stop included) is not an ORF, via the ORF index."""
    n = len(sense)
    idx = OrfIndex(sense, code)
    problems = []
    if n % 3:
        problems.append(f"length {n} is not a multiple of 3")
    if n < 6:
        return problems + ["shorter than a start and a stop codon"]
    if not idx.is_start(0, "+"):
        problems.append(f"start codon {sense[:3]}")
    whole = n - n % 3
    if not idx.is_stop(whole, "+"):
        problems.append(f"no stop codon at the end ({sense[whole - 3 : whole]})")
    internal = idx.stops_in_frame(0, whole - 3, "+")
    if internal:
        problems.append(f"{internal} internal in-frame stop(s)")
    return problems


def _joined_sense(seq: str, pieces: Sequence[GFFFeature], circular: bool) -> str:
    """The CDS's bases 5' to 3', its pieces joined in transcription order."""
    n = len(seq)
    parts = []
    for f in pieces:
        lo, hi = f.start - 1, f.end
        part = seq[lo:hi] if hi <= n or not circular else seq[lo:] + seq[: hi - n]
        parts.append(part)
    strand = pieces[0].strand
    order = sorted(range(len(pieces)), key=lambda i: pieces[i].start)
    if strand == "-":
        return "".join(reverse_complement(parts[i]) for i in reversed(order))
    return "".join(parts[i] for i in order)


def _cause(
    pieces: Sequence[GFFFeature], pseudo: bool, problems: Sequence[str], n: int, circular: bool
) -> str:
    attrs = [dict(f.attributes) for f in pieces]
    if pseudo:
        return "pseudogene"
    if any("transl_except" in a for a in attrs):
        return "transl_except"
    if len(pieces) > 1 or any("exception" in a for a in attrs):
        return "exception"
    edge_marked = any(
        a.get("partial") == "true" or "start_range" in a or "end_range" in a for a in attrs
    )
    touches = not circular and any(f.start == 1 or f.end >= n for f in pieces)
    if edge_marked or touches:
        return "edge"
    if len(problems) == 1 and problems[0].startswith("start codon"):
        return "start_codon"
    return "other"


def check_reference_cds(
    seqs: Mapping[str, str],
    features: Sequence[GFFFeature],
    *,
    circular: Iterable[str] = (),
    default_table: int = 11,
) -> list[CdsCheck]:
    """Check every CDS of ``features`` (pieces grouped by ``ID``) on ``seqs`` against the ORF rule.

    ``circular`` names the sequences whose CDS may cross the origin (``end > length``). The table is
    each CDS's ``transl_table`` attribute, else ``default_table``. CDS on sequences missing from
    ``seqs`` are skipped.
    """
    circ = set(circular)
    pseudo = pseudo_ids(features)
    groups: dict[tuple[str, str], list[GFFFeature]] = {}
    for f in features:
        if f.type == "CDS" and f.seqid in seqs:
            key = (f.seqid, f.attr("ID") or f"line{f.line}")
            groups.setdefault(key, []).append(f)
    out = []
    for (seqid, cds_id), pieces in groups.items():
        seq = seqs[seqid]
        table = int(pieces[0].attr("transl_table") or default_table)
        code = genetic_code(table)
        is_pseudo = any(
            is_pseudo_marked(f)
            or f.attr("ID") in pseudo
            or any(p in pseudo for p in (f.attr("Parent") or "").split(",") if p)
            for f in pieces
        )
        sense = _joined_sense(seq, pieces, seqid in circ)
        problems = sense_problems(sense, code)
        valid = not problems and len(pieces) == 1
        cause = "ok" if valid else _cause(pieces, is_pseudo, problems, len(seq), seqid in circ)
        out.append(
            CdsCheck(
                seqid=seqid,
                cds_id=cds_id,
                start=min(f.start for f in pieces),
                end=max(f.end for f in pieces),
                strand=pieces[0].strand,
                pieces=len(pieces),
                transl_table=table,
                valid=valid,
                cause=cause,
                problems=tuple(problems),
                start_codon=sense[:3],
            )
        )
    return out


def tally(checks: Iterable[CdsCheck]) -> Counter[str]:
    """CDS per cause (``ok`` for the valid ones)."""
    return Counter(c.cause for c in checks)
