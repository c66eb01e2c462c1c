"""annotate over many genomes, over torchrun ranks, with proteins and gene sequences out.

A tiny untrained pointer model (ORF-constrained, so its CDS are real ORFs of the genome's code)
annotates pieces of the shared phage (code 11) and of *M. genitalium* (code 4, TGA = Trp). What
must hold: one call over several genomes writes what separate calls write; two ranks write what
one process writes; a bad genome under ``--on_error skip`` leaves the others whole; every protein
is its GFF3 CDS translated under its genome's code, and Prodigal's where the call is Prodigal's.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from baking.common.errors import ConfigError, InputError, OutputError
from baking.common.files import check_output, check_output_dir
from baking.formats.fasta import read_fasta
from baking.formats.gff3 import read_gff3
from baking.genome_list import genome_name, jobs_from_fastas, outputs_in, read_genome_list
from baking.orfs import genetic_code
from baking.translate import cds_protein, feature_dna
from trainer.fixtures import SHARED_DNABERT2, SHARED_GENOME_PAIRS, SHARED_GENOMES

REPO = Path(__file__).resolve().parents[1]
TYPES = ["CDS", "tRNA", "rRNA"]
PHAGE = SHARED_GENOME_PAIRS["phage"][0]
MYCO = SHARED_GENOMES / "Mycoplasma_genitalium_G37" / "GCA_000027325.1_ASM2732v1_genomic.fna.gz"
RUN = ["--max_new_tokens", "24", "--batch_size", "8", "--no_progress"]


def _need_shared() -> None:
    for p in (PHAGE, MYCO, SHARED_DNABERT2 / "tokenizer.json"):
        if not p.exists():
            pytest.skip(f"shared data absent: {p}")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """A tiny pointer model and three small genomes (two phage pieces, one Mycoplasma piece)."""
    _need_shared()
    from baking.target_format.grammar import target_vocabulary
    from trainer.model import Dna2GffConfig, Dna2GffModel
    from trainer.tokens.tokenizer import add_annotation_tokens, load_tokenizer, save_tokenizer

    d = tmp_path_factory.mktemp("many")
    tok = load_tokenizer(SHARED_DNABERT2)
    add_annotation_tokens(tok, target_vocabulary(TYPES))
    save_tokenizer(tok, d / "tok")
    cfg = Dna2GffConfig(
        vocab_size=tok.get_vocab_size(True),
        hidden_size=32,
        num_encoder_layers=2,
        num_decoder_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        window_len=1000,
        feature_types=TYPES,
    )
    torch.manual_seed(0)
    Dna2GffModel(cfg).save_pretrained(d / "model", d / "tok")
    ((_, phage),) = read_fasta(PHAGE)
    ((_, myco),) = read_fasta(MYCO)
    genomes = d / "genomes"
    genomes.mkdir()
    # two batches of 8 windows or more each (the torchrun test shares every genome's batches)
    (genomes / "a.fna").write_text(f">a1\n{phage[:5000]}\n>a2\n{phage[30000:32000]}\n")
    (genomes / "b.fna").write_text(f">b1\n{phage[15000:21000]}\n")
    (genomes / "m.fna").write_text(f">m1\n{myco[:8000]}\n")
    (genomes / "bad.fna").write_text(">x\nACGTACGT\n> chr1\nACGTACGT\n")
    listed = d / "genomes.tsv"
    listed.write_text(
        "name\tfasta\ttransl_table\nA\tgenomes/a.fna\nB\tgenomes/b.fna\t11\nM\tgenomes/m.fna\t4\n"
    )
    out = d / "out"
    res = _cli("--model", d / "model", "--genomes", listed, "--outdir", out, "--faa", "--ffn")
    assert res.returncode == 0, res.stderr
    return SimpleNamespace(dir=d, model=d / "model", genomes=genomes, list=listed, out=out)


def _cli(*args: str | Path, launcher: list[str] | None = None) -> subprocess.CompletedProcess:
    """Run annotate; a launcher's ranks are in their own session, so a timeout ends them too."""
    cmd = [*(launcher or [sys.executable]), str(REPO / "launch" / "annotate.py")]
    env = {**os.environ, "PYTHONPATH": str(REPO), "DS_ACCELERATOR": "cpu"}
    argv = [*cmd, *map(str, args), *RUN]
    with subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        start_new_session=True,
    ) as proc:  # fmt: skip
        try:
            out, err = proc.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def _one_error(res: subprocess.CompletedProcess, *needles: str) -> str:
    assert res.returncode == 2, (res.returncode, res.stderr)
    assert "Traceback" not in res.stderr, res.stderr
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, res.stderr
    assert all(n in errors[0] for n in needles), res.stderr
    return errors[0]


