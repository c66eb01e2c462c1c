"""The no-model control (trainer.inference.orf_rule) on synthetic genomes and the phage."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from baking.common.errors import ConfigError, InputError
from baking.evaluate.load import load_features
from baking.evaluate.metrics import compare
from baking.formats.fasta import read_fasta
from baking.formats.gff3 import read_gff3
from baking.orfs import OrfIndex
from baking.synthetic import SyntheticConfig, feature_sequence, generate_genome, write_genome
from trainer.inference.orf_rule import (
    annotate_orf_rule,
    choose_min_codons,
    orf_rule_features,
    orf_rule_predictions,
    score_min_codons,
)

REPO = Path(__file__).resolve().parents[1]
SMALL = {"chromosome_length": 30_000, "plasmid_lengths": (5_000,)}
CANDIDATES = (20, 40, 60, 80, 100, 150, 200)


@pytest.fixture(scope="module")
def synthetic_pairs(tmp_path_factory) -> list[tuple[Path, Path]]:
    """Three training genomes and one held-out (seeds 1..4, one species)."""
    out = tmp_path_factory.mktemp("orf_rule_genomes")
    return [
        write_genome(generate_genome(SyntheticConfig(seed=s, **SMALL)), out, f"syn_{s}")
        for s in range(1, 5)
    ]


def test_choose_min_codons_takes_the_best_stop_f1(synthetic_pairs) -> None:
    train = synthetic_pairs[:3]
    scores = score_min_codons(train, CANDIDATES)
    n = choose_min_codons(train, CANDIDATES)
    assert n in CANDIDATES
    assert scores[n][0].f1 == max(s.f1 for s, _ in scores.values())
    # more ORFs at small N: sensitivity cannot drop and predictions cannot shrink as N falls
    sens = [scores[c][0].sensitivity for c in CANDIDATES]
    npred = [scores[c][0].n_pred for c in CANDIDATES]
    assert sens == sorted(sens, reverse=True) and npred == sorted(npred, reverse=True)
    # a short-ORF threshold drowns the genes in noise; the chosen one is strictly better
    assert scores[n][0].f1 > scores[20][0].f1


def test_held_out_synthetic_genome(synthetic_pairs, tmp_path: Path) -> None:
    train, (fna, gff) = synthetic_pairs[:3], synthetic_pairs[3]
    n = choose_min_codons(train, CANDIDATES)
    out = tmp_path / "pred.gff3"
    summary = annotate_orf_rule(fna, out, n, circular=("all",))
    ref, lengths = load_features(gff)
    pred = [f for f in load_features(out)[0] if f.type == "CDS"]
    assert summary.cds == len(pred) > 0 and summary.min_codons == n
    (report,) = compare(ref, pred, ["CDS"], lengths)
    # synthetic genes are long ORFs: most long ORFs end on a gene stop (figures in docs/orfs.md)
    assert report.stop.precision > 0.8 and report.stop.f1 > 0.6
    assert report.exact.f1 < report.stop.f1  # the longest-ORF start is often not the gene's
    # every prediction is an ORF of at least n codons, origin-spanning ones read across the origin
    seqs = dict(read_fasta(fna))
    spanning = 0
    for f in pred:
        sense = feature_sequence(seqs[f.seqid], f.start, f.end, f.strand)
        assert OrfIndex(sense, 11).is_valid_orf(0, len(sense), "+")
        assert len(sense) // 3 >= n
        spanning += f.end > len(seqs[f.seqid])
    ref_spanning = [f for f in ref if f.type == "CDS" and f.end > lengths[f.seqid]]
    assert ref_spanning and spanning >= 1
    stops = {(f.seqid, f.three_prime, f.strand) for f in pred}
    assert any((f.seqid, f.three_prime, f.strand) in stops for f in ref_spanning)


def test_gff3_layout_matches_annotate(synthetic_pairs, tmp_path: Path) -> None:
    fna, _ = synthetic_pairs[0]
    out = tmp_path / "pred.gff3.gz"
    annotate_orf_rule(fna, out, 100)
    doc = read_gff3(out)
    seqs = dict(read_fasta(fna))
    assert {s: e for s, (_, e) in doc.sequence_regions.items()} == {
        s: len(x) for s, x in seqs.items()
    }
    regions = [f for f in doc.features if f.type == "region"]
    assert len(regions) == len(seqs) and all(f.attr("Is_circular") is None for f in regions)
    genes = {f.attr("ID"): f for f in doc.features if f.type == "gene"}
    cds = [f for f in doc.features if f.type == "CDS"]
    assert len(genes) == len(cds) > 10
    for f in cds:
        g = genes[f.attr("Parent")]
        assert (g.start, g.end, g.strand) == (f.start, f.end, f.strand)
        assert f.source == "dna2gff" and f.phase == 0
        assert f.end <= len(seqs[f.seqid])  # linear: nothing spans the origin


def test_linear_versus_circular_and_longest_per_stop() -> None:
    body = "GCTGAACCA" * 20  # no start codon in any frame of either strand
    orf = "ATG" + "GCC" + "ATG" + body + "TAA"  # two starts, one stop: the longest wins
    seq = orf[40:] + "CCGC" * 10 + orf[:40]  # wraps over the origin when circular
    n, stop_end = len(seq), len(orf) - 40  # 1-based last base of the stop codon

    def ending_at_the_stop(preds):
        return [(p.start, p.end) for p in preds if p.strand == "+" and p.end % n == stop_end]

    # linear: the gene's start lies after its stop, so no ORF ends at that stop
    assert ending_at_the_stop(orf_rule_predictions([("s", seq)], 20)) == []
    circ = orf_rule_predictions([("s", seq)], 20, circular=("s",))
    # circular: once, across the origin, from the first start (not the second, 6 bp later)
    assert ending_at_the_stop(circ) == [(n - 40 + 1, n + stop_end)]
    feats, regions = orf_rule_features([("s", seq)], 20, circular=("all",))
    assert regions == {"s": (1, n)} and feats[0].attr("Is_circular") == "true"
    cds = [f for f in feats if f.type == "CDS" and f.strand == "+" and f.end % n == stop_end]
    assert [(f.start, f.end) for f in cds] == [(n - 40 + 1, n + stop_end)]


def test_bad_input(tmp_path: Path, synthetic_pairs) -> None:
    with pytest.raises(InputError, match="no such file"):
        annotate_orf_rule(tmp_path / "missing.fna", tmp_path / "o.gff3", 50)
    empty = tmp_path / "empty.fna"
    empty.write_text("")
    with pytest.raises(InputError):
        annotate_orf_rule(empty, tmp_path / "o.gff3", 50)
    with pytest.raises(ConfigError, match="min_codons"):
        orf_rule_predictions([("s", "ATGTAA")], 1)
    with pytest.raises(ConfigError):
        choose_min_codons([])
    with pytest.raises(ConfigError, match="transl_table"):
        orf_rule_predictions([("s", "ATGTAA")], 2, transl_table=3)
    with pytest.raises(ConfigError, match="circular"):
        annotate_orf_rule(synthetic_pairs[0][0], tmp_path / "o.gff3", 50, circular=("nope",))
    assert not (tmp_path / "o.gff3").exists()


@pytest.mark.shared
def test_phage_with_n_chosen_on_the_phage(genome_pair, tmp_path: Path) -> None:
    """The phage's own best N (an upper bound for this control); figures in docs/orfs.md."""
    fna, gff = genome_pair("phage")
    scores = score_min_codons([(fna, gff)], (60, 90, 120, 150, 190))
    n = choose_min_codons([(fna, gff)], (60, 90, 120, 150, 190))
    out = tmp_path / "phage.gff3"
    annotate_orf_rule(fna, out, n)
    ref, lengths = load_features(gff)
    pred, _ = load_features(out)
    (report,) = compare(ref, pred, ["CDS"], lengths)
    assert report.stop.f1 == pytest.approx(scores[n][0].f1)
    assert report.exact.f1 == pytest.approx(scores[n][1].f1)
    assert 0.4 < report.stop.f1 < 0.9  # a control, not a gene finder


