"""The trainer in one process: it learns, logs, exports, skips NaN steps, resumes exactly, stops on SIGTERM."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from baking.common.errors import ConfigError, InputError
from tests.faults import Faults, train_with_faults
from trainer.fixtures import TYPES, WINDOW, make_model, make_tokenizer, write_shards
from trainer.train.config import TrainConfig

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "DS_ACCELERATOR": "cpu", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    saved_env = dict(os.environ)  # train() sets RANK/WORLD_SIZE/MASTER_* for its 1-process world
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # spinning OpenMP barriers crawl on a shared 2-core machine
    root = tmp_path_factory.mktemp("train")
    tok = make_tokenizer(root / "tok")
    model = make_model(root / "model", tok)
    data = write_shards(root / "data", {"train": [60, 50, 40], "val": [16]})
    yield {"root": root, "model": model, "data": data}
    os.environ.clear()
    os.environ.update(saved_env)
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _restore_logging():
    """``main()`` in-process points the root logger at pytest's captured stderr: undo that."""
    import logging

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _cfg(setup, name: str, **kw) -> TrainConfig:
    base = dict(
        model=str(setup["model"]),
        data=str(setup["data"]),
        output=str(setup["root"] / name),
        micro_batch_size=8,
        num_workers=0,
        save_every=0,
        eval_every=0,
        lr=3e-3,
        warmup_steps=2,
    )
    base.update(kw)
    return TrainConfig(**base)


def _losses(run: Path) -> list[float]:
    return [json.loads(ln)["loss"] for ln in (run / "metrics.jsonl").read_text().splitlines()]


def _scalar_tags(run: Path) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    return set(acc.Tags()["scalars"])


def test_loss_falls_logs_scalars_and_exports(setup):
    from safetensors.torch import load_file

    from trainer.model.seq2seq import Dna2GffModel
    from trainer.train.engine import train

    result = train(
        _cfg(
            setup,
            "learn",
            max_steps=30,
            eval_every=15,
            log_every=5,
            decode_every=15,
            decode_windows=2,
            max_tgt_tokens=48,
        )
    )
    assert result.steps == 30 and result.stopped_by == "max_steps" and result.nan_steps == 0
    first, last = sum(result.losses[:5]) / 5, sum(result.losses[-5:]) / 5
    assert last < 0.85 * first, (first, last)
    assert result.val_loss is not None and result.val_loss < result.losses[0]
    run = setup["root"] / "learn"
    shutil.copy(run / "export/model.safetensors", run / ".first_export.safetensors")
    tags = _scalar_tags(run)
    for tag in (
        "train/loss",
        "train/lr",
        "train/grad_norm",
        "perf/tokens_per_s",
        "perf/samples_per_s",
        "moe/aux_loss",
        "moe/expert_load/layer_0/expert_3",
        "val/loss",
        "val/exact_features",
        "val/predicted_features",
    ):
        assert tag in tags, tag
    again = train(_cfg(setup, "learn", export_only=True))  # from the last checkpoint
    assert again.stopped_by == "export_only" and again.steps == 30
    exported = Dna2GffModel.from_pretrained(run / "export")
    assert exported.config.window_len == WINDOW and exported.config.feature_types == TYPES
    initial = Dna2GffModel.from_pretrained(setup["model"])
    w0 = initial.embeddings.word_embeddings.weight
    assert not torch.equal(exported.embeddings.word_embeddings.weight, w0)
    assert exported.embeddings.word_embeddings.weight.dtype == torch.float32
    first = load_file(str(run / ".first_export.safetensors"))
    second = load_file(str(run / "export/model.safetensors"))
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)  # fp32 masters survive save/load


def test_nan_steps_are_skipped_then_stop_the_run(setup):
    from safetensors.torch import load_file

    from trainer.train.engine import TrainingError

    result = train_with_faults(
        _cfg(setup, "nan", max_steps=3, max_nan_steps=5), Faults(nan_at_steps=frozenset({2, 3}))
    )
    assert result.nan_steps == 2
    flags = [json.loads(ln)["skipped"] for ln in (setup["root"] / "nan/metrics.jsonl").open()]
    assert flags == [False, True, True]
    # step 1 runs at lr 0 (warmup start), steps 2-3 are skipped: the weights must not have moved,
    # and the fp32 masters start from the exact fp32 weights (not rounded to bf16)
    before = load_file(str(setup["model"] / "model.safetensors"))
    after = load_file(str(setup["root"] / "nan/export/model.safetensors"))
    assert all(torch.equal(before[k].float(), after[k]) for k in before)
    with pytest.raises(TrainingError, match=r"2 steps had a NaN/inf loss \(max_nan_steps=1\)"):
        train_with_faults(
            _cfg(setup, "nan2", max_steps=4, max_nan_steps=1),
            Faults(nan_at_steps=frozenset({1, 2})),
        )


