"""Issue 19 on ``train``: a batch never larger than the data, one run per run folder, one length
rule (bake, train and annotate), hostile JSON metadata and damaged weights: one line each."""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from baking.common.errors import ConfigError, InputError
from baking.common.files import MAX_JSON_BYTES, read_json
from trainer.data.examples import ExampleBuilder
from trainer.data.loader import (
    ShardBatches,
    TokenIds,
    check_batch_fits,
    split_shards,
)
from trainer.fixtures import (
    SHARED_DNABERT2,
    SHARED_GENOMES,
    make_model,
    make_tokenizer,
    random_dna,
    write_shards,
)

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "DS_ACCELERATOR": "cpu", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
IDS = TokenIds(1, 2, 3)


def _builder(tok_dir: Path, max_src: int, max_tgt: int) -> ExampleBuilder:
    from trainer.tokens.tokenizer import load_tokenizer

    vocab = load_tokenizer(tok_dir).get_vocab_size(with_added_tokens=True)
    return ExampleBuilder(
        str(tok_dir), IDS, max_src, max_tgt, vocab_size=vocab, feature_types=["CDS", "tRNA"]
    )


def _source_ids(tok_dir: Path, max_src: int, dna: str) -> list[int]:
    """The encoder ids training builds for a window (a featureless sample)."""
    sample = {"dna.txt": dna.encode(), "features.json": b"[]", "__key__": "k"}
    return _builder(tok_dir, max_src, 8).build(sample).src


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    saved_env = dict(os.environ)  # train() sets RANK/WORLD_SIZE/MASTER_* for its 1-process world
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("trust")
    tok = make_tokenizer(root / "tok")
    model = make_model(root / "model", tok)
    data = write_shards(root / "data", {"train": [60, 50, 40], "val": [16]})
    yield {"root": root, "tok": tok, "model": model, "data": data}
    os.environ.clear()
    os.environ.update(saved_env)
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _restore_logging():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _args(setup, out: Path, *extra: str, model=None, data=None) -> list[str]:
    return [
        "--model",
        str(model or setup["model"]),
        "--data",
        str(data or setup["data"]),
        "--output",
        str(out),
        "--num_workers",
        "0",
        "--eval_every",
        "0",
        "--decode_every",
        "0",
        "--no_export",
        *extra,
    ]


def _refused(setup, capsys, out: Path, *extra: str, folder_ok: bool = False, **kw) -> str:
    """Run ``train`` in-process; it must exit 2 with one ``error:`` line and (unless
    ``folder_ok``: the weights are read once the run has begun) no run folder."""
    from launch.train import main

    capsys.readouterr()
    assert main(_args(setup, out, *extra, **kw)) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, err
    assert folder_ok or not out.exists()
    return lines[0]


# ------------------------------------------------------------------------ 1: batch vs data


def test_a_batch_larger_than_the_data_is_refused_up_front(setup, tmp_path, capsys):
    line = _refused(setup, capsys, tmp_path / "run", "--micro_batch_size", "100000")
    assert line.startswith("error: --micro_batch_size 100000 is larger than the data")
    assert "each rank reads 150 of the 150 train samples" in line and "at most 150" in line
    # 2 loader workers of one rank each read half the data: a batch of 100 would repeat samples
    line = _refused(
        setup, capsys, tmp_path / "run", "--micro_batch_size", "100", "--num_workers", "2"
    )
    assert "reads 75 of the 150 train samples" in line and "--num_workers" in line
    # per rank after sharding: 2 ranks read 75 each
    shards = split_shards(setup["data"], "train")
    check_batch_fits(shards, 2, 0, 75)
    with pytest.raises(ConfigError, match=r"76 .* each rank reads 75 of the 150 .*\(2 ranks\)"):
        check_batch_fits(shards, 2, 0, 76)
    enc = _builder(setup["tok"], 512, 512)
    with pytest.raises(ConfigError, match="--micro_batch_size 151"):
        ShardBatches(
            shards,
            enc,
            rank=0,
            world_size=1,
            num_workers=0,
            micro_batch_size=151,
            seed=0,
            shuffle_buffer=4,
        )


