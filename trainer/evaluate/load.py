"""Turn a GFF3 file into the features scoring compares, pseudogenes excluded by default.

Reading is ``baking.gff3.read_gff3``'s job (one reader in the project, gzip included); this module
only picks the fields scoring needs and drops pseudogenes: RefSeq marks them ``pseudo=true`` on the
gene and the CDS, or ``gene_biotype=pseudogene`` / type ``pseudogene`` on the parent, and a
pseudogene's CDS is not a gene a finder should be rewarded or punished for.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from trainer.evaluate.metrics import Feature


def _attr(attributes: Mapping[str, Any], key: str) -> str | None:
    """An attribute's (first) value whether the reader stores strings or lists."""
    value = attributes.get(key)
    if value is None:
        return None
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def _is_pseudo_itself(feat: Any) -> bool:
    attrs = feat.attributes
    return (
        feat.type == "pseudogene"
        or (_attr(attrs, "pseudo") or "").lower() == "true"
        or _attr(attrs, "gene_biotype") == "pseudogene"
    )


def region_lengths(doc: Any) -> dict[str, int]:
    """seqid -> length from ``##sequence-region`` lines (used to wrap origin-spanning features)."""
    out: dict[str, int] = {}
    regions = getattr(doc, "sequence_regions", None) or {}
    items = regions.items() if isinstance(regions, Mapping) else ((r.seqid, r) for r in regions)
    for seqid, region in items:
        if isinstance(region, int):
            out[seqid] = region
        elif isinstance(region, tuple | list):
            out[seqid] = int(region[-1])
        else:
            out[seqid] = int(region.end)
    return out


def load_features(
    path: str | Path, *, include_pseudo: bool = False
) -> tuple[list[Feature], dict[str, int]]:
    """Features of a GFF3 file (plain or gzip) and its sequence lengths.

    Raises ``InputError`` (from the reader) for a missing or malformed file.
    """
    from baking.gff3 import read_gff3

    doc = read_gff3(path)
    feats = list(doc.features)
    pseudo_ids: set[int] = set()
    if not include_pseudo:
        by_id = {_attr(f.attributes, "ID"): f for f in feats if _attr(f.attributes, "ID")}

        def pseudo(f: Any, depth: int = 0) -> bool:
            if _is_pseudo_itself(f):
                return True
            parents = (_attr(f.attributes, "Parent") or "").split(",")
            return depth < 8 and any(
                p in by_id and pseudo(by_id[p], depth + 1) for p in parents if p
            )

        pseudo_ids = {id(f) for f in feats if pseudo(f)}
    out = [
        Feature(f.seqid, f.type, int(f.start), int(f.end), f.strand)
        for f in feats
        if id(f) not in pseudo_ids
    ]
    return out, region_lengths(doc)
