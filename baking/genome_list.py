"""The genomes of a many-genome ``annotate`` call and where their files go (no torch).

Why here and not in ``trainer.inference``: the command checks its list and every output before
importing torch (a wrong path costs a fraction of a second, not a model load).

A genome list is ``name<TAB>fasta[<TAB>transl_table]`` a line: ``#`` comments, blank lines and a
``name<TAB>fasta`` header are skipped; a relative FASTA path is relative to the list's folder (a
list travels with its genomes); the name is the stem of the genome's output files, so it must be
a plain file name. ``--fasta`` files are named by their file name less ``.gz`` and a FASTA suffix.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from baking.common.errors import ConfigError, InputError
from baking.orfs import genetic_code

ON_ERROR = ("stop", "skip")
SUMMARY_TSV = "summary.tsv"
SUMMARY_COLUMNS = ("genome", "fasta", "transl_table", "bp", "genes", "seconds", "status", "error")
FASTA_SUFFIXES = (".fna", ".fa", ".fasta", ".fas", ".fsa", ".seq", ".dna")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")


@dataclass(frozen=True)
class GenomeJob:
    """One genome to annotate: a name (its output files' stem), its FASTA, its genetic code
    (None: ``--transl_table``)."""

    name: str
    fasta: Path
    transl_table: int | None = None


@dataclass(frozen=True)
class GenomeOutputs:
    """Where one genome's files go (``faa``/``ffn`` None: not written)."""

    gff3: Path
    faa: Path | None = None
    ffn: Path | None = None

    def paths(self) -> list[Path]:
        return [p for p in (self.gff3, self.faa, self.ffn) if p is not None]


def genome_name(fasta: str | Path) -> str:
    """A FASTA file's genome name: its file name less ``.gz`` and a FASTA suffix."""
    name = Path(fasta).name
    if name.endswith(".gz"):
        name = name[:-3]
    for suffix in FASTA_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _check_name(name: str) -> str | None:
    """Why ``name`` cannot be a file stem, or None."""
    if not _NAME.fullmatch(name):
        return (
            f"genome name {name!r} must start with a letter or digit and hold only letters, "
            "digits and . _ + -"
        )
    return None


def jobs_from_fastas(
    fastas: Sequence[str | Path], transl_table: int | None = None
) -> list[GenomeJob]:
    """One job per FASTA, named by its file name; two files of one name are refused."""
    jobs: list[GenomeJob] = []
    seen: dict[str, Path] = {}
    for f in fastas:
        name = genome_name(f)
        why = _check_name(name)
        if why:
            raise ConfigError(f"--fasta {f}: {why}; name it in a --genomes list instead")
        if name in seen:
            raise ConfigError(
                f"--fasta {seen[name]} and {f} are both genome {name!r} (their outputs would "
                "collide); name them in a --genomes list"
            )
        seen[name] = Path(f)
        jobs.append(GenomeJob(name, Path(f), transl_table))
    return jobs


def read_genome_list(path: str | Path) -> list[GenomeJob]:
    """``name<TAB>fasta[<TAB>transl_table]`` lines (``#`` comments, blank lines and a
    ``name<TAB>fasta`` header skipped); a relative FASTA path is relative to the list's folder."""
    p = Path(path)
    if not p.is_file():
        raise InputError(p, "no such file (expected a genome list: name<TAB>fasta[<TAB>code])")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(p, "not UTF-8 text (expected a genome list)") from exc
    jobs: list[GenomeJob] = []
    seen: dict[str, int] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        cols = line.rstrip("\r").split("\t")
        if not jobs and not seen and [c.strip().lower() for c in cols[:2]] == ["name", "fasta"]:
            seen[""] = lineno  # the header
            continue
        if len(cols) not in (2, 3) or not all(c.strip() for c in cols):
            raise InputError(
                p, f"expected name<TAB>fasta[<TAB>transl_table], got {len(cols)} column(s)", lineno
            )
        name, fasta = cols[0].strip(), cols[1].strip()
        why = _check_name(name)
        if why:
            raise InputError(p, why, lineno)
        if name in seen:
            raise InputError(p, f"genome {name!r} already named on line {seen[name]}", lineno)
        seen[name] = lineno
        table: int | None = None
        if len(cols) == 3:
            try:
                table = int(cols[2])
                genetic_code(table)
            except (ValueError, ConfigError) as exc:
                raise InputError(p, f"transl_table {cols[2]!r}: {exc}", lineno) from None
        fasta_path = Path(fasta) if Path(fasta).is_absolute() else p.parent / fasta
        jobs.append(GenomeJob(name, fasta_path, table))
    if not jobs:
        raise InputError(p, "no genomes listed (expected name<TAB>fasta[<TAB>transl_table])")
    return jobs


def outputs_in(
    outdir: str | Path, jobs: Sequence[GenomeJob], faa: bool, ffn: bool
) -> list[GenomeOutputs]:
    """``OUTDIR/<name>.gff3`` (and ``.faa``, ``.ffn``) per genome."""
    d = Path(outdir)
    return [
        GenomeOutputs(
            d / f"{j.name}.gff3",
            d / f"{j.name}.faa" if faa else None,
            d / f"{j.name}.ffn" if ffn else None,
        )
        for j in jobs
    ]
