"""The GFF3 rules that span lines, checked as GenomeTools' ``gt gff3validator`` checks them.

``baking.formats.gff3`` checks each line on its own; this module checks what only the whole file
can tell, because a broken link or a wrong phase would otherwise reach the training targets (wrong
codon frame) and the pseudogene filter (which follows ``Parent`` chains):

- **multi-features** (several lines sharing one ``ID``, e.g. a CDS split by a frameshift) lie on
  one seqid, with the same source, type, ``Parent`` and ``Target`` name, and no ``###`` between
  them (other attributes may differ; another strand, as in trans-splicing, is only warned about:
  GenomeTools 1.6 does the same);
- **Parent links**: every name in ``Parent`` is the ``ID`` of a feature on the same seqid between
  the same ``###`` lines (forward references are fine), never the feature's own ``ID``, and the
  links form no cycle;
- **CDS phases**: the CDS children of one parent (those sharing an ``ID`` counted apart, as one
  multi-feature) are read in transcript order (by position, reversed on ``-``; on a circular
  sequence a CDS across the origin starts after its widest gap) and each piece's phase must follow
  from the previous piece: ``(3 - (length - phase) % 3) % 3``;
- **sequence regions** (``region_ranges``): a feature lies inside its seqid's
  ``##sequence-region``; on a circular seqid (``Is_circular=true``) it may end past it.

Every problem raises ``InputError(path, reason, line)`` at the line that breaks the rule.
"""

from __future__ import annotations

import logging
from bisect import bisect_left
from collections.abc import Mapping, Sequence
from pathlib import Path

from baking.common.errors import InputError
from baking.formats.gff3 import GFF3Document, GFFFeature

log = logging.getLogger(__name__)


def check_gff3_semantics(
    doc: GFF3Document,
    path: str | Path,
    *,
    region_ranges: bool = True,
    attrs: Sequence[Mapping[str, str]] | None = None,
) -> None:
    """Raise ``InputError`` at the first cross-line rule ``doc`` breaks (see the module doc).

    ``region_ranges=False`` skips the ``##sequence-region`` containment check, for callers that
    check every feature against the FASTA sequences instead (the baker). ``attrs``: each
    feature's attributes as a dict, when the caller has them already.
    """
    path = str(path)
    if attrs is None:
        attrs = [dict(f.attributes) for f in doc.features]
    by_id: dict[str, list[int]] = {}
    for i, a in enumerate(attrs):
        if "ID" in a:
            by_id.setdefault(a["ID"], []).append(i)
    lines = [f.line for f in doc.features]
    segment = _Segments(doc.terminators, min(lines, default=0), max(lines, default=0))
    _check_multi_features(doc.features, attrs, by_id, segment, path)
    parents = _check_parents(doc.features, attrs, by_id, segment, path)
    _check_cycles(doc.features, attrs, parents, path)
    circular = {f.seqid for f, a in zip(doc.features, attrs) if a.get("Is_circular") == "true"}
    lengths = _sequence_lengths(doc, attrs)
    _check_cds_phases(doc.features, attrs, by_id, parents, circular, lengths, path)
    if region_ranges:
        _check_region_ranges(doc, circular, path)


class _Segments:
    """Which ``###``-delimited block a line is in (IDs do not resolve across ``###``)."""

    def __init__(self, terminators: Sequence[int], first: int, last: int) -> None:
        # only a ### between the first and the last feature can separate two features
        self.lines = sorted(t for t in terminators if first < t < last)

    def __call__(self, line: int) -> int:
        return bisect_left(self.lines, line)

    def between(self, a: int, b: int) -> int | None:
        """The line of a ``###`` between lines ``a`` and ``b``, or None."""
        if not self.lines:
            return None
        lo, hi = min(a, b), max(a, b)
        i = bisect_left(self.lines, lo)
        return self.lines[i] if i < len(self.lines) and self.lines[i] < hi else None


