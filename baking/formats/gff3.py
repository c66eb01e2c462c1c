"""A streaming GFF3 reader and an atomic writer that follow the GFF3 specification (v1.26).

What the reader guarantees, so the rest of the project can trust a ``GFFFeature``:
- coordinates are the file's own: 1-based, closed, ``1 <= start <= end``; an origin-spanning
  feature of a circular sequence keeps ``end > length`` as the spec writes it (checking against
  sequence lengths is the caller's job, since only it knows the FASTA);
- attributes are ``%``-unescaped, in file order; ``score`` is a float or None; ``phase`` an int or
  None and present on every ``CDS`` (the spec requires it);
- every line follows the rules GenomeTools' ``gt gff3validator`` applies to one line: each
  attribute is ``tag=value`` with exactly one ``=``, a tag and a value, no tag twice, tags with an
  upper-case first letter only the spec's reserved ones, ``Is_circular=true``, ``Target`` as
  ``id start end [+|-]``, ``md5:`` seqids well formed;
- ``##sequence-region`` may appear anywhere before the first feature of its seqid, once per seqid;
  one with a negative coordinate is logged as a warning and ignored (GenomeTools resets it; the
  FASTA gives the sequence's extent anyway); ``###`` lines are recorded (``terminators``);
  ``##FASTA`` (or a first ``>`` line) ends the feature section and its records are returned; CRLF
  line ends are accepted; gzip or plain is detected from the magic bytes.
Rules that span lines (Parent links, multi-feature IDs, CDS phases) are
``baking.formats.gff3_semantics``'s job. Every problem raises ``InputError(path, reason, line)``.
"""

from __future__ import annotations

import gzip
import io
import logging
import re
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from urllib.parse import unquote

from baking.common.errors import InputError
from baking.common.files import write_bytes
from baking.formats.fasta import GZIP_MAGIC, check_readable, normalise_sequence

log = logging.getLogger(__name__)

STRANDS = ("+", "-", ".", "?")
_SIGNED_INT = re.compile(r"-?[0-9]+")
# Attributes the spec lets carry several comma-separated values: commas in them are separators.
MULTI_VALUE_KEYS = frozenset({"Parent", "Alias", "Note", "Dbxref", "Ontology_term"})
# Tags the spec reserves; any other tag starting with an upper-case letter is an error (GFF3 1.26).
RESERVED_TAGS = frozenset(
    {
        "ID",
        "Name",
        "Alias",
        "Parent",
        "Target",
        "Gap",
        "Derives_from",
        "Note",
        "Dbxref",
        "Ontology_term",
        "Is_circular",
    }
)


@dataclass(frozen=True)
class GFFFeature:
    """One GFF3 feature line, exactly as the file states it (1-based, closed coordinates)."""

    seqid: str
    source: str
    type: str
    start: int
    end: int
    score: float | None
    strand: str
    phase: int | None
    attributes: tuple[tuple[str, str], ...] = ()
    line: int = 0

    def attr(self, key: str) -> str | None:
        """The value of attribute ``key`` (first occurrence) or None."""
        for k, v in self.attributes:
            if k == key:
                return v
        return None


@dataclass
class GFF3Document:
    """A whole GFF3 file: its features, ``##sequence-region`` bounds and optional ``##FASTA``."""

    features: list[GFFFeature] = field(default_factory=list)
    sequence_regions: dict[str, tuple[int, int]] = field(default_factory=dict)
    fasta: dict[str, str] | None = None
    region_lines: dict[str, int] = field(default_factory=dict)  # line of each ##sequence-region
    terminators: list[int] = field(default_factory=list)  # lines of the ### directives


def unescape(text: str) -> str:
    """Decode ``%XX`` escapes (the spec's URL escaping)."""
    if "%" not in text:
        return text
    return unquote(text, errors="replace")  # %XX runs decode as UTF-8


_ALWAYS_ESCAPE = {c: f"%{ord(c):02X}" for c in "%;=&\t\n\r"}
_ALWAYS_ESCAPE.update({chr(c): f"%{c:02X}" for c in range(32) if chr(c) not in _ALWAYS_ESCAPE})
_ALWAYS_ESCAPE["\x7f"] = "%7F"
_COLUMN_ESCAPE = {c: e for c, e in _ALWAYS_ESCAPE.items() if c not in ";=&"}


