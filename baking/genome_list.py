"""Genome lists (one reader for ``bake_data --genomes`` and ``annotate --genomes``) and where a
many-genome ``annotate`` call writes its files (no torch).

Why here and not in ``trainer.inference``: the commands check their lists and every output before
importing torch (a wrong path costs a fraction of a second, not a model load). Why one reader: a
list such as ``benchmarks/shared_corpus.tsv`` is baked, annotated and scored as it is, so both
commands must read it the same way.

A list is tab-separated (whitespace where a line has no tab), a genome a line; ``#`` comments and
blank lines are skipped. Its columns are positional (bake: ``name fasta gff [transl_table]``,
annotate: ``name fasta [transl_table]``) unless the first line is a header starting with ``name``:
then columns are found by name and others (``annotation``, ``gc``, ...) are left to other tools.
A relative path is relative to the list's folder (a list travels with its genomes). An empty or
``-`` code cell leaves the code to the command's ``--transl_table`` (bake: then the GFF3's
``transl_table=``, then 11). ``--fasta`` files are named by their file name less ``.gz`` and a
FASTA suffix; the name is the stem of a genome's output files, so it must be a plain file name.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from baking.common.errors import ConfigError, InputError
from baking.common.files import input_problem
from baking.target_format.transl_table import parse_transl_table

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


BAKE_COLUMNS = ("name", "fasta", "gff", "transl_table")
"""``bake_data --genomes``: positional columns; the first three are required."""
ANNOTATE_COLUMNS = ("name", "fasta", "transl_table")
"""``annotate --genomes``: positional columns; the first two are required (a ``gff`` column of a
headed list is ignored)."""


@dataclass(frozen=True)
class ListRow:
    """One genome line of a list: its cells by column name, and where it stands."""

    list_path: Path
    lineno: int
    cells: dict[str, str]

    @property
    def name(self) -> str:
        return self.cells["name"]

    def path(self, column: str) -> Path:
        """A file column, relative to the list's folder unless absolute."""
        p = Path(self.cells[column])
        return p if p.is_absolute() else self.list_path.parent / p

    def transl_table(self, default: int | None = None) -> int | None:
        """The row's genetic code; ``default`` for no column, an empty cell or ``-``."""
        text = self.cells.get("transl_table", "")
        if text in ("", "-"):
            return default
        try:
            return parse_transl_table(text)
        except ConfigError as exc:
            raise InputError(self.list_path, str(exc), self.lineno) from None


def read_list_rows(
    path: str | Path, columns: Sequence[str], required: int, plain_names: bool = False
) -> list[ListRow]:
    """The genome lines of a list, checked: ``columns`` in positional order, the first
    ``required`` of them needed; names unique (and file-stem safe with ``plain_names``)."""
    p = Path(path)
    problem = input_problem(p)
    if problem is not None:
        raise InputError(p, problem)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(p, "not UTF-8 text (expected a genome list)") from None
    need = list(columns[:required])
    usage = f"{required} columns ({', '.join(need)})"
    if len(columns) > required:
        usage += f" or {len(columns)} (and {', '.join(columns[required:])})"
    where: dict[str, int] | None = None  # column -> index, from a header
    names: list[str] = []
    rows: list[ListRow] = []
    seen: dict[str, int] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        cols = [c.strip() for c in (line.split("\t") if "\t" in line else line.split())]
        if where is None and not rows and cols[0].lower() == "name":
            names = [c.lower() for c in cols]
            missing = [c for c in need if c not in names]
            if missing:
                raise InputError(p, f"header lacks column(s) {', '.join(missing)}", lineno)
            where = {c: names.index(c) for c in columns if c in names}
            continue
        if where is None:
            if not required <= len(cols) <= len(columns):
                raise InputError(p, f"expected {usage}, found {len(cols)} column(s)", lineno)
            cells = dict(zip(columns, cols))
        else:
            if len(cols) > len(names):
                raise InputError(
                    p, f"{len(cols)} columns, but the header names {len(names)}", lineno
                )
            cells = {c: cols[i] if i < len(cols) else "" for c, i in where.items()}
        empty = [c for c in need if not cells.get(c)]
        if empty:
            raise InputError(p, f"empty {', '.join(empty)} (expected {usage})", lineno)
        name = cells["name"]
        why = _check_name(name) if plain_names else None
        if why:
            raise InputError(p, why, lineno)
        if name in seen:
            raise InputError(p, f"genome {name!r} already named on line {seen[name]}", lineno)
        seen[name] = lineno
        rows.append(ListRow(p, lineno, cells))
    if not rows:
        raise InputError(p, f"no genomes listed (expected {usage} a line)")
    return rows


def read_genome_list(path: str | Path) -> list[GenomeJob]:
    """``annotate --genomes``: a job per line (``name fasta [transl_table]``, or a headed list
    such as ``bake_data``'s, whose ``gff`` column is not read)."""
    rows = read_list_rows(path, ANNOTATE_COLUMNS, required=2, plain_names=True)
    return [GenomeJob(r.name, r.path("fasta"), r.transl_table()) for r in rows]


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
