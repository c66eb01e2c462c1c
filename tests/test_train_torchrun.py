"""Two CPU ranks under ``launch/torchrun.py``: SIGTERM ends with a checkpoint and exit 0; a corrupt
checkpoint file of rank 1 is found on resume and the run falls back to the previous checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from trainer.distributed import free_port
from trainer.fixtures import make_model, make_tokenizer, write_shards

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "DS_ACCELERATOR": "cpu", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("torchrun")
    tok = make_tokenizer(root / "tok")
    return {
        "root": root,
        "model": make_model(root / "model", tok),
        "data": write_shards(root / "data", {"train": [40, 40], "val": [8]}),
    }


def _cmd(p: dict[str, Path], run: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        str(REPO / "launch/torchrun.py"),
        "--nproc_per_node",
        "2",
        "--master_port",
        str(free_port()),
        str(REPO / "launch/train.py"),
        "--model",
        str(p["model"]),
        "--data",
        str(p["data"]),
        "--output",
        str(run),
        "--micro_batch_size",
        "4",
        "--num_workers",
        "1",
        "--eval_every",
        "0",
        "--decode_every",
        "0",
        "--no_export",
        *extra,
    ]


def test_sigterm_to_torchrun_saves_and_exits_0(tiny, tmp_path):
    from trainer.train.checkpoint import latest_checkpoint

    run = tmp_path / "run"
    proc = subprocess.Popen(
        _cmd(tiny, run, "--max_steps", "100000"),
        env=ENV,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.time() + 240
        while time.time() < deadline and not (run / "metrics.jsonl").is_file():
            time.sleep(0.5)
        time.sleep(2.0)
        os.kill(proc.pid, signal.SIGTERM)  # the torchrun process only, as `kill PID` does
        out, err = proc.communicate(timeout=180)
    finally:
        proc.kill()
    assert proc.returncode == 0, err[-3000:]
    assert "Traceback" not in err and "SignalException" not in err, err[-3000:]
    assert "stopped_by=signal" in out
    latest = latest_checkpoint(run / "checkpoints")
    assert latest is not None
    assert 0 < json.loads((latest / "trainer_state.json").read_text())["step"] < 100000


def test_corrupt_rank1_file_falls_back_and_none_intact_is_one_error(tiny, tmp_path):
    run = tmp_path / "run"
    first = subprocess.run(
        _cmd(tiny, run, "--max_steps", "4", "--save_every", "2"),
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert first.returncode == 0, first.stderr[-3000:]
    optim = next((run / "checkpoints" / "step_4").glob("*zero_pp_rank_1_*optim_states.pt"))
    data = bytearray(optim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    optim.write_bytes(bytes(data))
    resumed = subprocess.run(
        _cmd(tiny, run, "--max_steps", "5", "--save_every", "2", "--resume"),
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (
        f"checkpoint step_4: {optim.name}: checksum mismatch, falling back to step_2"
        in resumed.stderr
    )
    assert "checkpoint loaded step=2" in resumed.stderr
    for folder in (run / "checkpoints").glob("step_*"):
        (folder / "trainer_state.json").write_text("{}")
    failed = subprocess.run(
        _cmd(tiny, run, "--max_steps", "6", "--resume"),
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert failed.returncode == 2, failed.stderr[-3000:]
    assert "Traceback" not in failed.stderr, failed.stderr[-3000:]
    assert "no intact checkpoint to resume" in failed.stderr


@pytest.mark.parametrize("code", [0, 2])
def test_exit_process_ends_a_rank_with_its_own_code_and_flushed_lines(code):
    """With a live gloo group, a rank's exit code is the one its error line promised, not an abort."""
    script = (
        "import sys, logging, torch.distributed as dist\n"
        "from trainer.distributed import exit_process\n"
        "dist.init_process_group('gloo', store=dist.HashStore(), rank=0, world_size=1)\n"
        "logging.basicConfig(stream=sys.stderr)\n"
        "logging.getLogger('x').warning('logged before exit')\n"
        "print('error: printed before exit', file=sys.stderr, end='')\n"
        "print('stdout line', end='')\n"
        f"exit_process({code})\n"
        "print('never reached')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], env=ENV, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == code, done.stderr[-2000:]
    assert "logged before exit" in done.stderr and "error: printed before exit" in done.stderr
    assert done.stdout == "stdout line"
