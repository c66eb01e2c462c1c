"""Read genome FASTA files (gzip or plain) into upper-case ACGTN strings.

Parsing goes through ``pyfastx.Fastx``, which streams records without writing index files (the
shared data folder is read-only). pyfastx silently stops at the end of a truncated gzip stream, so a
gzip file is first read through to its trailer to prove it is complete.

Letters are upper-cased (soft-masked lower case is accepted) and every IUPAC ambiguity code
(``RYKMSWBDHVN``) becomes ``N``: DNABERT-2's vocabulary has only ``A C G T`` merges, and the target
grammar never depends on a base's identity. Any other character (digits, ``-``, ``*``, non-ASCII) is
an error naming the record and the line.
"""

from __future__ import annotations

import gzip
import logging
import zlib
from collections.abc import Iterator
from pathlib import Path

import pyfastx

from baking.common.errors import InputError
from baking.common.files import input_problem

log = logging.getLogger(__name__)

GZIP_MAGIC = b"\x1f\x8b"
# Compressions and archives a genome file arrives in that we do not read: naming the format beats
# "not a FASTA file" (the magic bytes are the formats' own; the suffix is not trusted).
OTHER_MAGIC = (
    (b"BZh", "bz2-compressed"),
    (b"\xfd7zXZ\x00", "xz-compressed"),
    (b"\x28\xb5\x2f\xfd", "zstd-compressed"),
    (b"\x1f\x9d", "compress (.Z)-compressed"),
    (b"PK\x03\x04", "a zip archive"),
    (b"ustar", "a tar archive"),
)
_IUPAC = b"RYKMSWBDHVNU"
# bytes.translate table: upper-case everything, IUPAC codes -> N (U, RNA's T, becomes N too).
_TABLE = bytearray(range(256))
for _c in range(ord("a"), ord("z") + 1):
    _TABLE[_c] = _c - 32
for _c in _IUPAC:
    _TABLE[_c] = ord("N")
    _TABLE[_c + 32] = ord("N")
_NORMALISE = bytes(_TABLE)
_VALID = b"ACGTN"


def is_gzip(path: str | Path) -> bool:
    """True when the file starts with the gzip magic bytes (the suffix is not trusted)."""
    with open(path, "rb") as fh:
        return fh.read(2) == GZIP_MAGIC


def check_readable(path: str | Path, what: str) -> None:
    """``InputError`` for a file that is missing, not a regular file, empty, or compressed in a
    format other than gzip (named, with what to do about it)."""
    problem = input_problem(path)
    if problem is not None:
        raise InputError(path, problem)
    with open(path, "rb") as fh:
        head = fh.read(262)
    if not head:
        raise InputError(path, f"empty file (expected {what})")
    for magic, kind in OTHER_MAGIC:
        offset = 257 if magic == b"ustar" else 0
        if head[offset : offset + len(magic)] == magic:
            verb = "unpack" if "archive" in kind else "decompress"
            raise InputError(
                path, f"{kind}, not {what}: {verb} it (only plain text and gzip are read)"
            )


def check_gzip_complete(path: str | Path) -> None:
    """Decompress the whole file once, raising ``InputError`` if it is truncated or corrupt.

    A chunked ``zlib`` pass costs about 10 ms per compressed MB and keeps memory flat.
    """
    try:
        with gzip.open(path, "rb") as fh:
            while fh.read(1 << 22):
                pass
    except (EOFError, OSError, zlib.error) as exc:
        raise InputError(path, f"truncated or corrupt gzip file ({exc})") from exc


def _open_text(path: str | Path):
    """Text lines; a UTF-8 byte-order mark at the start is dropped (pyfastx skips it too)."""
    return (
        gzip.open(path, "rt", encoding="utf-8-sig", errors="replace")
        if is_gzip(path)
        else open(path, encoding="utf-8-sig", errors="replace")
    )


def _header_line(path: str | Path, seqid: str, occurrence: int = 1) -> int | None:
    """The 1-based line of the ``occurrence``-th header of ``seqid`` (only called on errors)."""
    seen = 0
    with _open_text(path) as fh:
        for lineno, line in enumerate(fh, 1):
            if line.startswith(">") and line[1:].split(None, 1)[0:1] == [seqid]:
                seen += 1
                if seen == occurrence:
                    return lineno
    return None


