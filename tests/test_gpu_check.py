"""benchmarks/gpu_check.sh: its CPU smoke run gives every figure, and a failing part stays contained."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import gpu_check  # noqa: E402

from launch._cli import run_cli  # noqa: E402


@pytest.mark.slow  # three child processes, each importing torch (~15-30 s on 2 cores)
def test_smoke_run_writes_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "check.json"
    env = {k: v for k, v in os.environ.items() if k != "OUT"}
    t0 = time.perf_counter()
    res = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--smoke", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    wall = time.perf_counter() - t0
    assert res.returncode == 0, res.stdout + res.stderr
    fig = json.loads(out.read_text())
    assert fig["smoke"] is True and fig["passed"] is True
    assert 0 < fig["seconds"] <= wall
    assert fig["environment"]["packages"]["torch"] == torch.__version__
    parts = fig["parts"]
    assert {p: parts[p]["status"] for p in gpu_check.PARTS} == dict.fromkeys(
        gpu_check.PARTS, "pass"
    )
    for p in parts.values():
        assert 0 < p["seconds"] <= p["budget_s"]

    tests = parts["tests"]
    assert "test_gpu.py" in tests["files"]
    assert tests["tests"] >= 4 and tests["failed"] == tests["errors"] == 0
    assert tests["passed"] + tests["skipped"] == tests["tests"]  # skipped: this box has no CUDA

    train = parts["train"]
    assert train["timed_steps"] == 6 and train["skipped_steps"] == 0
    assert train["experts"] == 4 and train["top_k"] == 2 and train["zero_stage"] == 2
    assert 0 < train["src_tokens_per_window"] <= train["max_src_tokens"] == 96
    assert train["tokens_per_s"] > 0 and train["model_tflops_per_s"] > 0
    assert math.isfinite(train["loss_first"]) and math.isfinite(train["loss_last"])
    assert train["mfu"] is None and train["peak_memory_gib"] is None  # no GPU: no MFU, no memory

    ann = parts["annotate"]  # a 10 kbp probe, then the whole genome since it fits the time box
    assert ann["probe"]["bp"] == 10_000 < ann["genome_bp"] == ann["bp"]
    assert ann["scope"] == "genome" and ann["device"] == "cpu"
    assert ann["probe"]["seconds_total"] < ann["whole_genome_estimate_s"]
    assert ann["windows"] > 0 and ann["mbp_per_min"] > 0 and ann["prodigal_mbp_per_min"] > 0
    assert ann["ratio_annotate_prodigal"] == pytest.approx(
        ann["mbp_per_min"] / ann["prodigal_mbp_per_min"], rel=1e-3
    )


def _check(tmp_path: Path, budget: float = 60.0) -> gpu_check.Check:
    return gpu_check.Check(smoke=True, budget_s=budget, work=tmp_path, env=dict(os.environ))


def _spawner(marker: Path, then: str, quiet: bool = False) -> str:
    """A child that starts a grandchild (as the trainer starts loader workers), then ``then``.

    ``quiet``: the grandchild does not hold the child's output pipes, so the child's end is seen
    at once (one that holds them is waited for, up to the time box, and killed there).
    """
    grandchild = f"import time; time.sleep(4); open({str(marker)!r}, 'w').close()"
    pipes = ", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL" if quiet else ""
    return (
        "import subprocess, sys, time\n"
        f"subprocess.Popen([sys.executable, '-c', {grandchild!r}]{pipes})\n"
        f"print('started', flush=True)\n{then}\n"
    )


def test_a_part_s_children_die_with_it_whether_it_overruns_or_ends(tmp_path: Path) -> None:
    t0 = time.perf_counter()
    late, done = tmp_path / "late-grandchild", tmp_path / "done-grandchild"
    res = gpu_check.run_command([sys.executable, "-c", _spawner(late, "time.sleep(60)")], 1.0)
    assert res.timed_out and res.stdout == "started\n" and res.seconds < 4
    rec = gpu_check.command_failure(res, "sleeper")
    assert rec["status"] == "timeout" and "sleeper ran past its time box" in rec["error"]
    ended = gpu_check.run_command([sys.executable, "-c", _spawner(done, "pass", True)], 10.0)
    assert not ended.timed_out and ended.returncode == 0
    time.sleep(max(0.0, t0 + 6 - time.perf_counter()))  # past both grandchildren's 4 s
    assert not late.exists(), "the timed-out child's own child outlived it"
    assert not done.exists(), "a finished child's leftover child outlived it"


def test_a_failing_part_is_recorded_and_the_next_still_runs(tmp_path: Path) -> None:
    check = _check(tmp_path)

    def broken(c: gpu_check.Check, deadline: float) -> dict:
        raise RuntimeError("boom")

    def exits_3(c: gpu_check.Check, deadline: float) -> dict:
        res = c.command([sys.executable, "-c", "import sys; sys.exit('no luck')"], deadline)
        return gpu_check.command_failure(res, "exits_3")

    def fine(c: gpu_check.Check, deadline: float) -> dict:
        res = c.command([sys.executable, "-c", "print('ok')"], deadline)
        return {"status": "pass" if res.stdout.strip() == "ok" else "fail"}

    bad = check.run_part("bad", 10.0, broken)
    failed = check.run_part("failed", 10.0, exits_3)
    good = check.run_part("good", 10.0, fine)
    assert bad["status"] == "fail" and bad["error"] == "RuntimeError: boom"
    assert failed["status"] == "fail" and failed["error"] == "exits_3 exited 1"
    assert "no luck" in failed["stderr_tail"]
    assert good["status"] == "pass"
    assert list(check.parts) == ["bad", "failed", "good"]


def test_a_part_gets_no_more_than_the_time_left(tmp_path: Path) -> None:
    check = _check(tmp_path, budget=8.0)
    seen: list[float] = []

    def note(c: gpu_check.Check, deadline: float) -> dict:
        seen.append(deadline - time.perf_counter())
        return {"status": "pass"}

    check.run_part("a", 100.0, note)
    assert 7.0 < seen[0] <= 8.0
    check.t0 -= 5.0  # 3 s left: too little to start a part
    assert check.run_part("b", 100.0, note)["status"] == "skipped"
    assert len(seen) == 1


def test_without_a_gpu_the_full_check_says_so_and_fails(tmp_path: Path, monkeypatch) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    out = tmp_path / "check.json"
    assert gpu_check.main(["--out", str(out)]) == 1
    fig = json.loads(out.read_text())
    assert fig["passed"] is False and fig["environment"]["cuda_available"] is False
    for part in gpu_check.PARTS:
        assert fig["parts"][part]["status"] == "skipped"
        assert "no CUDA" in fig["parts"][part]["reason"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--smoke", "--only", "tests,nope"], "unknown part(s) nope"),
        (["--smoke", "--genome", "/no/such.fna"], "/no/such.fna: genome FASTA not found"),
        (["--smoke"], "no output: pass --out PATH"),
    ],
)
def test_bad_flags_fail_with_one_line_and_write_nothing(
    tmp_path: Path, monkeypatch, capsys, argv: list[str], message: str
) -> None:
    monkeypatch.delenv("OUT", raising=False)
    out = ["--out", str(tmp_path / "c.json")] if "no output" not in message else []
    assert run_cli(gpu_check.main, [*argv, *out]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]
    assert list(tmp_path.iterdir()) == []
