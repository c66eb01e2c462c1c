"""Evaluation figures on hand-made reference/prediction pairs with known answers, and vs gt eval."""

from __future__ import annotations

import gzip
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from baking.evaluate.load import load_features
from baking.evaluate.metrics import (
    Feature,
    Scores,
    base_scores,
    compare,
    exact_scores,
    stop_scores,
)
from baking.evaluate.prodigal import run_prodigal
from baking.formats.fasta import read_fasta


def F(start: int, end: int, strand: str = "+", type: str = "CDS", seqid: str = "chr") -> Feature:
    return Feature(seqid, type, start, end, strand)


REF = [F(1, 300), F(400, 699, "-"), F(1000, 1299), F(2000, 2099, type="tRNA")]
PRED = [
    F(1, 300),  # exact
    F(403, 699, "-"),  # start off, stop right (minus strand: 3' end is `start`): not a stop match
    F(400, 702, "-"),  # 5' end off on minus; stop (start=400) right
    F(1003, 1299),  # stop right on plus
    F(5000, 5299),  # false positive
    F(2000, 2099, type="tRNA"),
]


def test_exact_match_counts() -> None:
    ref = [f for f in REF if f.type == "CDS"]
    pred = [f for f in PRED if f.type == "CDS"]
    s = exact_scores(ref, pred)
    assert (s.tp_ref, s.n_ref, s.tp_pred, s.n_pred) == (1, 3, 1, 5)
    assert s.sensitivity == pytest.approx(1 / 3)
    assert s.precision == pytest.approx(1 / 5)
    assert s.f1 == pytest.approx(2 * (1 / 3) * (1 / 5) / (1 / 3 + 1 / 5))


def test_stop_match_uses_three_prime_end_per_strand() -> None:
    ref = [f for f in REF if f.type == "CDS"]
    pred = [f for f in PRED if f.type == "CDS"]
    s = stop_scores(ref, pred)
    # ref stops: (300,+) (400,-) (1299,+); predicted: 300+, 403-, 400-, 1299+, 5299+
    assert (s.tp_ref, s.n_ref, s.tp_pred, s.n_pred) == (3, 3, 3, 5)


def test_wrong_strand_or_seqid_never_matches() -> None:
    ref = [F(1, 300)]
    assert exact_scores(ref, [F(1, 300, "-")]).tp_ref == 0
    assert exact_scores(ref, [F(1, 300, seqid="other")]).tp_ref == 0
    assert stop_scores(ref, [F(1, 300, "-")]).tp_ref == 0


def test_base_level_union_per_strand() -> None:
    ref = [F(1, 100), F(51, 150), F(1, 100, "-")]  # + union 1..150 (150), - 1..100 (100)
    pred = [F(101, 200), F(1, 50, "-")]  # + 101..200 overlaps 50; - overlaps 50
    s = base_scores(ref, pred)
    assert (s.tp_ref, s.n_ref, s.n_pred) == (100, 250, 150)
    assert s.sensitivity == pytest.approx(100 / 250)
    assert s.precision == pytest.approx(100 / 150)


def test_base_level_wraps_origin_spanning_features() -> None:
    ref = [F(951, 1050)]  # circular length 1000: 951..1000 + 1..50
    pred = [F(1, 50), F(961, 1000)]
    s = base_scores(ref, pred, {"chr": 1000})
    assert (s.tp_ref, s.n_ref, s.n_pred) == (90, 100, 90)


def test_empty_sides_score_zero_not_nan() -> None:
    s = exact_scores([], [])
    assert (s.sensitivity, s.precision, s.f1) == (0.0, 0.0, 0.0)
    assert Scores(0, 5, 0, 0).f1 == 0.0


def test_compare_reports_per_type() -> None:
    reports = {r.type: r for r in compare(REF, PRED, ["CDS", "tRNA", "rRNA"])}
    assert (reports["CDS"].n_ref, reports["CDS"].n_pred) == (3, 5)
    assert reports["tRNA"].exact.f1 == 1.0
    assert reports["rRNA"].n_ref == 0 and reports["rRNA"].exact.f1 == 0.0
    d = reports["CDS"].as_dict()
    assert d["exact"]["tp_ref"] == 1 and "f1" in d["stop"]


# ----------------------------------------------------------------------- real data, gt eval, CLI

REPO = Path(__file__).resolve().parents[1]


def _write_gff(path: Path, feats: list[Feature], header: bool = True) -> Path:
    lines = ["##gff-version 3"] if header else []
    for i, f in enumerate(feats):
        phase = "0" if f.type == "CDS" else "."
        lines.append(
            f"{f.seqid}\tpred\t{f.type}\t{f.start}\t{f.end}\t.\t{f.strand}\t{phase}\tID=p{i}"
        )
    path.write_text("\n".join(lines) + "\n")
    return path


