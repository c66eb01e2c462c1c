"""baking.evaluate.refcheck: reference CDS against the ORF rule, one hand-made CDS per cause, real genomes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from baking.evaluate.refcheck import check_reference_cds, sense_problems, tally
from baking.formats.fasta import read_fasta, reverse_complement
from baking.formats.gff3 import GFFFeature, read_gff3
from baking.orfs import genetic_code

REPO = Path(__file__).resolve().parents[1]
CODE = genetic_code(11)
FILL = "CCGC" * 10  # 40 bp without any start or stop codon


def _cds(start: int, end: int, strand: str = "+", **attrs: str) -> GFFFeature:
    cid = attrs.pop("ID", f"cds{start}")
    return GFFFeature(
        "s", "RefSeq", "CDS", start, end, None, strand, 0, (("ID", cid), *attrs.items())
    )


def test_sense_problems() -> None:
    assert sense_problems("ATGGCTTAA", CODE) == []
    assert sense_problems("ATTGCTTAA", CODE) == ["start codon ATT"]
    assert sense_problems("ATGTAAGCTTAA", CODE) == ["1 internal in-frame stop(s)"]
    assert sense_problems("ATGGCTGCC", CODE) == ["no stop codon at the end (GCC)"]
    assert "length 10 is not a multiple of 3" in sense_problems("ATGGCTTAAC", CODE)
    assert sense_problems("ATG", CODE) == ["shorter than a start and a stop codon"]


def test_each_cause_on_hand_made_cds() -> None:
    orf = "ATGGCTGAACGTTAA"  # 15 bp
    sec = "ATGGCTTGAGCTTAA"  # TGA read as Sec
    alt = "ATTGCTGAATAA"
    seq = FILL + orf + FILL + sec + FILL + alt + FILL + reverse_complement(orf) + FILL + orf[:-3]
    p = [0]  # p[i]: bases before part i, not counting the leading filler
    for part in (orf, sec, alt, orf, orf[:-3]):
        p.append(p[-1] + 40 + len(part))
    s_orf, s_sec, s_alt, s_rc, s_edge = (p[i] + 41 for i in range(5))
    feats = [
        _cds(s_orf, s_orf + 14),
        _cds(s_sec, s_sec + 14, transl_except="(pos:x,aa:Sec)"),
        _cds(s_sec, s_sec + 14, ID="plain_sec"),
        _cds(s_alt, s_alt + 11),
        _cds(s_rc, s_rc + 14, "-"),
        _cds(s_rc, s_rc + 14, "+", ID="wrong_strand"),
        # the first ORF written as two pieces (a slippage site)
        _cds(s_orf, s_orf + 5, ID="slip", exception="ribosomal slippage"),
        _cds(s_orf + 6, s_orf + 14, ID="slip", exception="ribosomal slippage"),
        _cds(s_alt, s_alt + 11, ID="ps", pseudo="true"),
        _cds(s_edge, len(seq), ID="cut"),  # runs off the linear sequence's end
        _cds(s_sec, s_sec + 14, ID="child_of_pseudo", Parent="g", gene_biotype="protein_coding"),
        GFFFeature("s", "RefSeq", "pseudogene", s_sec, s_sec + 14, None, "+", None, (("ID", "g"),)),
    ]
    checks = {c.cds_id: c for c in check_reference_cds({"s": seq}, feats)}
    assert checks[f"cds{s_orf}"].valid and checks[f"cds{s_rc}"].valid
    assert checks[f"cds{s_sec}"].cause == "transl_except"
    assert checks["plain_sec"].cause == "other"
    assert checks[f"cds{s_alt}"].cause == "start_codon"
    assert checks[f"cds{s_alt}"].start_codon == "ATT"
    assert checks["wrong_strand"].cause == "other"
    assert checks["slip"].cause == "exception" and checks["slip"].pieces == 2
    assert checks["slip"].problems == ()  # joined, it is an ORF; one interval cannot be
    assert checks["ps"].cause == "pseudogene"
    assert checks["cut"].cause == "edge"
    assert checks["child_of_pseudo"].cause == "pseudogene"
    assert tally(checks.values())["ok"] == 2


def test_origin_spanning_cds_on_a_circular_sequence() -> None:
    orf = "ATGGCTGAACGTTAA"
    seq = orf[6:] + FILL + orf[:6]  # the ORF wraps over the origin
    n = len(seq)
    feats = [_cds(n - 5, n + 9)]
    (check,) = check_reference_cds({"s": seq}, feats, circular=["s"])
    assert check.valid
    (check,) = check_reference_cds({"s": seq}, feats)  # linear: cut at the edge
    assert check.cause == "edge"


@pytest.mark.shared
def test_real_genomes_breakers_are_declared_biology(genome_pair) -> None:
    fna, gff = genome_pair("E.coli")
    seqs = dict(read_fasta(fna))
    doc = read_gff3(gff)
    checks = {c.cds_id: c for c in check_reference_cds(seqs, doc.features)}
    # the three selenoproteins (formate dehydrogenases H, N, O), prfB's +1 frameshift
    for cid in ("cds-NP_415991.1", "cds-NP_418330.1", "cds-NP_418503.1"):
        assert checks[cid].cause == "transl_except"
        assert checks[cid].problems == ("1 internal in-frame stop(s)",)
    assert checks["cds-NP_417367.1"].cause == "exception"
    t = tally(checks.values())
    assert t["ok"] / len(checks) > 0.99 and t["other"] == 0 and t["pseudogene"] > 0
    fna, gff = genome_pair("phage")
    phage = check_reference_cds(dict(read_fasta(fna)), read_gff3(gff).features)
    assert len(phage) > 50 and all(c.valid for c in phage)


@pytest.mark.shared
def test_script_prints_the_table(genome_pair) -> None:
    fna, gff = genome_pair("phage")
    out = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "orf_rule_breakers.py"), "--pair", fna, gff],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "NC_000902.1.fna.gz" in out and "100.00%" in out


def test_script_bad_input_is_one_error_line(tmp_path: Path) -> None:
    bad = tmp_path / "g.gff"
    bad.write_text("##gff-version 3\ns\tx\tCDS\tone\t9\t.\t+\t0\tID=a\n")
    fna = tmp_path / "g.fna"
    fna.write_text(">s\nATGGCTTAA\n")
    res = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "orf_rule_breakers.py"), "--pair", fna, bad],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 2
    assert res.stderr.startswith("error: ") and len(res.stderr.strip().splitlines()) == 1