def test_resume_after_crash_gives_identical_losses(setup):
    from trainer.train.engine import train

    kw = dict(
        max_steps=6, save_every=2, num_workers=1, eval_every=3, grad_accum=2, micro_batch_size=4
    )
    train(_cfg(setup, "straight", **kw))
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_with_faults(_cfg(setup, "crashed", **kw), Faults(fail_at_step=5))
    assert [
        s
        for s, _ in __import__("trainer.train.checkpoint").train.checkpoint.list_checkpoints(
            setup["root"] / "crashed/checkpoints"
        )
    ] == [2, 4]
    resumed = train(_cfg(setup, "crashed", resume=True, **kw))
    assert resumed.steps == 6 and len(resumed.losses) == 2  # steps 5 and 6 only
    assert _losses(setup["root"] / "crashed") == _losses(setup["root"] / "straight")


def test_bad_ep_size_is_reported_before_training(setup, capsys):
    from launch.train import main

    code = main(
        [
            "--model",
            str(setup["model"]),
            "--data",
            str(setup["data"]),
            "--output",
            str(setup["root"] / "bad_ep"),
            "--ep_size",
            "3",
        ]
    )
    assert code == 2
    assert "error: --ep_size 3 must divide the world size 1" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="max_steps"):
        _cfg(setup, "x", max_steps=0)


def test_fresh_run_refuses_a_run_folder_and_resume_checks_world_size(setup):
    from trainer.train.engine import train

    train(_cfg(setup, "twice", max_steps=1))
    with pytest.raises(ConfigError, match="already holds checkpoints.*--resume"):
        train(_cfg(setup, "twice", max_steps=2))
    state_file = setup["root"] / "twice/checkpoints/step_1/trainer_state.json"
    state = json.loads(state_file.read_text())
    state_file.write_text(json.dumps({**state, "world_size": 2}))
    _rerecord(state_file.parent)  # as if 2 ranks had saved it (not a damaged file)
    with pytest.raises(InputError, match="says 2 ranks saved this checkpoint, but it holds"):
        train(_cfg(setup, "twice", max_steps=2, resume=True))  # elastic resume checks the files


def test_cli_missing_data_exits_2(setup, tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "launch/train.py"),
            "--model",
            str(setup["model"]),
            "--data",
            str(tmp_path / "nothing"),
            "--output",
            str(tmp_path / "run"),
        ],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "manifest.json: no manifest" in proc.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(setup, tmp_path):
    run = tmp_path / "run"
    cmd = [
        sys.executable,
        str(REPO / "launch/train.py"),
        "--model",
        str(setup["model"]),
        "--data",
        str(setup["data"]),
        "--output",
        str(run),
        "--max_steps",
        "100000",
        "--micro_batch_size",
        "4",
        "--num_workers",
        "1",
    ]
    proc = subprocess.Popen(
        cmd,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (run / "metrics.jsonl").is_file():
            time.sleep(0.5)
        time.sleep(1.0)
        os.killpg(proc.pid, signal.SIGTERM)  # the whole group, loader worker included
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, err[-3000:]
    assert "stopped_by=signal" in out
    from trainer.train.checkpoint import latest_checkpoint

    latest = latest_checkpoint(run / "checkpoints")
    assert latest is not None
    step = json.loads((latest / "trainer_state.json").read_text())["step"]
    assert 0 < step < 100000


def test_a_crash_with_loader_workers_exits_instead_of_hanging(setup, tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "tests/faulty_train.py"),
            "--faults",
            "fail_at_step=1",
            "--model",
            str(setup["model"]),
            "--data",
            str(setup["data"]),
            "--output",
            str(tmp_path / "run"),
            "--max_steps",
            "5",
            "--micro_batch_size",
            "4",
            "--num_workers",
            "2",
        ],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=120,
    )
    assert proc.returncode != 0 and "simulated crash" in proc.stderr