def test_cli_chooses_n_on_training_genomes_and_reports_errors(
    synthetic_pairs, tmp_path: Path
) -> None:
    script = [sys.executable, str(REPO / "launch" / "orf_rule.py")]
    (fna, gff), (held, _) = synthetic_pairs[0], synthetic_pairs[3]
    out = tmp_path / "pred.gff3"
    res = subprocess.run(
        [*script, "--fasta", held, "--out", out, "--train", fna, gff, "--circular", "all"],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr
    n = choose_min_codons([(fna, gff)])
    assert f"min_codons={n} " in res.stdout
    assert f"# dna2gff orf_rule min_codons={n} transl_table=11\n" in out.read_text()
    assert sum(f.type == "CDS" for f in read_gff3(out).features) > 10
    bad = tmp_path / "bad.gff3"
    bad.write_text("##gff-version 3\ns\tx\tCDS\tone\t9\t.\t+\t0\tID=a\n")
    res = subprocess.run(
        [*script, "--fasta", held, "--out", tmp_path / "o.gff3", "--train", fna, bad],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 2
    assert res.stderr.strip().splitlines()[-1].startswith(f"error: {bad}:2:")
    assert not (tmp_path / "o.gff3").exists()
    res = subprocess.run(
        [*script, "--fasta", held, "--out", tmp_path / "o.gff3", "--min_codons", "1"],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 2 and "error: min_codons must be >= 2" in res.stderr