def escape_value(key: str, value: str) -> str:
    """Escape an attribute value; commas are escaped except in multi-value attributes."""
    out = "".join(_ALWAYS_ESCAPE.get(c, c) for c in value)
    if key not in MULTI_VALUE_KEYS:
        out = out.replace(",", "%2C")
    return out


def _escape_column(text: str) -> str:
    """Escape a seqid/source/type column: tabs, newlines, control characters and ``%``."""
    return "".join(_COLUMN_ESCAPE.get(c, c) for c in text) if text else "."


_SEQID_OK = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.:^*$@!+_?-|")


def escape_seqid(seqid: str) -> str:
    """Escape a seqid as the spec asks: every character outside ``[a-zA-Z0-9.:^*$@!+_?-|]``."""
    return "".join(c if c in _SEQID_OK else "".join(f"%{b:02X}" for b in c.encode()) for c in seqid)


def format_gff3_line(f: GFFFeature) -> str:
    """One tab-separated GFF3 line (no newline) with ``%``-escaped attributes."""
    score = "." if f.score is None else f"{f.score:g}"
    phase = "." if f.phase is None else str(f.phase)
    attrs = ";".join(f"{escape_value(k, k)}={escape_value(k, v)}" for k, v in f.attributes)
    return "\t".join(
        (
            escape_seqid(f.seqid),
            _escape_column(f.source),
            _escape_column(f.type),
            str(f.start),
            str(f.end),
            score,
            f.strand,
            phase,
            attrs or ".",
        )
    )


def _open_lines(path: Path) -> Iterator[str]:
    """Text lines of a gzip or plain file; decoding and gzip errors become ``InputError``."""
    with open(path, "rb") as fh:
        magic = fh.read(2)
    raw: io.BufferedIOBase
    raw = gzip.open(path, "rb") if magic == GZIP_MAGIC else open(path, "rb")  # type: ignore[assignment]  # noqa: SIM115
    lineno = 0
    try:
        with raw:
            for lineno, bline in enumerate(raw, 1):  # noqa: B007 - lineno used in except
                if lineno == 1 and bline.startswith(b"\xef\xbb\xbf"):
                    bline = bline[3:]  # a UTF-8 byte-order mark (Windows editors write one)
                try:
                    yield bline.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise InputError(path, "not a text file (invalid UTF-8)", lineno) from exc
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise InputError(path, f"truncated or corrupt gzip file ({exc})", lineno + 1) from exc


# Raw tags already found valid: files repeat a few tags millions of times.
_GOOD_TAGS: set[str] = set()


def _parse_attributes(text: str, path: Path, lineno: int) -> tuple[tuple[str, str], ...]:
    """The ``tag=value`` pairs of column 9, checked as ``gt gff3validator`` checks them.

    The checks that need no tag are made on the whole column (a C-speed scan), the ones that
    do, once per distinct tag (``_GOOD_TAGS``): this runs once per line of every genome."""
    if text == "." or not text:
        return ()
    parts = text.split(";")
    if (text[0] == "." or ";." in text) and len(parts) > 1:
        bad = next(p for p in parts if p[:1] == ".")
        raise InputError(path, f"attribute {bad!r}: '.' (no attributes) among attributes", lineno)
    if "=;" in text or text[-1] == "=":
        _empty_value(parts, path, lineno)
    escaped = "%" in text
    out: dict[str, str] = {}
    for part in parts:
        key, sep, value = part.partition("=")
        if not sep:
            if part.strip():
                raise InputError(path, f"attribute {part!r} is not key=value", lineno)
            continue  # empty part, e.g. a trailing ';'
        if key[:1].isspace():
            key = key.strip()
        if key not in _GOOD_TAGS:
            _check_tag(key, value, part, path, lineno)
        if escaped:
            if "%" in value:
                value = unquote(value, errors="replace")
            if "%" in key:
                key = unquote(key, errors="replace")
        out[key] = value
    if text.count("=") != len(out):  # a value with an unescaped '=', or a tag given twice
        _explain_count(parts, escaped, path, lineno)
    return tuple(out.items())


