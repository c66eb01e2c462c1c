"""GFF3 semantics as GenomeTools checks them: each hostile file built here must be rejected with
the exact ``file:line: reason``, through the API and through the real ``bake_data`` command (exit
2, one ``error:`` line, nothing written), and ``gt gff3validator`` must agree where installed.
Files GenomeTools accepts (a negative ``##sequence-region``, correct multi-piece CDS phases,
the real RefSeq genomes) must still bake."""

from __future__ import annotations

import gzip
import logging
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from bake_helpers import output_files, random_dna, run_bake, write_pair

from baking.common.errors import InputError
from baking.formats.gff3 import read_gff3
from baking.formats.gff3_semantics import check_gff3_semantics
from baking.shards.manifest import load_manifest

GT = shutil.which("gt")
# write_pair writes: line 1 ##gff-version, then per sequence a ##sequence-region and a region
# line; with one sequence the features given start on line 4, with two on line 6.
GENE = "chr\tRefSeq\tgene\t100\t400\t.\t+\t.\tID=g"
GENE_MINUS = "chr\tRefSeq\tgene\t100\t400\t.\t-\t.\tID=g"


def cds(start: int, end: int, phase: str, attrs: str = "ID=c;Parent=g", strand: str = "+") -> str:
    return f"chr\tRefSeq\tCDS\t{start}\t{end}\t.\t{strand}\t{phase}\t{attrs}"