def _fasta_records(path: Path) -> dict[str, str]:
    """FASTA as header's first word -> sequence (our own reader only takes DNA)."""
    out: dict[str, str] = {}
    name = ""
    for line in path.read_text().splitlines():
        if line.startswith(">"):
            name = line[1:].split()[0]
            out[name] = ""
        else:
            out[name] += line
    return out


# ------------------------------------------------------------------------- many genomes


@pytest.mark.shared
def test_proteins_are_the_gff3_cds_translated_under_each_genomes_code(data) -> None:
    """Every CDS has its protein (code 11 for A and B, code 4 for M from the list's column) and
    every child feature its bases; TGA inside a code-4 gene is W, never a stop."""
    tga_read_as_w = 0
    for name, table in (("A", 11), ("B", 11), ("M", 4)):
        code = genetic_code(table)
        seqs = dict(read_fasta(data.genomes / f"{name.lower()}.fna"))
        doc = read_gff3(data.out / f"{name}.gff3")
        assert f"transl_table={table}" in (data.out / f"{name}.gff3").read_text()
        faa, ffn = (
            _fasta_records(data.out / f"{name}.faa"),
            _fasta_records(data.out / f"{name}.ffn"),
        )
        cds = [f for f in doc.features if f.type == "CDS"]
        children = [f for f in doc.features if f.attr("Parent")]
        assert cds and set(faa) == {f.attr("ID") for f in cds}
        assert set(ffn) == {f.attr("ID") for f in children}
        for f in children:
            assert f.attr("score_type") == "model_probability" and 0 <= f.score <= 1
            dna = feature_dna(seqs[f.seqid], f.start, f.end, f.strand)
            assert ffn[f.attr("ID")] == dna
            if f.type != "CDS":
                continue
            protein = faa[f.attr("ID")]
            if f.attr("partial") == "true":  # cut by a sequence end: its own tests elsewhere
                assert "*" not in protein[:-1]
                continue
            assert protein == cds_protein(seqs[f.seqid], f.start, f.end, f.strand, code)
            assert protein[0] == "M" and protein.endswith("*") and "*" not in protein[:-1]
            codons = [dna[i : i + 3] for i in range(0, len(dna) - 3, 3)]
            tga = [i for i, c in enumerate(codons) if c == "TGA"]
            assert all(protein[i] == "W" for i in tga)
            tga_read_as_w += len(tga) if table == 4 else 0
    assert tga_read_as_w > 0  # the code-4 genome's genes do hold TGA codons
    # the score attribute keeps the output valid GFF3 for GenomeTools and for evaluate
    from baking.evaluate.load import load_features

    for name in ("A", "M"):
        feats, lengths = load_features(data.out / f"{name}.gff3")
        assert feats and lengths
        if shutil.which("gt"):
            res = subprocess.run(
                ["gt", "gff3validator", str(data.out / f"{name}.gff3")],
                capture_output=True,
                text=True,
            )
            assert res.returncode == 0, res.stderr


@pytest.mark.shared
def test_proteins_equal_pyrodigals_where_the_call_is_pyrodigals(tmp_path: Path) -> None:
    """Calls equal to Prodigal's (an oracle model writes Prodigal's genes on the whole phage)
    give Prodigal's proteins through annotate's own output path."""
    pyrodigal = pytest.importorskip("pyrodigal")
    _need_shared()
    from tests.test_annotate import Oracle
    from trainer.inference.annotate import AnnotateOptions, annotate_sequences, write_outputs

    ((seqid, seq),) = read_fasta(PHAGE)
    genes = pyrodigal.GeneFinder(meta=True).find_genes(seq.encode())
    ref = [
        SimpleNamespace(
            seqid=seqid,
            start=g.begin,
            end=g.end,
            strand="+" if g.strand == 1 else "-",
            type="CDS",
            phase=0,
        )
        for g in genes
    ]
    genome = SimpleNamespace(features=ref, sequences=[SimpleNamespace(seqid=seqid, seq=seq)])
    opts = AnnotateOptions(batch_size=16, progress=False)
    feats, regions, _ = annotate_sequences(
        None, None, [(seqid, seq)], opts, 1000, TYPES, generate=Oracle(genome)
    )
    write_outputs(
        [(seqid, seq)], feats, regions, "test", 11, tmp_path / "p.gff3", tmp_path / "p.faa"
    )
    faa = _fasta_records(tmp_path / "p.faa")
    ours = {(f.start, f.end, f.strand): faa[f.attr("ID")] for f in feats if f.type == "CDS"}
    same = 0
    for g in genes:
        key = (g.begin, g.end, "+" if g.strand == 1 else "-")
        if key in ours:
            same += 1
            assert ours[key] == g.translate(), key
    assert same >= 0.95 * len(genes)