def _empty_value(parts: list[str], path: Path, lineno: int) -> None:
    """Raise for a ``tag=`` without value (other faults of such a part: the caller's loop)."""
    for part in parts:
        key, _sep, value = part.partition("=")
        if part.endswith("=") and not value and key.strip():
            raise InputError(path, f"attribute {key.strip()!r} has an empty value", lineno)


def _explain_count(parts: list[str], escaped: bool, path: Path, lineno: int) -> None:
    """Raise the reason why column 9 holds more '=' than distinct tags."""
    bad = next((p for p in parts if p.count("=") > 1), None)
    if bad is not None:
        raise InputError(
            path, f"attribute {bad!r} does not contain exactly one '=' (escape it as %3D)", lineno
        )
    seen: set[str] = set()
    for part in parts:
        key, sep, _value = part.partition("=")
        if not sep:
            continue
        if key[:1].isspace():  # the same normalisation as _parse_attributes
            key = key.strip()
        if escaped and "%" in key:
            key = unquote(key, errors="replace")
        if key in seen:
            raise InputError(path, f"attribute {key!r} appears twice on the line", lineno)
        seen.add(key)
    raise AssertionError("unreachable: every '=' belongs to a distinct tag")


def _check_tag(key: str, raw_value: str, part: str, path: Path, lineno: int) -> None:
    """A tag and its value: both present; an upper-case tag is reserved and follows its syntax."""
    if not key:
        raise InputError(path, f"attribute {part!r} has an empty key", lineno)
    if "A" <= key[0] <= "Z":
        if key not in RESERVED_TAGS:
            raise InputError(
                path,
                f"attribute {key!r}: tags starting with an upper-case letter are reserved",
                lineno,
            )
        if key == "Is_circular" and raw_value != "true":
            raise InputError(
                path, f"Is_circular={raw_value!r}: the only allowed value is 'true'", lineno
            )
        if key == "Target":
            for target in raw_value.split(","):
                _check_target(target, path, lineno)
            return  # every Target value needs checking: never cache it
        if key == "Is_circular":
            return
    if len(_GOOD_TAGS) < 100_000:
        _GOOD_TAGS.add(key)


def _check_target(target: str, path: Path, lineno: int) -> None:
    """``Target=id start end [strand]`` (blank-separated, 1-based, start <= end)."""
    fields = target.split(" ")
    if len(fields) not in (3, 4):
        raise InputError(
            path,
            f"Target {target!r} needs 3 or 4 blank-separated fields: id start end [+|-]",
            lineno,
        )
    check_md5_seqid(unescape(fields[0]), path, lineno)
    start = _parse_int(fields[1], "Target start", path, lineno)
    end = _parse_int(fields[2], "Target end", path, lineno)
    if end < start:
        raise InputError(path, f"Target {target!r}: start {start} > end {end}", lineno)
    if len(fields) == 4 and fields[3] not in ("+", "-"):
        raise InputError(path, f"Target {target!r}: strand {fields[3]!r} is not + or -", lineno)


def check_md5_seqid(seqid: str, path: str | Path, lineno: int) -> None:
    """A ``md5:`` seqid is ``md5:<32 characters>:<seqid>`` (GenomeTools' MD5 sequence ids)."""
    if not seqid.startswith("md5:"):
        return
    body = seqid[4:]
    if len(body) < 33:
        raise InputError(path, f"MD5 sequence id {seqid!r} is too short", lineno)
    if body[32] != ":":
        raise InputError(
            path, f"MD5 sequence id {seqid!r} has separator {body[32]!r} (must be ':')", lineno
        )
    if len(body) == 33:
        raise InputError(path, f"MD5 sequence id {seqid!r} has no sequence id after ':'", lineno)


def _parse_int(text: str, name: str, path: Path, lineno: int) -> int:
    if not (text.isdigit() and text.isascii()):
        raise InputError(path, f"{name} {text!r} is not a non-negative integer", lineno)
    return int(text)