# (name, feature lines, two sequences?, line, exact reason)
HOSTILE = [
    (
        "wrong phase of the 2nd piece of a 2-piece CDS",
        [GENE, cds(100, 200, "0"), cds(300, 400, "0")],
        False,
        6,
        "CDS phase 0 should be 1: CDS 'c' continues from 100..200 (line 5, phase 0)",
    ),
    (
        "wrong phase on the minus strand (transcript order, not file order)",
        [GENE_MINUS, cds(100, 200, "0", strand="-"), cds(300, 400, "0", strand="-")],
        False,
        5,
        "CDS phase 0 should be 1: CDS 'c' continues from 300..400 (line 6, phase 0)",
    ),
    (
        "wrong phase between CDS children of one parent without shared ID",
        [GENE, cds(100, 200, "0", "Parent=g"), cds(300, 400, "2", "Parent=g")],
        False,
        6,
        "CDS phase 2 should be 1: the CDS of Parent 'g' continues from 100..200 (line 5, phase 0)",
    ),
    ("CDS without a phase", [GENE, cds(100, 400, ".")], False, 5, "CDS feature without a phase"),
    (
        "CDS with an invalid phase",
        [GENE, cds(100, 400, "3")],
        False,
        5,
        "phase '3' is not 0, 1, 2 or '.'",
    ),
    (
        "undefined Parent",
        [GENE, cds(100, 400, "0", "ID=c;Parent=nope")],
        False,
        5,
        "Parent 'nope' is not defined (no feature has ID=nope)",
    ),
    (
        "Parent cycle",
        [
            "chr\tRefSeq\tgene\t100\t400\t.\t+\t.\tID=a;Parent=b",
            "chr\tRefSeq\tmRNA\t100\t400\t.\t+\t.\tID=b;Parent=a",
        ],
        False,
        5,
        "Parent links form a cycle: a -> b -> a",
    ),
    (
        "self-parent",
        ["chr\tRefSeq\tgene\t100\t400\t.\t+\t.\tID=g;Parent=g"],
        False,
        4,
        "Parent 'g' is the feature's own ID",
    ),
    (
        "child on another seqid than its parent",
        [GENE, "plasmid\tRefSeq\tCDS\t100\t400\t.\t+\t0\tID=c;Parent=g"],
        True,
        7,
        "feature on seqid 'plasmid' has Parent 'g' (line 6) on seqid 'chr'",
    ),
    (
        "duplicate attribute tag",
        [GENE, cds(100, 400, "0", "ID=c;Parent=g;Dbxref=A:1;Dbxref=B:2")],
        False,
        5,
        "attribute 'Dbxref' appears twice on the line",
    ),
    (
        "empty ID=",
        [GENE, cds(100, 400, "0", "ID=;Parent=g")],
        False,
        5,
        "attribute 'ID' has an empty value",
    ),
    (
        "Parent cut off by ###",
        [GENE, "###", cds(100, 400, "0")],
        False,
        6,
        "Parent 'g' (line 4) is cut off by the ### on line 5",
    ),
    (
        "pieces of one ID with different types",
        [GENE, cds(100, 200, "0"), "chr\tRefSeq\texon\t300\t400\t.\t+\t.\tID=c;Parent=g"],
        False,
        6,
        "shares ID 'c' with line 5 but has another type ('exon' vs 'CDS')",
    ),
    (
        "pieces of one ID with different parents",
        [
            GENE,
            "chr\tRefSeq\tgene\t100\t400\t.\t+\t.\tID=h",
            cds(100, 200, "0"),
            cds(300, 400, "1", "ID=c;Parent=h"),
        ],
        False,
        7,
        "shares ID 'c' with line 6 but has another Parent ('h' vs 'g')",
    ),
    (
        "unescaped '=' in a value",
        [GENE, cds(100, 400, "0", "ID=c;Parent=g;Note=a=b")],
        False,
        5,
        "attribute 'Note=a=b' does not contain exactly one '=' (escape it as %3D)",
    ),
    (
        "empty tag",
        [GENE, cds(100, 400, "0", "ID=c;Parent=g;=x")],
        False,
        5,
        "attribute '=x' has an empty key",
    ),
    (
        "'.' among attributes",
        [GENE, cds(100, 400, "0", ".;ID=c;Parent=g")],
        False,
        5,
        "attribute '.': '.' (no attributes) among attributes",
    ),
    (
        "Is_circular other than true",
        ["chr\tRefSeq\tgene\t100\t400\t.\t+\t.\tID=g;Is_circular=yes"],
        False,
        4,
        "Is_circular='yes': the only allowed value is 'true'",
    ),
    (
        "Target with two fields",
        ["chr\tRefSeq\tmatch\t100\t400\t.\t+\t.\tID=m;Target=est 1"],
        False,
        4,
        "Target 'est 1' needs 3 or 4 blank-separated fields: id start end [+|-]",
    ),
    (
        "Target with start > end",
        ["chr\tRefSeq\tmatch\t100\t400\t.\t+\t.\tID=m;Target=est 9 2 +"],
        False,
        4,
        "Target 'est 9 2 +': start 9 > end 2",
    ),
    (
        "##sequence-region given twice",
        [GENE, "##sequence-region chr 1 3000"],
        False,
        5,
        "##sequence-region chr already given on line 2",
    ),
    (
        "##sequence-region after features of its seqid",
        [GENE, "chrX\tRefSeq\tgene\t1\t10\t.\t+\t.\tID=x", "##sequence-region chrX 1 100"],
        False,
        6,
        "##sequence-region chrX comes after features on chrX",
    ),
    (
        "a second ##gff-version line",
        [GENE, "##gff-version 3", cds(100, 400, "0")],
        False,
        5,
        "a second ##gff-version line (concatenated files? merge them properly)",
    ),
    (
        "upper-case tag that the spec does not reserve",
        [GENE, cds(100, 400, "0", "ID=c;Parent=g;Product=x")],
        False,
        5,
        "attribute 'Product': tags starting with an upper-case letter are reserved",
    ),
]


def _pair(tmp_path: Path, features: list[str], two: bool) -> tuple[Path, Path]:
    seqs = {"chr": random_dna(3000, 1)}
    if two:
        seqs["plasmid"] = random_dna(1000, 2)
    return write_pair(tmp_path / "in", "g", seqs, features, gz=False)