_UNDER_LIMIT = """
import resource, sys
import deepspeed, launch.train, trainer.train.engine  # torch, DeepSpeed mapped before the limit
vm = next(int(ln.split()[1]) for ln in open("/proc/self/status") if ln.startswith("VmSize:"))
extra = 1 << 30  # 1 GiB above what the imports use; the old loader wanted 20+ GiB here
resource.setrlimit(resource.RLIMIT_AS, (vm * 1024 + extra, vm * 1024 + extra))
sys.exit(launch.train.main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_a_huge_batch_request_is_refused_within_a_memory_limit(setup, tmp_path):
    """The issue's 22.8 GB case under RLIMIT_AS: the request costs nothing, the refusal is one line
    (before: the loader looped over the data to fill the batch until memory ran out)."""
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-c", _UNDER_LIMIT, *_args(setup, out, "--micro_batch_size", "100000")],
        capture_output=True,
        text=True,
        env={**ENV, "CUDA_VISIBLE_DEVICES": ""},  # no CUDA context: its address space is huge
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert (
        proc.stderr.strip()
        .splitlines()[-1]
        .startswith("error: --micro_batch_size 100000 is larger than the data")
    )
    assert not out.exists()


# ----------------------------------------------------------------------- 2: run-folder lock


def _train_cmd(setup, out: Path, *extra: str) -> list[str]:
    return [sys.executable, str(REPO / "launch/train.py"), *_args(setup, out, *extra)]


@pytest.mark.slow
def test_a_second_run_into_a_live_run_folder_is_refused_and_a_killed_run_blocks_nothing(
    setup, tmp_path, capsys
):
    from launch.train import main

    run = tmp_path / "run"
    first = subprocess.Popen(
        _train_cmd(
            setup, run, "--max_steps", "100000", "--micro_batch_size", "4", "--save_every", "2"
        ),
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not list(run.glob("checkpoints/step_*/COMPLETE")):
            time.sleep(0.3)
        assert first.poll() is None, "the first run ended early"
        holder = f"pid={first.pid} host={socket.gethostname()}"
        for extra in ([], ["--resume"]):  # a requeued job, and a job submitted twice
            capsys.readouterr()
            assert main(_args(setup, run, "--max_steps", "3", *extra)) == 2
            err = capsys.readouterr().err
            assert "Traceback" not in err
            assert (
                f"error: {run}: another train run is using this run folder "
                f"(.train.lock held by {holder})" in err
            ), err
        assert len(list((run / "tensorboard").glob("*tfevents*"))) == 1
        os.killpg(first.pid, signal.SIGKILL)  # the job dies without a word: its lock goes with it
        first.wait(timeout=60)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    from trainer.train.checkpoint import latest_checkpoint

    latest = latest_checkpoint(run / "checkpoints")
    assert latest is not None
    goal = int(latest.name.removeprefix("step_")) + 2
    capsys.readouterr()
    assert (
        main(_args(setup, run, "--max_steps", str(goal), "--micro_batch_size", "4", "--resume"))
        == 0
    )
    steps = [json.loads(ln)["step"] for ln in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == goal  # one writer: no interleaved lines


def test_the_lock_is_released_when_train_returns(setup, tmp_path):
    from trainer.train.config import TrainConfig
    from trainer.train.engine import train
    from trainer.train.run_lock import take_run_lock

    out = tmp_path / "run"
    cfg = TrainConfig(
        model=str(setup["model"]),
        data=str(setup["data"]),
        output=str(out),
        micro_batch_size=8,
        num_workers=0,
        max_steps=1,
        eval_every=0,
        export=False,
    )
    train(cfg)
    take_run_lock(out).release()  # free again: the finished run kept nothing
    held = take_run_lock(out)
    try:
        with pytest.raises(ConfigError, match=rf"\.train\.lock held by pid={os.getpid()}"):
            train(TrainConfig(**{**cfg.to_dict(), "resume": True, "max_steps": 2}))
    finally:
        held.release()


# -------------------------------------------------------------------------- 3: length rule


def test_windows_and_targets_over_the_limits_are_refused_not_cut(setup, tmp_path, capsys):
    line = _refused(setup, capsys, tmp_path / "run", "--max_src_tokens", "20")
    assert "dna.txt: 96 bp are" in line and "over --max_src_tokens 20" in line
    assert line.startswith(f"error: {setup['data'].resolve()}/")  # the shard and the sample
    line = _refused(setup, capsys, tmp_path / "run", "--max_tgt_tokens", "3")
    assert "features.json:" in line and "over --max_tgt_tokens 3" in line


def test_train_and_annotate_encode_the_same_whole_window(setup):
    from trainer.inference.generate import encode_windows
    from trainer.tokens.tokenizer import load_tokenizer

    tok = load_tokenizer(setup["tok"])
    dna = random_dna(random.Random(4), 2400)
    ids, mask = encode_windows(tok, [dna], bos_id=1, eos_id=2, pad_id=3)
    n = int(mask.sum())
    assert n > 512  # annotate encodes the whole window ...
    with pytest.raises(InputError, match=f"2400 bp are {n} encoder tokens"):
        _source_ids(setup["tok"], 512, dna)  # ... training kept 510
    assert _source_ids(setup["tok"], n, dna) == ids[0, :n].tolist()


def test_annotate_counts_windows_longer_than_training_saw(setup, caplog):
    from trainer.inference.annotate import AnnotateOptions, annotate_sequences
    from trainer.inference.generate import GeneratedTarget, generate_targets
    from trainer.model.seq2seq import Dna2GffModel
    from trainer.tokens.tokenizer import encode_sources, load_tokenizer

    tok = load_tokenizer(setup["tok"])
    model = Dna2GffModel.from_pretrained(setup["model"])
    dna = random_dna(random.Random(5), 400)
    generate = generate_targets
    whole = encode_sources(tok, [dna])[0].length
    # the decoder reports the encoder length it used: the whole window, as training saw it
    (out,) = generate(model, tok, [dna], 96, ["CDS", "tRNA"], max_new_tokens=2)
    assert out.source_tokens == whole

    seqs = [("chr", random_dna(random.Random(6), 4000))]
    lengths = {}

    def nothing(model, tokenizer, windows_dna, window_len, types, **kw):
        sizes = [s.length for s in encode_sources(tokenizer, windows_dna)]
        lengths.update(zip(windows_dna, sizes))
        return [GeneratedTarget([], [], source_tokens=n) for n in sizes]

    def run(limit: int):
        stub = SimpleNamespace(config=SimpleNamespace(max_src_tokens=limit, min_orf_codons=None))
        opts = AnnotateOptions(progress=False)
        return annotate_sequences(stub, tok, seqs, opts, 400, ["CDS"], generate=nothing)[2]

    run(10_000)
    sizes = sorted(lengths.values())
    limit = sizes[len(sizes) // 2]
    with caplog.at_level("WARNING"):
        summary = run(limit)
    over = sum(n > limit for n in sizes)
    assert summary.long_windows == over > 0 and summary.windows == len(sizes)
    assert summary.longest_window_tokens == sizes[-1]
    assert f"{over} of {len(sizes)} windows are longer than the {limit} encoder tokens" in (
        caplog.text
    )
    assert run(sizes[-1]).long_windows == 0


def test_the_export_records_the_encoder_length(setup, tmp_path):
    from trainer.model.config import Dna2GffConfig
    from trainer.train.config import TrainConfig
    from trainer.train.engine import train

    out = tmp_path / "run"
    train(
        TrainConfig(
            model=str(setup["model"]),
            data=str(setup["data"]),
            output=str(out),
            micro_batch_size=8,
            num_workers=0,
            max_steps=1,
            eval_every=0,
            max_src_tokens=300,
        )
    )
    assert Dna2GffConfig.load(out / "export").max_src_tokens == 300


def test_bake_counts_long_windows_and_targets(tmp_path, caplog):
    from bake_helpers import random_dna as dna_of
    from bake_helpers import write_pair

    from baking.bake import bake
    from baking.bake_config import BakeConfig, GenomeSpec

    dense = [  # a gene every 25 bp: long targets (5 decoder items each)
        f"chr\tRefSeq\tCDS\t{s}\t{s + 20}\t.\t+\t0\tID=c{s}" for s in range(1, 5900, 25)
    ]
    fna, gff = write_pair(tmp_path / "in", "g", {"chr": dna_of(6000, 1)}, dense)
    spec = [GenomeSpec("g", str(fna), str(gff))]
    with caplog.at_level("WARNING"):
        manifest, _ = bake(spec, BakeConfig(window_len=3000, progress=False), tmp_path / "o")
    totals = manifest.totals
    assert totals["long_windows_estimate"] == totals["samples"] == 2
    assert totals["long_targets"] == 2 and totals["max_target_tokens"] > 512
    assert "2 of 2 windows (3000 bp) are likely over 512 DNABERT-2 encoder tokens" in caplog.text
    assert "2 of 2 targets are over 512 decoder tokens" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        manifest, _ = bake(spec, BakeConfig(window_len=1000, progress=False), tmp_path / "o2")
    assert manifest.totals["long_windows_estimate"] == 0
    assert "encoder tokens" not in caplog.text


def test_bake_defaults_match_the_trainer_defaults():
    from baking.bake_config import TRAIN_MAX_SRC_TOKENS, TRAIN_MAX_TGT_TOKENS
    from trainer.train.config import TrainConfig

    cfg = TrainConfig(model="-", data="-", output="-")
    assert (cfg.max_src_tokens, cfg.max_tgt_tokens) == (TRAIN_MAX_SRC_TOKENS, TRAIN_MAX_TGT_TOKENS)


@pytest.mark.shared
def test_real_dnabert2_windows_against_the_limit_and_the_bake_estimate():
    """With the real tokenizer: 2000 bp windows fit 512 tokens on genomes from 15% to 67% GC,
    3000 bp windows do not, and bake's estimate is never below the real count."""
    import glob

    from baking.bake_config import encoder_tokens_estimate
    from baking.formats.fasta import read_fasta
    from trainer.tokens.tokenizer import encode_sources, load_tokenizer

    if not SHARED_DNABERT2.exists():
        pytest.skip("no ../shared DNABERT-2 tokenizer")
    tok = load_tokenizer(SHARED_DNABERT2)
    for name in ("Carsonella_ruddii_HT", "C.crescentus"):
        found = glob.glob(str(SHARED_GENOMES / name / "*.fna.gz"))
        if not found:
            pytest.skip(f"no ../shared genome {name}")
        seq = max((s for _, s in read_fasta(found[0])), key=len)[:300_000]
        for w, fits in ((2000, True), (3000, False)):
            wins = [seq[i : i + w] for i in range(0, len(seq) - w, w)]
            sizes = [s.length for s in encode_sources(tok, wins)]
            assert (max(sizes) <= 512) is fits, (name, w, max(sizes))
            assert all(encoder_tokens_estimate(d) >= n for d, n in zip(wins, sizes)), name


