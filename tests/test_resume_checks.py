"""Checkpoints under hostile conditions (issue 19, cases 7 and 8), through the ``train`` CLI.

A full disk during a save is one ``error:`` line, exit 2, no partial folder, and the previous
checkpoint still resumes. ``--resume`` checks what it resumes: another model, other data or another
target spec is one error line before any DeepSpeed load; a changed learning rate or schedule is
stated in the log and TensorBoard; ``--max_steps`` at or below the checkpoint's step exits 0
without training (never ``loss=nan``) with the export brought up to date.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from trainer.fixtures import make_model, make_tokenizer, write_shards

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "DS_ACCELERATOR": "cpu", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def fx(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("resume_checks")
    tok = make_tokenizer(root / "tok")
    return {
        "root": root,
        "tok": tok,
        "model": make_model(root / "dense", tok, use_moe=False),
        # CDS only in the samples (the manifest lists tRNA too): a resume whose manifest drops
        # tRNA is then refused by the target-spec check, not by a sample of a type it dropped
        "data": write_shards(root / "data", {"train": [60, 50], "val": [8]}, present=("CDS",)),
    }


def _train(
    fx: dict[str, Path], out: Path, *extra: str, **paths: Path
) -> subprocess.CompletedProcess:
    args = {"model": fx["model"], "data": fx["data"], **paths}
    cmd = [
        sys.executable,
        str(REPO / "launch/train.py"),
        "--model",
        str(args["model"]),
        "--data",
        str(args["data"]),
        "--output",
        str(out),
        "--micro_batch_size",
        "4",
        "--num_workers",
        "0",
        "--save_every",
        "2",
        "--eval_every",
        "0",
        "--decode_every",
        "0",
        "--warmup_steps",
        "1",
        "--lr",
        "1e-3",
        *extra,
    ]
    return subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=120)


def _one_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, proc.stderr[-3000:]
    return errors[0]


def _mount_small_tmpfs(where: Path, size: str) -> None:
    where.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command: cannot make a small filesystem to fill")
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs (needs root): {proc.stderr.strip()}")


@pytest.mark.slow
def test_full_disk_during_a_checkpoint_save_is_one_error_line(fx, tmp_path):
    """A 1.3 MB filesystem: step_2 (0.8 MB) fits, step_4 does not."""
    small = tmp_path / "small"
    _mount_small_tmpfs(small, "1300k")
    try:
        proc = _train(fx, small / "run", "--max_steps", "4", "--no_export")
        line = _one_error(proc)
        assert line.startswith(f"error: {small / 'run' / 'checkpoints' / 'step_4'}: "), line
        assert "no space left on device" in line and "continues from step_2" in line, line
        left = sorted(p.name for p in (small / "run" / "checkpoints").iterdir() if p.is_dir())
        assert left == ["step_2"]
        shutil.copytree(small / "run", tmp_path / "run")
    finally:
        subprocess.run(["umount", str(small)], check=False)
    resumed = _train(fx, tmp_path / "run", "--max_steps", "3", "--no_export", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "checkpoint loaded step=2" in resumed.stderr


@pytest.mark.slow
def test_full_disk_on_two_ranks_every_rank_agrees_and_cleans_up(fx, tmp_path):
    """2 ranks, MoE ep_size 2: one rank's files fail, the other's fit; neither waits forever."""
    small = tmp_path / "small"
    _mount_small_tmpfs(small, "2400k")  # step_2 of both ranks: 1.4 MB
    moe = make_model(tmp_path / "moe", fx["tok"])
    cmd = [
        sys.executable,
        str(REPO / "launch/torchrun.py"),
        "--nproc_per_node",
        "2",
        "--master_port",
        str(_free_port()),
        str(REPO / "launch/train.py"),
        "--model",
        str(moe),
        "--data",
        str(fx["data"]),
        "--output",
        str(small / "run"),
        "--deepspeed_config",
        str(REPO / "ds_configs" / "zero2_bf16_moe.json"),
        "--ep_size",
        "2",
        "--max_steps",
        "4",
        "--micro_batch_size",
        "2",
        "--num_workers",
        "0",
        "--save_every",
        "2",
        "--eval_every",
        "0",
        "--decode_every",
        "0",
        "--no_export",
    ]
    try:
        proc = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=180)
        left = sorted(p.name for p in (small / "run" / "checkpoints").iterdir() if p.is_dir())
    finally:
        subprocess.run(["umount", str(small)], check=False)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    ranks = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: /")]
    assert len(ranks) == 2 and ranks[0] == ranks[1], proc.stderr[-3000:]  # one line per rank
    assert ranks[0].startswith(f"error: {small / 'run' / 'checkpoints' / 'step_4'}: checkpoint")
    assert "no space left on device" in ranks[0] and "continues from step_2" in ranks[0]
    assert left == ["step_2"]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def base_run(fx) -> Path:
    """A dense run checkpointed at step 2 (no export)."""
    out = fx["root"] / "base"
    proc = _train(fx, out, "--max_steps", "2", "--no_export")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def _copy(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / "run"))


@pytest.mark.slow
def test_resume_with_another_model_is_refused_before_deepspeed_loads(fx, base_run, tmp_path):
    wide = make_model(tmp_path / "wide", fx["tok"], use_moe=False, hidden=64)
    proc = _train(fx, _copy(base_run, tmp_path), "--max_steps", "4", "--resume", model=wide)
    line = _one_error(proc)
    assert line.startswith(f"error: {wide / 'config.json'}: not the model of checkpoint step_2 ")
    assert "hidden_size 32 -> 64" in line, line
    assert "checkpoint loaded" not in proc.stderr


@pytest.mark.slow
def test_resume_with_other_data_is_refused(fx, base_run, tmp_path):
    other = write_shards(tmp_path / "other", {"train": [60, 70], "val": [8]})
    proc = _train(fx, _copy(base_run, tmp_path), "--max_steps", "4", "--resume", data=other)
    line = _one_error(proc)
    assert line.startswith(f"error: {other / 'manifest.json'}: not the data of checkpoint step_2")
    assert "110 samples in 2 shards, this one 130 in 2" in line, line


@pytest.mark.slow
def test_resume_with_another_target_spec_is_refused(fx, base_run, tmp_path):
    """Same train shards, but the manifest's grammar now says only CDS."""
    data = Path(shutil.copytree(fx["data"], tmp_path / "cds_only"))
    manifest = json.loads((data / "manifest.json").read_text())
    manifest["grammar"]["feature_types"] = ["CDS"]
    manifest["grammar"]["tokens"].remove("<tRNA>")
    (data / "manifest.json").write_text(json.dumps(manifest))
    proc = _train(fx, _copy(base_run, tmp_path), "--max_steps", "4", "--resume", data=data)
    line = _one_error(proc)
    assert "the target spec differs from checkpoint step_2's" in line, line
    assert 'feature_types ["CDS", "tRNA"] -> ["CDS"]' in line, line