def parse_feature_line(line: str, path: Path, lineno: int) -> GFFFeature:
    """Parse one feature line (without its line end) into a validated ``GFFFeature``."""
    cols = line.split("\t")
    if len(cols) != 9:
        raise InputError(path, f"expected 9 tab-separated columns, found {len(cols)}", lineno)
    seqid, source, ftype, s_start, s_end, s_score, strand, s_phase, s_attrs = cols
    if seqid[-1:] == " ":
        log.warning("%s:%d: seqid %r ends with a blank; removing it", path, lineno, seqid)
        seqid = seqid.rstrip(" ")
    if not seqid or seqid == ".":
        raise InputError(path, "empty seqid", lineno)
    if seqid[:4] == "md5:":
        check_md5_seqid(seqid, path, lineno)
    if s_start.isdigit() and s_end.isdigit() and s_start.isascii() and s_end.isascii():
        start, end = int(s_start), int(s_end)
    else:
        start = _parse_int(s_start, "start", path, lineno)
        end = _parse_int(s_end, "end", path, lineno)
    if start < 1:
        raise InputError(path, f"start {start} < 1 (GFF3 coordinates are 1-based)", lineno)
    if end < start:
        raise InputError(path, f"end {end} < start {start}", lineno)
    score: float | None = None
    if s_score != ".":
        try:
            score = float(s_score)
        except ValueError as exc:
            raise InputError(path, f"score {s_score!r} is not a number", lineno) from exc
    if strand not in STRANDS:
        raise InputError(path, f"strand {strand!r} is not one of + - . ?", lineno)
    phase: int | None = None
    if s_phase != ".":
        if s_phase not in ("0", "1", "2"):
            raise InputError(path, f"phase {s_phase!r} is not 0, 1, 2 or '.'", lineno)
        phase = int(s_phase)
    ftype = unescape(ftype)
    if ftype == "CDS" and phase is None:
        raise InputError(path, "CDS feature without a phase", lineno)
    # Filling __dict__ directly is the documented way around a frozen dataclass's slow __init__
    # (one object.__setattr__ per field); the reader builds one feature per line.
    feature = object.__new__(GFFFeature)
    feature.__dict__.update(
        seqid=unescape(seqid),
        source=unescape(source),
        type=ftype,
        start=start,
        end=end,
        score=score,
        strand=strand,
        phase=phase,
        attributes=_parse_attributes(s_attrs, path, lineno),
        line=lineno,
    )
    return feature


@dataclass
class _Directives:
    regions: dict[str, tuple[int, int]] = field(default_factory=dict)
    fasta: dict[str, str] | None = None
    region_lines: dict[str, int] = field(default_factory=dict)
    terminators: list[int] = field(default_factory=list)


def _sequence_region(line: str, path: Path, lineno: int) -> tuple[str, tuple[int, int] | None]:
    """``(seqid, (start, end))``, or ``(seqid, None)`` for negative coordinates (warned)."""
    parts = line.split()
    if len(parts) != 4:
        raise InputError(path, "##sequence-region needs: seqid start end", lineno)
    numbers = parts[2:4]
    if any(t.startswith("-") for t in numbers) and all(_SIGNED_INT.fullmatch(t) for t in numbers):
        log.warning(
            "%s:%d: ##sequence-region %s %s %s has a negative coordinate; ignored (the FASTA "
            "gives the sequence's extent)",
            path,
            lineno,
            parts[1],
            parts[2],
            parts[3],
        )
        return unescape(parts[1]), None
    check_md5_seqid(unescape(parts[1]), path, lineno)
    start = _parse_int(parts[2], "sequence-region start", path, lineno)
    end = _parse_int(parts[3], "sequence-region end", path, lineno)
    if start < 1:
        raise InputError(path, f"##sequence-region start {start} < 1 (GFF3 is 1-based)", lineno)
    if end < start:
        raise InputError(path, f"##sequence-region end {end} < start {start}", lineno)
    return unescape(parts[1]), (start, end)


def _read_fasta_section(lines: Iterable[str], path: Path, lineno: int) -> dict[str, str]:
    records: dict[str, list[str]] = {}
    current: list[str] | None = None
    for lineno, raw in enumerate(lines, lineno + 1):  # noqa: B020
        text = raw.rstrip("\r\n")
        if text.startswith(">"):
            name = text[1:].split(None, 1)[0] if text[1:].strip() else ""
            if not name or name in records:
                raise InputError(path, f"bad or duplicate ##FASTA header {text!r}", lineno)
            current = records[name] = []
        elif text.strip():
            if current is None:
                raise InputError(path, "##FASTA section does not start with '>'", lineno)
            current.append(text.strip())
    return {k: normalise_sequence("".join(v), path, k) for k, v in records.items()}


