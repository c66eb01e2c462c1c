"""annotate --adapt: the genome's own statistics (real genomes), the choice they drive, the no-model
control, the fall-back on a genome too small to learn from, and that no annotation is ever read."""

from __future__ import annotations

import json
import logging
import random
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from test_annotate import tiny_model  # noqa: F401  (a fixture, used by name)

from baking.adapt_genes import enumerate_orfs, length_seeds, seed_genes
from baking.evaluate.load import load_features
from baking.evaluate.metrics import Feature, exact_scores, stop_scores
from baking.formats.fasta import read_fasta
from baking.formats.gff3 import read_gff3
from baking.gene_selection import violations
from baking.genome_stats import TooLittleData, revcomp, train_stats
from baking.orfs import genetic_code
from launch import annotate as annotate_cli
from launch import orf_rule as orf_rule_cli
from trainer.fixtures import SHARED_GENOMES
from trainer.inference.adapt import SequenceInput, adapt_genome, self_trained_predictions
from trainer.inference.annotate import AnnotateOptions, annotate_sequences
from trainer.inference.generate import GeneratedTarget

MYCO = SHARED_GENOMES / "Mycoplasma_genitalium_G37" / "GCA_000027325.1_ASM2732v1_genomic"


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"shared data absent: {path}")
    return path


@pytest.mark.shared
def test_coding_score_ranks_real_cds_above_their_other_frames(genome_pair) -> None:
    """Statistics learned from E. coli's long ORFs alone (no annotation) score each real CDS
    higher in its own frame than the same bases read antisense or shifted by one or two bases."""
    fna, gff = genome_pair("E.coli")
    seqs = list(read_fasta(fna))
    sid, seq = seqs[0]
    code = genetic_code(11)
    cands = enumerate_orfs(seq, code, circular=True)
    seeds = seed_genes(0, len(seq), cands, length_seeds(seq, cands, True))
    stats = train_stats(seqs, seeds)
    rc = revcomp(seq)
    prof = {"+": stats.coding_profile(seq), "-": stats.coding_profile(rc)}
    n = len(seq)
    ref = [
        f
        for f in load_features(gff)[0]
        if f.type == "CDS" and f.end <= n and (f.end - f.start + 1) % 3 == 0
    ]
    assert len(ref) > 4000

    def score(strand: str, a: int, b: int) -> float:
        return float(prof[strand][b - 6] - prof[strand][a])

    wins = Counter()
    for f in ref:
        other = "-" if f.strand == "+" else "+"
        a, b = (f.start - 1, f.end) if f.strand == "+" else (n - f.end, n - f.start + 1)
        own = score(f.strand, a, b)
        anti = score(other, n - b, n - a)
        shifted = [score(f.strand, a + k, b + k - 3) for k in (1, 2)]
        wins["antisense"] += own > anti
        wins["shifted"] += all(own > s for s in shifted)
    assert wins["antisense"] / len(ref) > 0.9, wins
    assert wins["shifted"] / len(ref) > 0.9, wins
    # the start model finds the Shine-Dalgarno: G enriched some 5-15 bases before real starts
    assert stats.upstream[UP_SD, 2].max() > 0.3


UP_SD = slice(20 - 15, 20 - 5)


@pytest.mark.shared
def test_statistics_alone_on_a_code_4_genome_obey_the_rules_and_find_its_genes() -> None:
    """No model: seeds from long ORFs of *M. genitalium* under code 4 (TGA is Trp, read
    through), the statistics choose a consistent set that finds its genes (measured 0.82 exact,
    0.95 stop F1; the ORF rule's best N gets ~0.8 stop on such genomes)."""
    fna, gff = _need(Path(f"{MYCO}.fna.gz")), _need(Path(f"{MYCO}.gff.gz"))
    seqs = list(read_fasta(fna))
    code = genetic_code(4)
    counts: Counter[str] = Counter()
    chosen = self_trained_predictions(seqs, code, [True], counts=counts)
    preds = [p for p, _ in chosen[0]]
    assert counts["adapt_seed_genes"] > 300 and not counts["adapt_fallback"]
    n = len(seqs[0][1])
    lo = np.array([p.start - 1 for p in preds])
    hi = np.array([p.end for p in preds])
    plus = np.array([p.strand == "+" for p in preds])
    assert violations(lo, hi, plus, np.arange(len(preds)), length=n, circular=True) == []
    ref = [f for f in load_features(gff)[0] if f.type == "CDS"]
    pred = [Feature(p.seqid, "CDS", p.start, p.end, p.strand) for p in preds]
    assert stop_scores(ref, pred).f1 > 0.9
    assert exact_scores(ref, pred).f1 > 0.7
    # under code 11 TGA would end most of these genes early: a much worse set
    wrong = self_trained_predictions(seqs, genetic_code(11), [True])
    pred11 = [Feature(p.seqid, "CDS", p.start, p.end, p.strand) for p, _ in wrong[0]]
    assert stop_scores(ref, pred11).f1 < stop_scores(ref, pred).f1 - 0.2


def _silent_model(model, tokenizer, windows_dna, window_len, types, **kw):
    """A model that writes nothing: every gene must come from the statistics."""
    return [GeneratedTarget([], []) for _ in windows_dna]


