"""baking.formats.gff3: the reader follows the spec and locates every error; the writer round-trips."""

from __future__ import annotations

import gzip
import shutil
import subprocess
from pathlib import Path

import pytest

from baking.common.errors import InputError
from baking.formats.gff3 import GFFFeature, format_gff3_line, iter_gff3, read_gff3, write_gff3

HEADER = "##gff-version 3\n"
CDS = "chr\tRefSeq\tCDS\t10\t99\t.\t+\t0\tID=c1;Parent=g1;product=a%2C b%3Bc;Dbxref=X:1,Y:2\n"


def _gff(tmp_path: Path, body: str, name: str = "a.gff3", gz: bool = False) -> Path:
    p = tmp_path / name
    data = (HEADER + body).encode()
    p.write_bytes(gzip.compress(data) if gz else data)
    return p


@pytest.mark.parametrize("gz", [False, True])
def test_parse_fields_and_unescape(tmp_path: Path, gz: bool) -> None:
    doc = read_gff3(_gff(tmp_path, CDS, gz=gz))
    (f,) = doc.features
    assert (f.seqid, f.source, f.type, f.start, f.end, f.score, f.strand, f.phase) == (
        "chr",
        "RefSeq",
        "CDS",
        10,
        99,
        None,
        "+",
        0,
    )
    assert f.attr("product") == "a, b;c"
    assert f.attr("Dbxref") == "X:1,Y:2"
    assert f.attr("missing") is None
    assert f.line == 2


def test_directives_anywhere_fasta_section_and_crlf(tmp_path: Path) -> None:
    body = (
        "##sequence-region chr 1 200\r\n"
        "chr\t.\tgene\t5\t50\t1.5\t-\t.\tID=g\r\n"
        "# a comment\r\n\r\n"
        "##sequence-region plasmid 1 30\r\n"
        "plasmid\t.\ttRNA\t1\t30\t.\t+\t.\tID=t\r\n"
        "###\r\n"
        "##FASTA\r\n>chr\r\nacgt\r\nNN\r\n>plasmid\r\nGG\r\n"
    )
    doc = read_gff3(_gff(tmp_path, body))
    assert doc.sequence_regions == {"chr": (1, 200), "plasmid": (1, 30)}
    assert [f.type for f in doc.features] == ["gene", "tRNA"]
    assert doc.features[0].score == 1.5 and doc.features[0].line == 3
    assert doc.fasta == {"chr": "ACGTNN", "plasmid": "GG"}


@pytest.mark.parametrize(
    "line, reason",
    [
        ("chr\t.\tgene\t1\t10\t.\t+\t.\n", "expected 9 tab-separated columns, found 8"),
        ("chr\t.\tgene\t1\tten\t.\t+\t.\tID=a\n", "end 'ten' is not a non-negative integer"),
        ("chr\t.\tgene\t-5\t10\t.\t+\t.\tID=a\n", "start '-5' is not a non-negative integer"),
        ("chr\t.\tgene\t0\t10\t.\t+\t.\tID=a\n", "start 0 < 1"),
        ("chr\t.\tgene\t20\t10\t.\t+\t.\tID=a\n", "end 10 < start 20"),
        ("chr\t.\tgene\t1\t10\t.\tx\t.\tID=a\n", "strand 'x'"),
        ("chr\t.\tCDS\t1\t10\t.\t+\t.\tID=a\n", "CDS feature without a phase"),
        ("chr\t.\tCDS\t1\t10\t.\t+\t3\tID=a\n", "phase '3'"),
        ("chr\t.\tgene\t1\t10\tabc\t+\t.\tID=a\n", "score 'abc'"),
        ("chr\t.\tgene\t1\t10\t.\t+\t.\tID\n", "not key=value"),
    ],
)
def test_bad_lines_are_located(tmp_path: Path, line: str, reason: str) -> None:
    p = _gff(tmp_path, CDS + line)
    with pytest.raises(InputError) as exc:
        read_gff3(p)
    assert exc.value.line == 3
    assert reason in exc.value.reason
    assert str(exc.value).startswith(f"{p}:3: ")