@pytest.mark.shared
@pytest.mark.slow  # two more CLI runs
def test_two_genomes_in_one_call_write_what_two_calls_write(data, tmp_path: Path) -> None:
    for name, fasta, table in (("A", "a.fna", "11"), ("M", "m.fna", "4")):
        out = tmp_path / f"{name}.gff3"
        res = _cli(
            "--model", data.model, "--fasta", data.genomes / fasta, "--out", out,
            "--faa", tmp_path / f"{name}.faa", "--transl_table", table,
        )  # fmt: skip
        assert res.returncode == 0, res.stderr
        assert out.read_bytes() == (data.out / f"{name}.gff3").read_bytes()
        assert (tmp_path / f"{name}.faa").read_bytes() == (data.out / f"{name}.faa").read_bytes()
    rows = (data.out / "summary.tsv").read_text().splitlines()
    assert rows[0].split("\t")[:7] == [
        "genome", "fasta", "transl_table", "bp", "genes", "seconds", "status"
    ]  # fmt: skip
    table = {r.split("\t")[0]: r.split("\t") for r in rows[1:]}
    assert [table[n][2] for n in "ABM"] == ["11", "11", "4"]
    assert table["A"][3] == "7000" and all(table[n][6] == "ok" for n in "ABM")
    genes = sum(f.type == "gene" for f in read_gff3(data.out / "M.gff3").features)
    assert table["M"][4] == str(genes)


@pytest.mark.shared
@pytest.mark.slow  # two CLI runs
def test_a_bad_genome_is_named_and_skip_leaves_the_others_whole(data, tmp_path: Path) -> None:
    listed = data.dir / "with_bad.tsv"
    listed.write_text("A\tgenomes/a.fna\nBAD\tgenomes/bad.fna\nM\tgenomes/m.fna\t4\n")
    skip = tmp_path / "skip"
    res = _cli("--model", data.model, "--genomes", listed, "--outdir", skip, "--on_error", "skip")
    _one_error(res, "1 of 3 genomes failed (BAD)", "bad.fna:3:", "without a sequence id")
    for name in ("A", "M"):
        assert (skip / f"{name}.gff3").read_bytes() == (data.out / f"{name}.gff3").read_bytes()
    assert not (skip / "BAD.gff3").exists()
    status = {
        r.split("\t")[0]: r.split("\t")[6] for r in (skip / "summary.tsv").read_text().splitlines()
    }
    assert (status["A"], status["BAD"], status["M"]) == ("ok", "failed", "ok")

    stop = tmp_path / "stop"
    res = _cli("--model", data.model, "--genomes", listed, "--outdir", stop)
    _one_error(res, "genome BAD:", "bad.fna:3:")
    assert (stop / "A.gff3").read_bytes() == (data.out / "A.gff3").read_bytes()
    assert not (stop / "M.gff3").exists()
    status = {
        r.split("\t")[0]: r.split("\t")[6] for r in (stop / "summary.tsv").read_text().splitlines()
    }
    assert (status["BAD"], status["M"]) == ("failed", "not run")


