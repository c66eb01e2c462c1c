"""Per-genome genetic code carried bake -> train -> annotate (issue 17): a code-4 genome's TGA is
read through, never a stop -- in the baked metadata, the training loss's ORF sites, validation's
decoding and annotate's ORF layer; plus the real code-4 genome M. genitalium."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from bake_helpers import output_files, run_bake
from test_pointer_model import TYPES, RandomLogits, _config, tok  # noqa: F401 (tok: a fixture)

from baking import synthetic
from baking.bake import bake
from baking.bake_config import BakeConfig
from baking.common.errors import InputError
from baking.formats.fasta import reverse_complement
from baking.formats.gff3 import read_gff3
from baking.genome_list import read_genome_list as annotate_genome_list
from baking.orfs import genetic_code, is_valid_orf
from baking.target_format.grammar import WindowFeature
from baking.target_format.pointers import OrfSites, decode_pointer_target
from baking.target_format.sample_features import features_from_json
from baking.target_format.transl_table import resolve_transl_table
from launch.bake_data import read_genome_list
from trainer.fixtures import SHARED_GENOMES

CODE4, CODE11 = genetic_code(4), genetic_code(11)
REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO / "benchmarks" / "shared_corpus.tsv"


def _sense(dna: str, f: WindowFeature) -> str:
    s = dna[f.start : f.end + 1]
    return s if f.strand == "+" else reverse_complement(s)


def _reads_through_tga(dna: str, f: WindowFeature) -> bool:
    """A whole CDS of the window with an in-frame TGA before its stop codon."""
    if f.type != "CDS" or f.cut_left or f.cut_right:
        return False
    s = _sense(dna, f)
    return any(s[i : i + 3] == "TGA" for i in range(3, len(s) - 3, 3))


def _small(seed: int, code: int) -> synthetic.SyntheticConfig:
    return synthetic.SyntheticConfig(
        seed=seed,
        transl_table=code,
        chromosome_length=12_000,
        plasmid_lengths=(),
        mean_protein_codons=100,
        min_protein_codons=40,
        max_protein_codons=200,
        trna_count=2,
        rrna_operons=0,
    )


# ------------------------------------------------------------------------------------- baking


def test_genome_list_code_column_header_and_refusals(tmp_path: Path) -> None:
    plain = tmp_path / "plain.tsv"
    plain.write_text("A\ta.fna\ta.gff\nB\tb.fna\tb.gff\t4\nC\tc.fna\tc.gff\t-\n")
    assert [s.transl_table for s in read_genome_list(plain)] == [None, 4, None]
    assert [s.transl_table for s in read_genome_list(plain, 11)] == [11, 4, 11]
    headed = tmp_path / "headed.tsv"  # columns by name; other columns left to other tools
    headed.write_text(
        "# corpus\nname\tgff\tannotation\tfasta\ttransl_table\n"
        "A\ta.gff\tcurated\ta.fna\t4\nB\tb.gff\trast\tb.fna\t\n"
    )
    specs = read_genome_list(headed)
    assert [(s.name, Path(s.fasta).name, Path(s.gff).name, s.transl_table) for s in specs] == [
        ("A", "a.fna", "a.gff", 4),
        ("B", "b.fna", "b.gff", None),
    ]
    for text, line, why in [
        ("A\ta.fna\ta.gff\t5\n", 1, "transl_table=5 is not supported"),
        ("# x\nA\ta.fna\ta.gff\tfour\n", 2, "not a number"),
        ("A\ta.fna\ta.gff\t4\textra\n", 1, "expected 3 columns"),
        ("name\tfasta\tcode\nA\ta.fna\t4\n", 1, "header lacks column(s) gff"),
    ]:
        bad = tmp_path / "bad.tsv"
        bad.write_text(text)
        with pytest.raises(InputError) as exc:
            read_genome_list(bad)
        assert exc.value.line == line and why in str(exc.value), str(exc.value)


def _gff(path: Path, tables: list[str | None]) -> Path:
    lines = ["##gff-version 3", "##sequence-region s 1 3000"]
    for i, t in enumerate(tables):
        extra = f";transl_table={t}" if t else ""
        lines.append(f"s\tx\tCDS\t{100 * i + 1}\t{100 * i + 90}\t.\t+\t0\tID=c{i}{extra}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_code_from_list_else_gff_else_11_and_conflicts_name_the_line(tmp_path: Path) -> None:
    def resolve(listed: int | None, tables: list[str | None]) -> tuple[int, str]:
        gff = _gff(tmp_path / "a.gff", tables)
        return resolve_transl_table(listed, read_gff3(gff).features, gff)

    assert resolve(None, [None, "4", "4"]) == (4, "gff")
    assert resolve(None, [None, None]) == (11, "default")
    assert resolve(4, [None, None]) == (4, "list")
    assert resolve(4, ["4"]) == (4, "list")
    with pytest.raises(InputError) as exc:  # lines: 2 headers, then c0 on line 3
        resolve(None, ["4", None, "11"])
    assert exc.value.line == 5 and "line 3 says transl_table=4" in str(exc.value)
    with pytest.raises(InputError) as exc:
        resolve(11, [None, "4"])
    assert exc.value.line == 4 and "the genome list gives code 11" in str(exc.value)


def test_bake_refuses_a_code_the_gff_contradicts_and_writes_nothing(tmp_path: Path) -> None:
    fna, gff = synthetic.write_genome(synthetic.generate_genome(_small(3, 4)), tmp_path, "syn4")
    listing = tmp_path / "list.tsv"
    listing.write_text(f"syn4\t{fna.name}\t{gff.name}\t11\n")
    out = tmp_path / "out"
    run = run_bake("--genomes", listing, out, "--no_progress")
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert run.returncode == 2 and len(errors) == 1 and "Traceback" not in run.stderr, run.stderr
    assert errors[0].startswith(f"error: {gff}:7: transl_table=4 but the genome list gives code 11")
    assert output_files(out) == []


def test_synthetic_code4_genes_read_through_tga() -> None:
    g = synthetic.generate_genome(_small(5, 4))
    seq = g.sequences[0].seq
    cds = g.features_of("CDS")
    senses = [synthetic.feature_sequence(seq, f.start, f.end, f.strand) for f in cds]
    assert {f.attr("transl_table") for f in cds} == {"4"}
    assert all(synthetic.orf_problems(s, 4) == [] for s in senses)
    assert all(s[-3:] != "TGA" for s in senses)
    through = sum(any(s[i : i + 3] == "TGA" for i in range(3, len(s) - 3, 3)) for s in senses)
    broken11 = sum(bool(synthetic.orf_problems(s, 11)) for s in senses)
    assert through >= len(cds) // 2 and broken11 == through, (through, broken11, len(cds))


# ------------------------------------------------------------------------------------ training


def _bake_pair(tmp_path: Path) -> Path:
    """A code-4 genome (code from its GFF3's transl_table=4) and a code-11 one (from the list)."""
    g4 = synthetic.write_genome(synthetic.generate_genome(_small(5, 4)), tmp_path, "syn4")
    g11 = synthetic.write_genome(synthetic.generate_genome(_small(6, 11)), tmp_path, "syn11")
    listing = tmp_path / "list.tsv"
    listing.write_text(
        "name\tfasta\tgff\ttransl_table\n"
        f"syn4\t{g4[0].name}\t{g4[1].name}\t-\n"
        f"syn11\t{g11[0].name}\t{g11[1].name}\t11\n"
    )
    out = tmp_path / "baked"
    cfg = BakeConfig(window_len=1000, types=tuple(TYPES), progress=False, rc="both")
    manifest, _ = bake(read_genome_list(listing), cfg, out)
    assert manifest is not None
    assert {
        n: (g["transl_table"], g["transl_table_source"]) for n, g in manifest.genomes.items()
    } == {
        "syn4": (4, "gff"),
        "syn11": (11, "list"),
    }
    return out


def test_code4_is_carried_from_bake_into_the_training_orf_sites(tmp_path: Path, tok) -> None:  # noqa: F811
    from trainer.data.examples import ExampleBuilder, build_example
    from trainer.data.loader import TokenIds, first_samples, split_shards
    from trainer.tokens.tokenizer import save_tokenizer

    out = _bake_pair(tmp_path)
    samples = first_samples(split_shards(out, "train"), 10_000)
    metas = [json.loads(s["json"]) for s in samples]
    assert {m["genome"]: m["transl_table"] for m in metas} == {"syn4": 4, "syn11": 11}
    save_tokenizer(tok, tmp_path / "tok")
    v = tok.get_vocab_size(True)
    encoder = ExampleBuilder(  # the train default: --constrained_loss orf, --transl_table 11
        str(tmp_path / "tok"),
        TokenIds(1, 2, 3),
        4096,
        512,
        vocab_size=v,
        feature_types=TYPES,
        constrain=CODE11,
    )
    ids = encoder.token_ids
    through = checked = 0
    by_code: dict[int, object] = {}
    for s, meta in zip(samples, metas):
        dna = s["dna.txt"].decode().upper()
        feats = features_from_json(s["features.json"], len(dna))
        code = genetic_code(meta["transl_table"])
        assert encoder.sample_constraint(s) == code
        sites = OrfSites(dna, code.starts, code.stops)
        for f in feats:  # every gold CDS is an ORF piece under its own genome's code
            if f.type == "CDS":
                checked += 1
                assert sites.feature_ok(f), (meta, f)
        if meta["transl_table"] != 4 or not any(_reads_through_tga(dna, f) for f in feats):
            by_code.setdefault(meta["transl_table"], s)
            continue
        through += 1
        by_code.setdefault(4, s)
        sites11 = OrfSites(dna, CODE11.starts, CODE11.stops)
        assert not all(sites11.feature_ok(f) for f in feats if f.type == "CDS")
        got = encoder.build(s)
        kw = dict(
            tokenizer=tok,
            token_ids=ids,
            bos=1,
            eos=2,
            max_src=4096,
            vocab_size=v,
            with_encoder_labels=False,
            feature_types=TYPES,
        )
        under4 = build_example(dna, feats, constrain=CODE4, **kw)
        under11 = build_example(dna, feats, constrain=CODE11, **kw)  # falls back: grammar only
        assert got.allowed == under4.allowed != under11.allowed
    assert through >= 5 and checked > 40, (through, checked)
    batch = encoder.collate([encoder.build(by_code[4]), encoder.build(by_code[11])])
    allowed, labels = batch["decoder_allowed"], batch["labels"]
    for i in range(2):  # a mixed batch: every gold label is allowed under its own code
        for t in range(labels.shape[1]):
            if labels[i, t] >= 0:
                assert allowed[i, t, labels[i, t]]
    bad = dict(by_code[4], json=b'{"transl_table": 5}', __key__="k", __shard__="x.tar")
    with pytest.raises(InputError, match="x.tar: k: json: transl_table=5 is not a known code"):
        encoder.build(bad)


def test_validation_decodes_each_window_under_its_own_code(tok) -> None:  # noqa: F811
    from trainer.train.validation import _decode_by_code, window_code

    s4 = {"json": b'{"transl_table": 4}'}
    assert window_code(s4, CODE11) == CODE4
    assert window_code({"json": b"{}"}, CODE11) == CODE11  # baked before codes were recorded
    assert window_code(s4, None) is None  # no ORF-constrained loss: no ORF layer
    g = synthetic.generate_genome(_small(5, 4))
    seq = g.sequences[0].seq
    windows = [seq[a : a + 400] for a in range(0, 8000, 400)]
    codes = [CODE4, CODE11] * (len(windows) // 2)
    got = _decode_by_code(RandomLogits(_config(tok), 0), tok, windows, codes, 400, TYPES, 80, "cpu")
    tga_through = {4: 0, 11: 0}
    for dna, code, out in zip(windows, codes, got):
        sites = OrfSites(dna, code.starts, code.stops)
        for f in decode_pointer_target(out.tokens, len(dna), TYPES, sites):  # valid under its code
            tga_through[code.table] += _reads_through_tga(dna, f)
    assert tga_through[11] == 0 and tga_through[4] > 0, tga_through


def test_train_constrains_each_sample_and_val_window_by_its_genome_code(
    tmp_path: Path,
    tok,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``train --constrained_loss orf`` on a mixed-code bake: the loss's ORF layer and the val
    decode metric take each sample's own code (4 or 11), not ``--transl_table``."""
    from trainer.data.examples import ExampleBuilder
    from trainer.model import Dna2GffModel
    from trainer.tokens.tokenizer import save_tokenizer
    from trainer.train import validation
    from trainer.train.config import TrainConfig
    from trainer.train.engine import train

    g4 = synthetic.write_genome(synthetic.generate_genome(_small(5, 4)), tmp_path, "syn4")
    g11 = synthetic.write_genome(synthetic.generate_genome(_small(6, 11)), tmp_path, "syn11")
    listing = tmp_path / "list.tsv"
    listing.write_text(f"syn4\t{g4[0].name}\t{g4[1].name}\nsyn11\t{g11[0].name}\t{g11[1].name}\n")
    data = tmp_path / "baked"
    cfg = BakeConfig(window_len=1000, types=tuple(TYPES), progress=False, val_fraction=0.25)
    assert bake(read_genome_list(listing), cfg, data)[0] is not None
    save_tokenizer(tok, tmp_path / "tok")
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model_cfg = _config(tok, window_len=1000, feature_types=TYPES)
    Dna2GffModel(model_cfg).save_pretrained(tmp_path / "model", tmp_path / "tok")
    seen: dict[str, set[int]] = {"loss": set(), "val": set()}
    constraint = ExampleBuilder.sample_constraint
    pick = validation.window_code

    def spy_loss(self, sample):
        code = constraint(self, sample)
        seen["loss"].add(code.table)
        return code

    def spy_val(sample, default):
        code = pick(sample, default)
        seen["val"].add(code.table)
        return code

    monkeypatch.setattr(ExampleBuilder, "sample_constraint", spy_loss)
    monkeypatch.setattr(validation, "window_code", spy_val)
    saved_env, threads = dict(os.environ), torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = train(
            TrainConfig(
                model=str(tmp_path / "model"),
                data=str(data),
                output=str(tmp_path / "run"),
                micro_batch_size=8,
                max_steps=3,
                num_workers=0,
                save_every=0,
                eval_every=3,
                eval_batches=2,
                decode_every=3,
                decode_windows=40,
                max_src_tokens=1024,
                max_tgt_tokens=128,
                warmup_steps=1,
                shuffle_buffer=64,
                constrained_loss="orf",
                transl_table=11,
            )
        )
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        torch.set_num_threads(threads)
    assert result.steps == 3 and result.val_loss is not None
    assert seen == {"loss": {4, 11}, "val": {4, 11}}, seen


# ------------------------------------------------------------------------------------ annotate


def test_annotate_under_code_4_reads_through_tga_and_never_stops_on_it(tok) -> None:  # noqa: F811
    """A random model: the ORF layer alone makes every CDS valid under the code asked for."""
    from trainer.inference.annotate import AnnotateOptions, annotate_sequences

    g = synthetic.generate_genome(_small(5, 4))
    seqid, seq = g.sequences[0].seqid, g.sequences[0].seq
    counts = {}
    for table in (4, 11):
        opts = AnnotateOptions(transl_table=table, max_new_tokens=80, progress=False)
        feats, _, _ = annotate_sequences(
            RandomLogits(_config(tok), 1), tok, [(seqid, seq)], opts, 400, TYPES
        )
        cds = [f for f in feats if f.type == "CDS" and f.attr("partial") is None]
        senses = [synthetic.feature_sequence(seq, f.start, f.end, f.strand) for f in cds]
        assert cds and all(is_valid_orf(seq, f.start - 1, f.end, f.strand, table) for f in cds)
        counts[table] = sum(
            "TGA" in {s[i : i + 3] for i in range(3, len(s) - 3, 3)} for s in senses
        )
        if table == 4:
            assert all(s[-3:] != "TGA" for s in senses)
    assert counts[4] > 0 and counts[11] == 0, counts


# ----------------------------------------------------------------------------------- real data


def _shared(folder: str) -> tuple[Path, Path]:
    d = SHARED_GENOMES / folder
    fna, gff = sorted(d.glob("*.fna.gz")), sorted(d.glob("*.gff.gz"))
    if not (fna and gff):
        pytest.skip(f"{d} not available")
    return fna[0], gff[0]


@pytest.mark.shared
def test_mycoplasma_genitalium_bakes_under_code_4_and_its_cds_are_code4_orfs(
    tmp_path: Path,
) -> None:
    """Its GFF3 names no code: the list's 4 is carried; every reference CDS is an ORF under code
    4 (476 of 476) and most are not under 11 (341 of 476 hold an in-frame TGA)."""
    from baking.evaluate.refcheck import check_reference_cds
    from baking.formats.fasta import read_fasta
    from trainer.data.loader import first_samples, split_shards

    fna, gff = _shared("Mycoplasma_genitalium_G37")
    (spec,) = [s for s in read_genome_list(CORPUS) if s.name == "Mycoplasma_genitalium_G37"]
    assert spec.transl_table == 4 and Path(spec.fasta).resolve() == fna.resolve()
    out = tmp_path / "out"
    manifest, _ = bake([spec], BakeConfig(progress=False), out)
    assert manifest is not None
    entry = manifest.genomes[spec.name]
    assert (entry["transl_table"], entry["transl_table_source"]) == (4, "list")
    samples = first_samples(split_shards(out, "train"), 10_000)
    assert samples and {json.loads(s["json"])["transl_table"] for s in samples} == {4}
    seqs, features = dict(read_fasta(fna)), read_gff3(gff).features
    under4 = check_reference_cds(seqs, features, default_table=4)
    under11 = check_reference_cds(seqs, features, default_table=11)
    assert len(under4) == len(under11) > 400
    assert all(c.valid for c in under4)
    assert sum(not c.valid for c in under11) > len(under11) // 2
    bad_windows = {4: 0, 11: 0}  # the training ORF sites of each window, under each code
    for s in samples:
        dna = s["dna.txt"].decode().upper()
        cds = [f for f in features_from_json(s["features.json"], len(dna)) if f.type == "CDS"]
        for code in (CODE4, CODE11):
            sites = OrfSites(dna, code.starts, code.stops)
            bad_windows[code.table] += not all(sites.feature_ok(f) for f in cds)
    assert bad_windows[4] == 0 and bad_windows[11] > len(samples) // 2, bad_windows


@pytest.mark.shared
def test_shared_corpus_list_is_complete_and_agrees_with_every_gff() -> None:
    specs = read_genome_list(CORPUS)
    # annotate reads the same list (one reader): the same genomes, FASTA files and codes
    jobs = annotate_genome_list(CORPUS)
    assert [(j.name, str(j.fasta), j.transl_table) for j in jobs] == [
        (s.name, s.fasta, s.transl_table) for s in specs
    ]
    folders = sorted(p.name for p in SHARED_GENOMES.iterdir() if p.is_dir())
    if not folders:
        pytest.skip("../shared not available")
    assert sorted(s.name for s in specs) == folders
    codes = {}
    for s in specs:
        assert Path(s.fasta).is_file() and Path(s.gff).is_file(), s
        codes[s.name] = resolve_transl_table(s.transl_table, read_gff3(s.gff).features, s.gff)[0]
    assert {n for n, c in codes.items() if c == 4} == {
        "Mycoplasma_gallisepticum_Rlow",
        "Mycoplasma_genitalium_G37",
    }
    rows = [line.split("\t") for line in CORPUS.read_text().splitlines() if line[:1] != "#"]
    annotation = {r[0]: r[4] for r in rows[1:]}
    assert sorted(n for n, a in annotation.items() if a == "rast") == [
        "Brucella_melitensis_16M",
        "Haemophilus_influenzae_RdKW20",
        "Neisseria_meningitidis_MC58",
        "Streptococcus_pyogenes_M1_GAS",
        "Yersinia_pestis_KIM",
    ]