def _cli(setup, out: Path, *extra: str, data: Path | None = None) -> list[str]:
    return [
        "--model",
        str(setup["model"]),
        "--data",
        str(data or setup["data"]),
        "--output",
        str(out),
        "--micro_batch_size",
        "8",
        "--num_workers",
        "0",
        "--eval_every",
        "0",
        "--decode_every",
        "0",
        "--no_export",
        *extra,
    ]


def _rerecord(folder: Path) -> None:
    """Rewrite a checkpoint's COMPLETE record for its current files (an attacker owns the folder)."""
    from trainer.train import checkpoint as ck

    files = {n: ck.file_record(folder / n) for n in ck._checked_files(folder)}
    (folder / ck.COMPLETE).write_text(json.dumps({"format": ck.RECORD_FORMAT, "files": files}))


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_payload_in_deepspeed_file_is_refused_on_resume(setup, tmp_path, capsys):
    from launch.train import main
    from trainer.train.engine import train

    run = tmp_path / "run"
    train(_cfg(setup, "x", output=str(run), max_steps=1, export=False))
    folder = run / "checkpoints" / "step_1"
    marker = tmp_path / "pwned"
    torch.save({"module": _Payload(marker)}, folder / "mp_rank_00_model_states.pt")
    _rerecord(folder)
    capsys.readouterr()
    assert main(_cli(setup, run, "--resume", "--max_steps", "2")) == 2
    err = capsys.readouterr().err
    assert not marker.exists()
    assert "error: " in err and "Traceback" not in err
    assert "mp_rank_00_model_states.pt: refused to unpickle" in err


def test_resume_skips_a_corrupt_checkpoint_and_fails_cleanly_without_one(
    setup, tmp_path, caplog, capsys
):
    from launch.train import main
    from trainer.train.engine import train

    run = tmp_path / "run"
    train(_cfg(setup, "x", output=str(run), max_steps=4, save_every=2, export=False))
    optim = next((run / "checkpoints" / "step_4").glob("*optim_states.pt"))
    data = bytearray(optim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    optim.write_bytes(bytes(data))
    with caplog.at_level("WARNING"):
        resumed = train(
            _cfg(setup, "x", output=str(run), max_steps=5, save_every=2, resume=True, export=False)
        )
    assert resumed.steps == 5 and len(resumed.losses) == 3  # steps 3-5: it resumed from step 2
    assert (
        f"checkpoint step_4: {optim.name}: checksum mismatch, falling back to step_2" in caplog.text
    )
    for folder in (run / "checkpoints").glob("step_*"):
        (folder / "trainer_state.json").write_text("{}")
    capsys.readouterr()
    assert main(_cli(setup, run, "--resume", "--max_steps", "6")) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert (
        "checkpoints: no intact checkpoint to resume: step_5: trainer_state.json: size mismatch"
        in err
    )


def test_failed_option_checks_leave_no_run_folder(setup, tmp_path, capsys):
    from launch.train import main

    for flags, message in (
        (["--ep_size", "3"], "--ep_size 3 must divide the world size 1"),
        (["--micro_batch_size", "0"], "micro_batch_size must be a positive"),
        (["--full_vocab_loss", "--max_src_tokens", "2"], "max_src_tokens"),
    ):
        out = tmp_path / "run"
        assert main([*_cli(setup, out), *flags]) == 2
        assert message in capsys.readouterr().err
        assert not out.exists(), flags


def test_altered_shard_stops_training_naming_it(setup, tmp_path, capsys):
    from launch.train import main

    data = tmp_path / "data"
    shutil.copytree(setup["data"], data)
    shard = data / "train" / "g-0001.tar"
    raw = bytearray(shard.read_bytes())
    i = raw.index(b"dna.txt") + 512
    raw[i] = ord("A") if raw[i] != ord("A") else ord("C")
    shard.write_bytes(bytes(raw))
    capsys.readouterr()
    assert main(_cli(setup, tmp_path / "run", "--max_steps", "40", data=data)) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert f"error: {shard.resolve()}: sha256 mismatch" in err