def _check_multi_features(
    features: Sequence[GFFFeature],
    attrs: Sequence[Mapping[str, str]],
    by_id: Mapping[str, list[int]],
    segment: _Segments,
    path: str,
) -> None:
    for fid, idx in by_id.items():
        if len(idx) < 2:
            continue
        first, fa = features[idx[0]], attrs[idx[0]]
        for i in idx[1:]:
            f, a = features[i], attrs[i]
            where = f"shares ID {fid!r} with line {first.line}"
            sep = segment.between(first.line, f.line)
            if sep is not None:
                raise InputError(path, f"{where}, but the ### on line {sep} lies between", f.line)
            for what, mine, theirs in (
                ("seqid", f.seqid, first.seqid),
                ("source", f.source, first.source),
                ("type", f.type, first.type),
                ("Parent", a.get("Parent"), fa.get("Parent")),
                ("Target name", _target_name(a), _target_name(fa)),
            ):
                if mine != theirs:
                    raise InputError(
                        path, f"{where} but has another {what} ({mine!r} vs {theirs!r})", f.line
                    )
            if f.strand != first.strand:  # trans-splicing: GenomeTools only warns, so do we
                log.warning(
                    "%s:%d: %s but lies on strand %s (vs %s)",
                    path,
                    f.line,
                    where,
                    f.strand,
                    first.strand,
                )


def _target_name(a: Mapping[str, str]) -> str | None:
    target = a.get("Target")
    return None if target is None else target.split(" ", 1)[0]


def _parent_names(a: Mapping[str, str]) -> list[str]:
    value = a.get("Parent")
    return [p for p in value.split(",") if p] if value else []


def _check_parents(
    features: Sequence[GFFFeature],
    attrs: Sequence[Mapping[str, str]],
    by_id: Mapping[str, list[int]],
    segment: _Segments,
    path: str,
) -> list[Sequence[str]]:
    """Check every Parent link; returns each feature's parent names."""
    out: list[Sequence[str]] = []
    for f, a in zip(features, attrs):
        if "Parent" not in a:
            out.append(())
            continue
        names = _parent_names(a)
        out.append(names)
        own = a.get("ID")
        for name in names:
            if name == own:
                raise InputError(path, f"Parent {name!r} is the feature's own ID", f.line)
            idx = by_id.get(name)
            if idx is None:
                raise InputError(
                    path, f"Parent {name!r} is not defined (no feature has ID={name})", f.line
                )
            parent = features[idx[0]]
            sep = segment.between(parent.line, f.line)
            if sep is not None:
                raise InputError(
                    path,
                    f"Parent {name!r} (line {parent.line}) is cut off by the ### on line {sep}",
                    f.line,
                )
            if parent.seqid != f.seqid:
                raise InputError(
                    path,
                    f"feature on seqid {f.seqid!r} has Parent {name!r} (line {parent.line}) on "
                    f"seqid {parent.seqid!r}",
                    f.line,
                )
    return out


def _check_cycles(
    features: Sequence[GFFFeature],
    attrs: Sequence[Mapping[str, str]],
    parents: Sequence[Sequence[str]],
    path: str,
) -> None:
    """Parent links between IDs must form no cycle (a feature cannot descend from itself)."""
    # Only an ID that is some feature's Parent and has a Parent itself can lie on a cycle; in an
    # annotation that is a thin middle layer (mRNAs, tRNAs), not the many CDS and exons.
    referenced = {n for names in parents for n in names}
    links: dict[str, list[tuple[str, int]]] = {}  # ID -> (parent ID, line of the link)
    for f, a, names in zip(features, attrs, parents):
        if names and a.get("ID") in referenced:
            own = links.setdefault(a["ID"], [])
            for n in names:
                own.append((n, f.line))
    done: set[str] = set()  # IDs from which no cycle is reachable
    for root in links:
        if root in done:
            continue
        on_path = [root]
        todo = [list(links[root])]  # per ID on the path: the links still to follow
        while todo:
            if not todo[-1]:
                done.add(on_path.pop())
                todo.pop()
                continue
            parent, line = todo[-1].pop()
            if parent in done or parent not in links:  # a top-level ID ends every chain
                continue
            if parent in on_path:
                cycle = " -> ".join([*on_path[on_path.index(parent) :], parent])
                raise InputError(path, f"Parent links form a cycle: {cycle}", line)
            on_path.append(parent)
            todo.append(list(links[parent]))