@pytest.mark.slow
def test_changed_lr_is_stated_in_the_log_and_tensorboard_and_applied(fx, base_run, tmp_path):
    import torch
    from deepspeed.runtime.lr_schedules import WarmupCosineLR
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = _copy(base_run, tmp_path)
    proc = _train(fx, run, "--max_steps", "5", "--resume", "--no_export", "--lr", "5e-4")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (
        "resume from step_2 with changed settings: lr 0.001 -> 0.0005, total_steps 2 -> 5 "
        "(applied from step 3 on)"
    ) in proc.stderr
    acc = EventAccumulator(str(run / "tensorboard"), size_guidance={"tensors": 0})
    acc.Reload()
    texts = [t for t in acc.Tags()["tensors"] if t.startswith("resume/changed")]
    assert texts, acc.Tags()
    entry = acc.Tensors(texts[0])[0]
    assert entry.step == 2 and b"lr 0.001 -> 0.0005" in entry.tensor_proto.string_val[0]
    # steps 3-5 run at the new schedule's rates, step 3 included (DeepSpeed's load would have
    # kept the saved rate for it); step k's rate is the scheduler's at iteration k - 2
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=5e-4)
    sched = WarmupCosineLR(
        opt, total_num_steps=5, warmup_num_steps=1, cos_min_ratio=0.0, warmup_type="linear"
    )
    want = []
    for it in (1, 2, 3):
        sched.step(it)
        want.append(opt.param_groups[0]["lr"])
    lrs = [json.loads(ln)["lr"] for ln in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(lrs) == 5 and lrs[2:] == pytest.approx(want, rel=1e-9) and min(want) > 0


@pytest.mark.slow
@pytest.mark.parametrize("max_steps", ["2", "1"])
def test_max_steps_at_or_below_the_checkpoint_exits_0_with_the_export(
    fx, base_run, tmp_path, max_steps
):
    run = _copy(base_run, tmp_path)
    proc = _train(fx, run, "--max_steps", max_steps, "--resume")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "nan" not in proc.stdout, proc.stdout
    assert "steps=2 stopped_by=max_steps loss=none" in proc.stdout
    assert (
        f"nothing to train: checkpoint step_2 is at step 2 and this run ends at step {max_steps}"
    ) in proc.stderr
    assert (run / "export" / "config.json").is_file()
    assert sorted(p.name for p in (run / "checkpoints").glob("step_*")) == ["step_2"]