def _empty_id_line(path: str | Path) -> int | None:
    """The 1-based line of the first header without an id (errors only)."""
    with _open_text(path) as fh:
        for lineno, line in enumerate(fh, 1):
            if line.startswith(">") and not line[1:2].strip():  # '>' then nothing or a space
                return lineno
    return None


def _bad_char_line(path: str | Path, seqid: str, bad: str) -> int | None:
    """The 1-based line of the first ``bad`` character inside record ``seqid`` (errors only)."""
    inside = False
    with _open_text(path) as fh:
        for lineno, line in enumerate(fh, 1):
            if line.startswith(">"):
                if inside:
                    return None
                inside = line[1:].split(None, 1)[0:1] == [seqid]
            elif inside and bad in line:
                return lineno
    return None


def normalise_sequence(seq: str, path: str | Path = "<sequence>", seqid: str = "?") -> str:
    """Upper-case ``seq`` and map IUPAC codes to ``N``; ``InputError`` on any other character."""
    try:
        raw = seq.encode("ascii")
    except UnicodeEncodeError as exc:
        raise InputError(path, f"sequence {seqid!r} contains non-ASCII characters") from exc
    out = raw.translate(_NORMALISE)
    bad = out.translate(None, _VALID)
    if bad:
        ch = chr(bad[0])
        line = _bad_char_line(path, seqid, ch) if Path(str(path)).exists() else None
        raise InputError(path, f"sequence {seqid!r} contains invalid character {ch!r}", line)
    return out.decode("ascii")


def read_fasta(path: str | Path) -> Iterator[tuple[str, str]]:
    """Yield ``(seqid, sequence)`` per record: upper-case, IUPAC codes as ``N``.

    ``seqid`` is the header up to the first whitespace. Raises ``InputError`` for a missing, empty,
    non-FASTA, truncated-gzip file, an empty record, a duplicate id or an invalid character.
    """
    path = Path(path)
    check_readable(path, "FASTA")
    if is_gzip(path):
        check_gzip_complete(path)
    with _open_text(path) as fh:
        first = ""
        for line in fh:
            if line.strip():
                first = line
                break
    if not first.startswith(">"):
        raise InputError(path, "not a FASTA file (first non-blank line does not start with '>')", 1)
    try:
        records = pyfastx.Fastx(str(path), format="fasta")
    except RuntimeError as exc:
        raise InputError(path, f"not a FASTA file ({exc})") from exc
    seen: set[str] = set()
    count = 0
    try:
        for record in records:
            seqid, seq = record[0], record[1]
            if not seqid:  # '>' or '> chr1': every output would name the sequence ''
                raise InputError(
                    path,
                    "record without a sequence id (the id must follow '>' directly)",
                    _empty_id_line(path),
                )
            if seqid in seen:
                raise InputError(
                    path, f"duplicate sequence id {seqid!r}", _header_line(path, seqid, 2)
                )
            seen.add(seqid)
            if not seq:
                raise InputError(path, f"sequence {seqid!r} is empty", _header_line(path, seqid))
            count += 1
            yield seqid, normalise_sequence(seq, path, seqid)
    except RuntimeError as exc:
        raise InputError(path, f"cannot parse FASTA ({exc})") from exc
    if count == 0:
        raise InputError(path, "no sequences in FASTA file")
    log.debug("read_fasta path=%s records=%d", path, count)


def read_fasta_dict(path: str | Path) -> dict[str, str]:
    """All records of ``path`` as an insertion-ordered dict (ids are unique by construction)."""
    return dict(read_fasta(path))


def reverse_complement(seq: str) -> str:
    """Reverse complement of a DNA string, case kept (``N`` stays ``N``).

    The project's one reverse complement: the baker, the target's ORF sites, the synthetic genomes,
    the gene sequences and the benchmarks all read a minus-strand feature through this function, so
    they cannot disagree about a base.
    """
    return complement(seq)[::-1]


def complement(seq: str) -> str:
    """Base-by-base complement, case kept (for a sequence whose positions are already reversed)."""
    return seq.translate(_COMPLEMENT)


_COMPLEMENT = str.maketrans("ACGTNacgtn", "TGCANtgcan")