def test_bad_files(tmp_path: Path) -> None:
    empty = tmp_path / "e.gff3"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="empty file"):
        read_gff3(empty)
    nohead = tmp_path / "n.gff3"
    nohead.write_text(CDS)
    with pytest.raises(InputError, match="missing '##gff-version 3' header"):
        read_gff3(nohead)
    garbage = tmp_path / "g.gff3"
    garbage.write_bytes(b"##gff-version 3\n" + bytes(range(128, 256)))
    with pytest.raises(InputError, match="not a text file") as exc:
        read_gff3(garbage)
    assert exc.value.line == 2
    data = gzip.compress((HEADER + CDS * 2000).encode())
    trunc = tmp_path / "t.gff3.gz"
    trunc.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated or corrupt gzip"):
        read_gff3(trunc)


def test_streaming_stops_at_first_error(tmp_path: Path) -> None:
    p = _gff(tmp_path, CDS + "bad line\n" + CDS)
    it = iter_gff3(p)
    assert next(it).line == 2
    with pytest.raises(InputError):
        next(it)


def test_write_then_read_round_trip(tmp_path: Path) -> None:
    feats = [
        GFFFeature(
            "chr 1",
            "dna2gff",
            "CDS",
            3,
            302,
            0.25,
            "-",
            2,
            (("ID", "c;1"), ("Parent", "g1,g2"), ("Note", "x=y%z"), ("product", "a, b")),
            0,
        ),
        GFFFeature("chr 1", "dna2gff", "tRNA", 5, 80, None, "+", None, (), 0),
    ]
    out = tmp_path / "o.gff3.gz"
    write_gff3(out, feats, {"chr 1": 400}, header_comments=["made by a test"])
    doc = read_gff3(out)
    assert [
        (f.seqid, f.type, f.start, f.end, f.score, f.strand, f.phase, f.attributes)
        for f in doc.features
    ] == [
        (f.seqid, f.type, f.start, f.end, f.score, f.strand, f.phase, f.attributes) for f in feats
    ]
    assert doc.sequence_regions == {"chr 1": (1, 400)}
    assert "product=a%2C b" in format_gff3_line(feats[0])
    assert "Parent=g1,g2" in format_gff3_line(feats[0])
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.skipif(shutil.which("gt") is None, reason="GenomeTools gt not installed")
def test_written_file_passes_gt_validator(tmp_path: Path) -> None:
    feats = [
        GFFFeature("chr", "dna2gff", "gene", 1, 90, None, "+", None, (("ID", "g1"),), 0),
        GFFFeature(
            "chr", "dna2gff", "CDS", 1, 90, 0.5, "+", 0, (("ID", "c1"), ("Parent", "g1")), 0
        ),
    ]
    out = tmp_path / "v.gff3"
    write_gff3(out, feats, {"chr": 100})
    run = subprocess.run(["gt", "gff3validator", str(out)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


@pytest.mark.shared
def test_real_annotations(genome_pair) -> None:
    _, gff = genome_pair("phage")
    doc = read_gff3(gff)
    assert doc.sequence_regions == {"NC_000902.1": (1, 60942)}
    types = [f.type for f in doc.features]
    assert types.count("CDS") == 83 and types.count("gene") == 86
    assert all(f.phase is not None for f in doc.features if f.type == "CDS")


def test_fasta_without_its_directive_is_read_as_genometools_does(tmp_path: Path) -> None:
    p = _gff(tmp_path, "chr\t.\tgene\t1\t4\t.\t+\t.\tID=g\n>chr\nACGT\n")
    doc = read_gff3(p)
    assert [f.type for f in doc.features] == ["gene"] and doc.fasta == {"chr": "ACGT"}


def test_blank_after_seqid_is_removed_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    p = _gff(tmp_path, "chr \t.\tgene\t1\t4\t.\t+\t.\tID=g\n")
    with caplog.at_level("WARNING"):
        (f,) = read_gff3(p).features
    assert f.seqid == "chr"
    assert [r.getMessage() for r in caplog.records] == [
        f"{p}:2: seqid 'chr ' ends with a blank; removing it"
    ]
