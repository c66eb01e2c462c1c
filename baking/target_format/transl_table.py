"""Which genetic code a genome is baked under: its list's code, else its GFF3's, else 11.

Why it matters: the code fixes which codons end a gene. A code-4 genome (Mycoplasma: TGA = Trp)
read under code 11 has most of its genes "cut" by an in-frame TGA, so the ORF layer of the
constrained loss and of annotate would forbid its reference CDS. The baker records the code per
genome (manifest) and per sample (``json``), and the trainer and annotate read it from there.

The GFF3's ``transl_table=`` attributes on CDS (NCBI writes them) must agree within a genome and
with a code the list gives: a disagreement is refused naming the line, since a wrong code silently
teaches the model wrong stops.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from baking.common.errors import ConfigError, InputError
from baking.formats.gff3 import GFFFeature
from baking.orfs import genetic_code

DEFAULT_TRANSL_TABLE = 11
"""The bacterial and archaeal code, for a genome whose list and GFF3 name none."""

TRANSL_TABLE_SOURCES = ("list", "gff", "default")


def parse_transl_table(text: str) -> int:
    """A known NCBI table number from text; ``ConfigError`` saying which are known otherwise."""
    try:
        table = int(text.strip())
    except ValueError:
        raise ConfigError(f"transl_table {text!r} is not a number") from None
    genetic_code(table)  # ConfigError for a table the ORF layer does not know
    return table


def gff_transl_table(features: Iterable[GFFFeature], path: str | Path) -> tuple[int, int] | None:
    """``(table, line)`` of the CDS ``transl_table=`` attributes of a GFF3 (the first line giving
    it), None when no CDS has one; ``InputError`` at the first CDS that names another table."""
    found: tuple[int, int] | None = None
    for f in features:
        if f.type != "CDS":
            continue
        value = f.attr("transl_table")
        if value is None:
            continue
        try:
            table = parse_transl_table(value)
        except ConfigError as exc:
            raise InputError(path, str(exc), f.line or None) from None
        if found is None:
            found = (table, f.line)
        elif table != found[0]:
            raise InputError(
                path,
                f"transl_table={table} but line {found[1]} says transl_table={found[0]} "
                "(one genome, one genetic code)",
                f.line or None,
            )
    return found


def resolve_transl_table(
    listed: int | None, features: Iterable[GFFFeature], path: str | Path
) -> tuple[int, str]:
    """``(table, source)``: the listed code, else the GFF3's, else ``DEFAULT_TRANSL_TABLE``;
    a listed code the GFF3 contradicts is refused (``InputError`` naming the GFF3 line)."""
    in_gff = gff_transl_table(features, path)
    if listed is not None:
        genetic_code(listed)
        if in_gff is not None and in_gff[0] != listed:
            raise InputError(
                path,
                f"transl_table={in_gff[0]} but the genome list gives code {listed}",
                in_gff[1] or None,
            )
        return listed, "list"
    if in_gff is not None:
        return in_gff[0], "gff"
    return DEFAULT_TRANSL_TABLE, "default"