def test_too_small_a_genome_falls_back_to_votes_with_a_reason(caplog) -> None:
    rng = random.Random(5)
    seq = "".join(rng.choice("ACGT") for _ in range(3000))
    opts = AnnotateOptions(adapt=True, progress=False, circular=("all",))
    with caplog.at_level(logging.WARNING):
        feats, _, summary = annotate_sequences(
            None, None, [("tiny", seq)], opts, 1000, ["CDS"], generate=_silent_model
        )
    assert summary.snap.get("adapt_fallback") == 1
    assert "not adapting" in caplog.text and "seed genes" in caplog.text
    assert [f.type for f in feats] == ["region"]  # votes of a silent model: nothing
    with pytest.raises(TooLittleData):
        train_stats([("tiny", seq)], [])
    items = [SequenceInput("tiny", seq, True, [], [], [])]
    assert adapt_genome(items, genetic_code(11), use_model=False) is None


@pytest.mark.shared
def test_adapt_end_to_end_reads_no_annotation(
    tiny_model: Path,  # noqa: F811  (the fixture imported from test_annotate)
    genome_pair,
    tmp_path: Path,
) -> None:
    """annotate --adapt with an untrained model on the phage: the genes come from the genome's own
    statistics, the header says adapt=True, and no GFF3 is ever opened for reading (an audit hook
    sees every open of the process)."""
    fna, gff = genome_pair("phage")
    opened: list[tuple[str, str]] = []

    def hook(event: str, args: tuple) -> None:
        if event == "open" and recording:
            opened.append((str(args[0]), str(args[1])))

    recording = False
    sys.addaudithook(hook)
    out = tmp_path / "pred.gff3"
    recording = True
    try:  # the command line, in this process so that the hook sees its opens
        rc = annotate_cli.main(
            [
                "--model",
                str(tiny_model),
                "--fasta",
                str(fna),
                "--out",
                str(out),
                "--adapt",
                "--circular",
                "all",
                "--max_new_tokens",
                "20",
                "--batch_size",
                "32",
                "--no_progress",
                "--summary_json",
                str(tmp_path / "run.json"),
            ]
        )
    finally:
        recording = False
    assert rc == 0
    reads = [p for p, mode in opened if "gff" in p.lower() and "r" in mode and "pred" not in p]
    assert reads == [] and str(gff) not in {p for p, _ in opened}
    doc = read_gff3(out)
    header = [x for x in out.read_text().splitlines() if x.startswith("# dna2gff annotate")]
    assert len(header) == 1 and header[0].endswith(" adapt=True")
    cds = [f for f in doc.features if f.type == "CDS"]
    summary = json.loads((tmp_path / "run.json").read_text())
    assert summary["snap"]["adapt_new_genes"] > 20 and len(cds) > 20
    assert any(f.attr("snap") == "adapt" for f in cds)
    ref = [f for f in load_features(gff)[0] if f.type == "CDS"]
    pred = [Feature(f.seqid, "CDS", f.start, f.end, f.strand) for f in cds]
    assert stop_scores(ref, pred).f1 > 0.6  # an untrained model alone finds ~none


@pytest.mark.shared
def test_circular_genome_gives_the_same_genes_whatever_its_origin(genome_pair) -> None:
    """The statistics alone on the phage and on the same circle cut inside its longest gene: that
    gene is found over the new origin (``end > length``), and the two sets of stops agree modulo
    the rotation."""
    fna, _ = genome_pair("phage")
    ((sid, seq),) = read_fasta(fna)
    n = len(seq)
    code = genetic_code(11)

    def genes(s: str) -> list:
        (chosen,) = self_trained_predictions([(sid, s)], code, [True])
        return [p for p, _ in chosen]

    plain = genes(seq)
    longest = max(plain, key=lambda p: p.end - p.start)
    k = (longest.start + longest.end) // 2  # the new origin, inside that gene
    turned = genes(seq[k:] + seq[:k])

    def stop(p, shift: int) -> tuple[int, str]:
        return ((p.end if p.strand == "+" else p.start) - 1 + shift) % n, p.strand

    over = [p for p in turned if p.end > n]
    assert stop(longest, 0) in {stop(p, k) for p in over}, (longest, over)

    a = {stop(p, 0) for p in plain}
    b = {stop(p, k) for p in turned}
    assert len(a) >= 50 and len(a & b) >= 0.95 * len(a) and len(b - a) <= 0.05 * len(a)


@pytest.mark.shared
def test_orf_rule_self_trained_command(genome_pair, tmp_path: Path, capsys) -> None:
    """``orf_rule --self_trained`` writes the no-model control; a genome too small to learn from
    gets the length-only choice instead of a crash; it excludes an N."""
    fna, gff = genome_pair("phage")
    out = tmp_path / "self.gff3"
    assert orf_rule_cli.main(["--fasta", str(fna), "--out", str(out), "--self_trained"]) == 0
    assert "dna2gff self_trained transl_table=11" in out.read_text()
    ref = [f for f in load_features(gff)[0] if f.type == "CDS"]
    pred = [
        Feature(f.seqid, "CDS", f.start, f.end, f.strand)
        for f in read_gff3(out).features
        if f.type == "CDS"
    ]
    assert stop_scores(ref, pred).f1 > 0.8  # the ORF rule's best N: 0.63 (docs/orfs.md)
    small = tmp_path / "small.fa"
    rng = random.Random(1)
    small.write_text(">s\n" + "".join(rng.choice("ACGT") for _ in range(4000)) + "\n")
    assert (
        orf_rule_cli.main(
            ["--fasta", str(small), "--out", str(tmp_path / "s.gff3"), "--self_trained"]
        )
        == 0
    )
    assert (tmp_path / "s.gff3").is_file()
    with pytest.raises(SystemExit) as exc:
        orf_rule_cli.main(
            ["--fasta", str(fna), "--out", str(out), "--self_trained", "--min_codons", "60"]
        )
    assert exc.value.code == 2
    capsys.readouterr()
