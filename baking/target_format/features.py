"""Choose the features a target describes, and check them against the genome's sequences.

The target describes *gene-level* features: the product features a bacterial RefSeq annotation
gives each gene (CDS, tRNA, rRNA, ncRNA, ...). Decisions, documented in ``docs/baking.md``:
- ``gene`` parents, ``exon`` children, ``region`` and everything not in ``types`` are left out
  (a bacterial gene's extent equals its product's, so the product carries all information);
- pseudogenes are left out by default: a ``pseudogene`` feature, a feature with ``pseudo=true`` or
  ``gene_biotype=pseudogene``/``transcribed_pseudogene``, and every descendant of one (through
  ``Parent``). ``include_pseudo=True`` keeps the descendants of the chosen types;
- exact duplicates (same seqid, type, start, end, strand, phase) are kept once;
- a sequence is circular when its ``region`` feature says ``Is_circular=true``; only then may a
  feature end past the sequence's length (the GFF3 spec's way to write origin-spanning features).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from baking.common.errors import InputError
from baking.formats.gff3 import GFF3Document, GFFFeature
from baking.target_format.grammar import PHASED_TYPES, type_token

log = logging.getLogger(__name__)

PSEUDO_BIOTYPES = frozenset({"pseudogene", "transcribed_pseudogene"})


@dataclass(frozen=True, order=True)
class GenomeFeature:
    """A chosen feature in GFF3 terms: 1-based closed, ``end > length`` when origin-spanning."""

    seqid: str
    start: int
    end: int
    strand: str
    type: str
    phase: int | None = None


@dataclass(frozen=True)
class SequenceInfo:
    """One sequence of a genome: id, length and topology."""

    seqid: str
    length: int
    circular: bool


@dataclass
class SelectionStats:
    """What the selection kept and dropped, for the manifest."""

    kept: Counter = field(default_factory=Counter)
    pseudo_dropped: int = 0
    duplicates_dropped: int = 0
    other_types: Counter = field(default_factory=Counter)


def is_pseudo_marked(f: GFFFeature) -> bool:
    """A feature that declares itself a pseudogene (type or attributes)."""
    return _pseudo_marked(f.type, dict(f.attributes))


def _pseudo_marked(ftype: str, attrs: Mapping[str, str]) -> bool:
    return (
        ftype == "pseudogene"
        or attrs.get("pseudo", "").lower() == "true"
        or attrs.get("gene_biotype", "") in PSEUDO_BIOTYPES
    )


def pseudo_ids(
    features: Sequence[GFFFeature], attr_dicts: Sequence[Mapping[str, str]] | None = None
) -> set[str]:
    """IDs of pseudo-marked features and of all their descendants (Parent chains, any order)."""
    children: dict[str, list[str]] = {}
    marked: list[str] = []
    if attr_dicts is None:
        attr_dicts = [dict(f.attributes) for f in features]
    for f, attrs in zip(features, attr_dicts):
        fid = attrs.get("ID")
        if fid is None:
            continue
        if _pseudo_marked(f.type, attrs):
            marked.append(fid)
        for parent in attrs.get("Parent", "").split(","):
            if parent:
                children.setdefault(parent, []).append(fid)
    out: set[str] = set()
    stack = marked
    while stack:
        fid = stack.pop()
        if fid not in out:
            out.add(fid)
            stack.extend(children.get(fid, ()))
    return out


def sequence_infos(
    doc: GFF3Document, lengths: Mapping[str, int], gff_path: str
) -> dict[str, SequenceInfo]:
    """Topology of each FASTA sequence (from ``region`` features), checking ``##sequence-region``."""
    circular = {
        f.seqid
        for f in doc.features
        if f.type == "region" and (f.attr("Is_circular") or "").lower() == "true"
    }
    for seqid, (_start, end) in doc.sequence_regions.items():
        if seqid in lengths and end != lengths[seqid]:
            raise InputError(
                gff_path,
                f"##sequence-region {seqid} ends at {end} but the FASTA sequence has "
                f"{lengths[seqid]} bp (annotation and FASTA do not match)",
            )
    return {s: SequenceInfo(s, n, s in circular) for s, n in lengths.items()}