# ------------------------------------------------------------------- 11: JSON and weights


def test_read_json_refuses_deep_nesting_and_huge_files(tmp_path):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)  # a RecursionError in json.loads
    with pytest.raises(InputError, match="nested more than 64 levels"):
        read_json(deep)
    deep.write_text("[" * 200 + "]" * 200)  # parses, but any recursive walk of it would not
    with pytest.raises(InputError, match="nested more than 64 levels"):
        read_json(deep)
    big = tmp_path / "config.json"
    with open(big, "wb") as fh:  # 1 GiB, sparse: the reader must stop early
        fh.truncate(1 << 30)
    tracemalloc.start()
    try:
        with pytest.raises(InputError, match="larger than 64 MiB"):
            read_json(big)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2 * MAX_JSON_BYTES + (16 << 20)


def _nested(path: Path) -> Path:
    path.write_text('{"a": ' + "[" * 50_000 + "]" * 50_000 + "}")
    return path


def test_nested_json_inputs_of_train_give_one_line(setup, tmp_path, capsys):
    ds = _nested(tmp_path / "ds.json")
    line = _refused(setup, capsys, tmp_path / "run", "--deepspeed_config", str(ds))
    assert line.startswith(f"error: {ds}: not JSON: nested more than 64 levels")
    model = tmp_path / "model"
    shutil.copytree(setup["model"], model)
    _nested(model / "config.json")
    line = _refused(setup, capsys, tmp_path / "run", model=model)
    assert line.startswith(f"error: {model / 'config.json'}: not JSON: nested")
    data = tmp_path / "data"
    shutil.copytree(setup["data"], data)
    _nested(data / "manifest.json")
    line = _refused(setup, capsys, tmp_path / "run", data=data)
    assert line.startswith(f"error: {data / 'manifest.json'}: not manifest JSON: nested")


