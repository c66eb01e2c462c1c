"""Genome-wide gene selection (``baking.gene_selection``) and annotate's ``--selection genome``.

The program must be exact (a brute force over every subset of small random instances agrees, on
linear and circular sequences, with the rules drawn at random), its choice must obey its own rules
on every shared genome (candidates: the genome's ORFs, scored by length; no annotation read), and
annotate must use it only when asked."""

from __future__ import annotations

import itertools
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from test_annotate import (  # noqa: F401  (genome and tiny_model are fixtures, used by name)
    TYPES,
    PointerOracle,
    W,
    _as_features,
    _validate,
    genome,
    tiny_model,
)

from baking.common.errors import ConfigError
from baking.evaluate.metrics import compare
from baking.formats.fasta import read_fasta
from baking.formats.gff3 import read_gff3
from baking.gene_selection import OverlapRules, select_genes, violations
from baking.target_format.windows import WindowMeta
from launch.annotate import main as annotate_main
from trainer.fixtures import SHARED_GENOMES
from trainer.inference.annotate import AnnotateOptions, annotate_sequences
from trainer.inference.merge import Prediction
from trainer.inference.orf_rule import _sequence_orfs
from trainer.inference.select import candidate_scores, select_genome

REPO = Path(__file__).resolve().parents[1]


def _consistent(lo, hi, plus, chosen, rules: OverlapRules, n: int | None) -> bool:
    """The rules written out naively, pair by pair and base by base (independent of the module)."""
    spans = []
    for i in chosen:
        spans.append((int(lo[i]), int(hi[i]), bool(plus[i])))
        if n is not None:  # circular: a copy one turn on
            spans.append((int(lo[i]) + n, int(hi[i]) + n, bool(plus[i])))
    for (la, ha, pa), (lb, hb, pb) in itertools.combinations(spans, 2):
        if (la, ha) > (lb, hb):
            la, ha, pa, lb, hb, pb = lb, hb, pb, la, ha, pa
        ov = min(ha, hb) - lb
        if ov <= 0 or (n is not None and hb - lb == ha - la and (lb - la) % n == 0 and lb != la):
            continue  # apart, or a gene and its own copy
        if hb <= ha or la == lb:
            return False
        limit = rules.same_strand if pa == pb else rules.convergent if pa else rules.divergent
        if ov > limit:
            return False
    depth: Counter[int] = Counter()
    for la, ha, _ in spans:
        for x in range(la, ha):
            depth[x] += 1
    return not depth or max(depth.values()) <= 2


@pytest.mark.parametrize("circular", [False, True])
def test_program_is_optimal_against_brute_force(circular: bool) -> None:
    rng = np.random.default_rng(7 + circular)
    n = 1500
    for _ in range(250):
        k = int(rng.integers(1, 10))
        lo = rng.integers(0, n if circular else n - 300, k)
        hi = lo + rng.integers(20, 300, k)
        plus = rng.random(k) < 0.5
        score = rng.normal(1.0, 1.0, k)
        rules = OverlapRules(*(int(x) for x in rng.integers(0, 250, 3)))
        seq_n = n if circular else None
        sel = select_genes(lo, hi, plus, score, length=n, circular=circular, rules=rules)
        assert sel.dropped_at_cut == 0
        assert _consistent(lo, hi, plus, sel.chosen, rules, seq_n)
        assert not violations(lo, hi, plus, sel.chosen, length=n, circular=circular, rules=rules)
        assert sel.total == pytest.approx(score[sel.chosen].sum())
        best = 0.0
        for r in range(1, k + 1):
            for c in itertools.combinations(range(k), r):
                total = float(score[list(c)].sum())
                if total > best + 1e-12 and _consistent(lo, hi, plus, c, rules, seq_n):
                    best = total
        assert sel.total == pytest.approx(best), (lo, hi, plus, score, rules)


def test_rules_as_documented() -> None:
    """Prodigal-like defaults: 60 bp same strand, 200 bp 3'-3', no 5'-5' overlap, no gene inside
    another (so one start per stop), and never three genes on a base."""
    lo = np.array([0, 240, 0, 400])
    hi = np.array([300, 600, 330, 700])

    def pick(a: int, b: int, pa: bool, pb: bool) -> list[int]:
        plus = np.array([pa, pb])
        sel = select_genes(np.array([lo[a], lo[b]]), np.array([hi[a], hi[b]]), plus, [1.0, 1.0])
        return sorted(sel.chosen.tolist())

    assert pick(0, 1, True, True) == [0, 1]  # 60 bp, same strand
    assert len(pick(2, 1, True, True)) == 1  # 90 bp, same strand
    assert pick(2, 1, True, False) == [0, 1]  # 90 bp 3'-3'
    assert len(pick(2, 1, False, True)) == 1  # 90 bp 5'-5'
    assert len(pick(0, 2, True, True)) == 1  # two starts of one stop
    # three genes over bases 190..199, each pair allowed (3'-3' 50 and 10, same strand 50)
    tri_lo, tri_hi = np.array([0, 150, 190]), np.array([200, 240, 500])
    sel = select_genes(tri_lo, tri_hi, np.array([True, False, False]), [1.0, 1.0, 1.0])
    assert len(sel.chosen) == 2