def _sequence_lengths(doc: GFF3Document, attrs: Sequence[Mapping[str, str]]) -> dict[str, int]:
    """Each seqid's length as far as the file tells (region pragma, else a ``region`` feature)."""
    out = {s: end for s, (_start, end) in doc.sequence_regions.items()}
    for f in doc.features:
        if f.type == "region" and f.start == 1:
            out.setdefault(f.seqid, f.end)
    return out


def _check_cds_phases(
    features: Sequence[GFFFeature],
    attrs: Sequence[Mapping[str, str]],
    by_id: Mapping[str, list[int]],
    parents: Sequence[Sequence[str]],
    circular: set[str],
    lengths: Mapping[str, int],
    path: str,
) -> None:
    by_parent: dict[str | None, list[tuple[GFFFeature, str | None]]] = {}
    for f, a, names in zip(features, attrs, parents):
        if f.type != "CDS":
            continue
        fid = a.get("ID")
        multi = fid if fid is not None and len(by_id[fid]) > 1 else None
        for name in names:
            by_parent.setdefault(name, []).append((f, multi))
        if not names and multi:  # a top-level multi-feature CDS is a group of its own
            by_parent.setdefault(None, []).append((f, multi))
    groups: dict[tuple[str | None, str | None], list[GFFFeature]] = {}
    for parent_name, children in by_parent.items():
        if len(children) > 1:  # one CDS line has no phase to follow from
            for cds, multi_id in children:
                groups.setdefault((parent_name, multi_id), []).append(cds)
    for (parent, multi), pieces in groups.items():
        if len(pieces) < 2:
            continue
        ordered = _transcript_order(pieces, circular, lengths)
        what = f"CDS {multi!r}" if multi else f"the CDS of Parent {parent!r}"
        for prev, cur in zip(ordered, ordered[1:]):
            assert prev.phase is not None  # the reader requires a phase on every CDS
            expected = (3 - (prev.end - prev.start + 1 - prev.phase) % 3) % 3
            if cur.phase != expected:
                raise InputError(
                    path,
                    f"CDS phase {cur.phase} should be {expected}: {what} continues from "
                    f"{prev.start}..{prev.end} (line {prev.line}, phase {prev.phase})",
                    cur.line,
                )


def _transcript_order(
    pieces: Sequence[GFFFeature], circular: set[str], lengths: Mapping[str, int]
) -> list[GFFFeature]:
    """The pieces 5' to 3': by position, reversed on ``-``. On a circular sequence the widest gap
    between pieces is where the CDS does not run, so a CDS across the origin starts after it."""
    ordered = sorted(pieces, key=lambda f: (f.start, f.end))
    first = ordered[0]
    length = lengths.get(first.seqid)
    if first.seqid in circular and length and len(ordered) > 1:
        gaps = [b.start - a.end for a, b in zip(ordered, ordered[1:])]
        wrap = length - ordered[-1].end + ordered[0].start
        widest = max(range(len(gaps)), key=gaps.__getitem__)
        if gaps[widest] > wrap:
            ordered = ordered[widest + 1 :] + ordered[: widest + 1]
    if first.strand == "-":
        ordered.reverse()
    return ordered


def _check_region_ranges(doc: GFF3Document, circular: set[str], path: str) -> None:
    for f in doc.features:
        bounds = doc.sequence_regions.get(f.seqid)
        if bounds is None:
            continue
        lo, hi = bounds
        if f.start < lo or f.start > hi or (f.end > hi and f.seqid not in circular):
            raise InputError(
                path,
                f"feature {f.start}..{f.end} is outside ##sequence-region {f.seqid} {lo}..{hi} "
                f"(line {doc.region_lines[f.seqid]})",
                f.line,
            )
