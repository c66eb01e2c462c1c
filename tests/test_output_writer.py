"""The one output writer (baking/common/files.py) and the commands' output contract.

Hostile-user cases: outputs that are FIFOs, symlinks, device nodes, directories, inputs; folders
that cannot be written; umask and existing modes; evaluate on two different genomes; annotate with
unknown types or a device the machine lacks. The commands are driven as subprocesses, as a user
runs them. The machine the tests run on may be root (chmod then protects nothing), so the
"cannot write here" cases that must hold for every user put the output under a regular file.
"""

from __future__ import annotations

import errno
import gzip
import os
import random
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from baking.common.errors import ConfigError, InputError, OutputError
from baking.common.files import (
    atomic_path,
    check_output,
    check_output_dir,
    read_json,
    write_text,
)
from baking.target_format.grammar import target_vocabulary

REPO = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, DS_ACCELERATOR="cpu", HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO))
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
TYPES = ["CDS", "tRNA", "rRNA"]


def run(script: str, *args, umask: int | None = None, timeout: int = 240):
    """One command as a user runs it (``python launch/SCRIPT.py ARGS``)."""

    def set_umask() -> None:
        if umask is not None:
            os.umask(umask)

    return subprocess.run(
        [sys.executable, str(REPO / "launch" / f"{script}.py"), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=ENV,
        preexec_fn=set_umask,
    )


def one_error_line(res: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit 2, no traceback, exactly one ``error:`` line on stderr holding every needle."""
    assert res.returncode == 2, (res.returncode, res.stderr)
    assert "Traceback" not in res.stderr, res.stderr
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, res.stderr
    for needle in needles:
        assert needle in errors[0], res.stderr
    return errors[0]


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def entries(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


# --------------------------------------------------------------------------- the writer itself


def test_non_regular_targets_are_refused_and_left_alone(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    real = tmp_path / "real.txt"
    real.write_text("keep me\n")
    link = tmp_path / "link.txt"
    link.symlink_to(real)
    folder = tmp_path / "folder"
    folder.mkdir()
    for target, kind in [(fifo, "FIFO"), (link, "symbolic link"), (folder, "directory")]:
        with pytest.raises(OutputError, match=rf"not a regular file \(a {kind}\)"):
            write_text(target, "new\n")
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert link.is_symlink() and real.read_text() == "keep me\n"
    assert folder.is_dir() and not any(folder.iterdir())
    assert entries(tmp_path) == {"fifo", "real.txt", "link.txt", "folder"}  # no temp left
    with pytest.raises(OutputError, match=r"/dev/null: not a regular file \(a character device\)"):
        check_output("/dev/null")


def test_output_equal_to_an_input_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "genome.fna"
    src.write_text(">a\nACGT\n")
    hard = tmp_path / "hard.fna"
    os.link(src, hard)
    for out in (src, tmp_path / "." / "genome.fna", hard):
        with pytest.raises(OutputError, match="is also an input"):
            write_text(out, "x", inputs=[src])
    assert src.read_text() == ">a\nACGT\n"
    check_output(tmp_path / "other.gff3", inputs=[src, None])  # a different name is fine


def test_new_files_follow_the_umask_and_existing_modes_are_kept(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        write_text(tmp_path / "new.txt", "a")
        assert mode(tmp_path / "new.txt") == 0o644
        os.umask(0o077)
        write_text(tmp_path / "private.txt", "a")
        assert mode(tmp_path / "private.txt") == 0o600
        shared = tmp_path / "shared.txt"
        shared.write_text("old")
        os.chmod(shared, 0o664)
        write_text(shared, "new")  # umask 077 now, but an existing file keeps its bits
        assert mode(shared) == 0o664 and shared.read_text() == "new"
    finally:
        os.umask(old)


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "plot.png"
    target.write_bytes(b"old")
    full = pytest.raises(OutputError, match=r"plot\.png: no space left on device")
    with full, atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.endswith(".png")  # savefig's format
        tmp.write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(ValueError), atomic_path(target):
        raise ValueError("a writer's own bug")
    assert target.read_bytes() == b"old"
    assert entries(tmp_path) == {"plot.png"}


def test_preflight_names_what_blocks_the_output(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(OutputError, match=r"afile/sub/out\.gff3: .*afile is not a directory"):
        check_output(afile / "sub" / "out.gff3")
    with pytest.raises(OutputError, match=r"afile: not a directory \(a file\)"):
        check_output_dir(afile)
    with pytest.raises(OutputError, match=r"afile/run: .*afile is not a directory"):
        check_output_dir(afile / "run")
    check_output(tmp_path / "new" / "deeper" / "out.gff3")  # missing folders get created later
    assert entries(tmp_path) == {"afile"}  # a preflight creates nothing


@pytest.mark.skipif(IS_ROOT, reason="root writes into read-only folders; chmod proves nothing")
def test_read_only_folder_is_refused_before_any_work(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(OutputError, match="permission denied"):
            check_output(ro / "out.gff3")
        with pytest.raises(OutputError, match="permission denied"):
            check_output_dir(ro / "run")
        res = run("make_synthetic", ro / "genomes")
        one_error_line(res, str(ro / "genomes"), "permission denied")
        assert not any(ro.iterdir())
    finally:
        ro.chmod(0o755)


def test_read_json_locates_line_and_column(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{\n  "a": 1,\n  oops\n}\n')
    with pytest.raises(InputError, match=r"bad\.json:3:3: not valid JSON"):
        read_json(bad)
    with pytest.raises(InputError, match=r"absent\.json: no such file"):
        read_json(tmp_path / "absent.json")
    manifest = tmp_path / "baked" / "manifest.json"
    manifest.parent.mkdir()
    manifest.write_text('{"format": }')
    from baking.shards.manifest import load_manifest

    with pytest.raises(InputError, match=r"manifest\.json:1:12: not valid manifest JSON"):
        load_manifest(manifest.parent)


def test_os_errors_become_one_line_with_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    from launch._cli import run_cli

    def full(_argv: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device", "/data/run/shard.tar")

    assert run_cli(full, []) == 2
    assert capsys.readouterr().err == "error: /data/run/shard.tar: no space left on device\n"

    def bug(_argv: object) -> int:
        raise ZeroDivisionError  # a real bug keeps its traceback

    with pytest.raises(ZeroDivisionError):
        run_cli(bug, [])


@pytest.mark.skipif(not IS_ROOT, reason="making a device node needs root")
def test_device_node_output_is_refused(tmp_path: Path) -> None:
    """A private twin of /dev/full (char 1:7): as root the old writer replaced it with a file."""
    full = tmp_path / "full"
    os.mknod(full, stat.S_IFCHR | 0o666, os.makedev(1, 7))
    ref = _gff(tmp_path / "ref.gff3", "chr", [(1, 300)])
    res = run("evaluate", ref, ref, "--plot", full)
    one_error_line(res, f"{full}: not a regular file (a character device)")
    assert stat.S_ISCHR(os.lstat(full).st_mode)
    with pytest.raises(OutputError, match="/dev/full: not a regular file"):
        write_text("/dev/full", "x")
    assert stat.S_ISCHR(os.lstat("/dev/full").st_mode)


# --------------------------------------------------------------------------- the commands

NOT_A_DIR = "is not a directory"


def _cli_cases(tmp: Path) -> list[tuple[str, list, str]]:
    """(command, arguments, the path the error names): every output blocked by a regular file."""
    f = tmp / "afile"
    absent = tmp / "absent"
    return [
        ("bake_data", [absent / "g.fna", absent / "g.gff", f / "baked"], str(f / "baked")),
        (
            "bake_data",
            [absent / "g.fna", absent / "g.gff", tmp / "baked", "--extract_tokens", f / "t.txt"],
            str(f / "t.txt"),
        ),
        ("make_synthetic", [f / "genomes"], str(f / "genomes")),
        ("init_model", ["--save_dir", f / "model", "--dnabert_path", absent], str(f / "model")),
        ("init_model", ["--random_dnabert2", f / "d2"], str(f / "d2")),
        ("init_tk", [absent / "t.txt", "--out", f / "tok"], str(f / "tok")),
        ("append_tk", [absent / "t.txt", f / "tokenizer.json"], str(f / "tokenizer.json")),
        ("resize_model", [absent, absent / "tokenizer.json", "--out", f / "m"], str(f / "m")),
        ("train", ["--model", absent, "--data", absent, "--output", f / "run"], str(f / "run")),
        (
            "annotate",
            ["--model", absent, "--fasta", absent / "g.fna", "--out", f / "p.gff3"],
            str(f / "p.gff3"),
        ),
        (
            "evaluate",
            [absent / "r.gff3", absent / "p.gff3", "--plot", f / "o.png"],
            str(f / "o.png"),
        ),
        ("demo", ["--out", f / "demo"], str(f / "demo")),
        (
            "orf_rule",
            ["--fasta", absent / "g.fna", "--out", f / "o.gff3", "--min_codons", 60],
            str(f / "o.gff3"),
        ),
        (
            "annotate",
            [
                "--model",
                absent,
                "--fasta",
                absent / "g.fna",
                "--out",
                tmp / "p.gff3",
                "--log_file",
                f / "log",
            ],
            str(f / "log"),
        ),
    ]


@pytest.mark.slow  # fourteen command subprocesses
def test_every_command_refuses_an_unwritable_output_before_any_work(tmp_path: Path) -> None:
    """The inputs do not exist either: the output error coming first shows the order."""
    (tmp_path / "afile").write_text("x")
    for script, args, named in _cli_cases(tmp_path):
        t0 = time.perf_counter()
        res = run(script, *args)
        line = one_error_line(res, named, NOT_A_DIR)
        assert str(tmp_path / "absent") not in line, (script, line)
        assert time.perf_counter() - t0 < 60, script
        assert entries(tmp_path) == {"afile"}, (script, sorted(entries(tmp_path)))


@pytest.mark.slow  # nine command subprocesses
def test_directories_and_files_in_the_wrong_place(tmp_path: Path) -> None:
    folder = tmp_path / "folder"
    folder.mkdir()
    afile = tmp_path / "afile"
    afile.write_text("x")
    ref = _gff(tmp_path / "ref.gff3", "chr", [(1, 300)])
    cases = [
        ("evaluate", [ref, ref, "--plot", folder], f"{folder}: not a regular file (a directory)"),
        (
            "annotate",
            ["--model", tmp_path / "m", "--fasta", ref, "--out", folder],
            f"{folder}: not a regular file (a directory)",
        ),
        (
            "bake_data",
            [ref, ref, folder, "--extract_tokens", folder],
            f"{folder}: not a regular file (a directory)",
        ),
        (
            "train",
            ["--model", folder, "--data", folder, "--output", afile],
            f"{afile}: not a directory (a file)",
        ),
        ("make_synthetic", [afile], f"{afile}: not a directory (a file)"),
        ("demo", ["--out", afile], f"{afile}: not a directory (a file)"),
        (
            "orf_rule",
            ["--fasta", ref, "--out", ref, "--min_codons", 60],
            f"{ref}: is also an input",
        ),
        ("init_tk", [ref, "--out", afile], f"{afile}: not a directory (a file)"),
        ("resize_model", [folder, ref, "--out", afile], f"{afile}: not a directory (a file)"),
    ]
    for script, args, message in cases:
        one_error_line(run(script, *args), message)
        assert not any(folder.iterdir()), script  # in particular no .o.tmp.png
        assert afile.read_text() == "x"


def _gff(path: Path, seqid: str, spans: list[tuple[int, int]], length: int = 10_000) -> Path:
    lines = ["##gff-version 3", f"##sequence-region {seqid} 1 {length}"]
    for i, (s, e) in enumerate(spans):
        lines.append(f"{seqid}\tref\tCDS\t{s}\t{e}\t.\t+\t0\tID=c{i}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_plot_and_log_outputs_that_are_fifos_or_inputs(tmp_path: Path) -> None:
    ref = _gff(tmp_path / "ref.gff3", "chr", [(1, 300)])
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    one_error_line(run("evaluate", ref, ref, "--plot", fifo), f"{fifo}: not a regular file")
    one_error_line(run("evaluate", ref, ref, "--plot", ref), f"{ref}: is also an input")
    one_error_line(run("evaluate", ref, ref, "--log_file", fifo), f"{fifo}: not a regular file")
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert entries(tmp_path) == {"ref.gff3", "fifo"}


def test_synthetic_genomes_and_bake_follow_the_umask(tmp_path: Path) -> None:
    """umask 022 -> 0644 files (a shared cluster's other users can read the data)."""
    res = run("make_synthetic", tmp_path / "g", "--length", 20_000, "--plasmid", 0, umask=0o022)
    assert res.returncode == 0, res.stderr
    fna, gff = (tmp_path / "g" / "synthetic_1.fna.gz", tmp_path / "g" / "synthetic_1.gff.gz")
    assert mode(fna) == 0o644 and mode(gff) == 0o644
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("<CDS>\n")
    os.chmod(tokens, 0o640)  # an existing file keeps its own bits
    res = run(
        "bake_data",
        fna,
        gff,
        tmp_path / "baked",
        "--window",
        2000,
        "--extract_tokens",
        tokens,
        "--no_progress",
        umask=0o022,
    )
    assert res.returncode == 0, res.stderr
    assert mode(tmp_path / "baked" / "manifest.json") == 0o644
    shards = list((tmp_path / "baked").glob("*/*.tar"))
    assert shards and all(mode(s) == 0o644 for s in shards)
    assert mode(tokens) == 0o640 and len(tokens.read_text().split()) > 1
    res = run("make_synthetic", tmp_path / "g", "--length", 20_000, "--plasmid", 0, umask=0o077)
    assert res.returncode == 0, res.stderr
    assert mode(fna) == 0o644  # rewritten, mode kept
    res = run("make_synthetic", tmp_path / "p", "--length", 20_000, "--plasmid", 0, umask=0o077)
    assert mode(tmp_path / "p" / "synthetic_1.fna.gz") == 0o600


@pytest.mark.slow  # builds a model folder through init_model (two subprocesses' worth)
def test_model_folder_follows_the_umask(tmp_path: Path) -> None:
    res = run(
        "init_model",
        "--random_dnabert2",
        tmp_path / "d2",
        "--hidden_size",
        32,
        "--num_layers",
        1,
        "--num_heads",
        2,
        "--intermediate_size",
        32,
        "--vocab_size",
        60,
        "--weights_format",
        "safetensors",
        "--save_dir",
        tmp_path / "model",
        umask=0o022,
    )
    assert res.returncode == 0, res.stderr
    for folder in (tmp_path / "d2", tmp_path / "model"):
        assert mode(folder) == 0o755, folder
        files = list(folder.iterdir())
        assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in files}
        assert all(mode(p) == 0o644 for p in files), [(p.name, oct(mode(p))) for p in files]


# --------------------------------------------------------------------------- evaluate


def test_evaluate_refuses_two_different_genomes(tmp_path: Path) -> None:
    ref = _gff(tmp_path / "ref.gff3", "NC_000913.3", [(1, 300), (400, 699)])
    other = _gff(tmp_path / "other.gff3", "NZ_OTHER.1", [(1, 300)])
    res = run("evaluate", ref, other)
    one_error_line(res, "other.gff3", "ref.gff3", "NC_000913.3", "NZ_OTHER.1", "--allow_disjoint")
    assert res.stdout == ""
    res = run("evaluate", ref, other, "--allow_disjoint", "--json")
    assert res.returncode == 0, res.stderr
    assert "no sequence id in common" in res.stderr
    same = _gff(tmp_path / "same.gff3", "NC_000913.3", [(1, 300)])
    assert run("evaluate", ref, same).returncode == 0


def test_prodigal_baseline_refuses_another_genomes_fasta(tmp_path: Path) -> None:
    rng = random.Random(0)
    dna = "".join(rng.choice("ACGT") for _ in range(5000))
    ref = _gff(tmp_path / "ref.gff3", "chr", [(1, 300)], length=5000)
    other = tmp_path / "other.fna.gz"
    with gzip.open(other, "wt") as fh:
        fh.write(f">plasmid\n{dna}\n")
    res = run("evaluate", ref, ref, "--baseline", "prodigal", "--fasta", other)
    one_error_line(res, "other.fna.gz", "missing chr", "plasmid")
    shorter = tmp_path / "shorter.fna"
    shorter.write_text(f">chr\n{dna[:4000]}\n")
    res = run("evaluate", ref, ref, "--baseline", "prodigal", "--fasta", shorter)
    one_error_line(res, "shorter.fna", "chr is 4000 bp here but 5000 bp")
    right = tmp_path / "right.fna"
    right.write_text(f">chr\n{dna}\n")
    res = run("evaluate", ref, ref, "--baseline", "prodigal", "--fasta", right)
    assert res.returncode == 0, res.stderr


# --------------------------------------------------------------------------- annotate


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained dna2gff model with window_len and feature types in its config (no ../shared)."""
    from trainer.model.config import Dna2GffConfig
    from trainer.model.seq2seq import Dna2GffModel
    from trainer.tokens.tokenizer import add_annotation_tokens, save_tokenizer, train_dna_tokenizer

    root = tmp_path_factory.mktemp("annotate_model")
    rng = random.Random(1)
    tok = train_dna_tokenizer(["".join(rng.choice("ACGT") for _ in range(20_000))], 60)
    add_annotation_tokens(tok, target_vocabulary(TYPES))
    save_tokenizer(tok, root / "tok")
    cfg = Dna2GffConfig(
        vocab_size=tok.get_vocab_size(True),
        hidden_size=32,
        num_encoder_layers=1,
        num_decoder_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        window_len=400,
        feature_types=TYPES,
    )
    torch.manual_seed(0)
    Dna2GffModel(cfg).save_pretrained(root / "model", root / "tok")
    return root / "model"


def _genome(tmp_path: Path) -> Path:
    rng = random.Random(2)
    path = tmp_path / "g.fna"
    path.write_text(">chr\n" + "".join(rng.choice("ACGT") for _ in range(1200)) + "\n")
    return path


def test_annotate_refuses_out_equal_to_fasta_and_fifo_out(tiny_model: Path, tmp_path: Path):
    fasta = _genome(tmp_path)
    before = fasta.read_text()
    res = run("annotate", "--model", tiny_model, "--fasta", fasta, "--out", fasta)
    one_error_line(res, f"{fasta}: is also an input")
    assert fasta.read_text() == before
    res = run(
        "annotate",
        "--model",
        tiny_model,
        "--fasta",
        fasta,
        "--out",
        tiny_model / "model.safetensors",
    )
    one_error_line(res, "model.safetensors: is also an input")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    res = run("annotate", "--model", tiny_model, "--fasta", fasta, "--out", fifo)
    one_error_line(res, f"{fifo}: not a regular file (a FIFO)")
    link = tmp_path / "link.gff3"
    link.symlink_to(tmp_path / "elsewhere.gff3")
    res = run("annotate", "--model", tiny_model, "--fasta", fasta, "--out", link)
    one_error_line(res, f"{link}: not a regular file (a symbolic link)")
    assert entries(tmp_path) == {"g.fna", "fifo", "link.gff3"}


def _child_cpu(argv: list[str]) -> tuple[subprocess.CompletedProcess, float]:
    """A subprocess and its CPU seconds (wall time on a shared machine says little)."""
    import resource

    def cpu() -> float:
        r = resource.getrusage(resource.RUSAGE_CHILDREN)
        return r.ru_utime + r.ru_stime

    before = cpu()
    res = subprocess.run(argv, capture_output=True, text=True, timeout=240, env=ENV)
    return res, cpu() - before


def test_annotate_fails_on_its_output_before_importing_torch(tmp_path: Path) -> None:
    """The preflight costs less than importing torch, let alone loading a model or a genome."""
    folder = tmp_path / "pred"
    folder.mkdir()
    script = str(REPO / "launch" / "annotate.py")
    res, preflight = _child_cpu(
        [
            sys.executable,
            script,
            "--model",
            tmp_path / "absent",
            "--fasta",
            tmp_path / "absent.fna",
            "--out",
            folder,
        ]
    )
    one_error_line(res, f"{folder}: not a regular file (a directory)")
    _, torch_import = _child_cpu([sys.executable, "-c", "import torch"])
    assert preflight < 0.5 * torch_import, (preflight, torch_import)


def test_annotate_library_checks_the_output_before_loading_the_model(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import trainer.inference.annotate as ann

    def no_load(*_a: object, **_k: object) -> None:
        raise AssertionError("the model was loaded before the output was checked")

    monkeypatch.setattr(ann, "load_model", no_load)
    fasta = _genome(tmp_path)
    with pytest.raises(OutputError, match="is also an input"):
        ann.annotate(tiny_model, fasta, fasta, ann.AnnotateOptions(progress=False))
    with pytest.raises(OutputError, match="not a regular file"):
        ann.annotate(tiny_model, fasta, tmp_path, ann.AnnotateOptions(progress=False))


def test_annotate_types_must_be_known_to_the_model(tiny_model: Path, tmp_path: Path) -> None:
    fasta = _genome(tmp_path)
    out = tmp_path / "pred.gff3"
    res = run(
        "annotate",
        "--model",
        tiny_model,
        "--fasta",
        fasta,
        "--out",
        out,
        "--types",
        "CDS,BOGUS",
        "--no_progress",
    )
    one_error_line(res, "BOGUS", "the model knows CDS, tRNA, rRNA")
    assert not out.exists()
    res = run(
        "annotate",
        "--model",
        tiny_model,
        "--fasta",
        fasta,
        "--out",
        out,
        "--types",
        "tRNA",
        "--max_new_tokens",
        30,
        "--no_progress",
        umask=0o022,
    )
    assert res.returncode == 0, res.stderr
    from baking.formats.gff3 import read_gff3

    doc = read_gff3(out)  # an untrained model: which features is luck (the oracle test checks)
    assert {f.type for f in doc.features} <= {"region", "gene", "tRNA"}
    assert mode(out) == 0o644


def test_annotate_types_in_library(tiny_model: Path) -> None:
    from trainer.inference.annotate import AnnotateOptions, load_model, resolve_grammar

    model, tok = load_model(tiny_model, "cpu")
    with pytest.raises(ConfigError, match="unknown feature type.*BOGUS.*knows CDS, tRNA, rRNA"):
        resolve_grammar(model, tok, AnnotateOptions(feature_types=("BOGUS",)))
    model.config.feature_types = None  # the tokenizer's type tokens are then what it knows
    with pytest.raises(ConfigError, match="knows CDS, tRNA, rRNA"):
        resolve_grammar(model, tok, AnnotateOptions(feature_types=("ncRNA",)))


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_annotate_cuda_without_gpu_names_the_device(tiny_model: Path, tmp_path: Path) -> None:
    fasta = _genome(tmp_path)
    res = run(
        "annotate",
        "--model",
        tiny_model,
        "--fasta",
        fasta,
        "--out",
        tmp_path / "p.gff3",
        "--device",
        "cuda",
    )
    line = one_error_line(res, "--device=cuda", "no CUDA GPU")
    assert "safetensors" not in line
    res = run(
        "annotate",
        "--model",
        tiny_model,
        "--fasta",
        fasta,
        "--out",
        tmp_path / "p.gff3",
        "--device",
        "gpu0",
    )
    one_error_line(res, "--device='gpu0' is not a device")
    assert entries(tmp_path) == {"g.fna"}


def test_every_writer_goes_through_files_py() -> None:
    """No second copy of temp-then-rename in the code (issue 9: one atomic writer)."""
    offenders = []
    for folder in ("baking", "trainer", "launch"):
        for path in (REPO / folder).rglob("*.py"):
            if path.name == "files.py":
                continue
            text = path.read_text()
            for needle in ("os.replace(", ".rename(", "mkstemp(", "atomic_write"):
                if needle in text:
                    offenders.append(f"{path.relative_to(REPO)}: {needle}")
    assert not offenders, offenders


@pytest.mark.shared
def test_real_genomes_of_different_species_are_refused(genome_pair, tmp_path: Path) -> None:
    ecoli_fna, ecoli_gff = genome_pair("E.coli")
    phage_fna, phage_gff = genome_pair("phage")
    res = run("evaluate", ecoli_gff, phage_gff)
    one_error_line(res, "NC_000913.3", "NC_000902.1", "no sequence id in common")
    res = run("evaluate", phage_gff, phage_gff, "--baseline", "prodigal", "--fasta", ecoli_fna)
    one_error_line(res, str(ecoli_fna), "missing NC_000902.1", "NC_000913.3")
    res = run(
        "evaluate", phage_gff, phage_gff, "--baseline", "prodigal", "--fasta", phage_fna, "--json"
    )
    assert res.returncode == 0, res.stderr


@pytest.fixture
def full_disk(tmp_path: Path):
    """A 64 KiB tmpfs (root only; skipped where mounting is not allowed)."""
    folder = tmp_path / "small"
    folder.mkdir()
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
    )
    if res.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {res.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)


def test_a_full_disk_is_one_line_and_leaves_nothing(full_disk: Path, tmp_path: Path) -> None:
    res = run("make_synthetic", full_disk / "g", "--length", 400_000, "--plasmid", 0)
    one_error_line(res, f"{full_disk / 'g' / 'synthetic_1.fna.gz'}: no space left on device")
    assert not any((full_disk / "g").iterdir())  # no temporary file left behind
    with open(full_disk / "filler", "wb", buffering=0) as fh, pytest.raises(OSError):
        while True:  # fill what is left, then a plot cannot fit either
            fh.write(bytes(4096))
    ref = _gff(tmp_path / "ref.gff3", "chr", [(1, 300)])
    res = run("evaluate", ref, ref, "--plot", full_disk / "o.png")
    one_error_line(res, f"{full_disk / 'o.png'}: no space left on device")
    assert entries(full_disk) == {"g", "filler"}