def _directive(line: str, d: _Directives, seen: set[str], path: Path, lineno: int) -> None:
    """Record a ``##`` line other than ``##FASTA``: regions, terminators; reject a 2nd header."""
    if line.startswith("##sequence-region"):
        seqid, bounds = _sequence_region(line, path, lineno)
        if seqid in d.region_lines:
            raise InputError(
                path,
                f"##sequence-region {seqid} already given on line {d.region_lines[seqid]}",
                lineno,
            )
        if seqid in seen:
            raise InputError(
                path, f"##sequence-region {seqid} comes after features on {seqid}", lineno
            )
        d.region_lines[seqid] = lineno
        if bounds is not None:
            d.regions[seqid] = bounds
    elif line.startswith("###"):
        d.terminators.append(lineno)
    elif line.startswith("##gff-version"):
        raise InputError(
            path, "a second ##gff-version line (concatenated files? merge them properly)", lineno
        )


def iter_gff3(path: str | Path, directives: _Directives | None = None) -> Iterator[GFFFeature]:
    """Stream the features of a GFF3 file; directives are collected into ``directives``."""
    path = Path(path)
    check_readable(path, "GFF3")
    d = directives if directives is not None else _Directives()
    lines = _open_lines(path)
    header_seen = False
    seen: set[str] = set()  # seqids with features so far
    lineno = 0
    for lineno, raw in enumerate(lines, 1):  # noqa: B007
        line = raw.rstrip("\r\n")
        if not header_seen:
            if not line.strip():
                continue
            if not line.startswith("##gff-version"):
                raise InputError(path, "not a GFF3 file (missing '##gff-version 3' header)", lineno)
            version = line.split()[1:2]
            if not version or not version[0].startswith("3"):
                raise InputError(path, f"unsupported GFF version {line!r}", lineno)
            header_seen = True
            continue
        if not line or line.isspace():
            continue
        if line.startswith("#"):
            if line.startswith("##FASTA"):
                d.fasta = _read_fasta_section(lines, path, lineno)
                break
            if line.startswith("##"):
                _directive(line, d, seen, path, lineno)
            continue
        if line.startswith(">"):  # a FASTA section without its directive (GenomeTools reads it)
            d.fasta = _read_fasta_section(chain([raw], lines), path, lineno - 1)
            break
        feature = parse_feature_line(line, path, lineno)
        seen.add(feature.seqid)
        yield feature
    if not header_seen:
        raise InputError(path, "no GFF3 content (only blank lines)", max(lineno, 1))


def read_gff3(path: str | Path) -> GFF3Document:
    """Read a whole GFF3 file (gzip or plain) into a ``GFF3Document``."""
    d = _Directives()
    features = list(iter_gff3(path, d))
    log.debug("read_gff3 path=%s features=%d regions=%d", path, len(features), len(d.regions))
    return GFF3Document(
        features=features,
        sequence_regions=d.regions,
        fasta=d.fasta,
        region_lines=d.region_lines,
        terminators=d.terminators,
    )


def write_gff3(
    path: str | Path,
    features: Iterable[GFFFeature],
    sequence_regions: Mapping[str, int] | Mapping[str, tuple[int, int]] | None = None,
    header_comments: Sequence[str] = (),
) -> None:
    """Write a GFF3 file atomically (``baking.common.files.write_bytes``).

    ``sequence_regions`` maps seqid to a length (region 1..length) or to ``(start, end)``.
    ``header_comments`` are written as ``# ...`` lines after the version line. A ``.gz`` suffix
    writes gzip (with a zero mtime so equal content gives equal bytes).
    """
    path = Path(path)
    lines = ["##gff-version 3"]
    for seqid, bounds in (sequence_regions or {}).items():
        start, end = (1, bounds) if isinstance(bounds, int) else bounds
        lines.append(f"##sequence-region {escape_seqid(seqid)} {start} {end}")
    lines.extend(c if c.startswith("#") else f"# {c}" for c in header_comments)
    lines.extend(format_gff3_line(f) for f in features)
    data = ("\n".join(lines) + "\n").encode("utf-8")
    if path.suffix == ".gz":
        data = gzip.compress(data, mtime=0)
    write_bytes(path, data)
