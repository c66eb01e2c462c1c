"""benchmarks/learn_real.py: the genus split's rules on the real corpus, and a tiny end-to-end run.

The split tests read the real corpus table and its genomes (skipped when ../shared is absent); the
end-to-end run trains two steps of a tiny model on the phage and scores slices of the held-out
genomes, so every command of the benchmark runs once.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import learn_real  # noqa: E402

from baking.common.errors import ConfigError  # noqa: E402
from baking.formats.gff3 import read_gff3  # noqa: E402
from launch._cli import run_cli  # noqa: E402


@pytest.fixture
def corpus() -> list[learn_real.CorpusGenome]:
    rows = learn_real.read_corpus()
    missing = [g.fasta for g in rows if not g.fasta.is_file()]
    if missing:
        pytest.skip(f"shared data absent: {missing[0]}")
    return rows


def test_default_split_obeys_every_rule(corpus):
    split = learn_real.make_split(corpus, learn_real.DEFAULT_HELD_OUT)
    held_genera = {g.genus for g in split.held}
    assert len(split.held) >= 4
    assert all(g.annotation == "curated" for g in split.held)
    assert split.gc_span >= 25
    assert split.new_phyla  # at least one held-out phylum has no training genome
    assert not held_genera & {g.genus for g in split.train}  # a genus is on one side only
    assert len(split.train) + len(split.held) == len(corpus)
    # the corpus table's figures are the genomes' own: GC and sequence count from the FASTA
    for g in split.held:
        seqs = [s for _, s in learn_real.read_fasta(g.fasta)]
        bases = "".join(seqs).upper()
        gc = 100 * (bases.count("G") + bases.count("C")) / len(bases)
        assert abs(gc - g.gc) < 0.1, g.name
        assert len(seqs) == g.contigs, g.name


def test_held_out_genus_takes_its_relatives_along(corpus):
    # naming one Mycoplasma holds out both: a relative in training would measure memory
    names = [*learn_real.DEFAULT_HELD_OUT, "Mycoplasma_genitalium_G37"]
    split = learn_real.make_split(corpus, names)
    held = {g.name for g in split.held}
    assert {"Mycoplasma_genitalium_G37", "Mycoplasma_gallisepticum_Rlow"} <= held
    assert not any(g.genus == "Mycoplasma" for g in split.train)


@pytest.mark.parametrize(
    ("names", "why"),
    [
        # a RAST re-annotation (Prodigal's own calls) is never a held-out truth
        ((*learn_real.DEFAULT_HELD_OUT, "Yersinia_pestis_KIM"), "not curated"),
        (learn_real.DEFAULT_HELD_OUT[:3], "at least 4"),
        (
            ("C.crescentus", "Pseudomonas_fluorescens", "E.coli", "Bacillus_subtilis_BEST7003"),
            "GC spans 23.3 points",
        ),
        # GC span 41.2 but every phylum (Pseudomonadota, Bacillota) still has training genomes
        (
            ("Carsonella_ruddii_HT", "Wolbachia_wRi", "Staphylococcus_aureus_502A", "E.coli"),
            "every held-out phylum",
        ),
        (("Carsonella_ruddii_HT", "No_such_genome"), "not in the corpus"),
    ],
)
def test_a_split_that_breaks_a_rule_is_refused(corpus, names, why):
    with pytest.raises(ConfigError, match=why):
        learn_real.make_split(corpus, names)


def test_refused_split_is_one_error_line_and_exit_2(corpus, tmp_path, capsys):
    out = tmp_path / "out"
    code = run_cli(learn_real.main, ["--out", str(out), "--held_out", "E.coli,Yersinia_pestis_KIM"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error: held-out split:")
    assert not out.exists()


def test_annotate_is_given_no_annotation(corpus):
    split = learn_real.make_split(corpus, learn_real.DEFAULT_HELD_OUT)
    held = [learn_real.held_genome(g) for g in split.held]
    listing = learn_real.annotate_list(held)
    assert listing.splitlines()[0].split("\t") == ["name", "fasta", "transl_table"]
    for g in split.held:
        assert str(g.gff) not in listing and g.gff.name not in listing
    # a complete genome's one chromosome is circular, from the table and the FASTA alone
    assert all(len(h.circular) == 1 for h in held)


def test_curve_slice_keeps_only_features_inside(corpus, tmp_path):
    g = next(x for x in corpus if x.name == "Wolbachia_wRi")
    fna, gff = learn_real.write_slice(g, 50_000, tmp_path)
    seqs = list(learn_real.read_fasta(fna))
    assert sum(len(s) for _, s in seqs) == 50_000
    feats = read_gff3(gff).features
    assert feats and all(f.end <= 50_000 for f in feats)
    whole = [f for f in read_gff3(g.gff).features if f.type == "CDS" and f.end <= 50_000]
    assert sum(f.type == "CDS" for f in feats) == len(whole)


def test_rule_n_reads_each_genome_under_its_code(corpus):
    """M. genitalium's genes run through TGA: under code 11 most are no ORF at all, so the rule's
    N is only meaningful under the genome's own code 4."""
    from trainer.inference.orf_rule import score_min_codons

    myco = next(x for x in corpus if x.name == "Mycoplasma_genitalium_G37")
    assert myco.transl_table == 4
    n = learn_real.rule_min_codons([myco])
    own = score_min_codons([(myco.fasta, myco.gff)], transl_table=4)
    wrong = score_min_codons([(myco.fasta, myco.gff)], transl_table=11)
    assert own[n][0].f1 == max(s.f1 for s, _ in own.values())
    assert own[n][0].f1 > wrong[n][0].f1 + 0.2


