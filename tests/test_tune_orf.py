"""tune_orf: the ORF layer's N chosen per model on a genome, recorded, and used by annotate."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from baking.common.errors import ConfigError, InputError
from baking.evaluate.load import load_features
from baking.evaluate.metrics import compare
from baking.formats.gff3 import read_gff3
from baking.synthetic import SyntheticConfig, generate_genome, write_genome
from baking.target_format.grammar import target_vocabulary
from trainer.inference.annotate import AnnotateOptions, annotate
from trainer.inference.tune_orf import (
    TuneRow,
    check_candidates,
    choose,
    record_min_orf_codons,
    tune_min_orf_codons,
)
from trainer.model import Dna2GffModel
from trainer.model.config import Dna2GffConfig
from trainer.model.generation import load_decoding

ROOT = Path(__file__).resolve().parents[1]
TYPES = ["CDS", "tRNA", "rRNA"]
WINDOW = 600


@pytest.fixture(scope="module")
def genome(tmp_path_factory) -> tuple[Path, Path]:
    cfg = SyntheticConfig(seed=5, chromosome_length=9000, plasmid_lengths=(), rrna_operons=0)
    return write_genome(generate_genome(cfg), tmp_path_factory.mktemp("genome"), "syn5")


def _pointer_model(out: Path) -> Path:
    from trainer.tokens.tokenizer import add_annotation_tokens, save_tokenizer, train_dna_tokenizer

    rng = random.Random(0)
    tok = train_dna_tokenizer(["".join(rng.choice("ACGT") for _ in range(4000))] * 2, 64)
    add_annotation_tokens(tok, target_vocabulary(TYPES))
    save_tokenizer(tok, out / "tok")
    cfg = Dna2GffConfig(
        vocab_size=tok.get_vocab_size(True),
        hidden_size=32,
        num_encoder_layers=2,
        num_decoder_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        hidden_dropout=0.0,
        window_len=WINDOW,
        feature_types=TYPES,
        pointer_context_bp=5,
    )
    torch.manual_seed(0)
    Dna2GffModel(cfg).save_pretrained(out / "model", out / "tok")
    return out / "model"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return _pointer_model(tmp_path_factory.mktemp("pointer"))


def _whole_cds_codons(gff: Path) -> list[int]:
    feats = read_gff3(gff).features
    return [
        (f.end - f.start + 1) // 3
        for f in feats
        if f.type == "CDS" and ("partial", "true") not in f.attributes
    ]


def test_choose_prefers_stop_then_exact_then_longer() -> None:
    def row(n: int, exact: float, stop: float) -> TuneRow:
        return TuneRow(n, exact, stop, 0, 0, 0.0)

    assert choose([row(30, 0.9, 0.80), row(60, 0.1, 0.85)]) == 60
    assert choose([row(30, 0.7, 0.85), row(60, 0.6, 0.85)]) == 30
    # differences below 0.001 are noise: the longer N, the rule's prior, wins
    assert choose([row(30, 0.70001, 0.85), row(90, 0.7, 0.8500004)]) == 90
    assert check_candidates([90, 30, 90]) == (30, 90)
    for bad in ([], [1, 30]):
        with pytest.raises(ConfigError):
            check_candidates(bad)


def test_tune_scores_each_n_as_annotate_and_evaluate_do(model_dir, genome, tmp_path) -> None:
    fna, gff = genome
    opts = AnnotateOptions(progress=False, overlap=300)
    result = tune_min_orf_codons(model_dir, fna, gff, (40, 150), opts)
    assert [r.min_orf_codons for r in result.rows] == [40, 150]
    assert result.chosen == choose(result.rows)
    ref, lengths = load_features(gff)
    for row in result.rows:
        out = tmp_path / f"n{row.min_orf_codons}.gff3"
        annotate(model_dir, fna, out, replace(opts, min_orf_codons=row.min_orf_codons))
        pred, _ = load_features(out)
        (cds,) = compare(ref, pred, ["CDS"], lengths)
        assert (row.exact_f1, row.stop_f1, row.predicted) == (cds.exact.f1, cds.stop.f1, cds.n_pred)
        assert row.reference == cds.n_ref == sum(f.type == "CDS" for f in ref)
    assert result.rows[0].predicted > 0, "the untrained model calls no CDS: the test shows nothing"


def test_recorded_n_is_annotates_default_and_the_option_still_wins(
    model_dir, genome, tmp_path
) -> None:
    fna, _ = genome
    model = tmp_path / "model"
    model.mkdir()
    for f in model_dir.iterdir():
        (model / f.name).write_bytes(f.read_bytes())
    opts = AnnotateOptions(progress=False, overlap=300)
    annotate(model, fna, tmp_path / "default.gff3", opts)
    assert min(_whole_cds_codons(tmp_path / "default.gff3")) < 150, "nothing short to exclude"
    record_min_orf_codons(model, 150)
    assert load_decoding(model).min_orf_codons == 150  # generation_config.json
    annotate(model, fna, tmp_path / "recorded.gff3", opts)
    whole = _whole_cds_codons(tmp_path / "recorded.gff3")
    assert whole and min(whole) >= 150
    explicit = AnnotateOptions(progress=False, overlap=300, min_orf_codons=30)
    annotate(model, fna, tmp_path / "explicit.gff3", explicit)
    assert (tmp_path / "explicit.gff3").read_bytes() == (tmp_path / "default.gff3").read_bytes()


def test_config_refuses_a_bad_n(model_dir, tmp_path) -> None:
    cfg = Dna2GffConfig.load(model_dir)
    with pytest.raises(ConfigError, match="min_orf_codons"):
        Dna2GffConfig.from_dict({**cfg.to_dict(), "min_orf_codons": 1})
    bad = tmp_path / "config.json"
    bad.write_text(json.dumps({**cfg.to_dict(), "min_orf_codons": "90"}))
    with pytest.raises(InputError, match="min_orf_codons"):
        Dna2GffConfig.load(bad)


def _cli(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "launch" / "tune_orf.py"), *map(str, args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )


def test_cli_records_the_choice_and_refuses_bad_input(model_dir, genome, tmp_path) -> None:
    fna, gff = genome
    model = tmp_path / "model"
    model.mkdir()
    for f in model_dir.iterdir():
        (model / f.name).write_bytes(f.read_bytes())
    before = (model / "config.json").read_bytes()
    base = ("--model", model, "--fasta", fna, "--gff", gff, "--overlap", "300")
    res = _cli(*base, "--candidates", "40,150", "--no_record", "--json")
    assert res.returncode == 0, res.stderr
    table = json.loads(res.stdout)
    assert [r["min_orf_codons"] for r in table["rows"]] == [40, 150]
    assert (model / "config.json").read_bytes() == before
    assert load_decoding(model) is None
    res = _cli(*base, "--candidates", "40,150")
    assert res.returncode == 0, res.stderr
    assert "<- chosen" in res.stdout
    assert load_decoding(model).min_orf_codons == table["chosen"]
    assert load_decoding(model).overlap == 300  # the decoding it was tuned under, with it
    card = (model / "README.md").read_text()
    assert f"tune_orf CDS stop F1 on {fna.name} (N={table['chosen']})" in card

    res = _cli(*base, "--candidates", "1,40")
    assert res.returncode == 2 and "must be >= 2" in res.stderr
    res = _cli(*base, "--candidates", "a,b")
    assert res.returncode == 2 and "comma-separated list of integers" in res.stderr
    res = _cli("--model", model, "--fasta", tmp_path / "none.fna", "--gff", gff)
    assert res.returncode == 2 and "none.fna" in res.stderr
    other = tmp_path / "other.fna"
    other.write_text(">NZ_OTHER.1\n" + "ACGT" * 500 + "\n")
    res = _cli("--model", model, "--fasta", other, "--gff", gff)
    assert res.returncode == 2 and "error" in res.stderr.lower()
    digits = _pointer_model(tmp_path / "digits")  # a folder of the retired digit form
    config = json.loads((digits / "config.json").read_text())
    (digits / "config.json").write_text(json.dumps({**config, "coordinate_form": "digits"}))
    res = _cli("--model", digits, "--fasta", fna, "--gff", gff)
    assert res.returncode == 2 and "coordinate_form='digits' is retired" in res.stderr
    assert load_decoding(model).min_orf_codons == table["chosen"]