def test_a_nested_complete_marker_falls_back_to_the_previous_checkpoint(setup, tmp_path, caplog):
    from trainer.train.config import TrainConfig
    from trainer.train.engine import train

    cfg = dict(
        model=str(setup["model"]),
        data=str(setup["data"]),
        output=str(tmp_path / "run"),
        micro_batch_size=8,
        num_workers=0,
        eval_every=0,
        export=False,
        save_every=1,
    )
    train(TrainConfig(**cfg, max_steps=2))
    _nested(tmp_path / "run" / "checkpoints" / "step_2" / "COMPLETE")
    with caplog.at_level("WARNING"):
        resumed = train(TrainConfig(**cfg, max_steps=3, resume=True))
    assert resumed.steps == 3 and len(resumed.losses) == 2  # steps 2 and 3: from step_1
    assert "checkpoint step_2: COMPLETE: not JSON: nested" in caplog.text
    assert "falling back to step_1" in caplog.text


def test_nan_weights_are_refused_naming_the_file_and_tensor(setup, tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    from trainer.model.seq2seq import Dna2GffModel
    from trainer.model.state import CheckpointError

    model = tmp_path / "model"
    shutil.copytree(setup["model"], model)
    weights = model / "model.safetensors"
    state = load_file(str(weights))
    name = sorted(k for k, v in state.items() if v.is_floating_point())[3]
    state[name] = state[name].clone()
    state[name].view(-1)[0] = float("nan")
    state[name].view(-1)[-1] = float("inf")
    save_file(state, str(weights), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=rf"{weights}: tensor {name} holds 2 NaN/inf"):
        Dna2GffModel.from_pretrained(model)
    line = _refused(setup, capsys, tmp_path / "run", model=model, folder_ok=True)
    assert line.startswith(f"error: {weights}: tensor {name} holds 2 NaN/inf value(s)")


def test_a_torn_metrics_line_is_dropped_on_resume_not_a_traceback(tmp_path, caplog):
    """A run SIGKILLed mid-write leaves half a JSON line in metrics.jsonl; resume used to die on it
    with a JSONDecodeError traceback. Steps after the checkpoint go too, as before."""
    from trainer.train.run_folder import truncate_metrics

    path = tmp_path / "metrics.jsonl"
    rows = [json.dumps({"step": s, "loss": 1.0 / s}) for s in (1, 2, 3, 4)]
    path.write_text("\n".join(rows) + '\n{"step": 5, "lo')  # killed mid-line
    with caplog.at_level(logging.WARNING):
        truncate_metrics(path, step=3)
    assert [json.loads(ln)["step"] for ln in path.read_text().splitlines()] == [1, 2, 3]
    assert "1 line(s) that are no step record dropped" in caplog.text