TINY = [
    "--train",
    "phage_VT2-Sakai",
    "--steps",
    "2",
    "--probe_steps",
    "1",
    "--hidden_size",
    "32",
    "--num_layers",
    "1",
    "--num_heads",
    "2",
    "--intermediate_size",
    "64",
    "--vocab_size",
    "64",
    "--window",
    "600",
    "--stride",
    "600",
    "--overlap",
    "300",
    "--num_beams",
    "1",
    "--micro_batch_size",
    "4",
    "--warmup_steps",
    "1",
    "--curve_bp",
    "20000",
    "--score_bp",
    "30000",
]


@pytest.mark.slow  # ~20 subprocesses (init, bake, train, annotate, evaluate): ~30-60 s on 2 cores
def test_tiny_end_to_end_writes_the_table(corpus, tmp_path, capsys):
    out = tmp_path / "run"
    assert run_cli(learn_real.main, ["--out", str(out), *TINY]) == 0
    table = (out / "table.md").read_text()
    res = json.loads((out / "results.json").read_text())
    held = res["held"]
    assert len(held) == 4
    for name in held:  # one row per held-out genome, then the mean
        assert f"| {name} |" in table
    assert "| **mean** |" in table
    assert res["steps"] == 2 and [p["steps"] for p in res["curve"]] == [1, 2]
    assert set(res["final"]) == {
        "model (--selection votes, --adapt)",
        "ablation: no --adapt",
        "ablation: --selection genome",
        f"ablation: ORF layer N = rule's {res['rule_n']}",
    }
    main = res["final"]["model (--selection votes, --adapt)"]["genomes"]
    assert set(main) == set(held) == set(res["rule"]) == set(res["self_trained"])
    assert all("prodigal" in main[n] and "CDS" in main[n]["dna2gff"] for n in held)
    # annotate never saw an annotation file: no GFF3 on any annotate command line or list
    commands = (out / "commands.sh").read_text().splitlines()
    annotates = [c for c in commands if "launch/annotate.py" in c]
    assert len(annotates) == 2 + 4  # two curve points, the model and its three ablations

    def adapts(command: str) -> bool:  # the last of --adapt / --no-adapt wins, as in argparse
        flags = [w for w in command.split() if w in ("--adapt", "--no-adapt")]
        return bool(flags) and flags[-1] == "--adapt"

    # the curve points and the two ablations without it say so (a model may record adapt)
    assert all(any(w in c.split() for w in ("--adapt", "--no-adapt")) for c in annotates)
    assert sum(adapts(c) for c in annotates) == 2  # the model row and the min_orf ablation
    # the model row's decoding travels with the exported model (annotate's defaults)
    generation = json.loads((out / "run" / "export" / "generation_config.json").read_text())
    assert generation["adapt"] is True and generation["num_beams"] == 1  # TINY's
    assert generation["overlap"] == 300 and generation["selection"] == "votes"
    assert generation["min_orf_codons"] == res["min_orf_codons"]
    for c in annotates:
        listing = c.split("--genomes ")[1].split()[0]
        assert ".gff" not in c and ".gff" not in Path(listing).read_text()
    assert "| errors (CDS) |" in table
    assert "statistics alone (orf_rule --self_trained)" in table
    # the table is rewritten from results.json alone, the same
    (out / "table.md").unlink()
    assert run_cli(learn_real.main, ["--out", str(out), "--table_only", *TINY]) == 0
    assert (out / "table.md").read_text() == table
    # the exported model scores again alone, into a folder with the first run's files
    first = (out / "pred_final" / f"{held[0]}.gff3").read_bytes()
    again = ["--out", str(out), "--score_only", str(out / "run" / "export"), "--ablations", ""]
    assert run_cli(learn_real.main, [*again, *TINY]) == 0
    res2 = json.loads((out / "results.json").read_text())
    assert list(res2["final"]) == ["model (--selection votes, --adapt)"]
    assert res2["curve"] == res["curve"] and res2["steps"] == 2  # the training figures stay
    assert res2["rule_n"] == res["rule_n"] and "rule_n" not in res2["seconds"]  # not re-chosen
    assert (out / "pred_final" / f"{held[0]}.gff3").read_bytes() == first


def test_out_folder_of_something_else_is_refused(corpus, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "keep.txt").write_text("not the benchmark's\n")
    assert run_cli(learn_real.main, ["--out", str(out), *TINY]) == 2
    assert "not a learn_real folder" in capsys.readouterr().err
    assert (out / "keep.txt").is_file()


def test_table_only_refuses_a_foreign_results_file(corpus, tmp_path, capsys):
    (tmp_path / "results.json").write_text('{"something": "else"}\n')
    assert run_cli(learn_real.main, ["--out", str(tmp_path), "--table_only"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a learn_real results.json" in err[0]
    assert not (tmp_path / "table.md").exists()


def test_restrict_training_keeps_the_held_out_side(corpus):
    split = learn_real.make_split(corpus, learn_real.DEFAULT_HELD_OUT)
    small = learn_real.restrict_training(split, ["phage_VT2-Sakai"])
    assert small.held == split.held and [g.name for g in small.train] == ["phage_VT2-Sakai"]
    with pytest.raises(ConfigError, match="not on the training side"):
        learn_real.restrict_training(split, ["Wolbachia_wRi"])