def _gt(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([GT or "gt", "gff3validator", str(path)], capture_output=True, text=True)


@pytest.mark.parametrize(
    "features, two, line, reason", [h[1:] for h in HOSTILE], ids=[h[0] for h in HOSTILE]
)
def test_hostile_gff3_exact_error(
    tmp_path: Path, features: list[str], two: bool, line: int, reason: str
) -> None:
    _fna, gff = _pair(tmp_path, features, two)
    with pytest.raises(InputError) as exc:
        check_gff3_semantics(read_gff3(gff), gff)
    assert (exc.value.path, exc.value.line, exc.value.reason) == (str(gff), line, reason)


@pytest.mark.parametrize(
    "features, two, line, reason", [h[1:] for h in HOSTILE], ids=[h[0] for h in HOSTILE]
)
def test_hostile_gff3_through_the_cli(
    tmp_path: Path, features: list[str], two: bool, line: int, reason: str
) -> None:
    fna, gff = _pair(tmp_path, features, two)
    out = tmp_path / "out"
    run = run_bake(fna, gff, out, "--window", "500", "--extract_tokens", out / "tokens.txt")
    assert run.returncode == 2, run.stderr
    errors = [ln for ln in run.stderr.splitlines() if ln.startswith("error:")]
    assert errors == [f"error: {gff}:{line}: {reason}"], run.stderr
    assert "Traceback" not in run.stderr
    assert output_files(out) == []


@pytest.mark.parametrize("features, two", [h[1:3] for h in HOSTILE], ids=[h[0] for h in HOSTILE])
def test_genometools_rejects_them_too(tmp_path: Path, features: list[str], two: bool) -> None:
    if GT is None:
        pytest.skip("GenomeTools `gt` is not installed: cannot compare with gt gff3validator")
    _fna, gff = _pair(tmp_path, features, two)
    res = _gt(gff)
    assert res.returncode != 0, f"gt accepts what we reject: {res.stderr}"


def test_correct_multi_piece_cds_bakes_and_gt_agrees(tmp_path: Path) -> None:
    """Phases that follow from the pieces (+ and -, shared ID or one parent) are accepted."""
    features = [
        GENE,
        cds(100, 200, "0"),
        cds(300, 400, "1"),  # 101 bp at phase 0 leave 2 bases: the next codon starts 1 in
        "chr\tRefSeq\tgene\t1000\t1400\t.\t-\t.\tID=h",
        cds(1000, 1100, "1", "ID=d;Parent=h", "-"),  # 3' piece: follows 1300..1400
        cds(1300, 1400, "0", "ID=d;Parent=h", "-"),  # 5' piece: 101 bp -> 2 leftover -> phase 1
        "chr\tRefSeq\tgene\t2000\t2300\t.\t+\t.\tID=k",
        cds(2000, 2099, "0", "Parent=k"),  # 100 bp -> 1 leftover -> phase 2
        cds(2200, 2300, "2", "Parent=k"),
    ]
    fna, gff = _pair(tmp_path, features, False)
    check_gff3_semantics(read_gff3(gff), gff)
    out = tmp_path / "out"
    run = run_bake(fna, gff, out, "--window", "500")
    assert run.returncode == 0, run.stderr
    assert load_manifest(out).totals["features"] == {"CDS": 6}
    if GT is not None:
        assert _gt(gff).returncode == 0, _gt(gff).stderr


def test_cds_across_the_origin_of_a_circular_sequence(tmp_path: Path) -> None:
    """Two lines sharing an ID, 5801..6000 then 1..300 on a 6000 bp circular sequence: the
    transcript starts at 5801, so the piece at 1 continues it (200 bp, phase 0 -> phase 1)."""
    chrom = random_dna(6000, 3)
    features = [
        "chr\tRefSeq\tCDS\t1\t300\t.\t+\t1\tID=o",
        "chr\tRefSeq\tCDS\t5801\t6000\t.\t+\t0\tID=o",
    ]
    fna, gff = write_pair(tmp_path / "in", "g", {"chr": chrom}, features, circular=("chr",))
    check_gff3_semantics(read_gff3(gff), gff)
    bad = tmp_path / "in" / "bad.gff"
    bad.write_text(gzip.decompress(gff.read_bytes()).decode().replace("+\t1\tID=o", "+\t0\tID=o"))
    with pytest.raises(InputError) as exc:
        check_gff3_semantics(read_gff3(bad), bad)
    assert (exc.value.line, exc.value.reason) == (
        4,
        "CDS phase 0 should be 1: CDS 'o' continues from 5801..6000 (line 5, phase 0)",
    )


def test_negative_sequence_region_is_warned_and_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fna, gff = _pair(tmp_path, [GENE, cds(100, 400, "0")], False)
    gff.write_text(
        gff.read_text().replace("##sequence-region chr 1 3000", "##sequence-region chr -1 3000")
    )
    with caplog.at_level(logging.WARNING):
        doc = read_gff3(gff)
    assert doc.sequence_regions == {}
    assert [r.getMessage() for r in caplog.records] == [
        f"{gff}:2: ##sequence-region chr -1 3000 has a negative coordinate; ignored (the FASTA "
        "gives the sequence's extent)"
    ]
    check_gff3_semantics(doc, gff)
    out = tmp_path / "out"
    run = run_bake(fna, gff, out, "--window", "500")
    assert run.returncode == 0, run.stderr
    assert f"{gff}:2: ##sequence-region chr -1 3000 has a negative coordinate" in run.stderr
    assert load_manifest(out).totals["features"] == {"CDS": 1}
    if GT is not None:
        res = _gt(gff)
        assert res.returncode == 0 and "is negative" in res.stderr, res.stderr


def test_on_error_skip_skips_only_the_broken_genome(tmp_path: Path) -> None:
    good_fna, good_gff = write_pair(
        tmp_path / "good", "good", {"chr": random_dna(3000, 5)}, [GENE, cds(100, 400, "0")]
    )
    bad_fna, bad_gff = write_pair(
        tmp_path / "bad",
        "bad",
        {"chr": random_dna(3000, 6)},
        [GENE, cds(100, 400, "0", "ID=c;Parent=nope")],
    )
    listing = tmp_path / "genomes.tsv"
    listing.write_text(f"good\t{good_fna}\t{good_gff}\nbad\t{bad_fna}\t{bad_gff}\n")
    out = tmp_path / "out"
    run = run_bake("--genomes", listing, out, "--window", "500", "--on_error", "skip")
    assert run.returncode == 0, run.stderr
    m = load_manifest(out)
    assert m.genomes["bad"]["status"] == "failed"
    assert (
        m.genomes["bad"]["error"]
        == f"{bad_gff}:5: Parent 'nope' is not defined (no feature has ID=nope)"
    )
    assert m.genomes["good"]["status"] == "ok" and m.totals["features"] == {"CDS": 1}


@pytest.mark.shared
@pytest.mark.parametrize("name", ["C.crescentus", "E.coli", "phage"])
def test_refseq_genomes_pass(genome_pair, name: str) -> None:
    """Real NCBI annotations, with their frameshifted multi-piece CDS, are valid."""
    _fna, gff = genome_pair(name)
    doc = read_gff3(gff)
    check_gff3_semantics(doc, gff)
    pieces = Counter(f.attr("ID") for f in doc.features if f.type == "CDS")
    multi = [i for i, n in pieces.items() if n > 1]
    # E. coli: prfB, insertion elements, ... split into 2-3 lines (their phases were checked)
    assert len(multi) == {"C.crescentus": 0, "E.coli": 20, "phage": 0}[name]


def test_tag_given_twice_once_percent_escaped(tmp_path: Path) -> None:
    """``note=a;no%74e=b`` names ``note`` twice once unescaped: rejected, because keeping one of
    the two values would silently lose the other (GenomeTools compares raw tags and accepts)."""
    _fna, gff = _pair(tmp_path, [GENE, cds(100, 400, "0", "ID=c;Parent=g;note=a;no%74e=b")], False)
    with pytest.raises(InputError) as exc:
        read_gff3(gff)
    assert (exc.value.line, exc.value.reason) == (5, "attribute 'note' appears twice on the line")