def test_origin_spanning_gene_on_a_circle() -> None:
    """A gene over the origin (``hi > n``) is chosen, and a gene it overlaps too much past the
    origin is not."""
    n = 1000
    lo = np.array([900, 50, 300])
    hi = np.array([1200, 350, 600])  # [900, 1200) covers 0..199 after the origin
    sel = select_genes(
        lo, hi, np.array([True, True, True]), [5.0, 1.0, 1.0], length=n, circular=True
    )
    assert sorted(sel.chosen.tolist()) == [0, 2]
    assert sel.total == 6.0


def test_bad_candidates_are_refused() -> None:
    with pytest.raises(ConfigError, match="lo < hi"):
        select_genes([5], [5], [True], [1.0])
    with pytest.raises(ConfigError, match="one entry per candidate"):
        select_genes([5], [9, 10], [True], [1.0])
    with pytest.raises(ConfigError, match="longer than"):
        select_genes([0], [50], [True], [1.0], length=40, circular=True)
    with pytest.raises(ConfigError, match="same_strand"):
        OverlapRules(same_strand=-1)


def _genome_candidates(seq: str, table: int, circular: bool, rng) -> tuple:
    """Every ORF >= 60 codons (longest per stop) plus one inner start per ORF, scored by length."""
    orfs = _sequence_orfs(seq, 60, table, circular)
    lo = np.array([o.lo for o in orfs], dtype=np.int64)
    hi = np.array([o.hi for o in orfs], dtype=np.int64)
    plus = np.array([o.strand == "+" for o in orfs], dtype=bool)
    codons = (hi - lo) // 3
    cut = 3 * (codons // 4)  # an inner start on the same stop
    in_lo, in_hi = np.where(plus, lo + cut, lo), np.where(plus, hi, hi - cut)
    score = np.concatenate((codons - 59.0, codons * 0.75 - 59.0 + rng.normal(0, 20, len(lo))))
    return (
        np.concatenate((lo, in_lo)),
        np.concatenate((hi, in_hi)),
        np.concatenate((plus, plus)),
        score,
    )


@pytest.mark.shared
@pytest.mark.slow  # about 15-25 s on a shared 2-core box (ORF finding is most of it)
def test_selection_obeys_its_rules_on_every_shared_genome() -> None:
    folders = sorted(p for p in SHARED_GENOMES.glob("*") if p.is_dir())
    if not folders:
        pytest.skip(f"shared genomes absent: {SHARED_GENOMES}")
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    program_s = 0.0
    for folder in folders:
        fna = next(folder.glob("*.fna*"))
        seqs = list(read_fasta(fna))
        circular = len(seqs) <= 2  # complete genomes (chromosome, plasmid); drafts stay linear
        table = 4 if "Mycoplasma" in folder.name else 11  # SOURCES.md; no annotation is read
        chosen_total = 0
        for _, seq in seqs:
            lo, hi, plus, score = _genome_candidates(seq, table, circular, rng)
            t1 = time.perf_counter()
            sel = select_genes(lo, hi, plus, score, length=len(seq), circular=circular)
            program_s += time.perf_counter() - t1
            problems = violations(lo, hi, plus, sel.chosen, length=len(seq), circular=circular)
            assert not problems, (folder.name, problems[:3])
            assert sel.total == pytest.approx(score[sel.chosen].sum())
            chosen_total += len(sel.chosen)
        assert chosen_total > 0, folder.name
    assert program_s < 20, program_s  # 21 genomes, ~375k candidates: ~4 s measured
    assert time.perf_counter() - t0 < 60


# ------------------------------------------------------------------ annotate --selection genome

METAS = [WindowMeta("", "s", a, a + 600, "+", 3000, False, 600) for a in (0, 200, 400, 600)]


def _pred(start, end, windows, strand="+", prob=0.5, type_="CDS") -> Prediction:
    return Prediction("s", start, end, strand, type_, 0, prob, 0, frozenset(windows))


def test_scores_count_windows_that_held_a_candidate() -> None:
    """A start two windows chose beats one start a single window chose on the same stop; a gene
    one of three holding windows wrote is not chosen; a tRNA inside a CDS passes through."""
    a = _pred(450, 590, {0, 2})  # held whole by windows 0, 1, 2
    b = _pred(480, 590, {1}, prob=0.99)  # another start of a's stop
    stray = _pred(452, 580, {1}, strand="-")  # one of three holding windows, inside a
    trna = _pred(500, 570, {1}, type_="tRNA")
    far = _pred(1250, 1400, {3})  # held only by window 3, which wrote it
    score = candidate_scores([a, b, stray, far], METAS)
    assert score[0] == pytest.approx(2 * 1.5 - 1) and score[1] == pytest.approx(1.99 - 2)
    assert score[3] > 0
    counts: Counter = Counter()
    snapped = [(p, "") for p in (a, b, stray, trna, far)]
    out = [p for p, _ in select_genome(snapped, METAS, 3000, False, counts)]
    assert out == [a, trna, far]
    assert counts["selection_candidates"] == 4 and counts["selection_dropped"] == 2


@pytest.mark.shared
def test_selection_genome_end_to_end(tiny_model: Path, genome_pair, tmp_path: Path) -> None:  # noqa: F811
    """A tiny untrained model: ``--selection genome`` writes valid GFF3 whose CDS obey the rules
    and says so in its header; the default writes no ``selection=`` (its bytes are unchanged)."""
    model = tiny_model
    full, _ = genome_pair("phage")
    ((seqid, seq),) = read_fasta(full)
    n = 20_000  # the first 20 kb keep the two runs short
    fna = tmp_path / "phage20k.fna"
    fna.write_text(f">{seqid}\n{seq[:n]}\n")
    outs = {}
    for sel in ("genome", "votes"):  # in process: the CLI's own main, no second torch import
        outs[sel] = tmp_path / f"{sel}.gff3"
        args = ["--model", model, "--fasta", fna, "--out", outs[sel], "--max_new_tokens", "40"]
        args += ["--batch_size", "32", "--circular", "all", "--no_progress", "--selection", sel]
        assert annotate_main([str(a) for a in args]) == 0
        _validate(outs[sel])
    header = {
        sel: [x for x in p.read_text().splitlines() if "dna2gff annotate" in x][0]
        for sel, p in outs.items()
    }
    assert header["genome"].endswith(" selection=genome")
    assert "selection" not in header["votes"]
    cds = [f for f in read_gff3(outs["genome"]).features if f.type == "CDS"]
    lo = np.array([f.start - 1 for f in cds], dtype=np.int64)
    hi = np.array([f.end for f in cds], dtype=np.int64)
    plus = np.array([f.strand == "+" for f in cds], dtype=bool)
    assert not violations(lo, hi, plus, np.arange(len(cds)), length=n, circular=True)


def test_genome_selection_keeps_a_perfect_oracle_exact(genome) -> None:  # noqa: F811
    """On windows that are all right, selection changes nothing: every CDS, tRNA and rRNA of a
    synthetic genome (circular, with a plasmid) comes back exactly, origin included."""
    seqs = [(s.seqid, s.seq) for s in genome.sequences]
    opts = AnnotateOptions(batch_size=8, circular=("all",), progress=False, selection="genome")
    gff, _, summary = annotate_sequences(
        None, None, seqs, opts, W, TYPES, generate=PointerOracle(genome)
    )
    for rep in compare(_as_features(genome.features), _as_features(gff), TYPES):
        assert rep.n_ref > 0 and rep.exact.f1 == 1.0, rep
    assert summary.snap["selection_candidates"] > 0


def test_unknown_selection_is_refused() -> None:
    with pytest.raises(ConfigError, match="selection must be one of votes, genome"):
        AnnotateOptions(selection="best")


def test_predictions_snapped_onto_one_orf_pool_their_windows() -> None:
    """Two windows that wrote one gene with different starts, snapped onto the same ORF, are two
    votes for it under ``--selection genome``; ``votes`` keeps the old single-prediction merge."""
    from trainer.inference.annotate import _snap_all

    seq = "CCC" * 10 + "ATG" + "GCA" * 60 + "TAA" + "CCC" * 10  # the ORF is 31..216
    a, b = _pred(31, 216, {0}, prob=0.4), _pred(34, 216, {1}, prob=0.6)
    pooled = _snap_all([a, b], seq, False, AnnotateOptions(selection="genome"), Counter())
    votes = _snap_all([a, b], seq, False, AnnotateOptions(), Counter())
    assert [(p.start, p.end, p.windows, p.prob) for p, _ in pooled] == [
        (31, 216, frozenset({0, 1}), 0.6)
    ]
    assert [(p.start, p.windows) for p, _ in votes] == [(31, frozenset({1}))]