@pytest.mark.shared
@pytest.mark.slow  # torchrun, two processes
def test_two_torchrun_ranks_write_what_one_process_writes(data, tmp_path: Path) -> None:
    """Ranks share the batches of every genome (A, B and M have 2-3 batches of 8 windows each),
    rank 0 gathers and writes: every file byte-identical to the one-process run."""
    out = tmp_path / "ranks"
    # --standalone: a free port of its own (the default 29500 may be another job's)
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
    ]
    res = _cli(
        "--model", data.model, "--genomes", data.list, "--outdir", out, "--faa", "--ffn",
        launcher=torchrun,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    for name in ("A", "B", "M"):
        for ext in ("gff3", "faa", "ffn"):
            got, want = out / f"{name}.{ext}", data.out / f"{name}.{ext}"
            assert got.read_bytes() == want.read_bytes(), got
    # every rank meets a bad genome; one of them says so
    listed = data.dir / "bad_first.tsv"
    listed.write_text("BAD\tgenomes/bad.fna\nA\tgenomes/a.fna\n")
    res = _cli("--model", data.model, "--genomes", listed, "--outdir", out, launcher=torchrun)
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert res.returncode != 0 and errors == [
        f"error: genome BAD: {data.genomes / 'bad.fna'}:3: record without a sequence id "
        "(the id must follow '>' directly)"
    ], res.stderr


def test_decoding_a_share_of_the_batches_is_decoding_them_all() -> None:
    """Two ranks' shares (even and odd batches), put together, are the whole decode, window for
    window: what rank 0 merges is what one process would."""
    from baking.synthetic import SyntheticConfig, generate_genome
    from tests.test_annotate import Oracle
    from trainer.inference.annotate import AnnotateOptions, count_batches, decode_windows

    genome = generate_genome(SyntheticConfig(seed=5, chromosome_length=12_000))
    seqs = [(s.seqid, s.seq) for s in genome.sequences]
    opts = AnnotateOptions(batch_size=4, progress=False)
    whole = decode_windows(None, None, seqs, opts, 600, TYPES, generate=Oracle(genome))
    parts = [
        decode_windows(
            None,
            None,
            seqs,
            opts,
            600,
            TYPES,
            generate=Oracle(genome),
            run_batch=lambda k, r=r: k % 2 == r,
        )  # fmt: skip
        for r in (0, 1)
    ]
    assert count_batches(seqs, opts, 600) == -(-len(whole) // 4) >= 4
    assert parts[0] and parts[1]
    assert sorted(parts[0] + parts[1], key=lambda w: w.index) == whole


# ------------------------------------------------------------------------- inputs and refusals


def test_genome_list_format(tmp_path: Path) -> None:
    (tmp_path / "g").mkdir()
    listed = tmp_path / "g" / "list.tsv"
    listed.write_text(
        "# my genomes\nname\tfasta\ttransl_table\n\nE1\te1.fna.gz\nMyco.G37\t/abs/m.fna\t4\n"
    )
    jobs = read_genome_list(listed)
    assert [(j.name, j.fasta, j.transl_table) for j in jobs] == [
        ("E1", tmp_path / "g" / "e1.fna.gz", None),
        ("Myco.G37", Path("/abs/m.fna"), 4),
    ]
    outs = outputs_in(tmp_path / "o", jobs, faa=True, ffn=False)
    assert outs[1].paths() == [tmp_path / "o" / "Myco.G37.gff3", tmp_path / "o" / "Myco.G37.faa"]
    bad = {
        "A\ta.fna\nA\tb.fna\n": (2, "already named on line 1"),
        "A\ta.fna\t99\n": (1, "transl_table=99 is not supported"),
        "A\ta.fna\tx\n": (1, "transl_table 'x' is not a number"),
        "A\n": (1, "found 1 column"),
        "A\ta.fna\t4\textra\n": (1, "found 4 column"),
        "name\tgff\nA\ta.gff\n": (1, "header lacks column(s) fasta"),
        "name\tfasta\nA\ta.fna\t4\n": (2, "3 columns, but the header names 2"),
        "../x\ta.fna\n": (1, "genome name '../x'"),
        "# nothing\n": (None, "no genomes listed"),
    }
    for text, (line, reason) in bad.items():
        listed.write_text(text)
        with pytest.raises(InputError, match=re.escape(reason)) as err:
            read_genome_list(listed)
        assert err.value.line == line, text
    assert genome_name("x/GCF_1.2_ASM.fna.gz") == "GCF_1.2_ASM"
    with pytest.raises(ConfigError, match="both genome 'a'"):
        jobs_from_fastas(["x/a.fna", "y/a.fa.gz"])


def test_fasta_record_without_an_id_is_refused_with_its_line(tmp_path: Path) -> None:
    """``>`` or ``> chr1`` used to give seqid '' and a GFF3 no validator accepts."""
    for text, line in ((">\nACGT\n", 1), (">a\nACGT\n> chr1\nACGT\n", 3)):
        path = tmp_path / "x.fna"
        path.write_text(text)
        with pytest.raises(InputError, match="without a sequence id") as err:
            list(read_fasta(path))
        assert err.value.line == line


@pytest.mark.skipif(not Path("/proc/self").exists(), reason="needs /proc")
def test_an_output_folder_that_cannot_be_made_fails_the_preflight(tmp_path: Path) -> None:
    """``os.access`` says yes to root in /proc; only making the folder tells. The probe leaves
    nothing behind where it can make it."""
    with pytest.raises(OutputError, match="cannot create folder /proc/x"):
        check_output("/proc/x/p.gff3")
    with pytest.raises(OutputError, match="cannot create folder /proc/x"):
        check_output_dir("/proc/x")
    check_output(tmp_path / "a" / "b" / "p.gff3")
    check_output_dir(tmp_path / "c" / "d")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.shared
@pytest.mark.slow  # several CLI runs
def test_cli_refuses_bad_options_with_one_line_before_the_model(data, tmp_path: Path) -> None:
    fasta = data.genomes / "a.fna"
    out = tmp_path / "p.gff3"
    cases = [
        (["--fasta", fasta, "--out", "-"], "does not write to standard output"),
        (
            ["--fasta", fasta, "--out", out, "--min_votes", "2"],
            "min_votes must be a share in [0, 1]",
        ),
        (["--fasta", fasta, "--out", out, "--min_votes", "-1"], "got -1.0"),
        (["--fasta", fasta, "--out", "/proc/x/p.gff3"], "cannot create folder /proc/x"),
        (["--fasta", fasta, data.genomes / "b.fna", "--out", out], "need --outdir"),
        (["--fasta", fasta, "--out", out, "--faa"], "--faa takes a path with --out"),
        (["--fasta", fasta, "--outdir", tmp_path / "o", "--ffn", "x.ffn"], "--ffn is a switch"),
        (["--genomes", data.list, "--fasta", fasta, "--outdir", tmp_path / "o"], "either --fasta"),
        (["--fasta", fasta, data.dir / "zz.fna", "--outdir", tmp_path / "o"], "genome zz: "),
    ]
    for args, message in cases:
        res = _cli("--model", data.model, *args)
        _one_error(res, message)
        assert "model=" not in res.stderr, args  # refused before the model was loaded
    assert not Path("-").exists() and list(tmp_path.iterdir()) == []
    # a record without an id: refused by line, nothing written
    res = _cli("--model", data.model, "--fasta", data.genomes / "bad.fna", "--out", out)
    _one_error(res, "bad.fna:3: record without a sequence id")
    assert not out.exists()


def test_library_refuses_a_share_outside_zero_one() -> None:
    from trainer.inference.annotate import AnnotateOptions

    for bad in (2.0, -1.0, float("nan")):
        with pytest.raises(ConfigError, match="min_votes"):
            AnnotateOptions(min_votes=bad)


def test_preflight_of_hundreds_of_outputs_probes_a_new_folder_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """300 genomes x 3 files used to cost 45 s before the model loaded (each output compared
    with every input and every other output, each probing the same new folder)."""
    import baking.common.files as files
    from launch._cli import check_outputs

    probes: list[Path] = []
    real = files._probe_mkdir
    monkeypatch.setattr(files, "_probe_mkdir", lambda *a: (probes.append(a[0]), real(*a)))
    inputs = [tmp_path / f"in{i}.fna" for i in range(300)]
    for p in inputs[:3]:
        p.write_text(">a\nACGT\n")
    outs = [tmp_path / "new" / f"g{i}.{ext}" for i in range(300) for ext in ("gff3", "faa")]
    check_outputs(files=outs, inputs=inputs)
    assert probes == [tmp_path / "new"] and not (tmp_path / "new").exists()
    os.link(inputs[1], tmp_path / "hard.gff3")  # a hard link to an input is still that input
    with pytest.raises(OutputError, match="is also an input"):
        check_outputs(files=[*outs, tmp_path / "hard.gff3"], inputs=inputs)
    with pytest.raises(OutputError, match="given twice"):
        check_outputs(files=[*outs, tmp_path / "new" / ".." / "new" / "g7.faa"], inputs=inputs)


def test_an_in_process_call_leaves_the_callers_process_group_alive(data, tmp_path: Path) -> None:
    """annotate destroys only a group it made: a training run's group in the same process (which
    DeepSpeed caches its sub-groups on) must survive, else the next ``train()`` there fails with
    'Group ... is not registered' (seen when the suite ran annotate between two trainings)."""
    import torch.distributed as dist

    from baking.genome_list import GenomeJob, GenomeOutputs
    from trainer.distributed import ensure_process_group
    from trainer.inference.annotate import AnnotateOptions
    from trainer.inference.annotate_many import annotate_genomes

    made = ensure_process_group(init_deepspeed=False)
    group = dist.group.WORLD
    try:
        out = tmp_path / "B.gff3"
        job = GenomeJob("B", data.genomes / "b.fna", 11)
        annotate_genomes(data.model, [job], [GenomeOutputs(out)], AnnotateOptions(progress=False))
        assert out.is_file()
        assert dist.is_initialized() and dist.group.WORLD is group
    finally:
        if made and dist.is_initialized():
            dist.destroy_process_group()