def _gt_eval_cds(ref: Path, pred: Path, tmp: Path) -> dict[str, tuple[int, int]]:
    """``gt eval`` figures as {line label: (numerator, denominator)}."""
    sorted_paths = []
    for p in (ref, pred):
        out = tmp / f"{p.name}.sorted.gff3"
        with open(out, "w") as fh:
            subprocess.run(
                ["gt", "gff3", "-sort", "-tidy", "-retainids", str(p)],
                stdout=fh,
                stderr=subprocess.DEVNULL,
                check=True,
            )
        sorted_paths.append(str(out))
    res = subprocess.run(["gt", "eval", *sorted_paths], capture_output=True, text=True, check=True)
    figures = {}
    for line in res.stdout.splitlines():
        m = re.match(r"(.+?):\s+[\d.]+% \((?:TP=)?(\d+)/(?:\(TP=\d+ \+ (?:FN|FP)=)?(\d+)", line)
        if m:
            num, den = int(m.group(2)), int(m.group(3))
            if "TP=" in line:  # nucleotide lines: TP/(TP + FN) -> denominator TP + FN
                den += num
            figures[m.group(1)] = (num, den)
    return figures


@pytest.mark.shared
@pytest.mark.parametrize(
    "genome,exact_f1,stop_f1",
    [("C.crescentus", 0.777, 0.971), ("E.coli", 0.902, 0.957)],  # SOURCES.md, pseudogenes out
)
def test_prodigal_scores_equal_gt_eval(
    genome_pair, tmp_path: Path, genome: str, exact_f1: float, stop_f1: float
) -> None:
    if shutil.which("gt") is None:
        pytest.skip("GenomeTools `gt` not installed")
    fna, gff = genome_pair(genome)
    run = run_prodigal(list(read_fasta(fna)))
    pred_path = _write_gff(tmp_path / "prodigal.gff3", run.features)
    pred, _ = load_features(pred_path)
    # gt eval knows no pseudogenes: compare it with ours on everything.
    ref_all, lengths = load_features(gff, include_pseudo=True)
    (rep,) = compare(ref_all, pred, ["CDS"], lengths)
    ref_plain = tmp_path / "ref.gff3"
    ref_plain.write_bytes(gzip.decompress(gff.read_bytes()))
    gt = _gt_eval_cds(ref_plain, pred_path, tmp_path)
    assert gt["exon sensitivity (CDS level, all)"] == (rep.exact.tp_ref, rep.exact.n_ref)
    assert gt["exon specificity (CDS level, all)"] == (rep.exact.tp_pred, rep.exact.n_pred)
    assert gt["nucleotide sensitivity (CDS level)"] == (rep.base.tp_ref, rep.base.n_ref)
    assert gt["nucleotide specificity (CDS level)"] == (rep.base.tp_pred, rep.base.n_pred)
    # The published reference figures exclude pseudogenes (our default).
    ref, _ = load_features(gff)
    (rep,) = compare(ref, pred, ["CDS"], lengths)
    assert round(rep.exact.f1, 3) == exact_f1
    assert round(rep.stop.f1, 3) == stop_f1


@pytest.mark.shared
def test_pseudogenes_excluded_by_default(genome_pair) -> None:
    _, gff = genome_pair("E.coli")
    kept, _ = load_features(gff)
    everything, _ = load_features(gff, include_pseudo=True)
    n_kept = sum(f.type == "CDS" for f in kept)
    n_all = sum(f.type == "CDS" for f in everything)
    assert n_all == 4337 and n_kept == 4337 - 36  # 36 RefSeq CDS carry pseudo=true
    assert not any(f.type == "pseudogene" for f in kept)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "launch" / "evaluate.py"), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_json_table_and_plot(tmp_path: Path) -> None:
    ref = _write_gff(tmp_path / "ref.gff3", [f for f in REF])
    pred = _write_gff(tmp_path / "pred.gff3", [f for f in PRED])
    with gzip.open(tmp_path / "pred.gff3.gz", "wt") as fh:
        fh.write(pred.read_text())
    res = _cli(str(ref), str(tmp_path / "pred.gff3.gz"), "--json", "--types", "CDS,tRNA")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["dna2gff"]["CDS"]["exact"]["tp_ref"] == 1
    assert data["dna2gff"]["CDS"]["n_pred"] == 5
    assert data["dna2gff"]["tRNA"]["exact"]["f1"] == 1.0
    png = tmp_path / "tracks.png"
    res = _cli(str(ref), str(pred), "--plot", str(png), "--region", "chr:1-2500")
    assert res.returncode == 0, res.stderr
    assert "CDS" in res.stdout and png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    "case,message",
    [
        ("missing", "no such file"),
        ("no_header", "##gff-version"),
        ("baseline_without_fasta", "needs --fasta"),
        ("bad_region", "--region"),
    ],
)
def test_cli_bad_input(tmp_path: Path, case: str, message: str) -> None:
    ref = _write_gff(tmp_path / "ref.gff3", list(REF))
    pred = _write_gff(tmp_path / "pred.gff3", list(PRED), header=case != "no_header")
    args = {
        "missing": [str(ref), str(tmp_path / "absent.gff3")],
        "no_header": [str(ref), str(pred)],
        "baseline_without_fasta": [str(ref), str(pred), "--baseline", "prodigal"],
        "bad_region": [
            str(ref),
            str(pred),
            "--plot",
            str(tmp_path / "x.png"),
            "--region",
            "chr:9-1",
        ],
    }[case]
    res = _cli(*args)
    assert res.returncode == 2
    assert res.stderr.startswith("error:") and message in res.stderr
    assert not (tmp_path / "x.png").exists()
