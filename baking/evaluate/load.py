"""Turn a GFF3 file into the features scoring compares, pseudogenes excluded by default.

Reading is ``baking.formats.gff3.read_gff3``'s job (one reader in the project, gzip included); this module
only picks the fields scoring needs and drops pseudogenes: RefSeq marks them ``pseudo=true`` on the
gene and the CDS, or ``gene_biotype=pseudogene`` / type ``pseudogene`` on the parent, and a
pseudogene's CDS is not a gene a finder should be rewarded or punished for.
"""

from __future__ import annotations

from pathlib import Path

from baking.evaluate.metrics import Feature
from baking.formats.gff3 import GFFFeature, read_gff3
from baking.target_format.features import is_pseudo_marked, pseudo_ids


def pseudo_features(features: list[GFFFeature]) -> set[int]:
    """Indices of features that are pseudogenes or descend (via ``Parent``) from one.

    The marks and the ``Parent`` walk are the baker's (``baking.target_format.features``), so training data and
    scoring agree on what a pseudogene is.
    """
    ids = pseudo_ids(features)
    out = set()
    for i, f in enumerate(features):
        parents = (f.attr("Parent") or "").split(",")
        if is_pseudo_marked(f) or f.attr("ID") in ids or any(p in ids for p in parents if p):
            out.add(i)
    return out


def load_features(
    path: str | Path, *, include_pseudo: bool = False
) -> tuple[list[Feature], dict[str, int]]:
    """Features of a GFF3 file (plain or gzip) and its ``##sequence-region`` lengths.

    Raises ``InputError`` (from the reader) for a missing or malformed file.
    """
    doc = read_gff3(path)
    feats = doc.features
    skip = set() if include_pseudo else pseudo_features(feats)
    out = [
        Feature(f.seqid, f.type, f.start, f.end, f.strand)
        for i, f in enumerate(feats)
        if i not in skip
    ]
    lengths = {seqid: end for seqid, (_, end) in doc.sequence_regions.items()}
    return out, lengths
