"""The model as a Hugging Face model: config, Auto classes, folders old and new, hub, card, decoding."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest
import torch
import transformers

from baking.common.errors import ConfigError, InputError
from baking.synthetic import SyntheticConfig, generate_genome, write_genome
from baking.target_format.grammar import target_vocabulary
from trainer.inference.annotate import AnnotateOptions, annotate, with_decoding
from trainer.model import Dna2GffConfig, Dna2GffModel
from trainer.model.card import CardFacts, TrainingGenome, facts_from_manifest, read_card_facts
from trainer.model.generation import (
    DecodingSettings,
    load_decoding,
    record_decoding,
    save_decoding,
)

TYPES = ["CDS", "tRNA", "rRNA"]
WINDOW = 600
HUB_ID = "dna2gff-test/tiny"


def _tokenizer(out: Path) -> Path:
    from trainer.tokens.tokenizer import add_annotation_tokens, save_tokenizer, train_dna_tokenizer

    rng = random.Random(0)
    tok = train_dna_tokenizer(["".join(rng.choice("ACGT") for _ in range(4000))] * 2, 64)
    add_annotation_tokens(tok, target_vocabulary(TYPES))
    save_tokenizer(tok, out)
    return out


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """A tiny trained-looking pointer model folder (the config's defaults, small sizes)."""
    root = tmp_path_factory.mktemp("hf")
    tok = _tokenizer(root / "tok")
    from trainer.tokens.tokenizer import load_tokenizer

    cfg = Dna2GffConfig(
        vocab_size=load_tokenizer(tok).get_vocab_size(True),
        hidden_size=32,
        num_encoder_layers=2,
        num_decoder_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        hidden_dropout=0.0,
        window_len=WINDOW,
        feature_types=TYPES,
    )
    torch.manual_seed(0)
    Dna2GffModel(cfg).save_pretrained(root / "model", tok)
    return root / "model"


@pytest.fixture(scope="module")
def genome(tmp_path_factory) -> tuple[Path, Path]:
    cfg = SyntheticConfig(seed=7, chromosome_length=4000, plasmid_lengths=(), rrna_operons=0)
    return write_genome(generate_genome(cfg), tmp_path_factory.mktemp("genome"), "syn7")


def _batch(vocab: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, vocab, (2, 9), generator=g)
    dec = torch.randint(5, vocab, (2, 4), generator=g)
    return ids, torch.ones_like(ids), dec


def _copy(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def test_config_is_hf_and_its_defaults_are_the_recommended_model() -> None:
    cfg = Dna2GffConfig()
    assert isinstance(cfg, transformers.PreTrainedConfig) and cfg.model_type == "dna2gff"
    assert (cfg.coordinate_form, cfg.pointer_context_bp, cfg.encoder_aux_weight) == (
        "pointer",
        20,
        0.5,
    )
    assert (cfg.vocab_size, cfg.hidden_size, cfg.num_encoder_layers) == (4096, 768, 12)
    # init_model's flags take their defaults from the config: the command and the library agree
    from launch.init_model import build_parser

    args = build_parser().parse_args([])
    for name in ("pointer_context_bp", "encoder_aux_weight", "base_aux_weight"):
        assert getattr(args, name) == getattr(cfg, name), name
    for name in ("num_experts", "moe_top_k", "moe_capacity_factor", "moe_aux_loss_coef"):
        assert getattr(args, name) == getattr(cfg, name), name
    with pytest.raises(ConfigError, match="unknown config field.*hiden_size"):
        Dna2GffConfig(hiden_size=3)
    with pytest.raises(ConfigError, match="model_type must be 'dna2gff'"):
        Dna2GffConfig.from_dict({"model_type": "bert"})


def test_auto_classes_load_the_same_model(folder) -> None:
    assert isinstance(transformers.AutoConfig.from_pretrained(folder), Dna2GffConfig)
    ours = Dna2GffModel.from_pretrained(folder).eval()
    auto = transformers.AutoModel.from_pretrained(folder).eval()
    assert type(auto) is Dna2GffModel and auto.config == ours.config
    assert auto.lm_head.weight is auto.embeddings.word_embeddings.weight  # HF's tie
    ids, mask, dec = _batch(ours.config.vocab_size)
    with torch.no_grad():
        assert torch.equal(ours(ids, mask, dec).logits, auto(ids, mask, dec).logits)
    written = json.loads((folder / "config.json").read_text())
    assert written["model_type"] == "dna2gff" and "transformers_version" in written
    with pytest.raises(InputError, match="never run code"):
        transformers.AutoModel.from_pretrained(folder, trust_remote_code=True)
    with pytest.raises(ConfigError, match="does not take device_map"):
        Dna2GffModel.from_pretrained(folder, device_map="auto")
    # what AutoModel passes of its own accord (transformers 5.25: subfolder="") is no request;
    # a subfolder actually asked for is refused in one line, not silently ignored
    assert Dna2GffModel.from_pretrained(folder, subfolder="").config == ours.config
    with pytest.raises(ConfigError, match="does not take subfolder"):
        Dna2GffModel.from_pretrained(folder, subfolder="m")


def test_folders_written_before_load_as_they_were(folder, tmp_path) -> None:
    """A config.json of the dataclass era (no HF keys; an older one also lacks the keys added
    later) means the old defaults, so the folder loads with the same weights and logits."""
    old = _copy(folder, tmp_path / "old")
    data = json.loads((old / "config.json").read_text())
    del data["transformers_version"]
    (old / "config.json").write_text(json.dumps(data))
    ids, mask, dec = _batch(data["vocab_size"])
    with torch.no_grad():
        want = Dna2GffModel.from_pretrained(folder).eval()(ids, mask, dec).logits
        got = transformers.AutoModel.from_pretrained(old).eval()(ids, mask, dec).logits
    assert torch.equal(want, got)
    # a config of that era without the later keys: no pointer context, no encoder head
    for key in ("pointer_context_bp", "encoder_aux_weight"):
        del data[key]
    legacy = Dna2GffConfig.from_dict(data)
    assert (legacy.coordinate_form, legacy.pointer_context_bp, legacy.encoder_aux_weight) == (
        "pointer",
        0,
        0.0,
    )
    # without coordinate_form it meant the digit form, which is retired: refused in one line
    del data["coordinate_form"]
    with pytest.raises(ConfigError, match="retired"):
        Dna2GffConfig.from_dict(data)
    # a dict that is not such a file (no ``extra``) gets today's defaults
    partial = Dna2GffConfig.from_dict({"vocab_size": 100})
    assert (partial.coordinate_form, partial.pointer_context_bp) == ("pointer", 20)


def test_save_pretrained_then_annotate_writes_the_same_gff3(folder, genome, tmp_path) -> None:
    fna, _ = genome
    again = tmp_path / "copy" / folder.name  # same name: the GFF3 header names the folder
    transformers.AutoModel.from_pretrained(folder).save_pretrained(again, tokenizer_dir=folder)
    opts = AnnotateOptions(progress=False, overlap=300)
    annotate(folder, fna, tmp_path / "a.gff3", opts)
    annotate(again, fna, tmp_path / "b.gff3", opts)
    assert (tmp_path / "a.gff3").read_bytes() == (tmp_path / "b.gff3").read_bytes()
    assert "##gff-version 3" in (tmp_path / "a.gff3").read_text()


def _cached_on_hub(folder: Path, cache: Path, commit: str) -> Path:
    """``folder`` laid out in a Hugging Face cache as ``HUB_ID``'s ``main`` at ``commit``."""
    repo = cache / ("models--" + HUB_ID.replace("/", "--"))
    _copy(folder, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return cache


def test_hub_id_loads_from_the_cache_and_fails_fast_offline(folder, tmp_path, monkeypatch) -> None:
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cache = _cached_on_hub(folder, tmp_path / "cache", "0123456789abcdef0123456789abcdef01234567")
    model = Dna2GffModel.from_pretrained(HUB_ID, cache_dir=str(cache))
    assert model.config == Dna2GffConfig.load(folder)
    t0 = time.perf_counter()
    with pytest.raises(InputError) as err:
        Dna2GffModel.from_pretrained("nobody/no-such-dna2gff-model", cache_dir=str(cache))
    assert time.perf_counter() - t0 < 10
    line = str(err.value)
    assert "\n" not in line and line.startswith("nobody/no-such-dna2gff-model: ")
    assert "HF_HUB_OFFLINE=1" in line
    with pytest.raises(InputError, match="model folder not found"):
        Dna2GffModel.from_pretrained(tmp_path / "nowhere")


def test_push_to_hub_uploads_the_saved_folder_with_its_card(folder, monkeypatch) -> None:
    import huggingface_hub
    from huggingface_hub.hf_api import RepoUrl

    uploaded: dict = {}

    def create_repo(self, repo_id, **kwargs):
        return RepoUrl(f"https://huggingface.co/{repo_id}")

    def create_commit(self, repo_id, operations, **kwargs):
        uploaded["repo"] = repo_id
        uploaded["files"] = {
            op.path_in_repo: Path(op.path_or_fileobj).read_bytes() for op in operations
        }
        uploaded["message"] = kwargs.get("commit_message")
        return "commit"

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "create_commit", create_commit)
    model = Dna2GffModel.from_pretrained(folder)
    model.decoding = DecodingSettings(num_beams=3, overlap=256)
    model.push_to_hub(HUB_ID, tokenizer_dir=folder, token="x")
    assert uploaded["repo"] == HUB_ID
    files = uploaded["files"]
    assert sorted(files) == [
        "README.md",
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    assert files["config.json"] == (folder / "config.json").read_bytes()
    assert json.loads(files["generation_config.json"])["num_beams"] == 3
    card = files["README.md"].decode()
    assert card.startswith("---\nlibrary_name: dna2gff") and "Intended use and limits" in card


def test_generation_config_is_hf_readable_and_annotates_defaults(folder, tmp_path) -> None:
    m = _copy(folder, tmp_path / "m")
    assert load_decoding(m) is None  # a folder without one keeps annotate's own defaults
    opts = AnnotateOptions(progress=False)
    assert with_decoding(opts, None) is opts
    save_decoding(m, DecodingSettings(num_beams=3, overlap=1024, min_orf_codons=90))
    record_decoding(m, selection="genome")
    hf = transformers.GenerationConfig.from_pretrained(m)
    assert hf.num_beams == 3 and hf.overlap == 1024 and hf.selection == "genome"
    settings = load_decoding(m)
    assert settings == DecodingSettings(
        num_beams=3, overlap=1024, min_orf_codons=90, selection="genome"
    )
    # the command line: a flag given wins, the rest come from the model
    cli = with_decoding(AnnotateOptions(num_beams=5), settings, given=["num_beams"])
    assert (cli.num_beams, cli.overlap, cli.selection, cli.min_orf_codons) == (
        5,
        1024,
        "genome",
        90,
    )
    # the library: every option is the caller's; only an unset ORF minimum is the model's
    lib = with_decoding(AnnotateOptions(), settings)
    assert (lib.num_beams, lib.overlap, lib.min_orf_codons) == (1, None, 90)
    (m / "generation_config.json").write_text('{"num_beams": 0}')
    with pytest.raises(InputError, match=r"generation_config\.json: num_beams must be"):
        load_decoding(m)
    (m / "generation_config.json").write_text('{"adapt": "yes"}')
    with pytest.raises(InputError, match=r"generation_config\.json: adapt must be true or false"):
        load_decoding(m)
    (m / "generation_config.json").write_text('{"beams": 3}')
    with pytest.raises(InputError, match="unknown decoding setting"):
        load_decoding(m)


def _header(gff: Path) -> str:
    return next(x for x in gff.read_text().splitlines() if x.startswith("# dna2gff annotate"))


def test_annotate_cli_takes_the_models_settings_and_flags_win(folder, genome, tmp_path) -> None:
    from launch.annotate import main

    fna, _ = genome
    m = _copy(folder, tmp_path / "m")
    save_decoding(m, DecodingSettings(overlap=300, min_orf_codons=40))
    plain = m.parent / "plain"
    _copy(folder, plain / "m")
    run = ["--fasta", str(fna), "--no_progress", "--circular", "all"]
    assert main(["--model", str(m), "--out", str(tmp_path / "rec.gff3"), *run]) == 0
    flags = ["--overlap", "300", "--min_orf_codons", "40"]
    out = tmp_path / "flags.gff3"
    assert main(["--model", str(plain / "m"), "--out", str(out), *run, *flags]) == 0
    assert (tmp_path / "rec.gff3").read_bytes() == out.read_bytes()
    assert "min_orf_codons=40" in _header(tmp_path / "rec.gff3")
    over = ["--min_orf_codons", "90"]
    assert main(["--model", str(m), "--out", str(tmp_path / "over.gff3"), *run, *over]) == 0
    assert "min_orf_codons=90" in _header(tmp_path / "over.gff3")
    # --adapt recorded by the benchmark that scored the model: on by default, --no-adapt wins
    record_decoding(m, adapt=True)
    assert main(["--model", str(m), "--out", str(tmp_path / "adapt.gff3"), *run]) == 0
    assert "adapt=True" in _header(tmp_path / "adapt.gff3")
    off = ["--no-adapt"]
    assert main(["--model", str(m), "--out", str(tmp_path / "off.gff3"), *run, *off]) == 0
    assert "adapt=True" not in _header(tmp_path / "off.gff3")
    assert (tmp_path / "off.gff3").read_bytes() == out.read_bytes()


def test_model_card_facts_from_the_manifest(tmp_path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    manifest = {
        "genomes": {
            "E.coli": {
                "status": "ok",
                "bp": 4641652,
                "transl_table": 11,
                "samples": {"train": 7000, "val": 700},
                "features": {"CDS": 4300, "tRNA": 86},
            },
            "M.genitalium": {"status": "ok", "bp": 580076, "transl_table": 4, "samples": {}},
            "broken": {"status": "failed"},
        }
    }
    (data / "manifest.json").write_text(json.dumps(manifest))
    facts = facts_from_manifest(data)
    assert [g.name for g in facts.genomes] == ["E.coli", "M.genitalium"]
    assert facts.genomes[0] == TrainingGenome("E.coli", 4641652, 7000, 700, 11, manifest["genomes"]["E.coli"]["features"])  # fmt: skip
    from trainer.model.card import render_card, write_card

    cfg = Dna2GffConfig(
        window_len=2000, feature_types=TYPES, source_checkpoint="zhihan1996/DNABERT-2-117M"
    )
    facts.scores["CDS exact F1"] = 0.43
    text = render_card(cfg, DecodingSettings(num_beams=3), facts)
    for want in ("base_model: zhihan1996/DNABERT-2-117M", "| E.coli | 4641652 | 7000 | 700 | 11 |",
                 "Genetic codes (NCBI transl_table): 4, 11.", "- num_beams: 3",
                 "| CDS exact F1 | 0.43 |", "window length: 2000 bp"):  # fmt: skip
        assert want in text, want
    write_card(tmp_path, cfg, None, facts)
    assert read_card_facts(tmp_path) == facts  # the facts ride in the card, for a later update
    assert read_card_facts(tmp_path / "none") is None
    assert CardFacts.from_json(json.loads(facts.to_json())) == facts


def test_export_writes_the_card_from_the_data_manifest(folder, tmp_path, monkeypatch) -> None:
    """The export (one process; ZeRO's fp32 gather stubbed out) carries a card naming the
    training genomes the data folder's manifest counts, and the model's decoding settings."""
    import deepspeed.utils

    from trainer.train.export import export_model, export_scores

    monkeypatch.setattr(deepspeed.utils, "safe_get_full_fp32_param", lambda p: None)
    data = tmp_path / "data"
    data.mkdir()
    genome = {"status": "ok", "bp": 9000, "transl_table": 4, "samples": {"train": 30, "val": 3}}
    (data / "manifest.json").write_text(json.dumps({"genomes": {"syn5": genome}}))

    class Engine:
        module = Dna2GffModel.from_pretrained(folder)

    Engine.module.decoding = DecodingSettings(num_beams=3)
    scores = export_scores(30, 1.23456)
    out = export_model(
        Engine(), tmp_path / "export", tokenizer_dir=folder, rank=0, data_dir=data, scores=scores
    )
    card = (out / "README.md").read_text()
    assert "| validation loss (step 30) | 1.2346 |" in card
    assert export_scores(30, None) == {}
    assert "| syn5 | 9000 | 30 | 3 | 4 |" in card and "- num_beams: 3" in card
    assert read_card_facts(out).genomes[0].transl_table == 4
    assert load_decoding(out) == DecodingSettings(num_beams=3)
    reloaded = Dna2GffModel.from_pretrained(out)
    assert reloaded.card == read_card_facts(out)  # a later save keeps the card's facts


def test_annotate_cli_takes_a_hub_id(folder, genome, tmp_path, monkeypatch, capsys) -> None:
    """``annotate --model owner/name`` reads the model from the HF cache (offline here) and writes
    the features the local folder gives; an id that is neither cached nor a folder is one line."""
    import huggingface_hub.constants as hub_constants

    from launch.annotate import main

    cache = _cached_on_hub(folder, tmp_path / "cache", "89abcdef0123456789abcdef0123456789abcdef")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)  # no local folder named like the id
    fna, _ = genome
    run = ["--fasta", str(fna), "--no_progress", "--circular", "all"]
    assert main(["--model", HUB_ID, "--out", "hub.gff3", *run]) == 0
    assert main(["--model", str(folder), "--out", "local.gff3", *run]) == 0

    def features(path: str) -> list[str]:
        return [ln for ln in Path(path).read_text().splitlines() if not ln.startswith("#")]

    assert features("hub.gff3") and features("hub.gff3") == features("local.gff3")
    capsys.readouterr()
    assert main(["--model", "nobody/no-such-model", "--out", "x.gff3", *run]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and "nobody/no-such-model" in err[0] and "HF_HUB_OFFLINE=1" in err[0]
    assert not Path("x.gff3").exists()