def fasta_ids_hint(seqid: str, known: Sequence[str], shown: int = 3) -> str:
    """What the FASTA has instead of ``seqid``: the same accession in another version first
    (``NC_1.2`` vs ``NC_1.1``, the usual mismatch of files fetched at different times), then the
    first few ids, with the count."""
    if not known:
        return ""
    base = seqid.rsplit(".", 1)[0]
    twins = [k for k in known if k.rsplit(".", 1)[0] == base]
    if twins:
        return f" (the FASTA has {twins[0]!r}: another version of the same accession?)"
    listed = ", ".join(repr(k) for k in known[:shown])
    more = f", ... ({len(known)} in all)" if len(known) > shown else ""
    return f" (the FASTA has {listed}{more})"


def check_feature_bounds(
    f: GFFFeature, info: SequenceInfo | None, gff_path: str, known: Sequence[str] = ()
) -> None:
    """``InputError`` for a feature on an unknown sequence (``known``: the FASTA's ids, named in
    the message) or past the end of its sequence."""
    if info is None:
        raise InputError(
            gff_path,
            f"seqid {f.seqid!r} is not in the FASTA file{fasta_ids_hint(f.seqid, known)}",
            f.line,
        )
    if f.end > info.length:
        if not info.circular:
            raise InputError(
                gff_path,
                f"feature end {f.end} is past the end of linear sequence {f.seqid!r} "
                f"({info.length} bp)",
                f.line,
            )
        if f.start > info.length or f.end - f.start + 1 > info.length:
            raise InputError(
                gff_path,
                f"feature {f.start}..{f.end} does not fit circular sequence {f.seqid!r} "
                f"({info.length} bp)",
                f.line,
            )


def select_features(
    doc: GFF3Document,
    infos: Mapping[str, SequenceInfo],
    types: Sequence[str],
    gff_path: str,
    include_pseudo: bool = False,
    attr_dicts: Sequence[Mapping[str, str]] | None = None,
) -> tuple[dict[str, list[GenomeFeature]], SelectionStats]:
    """The chosen features per seqid (sorted), validated against the sequences (``attr_dicts``:
    each feature's attributes as a dict, when the caller has them already)."""
    for t in types:
        type_token(t)  # GrammarError for unusable names, before any work
    wanted = set(types)
    if attr_dicts is None:
        attr_dicts = [dict(f.attributes) for f in doc.features]
    drop = set() if include_pseudo else pseudo_ids(doc.features, attr_dicts)
    stats = SelectionStats()
    chosen: dict[str, set[tuple]] = {s: set() for s in infos}
    for f, attrs in zip(doc.features, attr_dicts):
        info = infos.get(f.seqid)
        if info is None or f.end > info.length:
            check_feature_bounds(f, info, gff_path, list(infos))
        if f.type not in wanted:
            stats.other_types[f.type] += 1
            continue
        if not include_pseudo and (
            _pseudo_marked(f.type, attrs)
            or attrs.get("ID", "\0") in drop
            or any(p in drop for p in attrs.get("Parent", "").split(","))
        ):
            stats.pseudo_dropped += 1
            continue
        if f.strand not in ("+", "-"):
            raise InputError(
                gff_path,
                f"{f.type} feature has strand {f.strand!r}; the target needs + or -",
                f.line,
            )
        phase = f.phase if f.type in PHASED_TYPES else None
        if f.type in PHASED_TYPES and phase is None:
            raise InputError(gff_path, f"{f.type} feature without a phase", f.line)
        key = (f.start, f.end, f.strand, f.type, -1 if phase is None else phase)
        if key in chosen[f.seqid]:
            stats.duplicates_dropped += 1
            continue
        chosen[f.seqid].add(key)
        stats.kept[f.type] += 1
    return {s: [_feature(s, k) for k in sorted(keys)] for s, keys in chosen.items()}, stats


def _feature(seqid: str, key: tuple) -> GenomeFeature:
    """A ``GenomeFeature`` from a selection key, filling ``__dict__`` directly (a frozen
    dataclass's ``__init__`` costs a ``object.__setattr__`` per field; genomes have thousands)."""
    g = object.__new__(GenomeFeature)
    g.__dict__.update(
        seqid=seqid,
        start=key[0],
        end=key[1],
        strand=key[2],
        type=key[3],
        phase=None if key[4] < 0 else key[4],
    )
    return g
