"""Elastic resume (issue 19): ``--resume`` at another world size and ``ep_size``, MoE and dense.

Each test runs a job straight through 6 steps (checkpoints at 3 and 6), then resumes a copy of its
step-3 checkpoint on another topology and runs steps 4-6 there. The two topologies see the same
samples in every step: the global batch is the same (2 ranks x micro batch 2 = 1 rank x micro batch
2 x grad_accum 2) and so is the loader's slot count (2 ranks x 1 slot = 1 rank x 2 workers), so
step ``k`` averages the gradients of the same two micro-batches either way. What differs is only
where the arithmetic happens (an all-reduce between ranks vs accumulation in one; expert
parallelism vs all experts local): bf16 rounding. So steps 4-6 must give the uninterrupted run's
losses and, at step 6, its fp32 master weights and Adam moments of every parameter, within the
tolerances below. A resume that lost the Adam moments (the only option before: restart from
``export/``) is far outside them (``test_elastic_tolerances_catch_lost_moments``).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from trainer.fixtures import make_model, make_tokenizer, write_shards

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "DS_ACCELERATOR": "cpu", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
MOE_JSON = str(REPO / "ds_configs" / "zero2_bf16_moe.json")
LOSS_RTOL = 1e-2
"""Per-step loss, relative: 2.5 bf16 epsilons (2^-8)."""
PARAM_RTOL = 0.15
"""fp32 masters, worst tensor: the difference over what steps 4-6 moved the tensor. Not smaller
because the attention key biases have no gradient in exact arithmetic (softmax ignores a constant
added to every key), so Adam turns their rounding noise into full-size updates (measured: 0.10 for
``crossattention.kv.bias``, while every weight matrix is below 0.01)."""
PARAM_MEDIAN_RTOL = 0.01
"""fp32 masters, the median tensor (measured 0.001)."""
MOMENT_RTOL = 0.08
"""Adam moments, per tensor, relative (L2 norms). Not 0.05 since every model has the pointer head
(issue 16): ``pointer_head.key_norm.bias`` shifts every base key alike, which the softmax over bases
almost ignores (as the attention key biases above), so its gradient is a near-cancelling sum and
its ``exp_avg_sq`` differs by 0.057 after a 2 -> 1 rank resume, while every other tensor stays
below 0.012 (measured; a resume that lost its moments gives 3.1)."""

ONE = [sys.executable]
ONE_RANK = ["--ep_size", "1", "--grad_accum", "2", "--num_workers", "2"]
TWO_RANKS = ["--ep_size", "2", "--grad_accum", "1", "--num_workers", "0"]


@pytest.fixture(scope="module")
def fx(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("elastic")
    tok = make_tokenizer(root / "tok")
    return {
        "root": root,
        "moe": _deterministic_routing(make_model(root / "moe", tok)),
        "dense": make_model(root / "dense", tok, use_moe=False),
        "data": write_shards(root / "data", {"train": [60, 50, 40], "val": [8]}),
    }


def _deterministic_routing(model: Path) -> Path:
    """Top-1 routing without dropped tokens: which expert a token goes to depends on it alone.

    The default top-2 gate draws Gumbel noise for each token's second expert from each rank's torch
    RNG, and drops tokens over a capacity computed per rank's micro-batch; both depend on how tokens
    are grouped into ranks, so after a topology change tokens legitimately go to other experts and
    the runs part (measured: losses within 5.3e-5, params worst tensor 0.57 / median 0.014 -- the
    same job run uninterrupted on 1 rank instead of 2 is as far: 5.2e-5, 1.36 / 0.015). The
    resharding itself does not depend on the gate; this keeps the comparison about it.
    """
    path = model / "config.json"
    cfg = json.loads(path.read_text())
    cfg.update(moe_top_k=1, moe_drop_tokens=False, moe_aux_loss_coef=0.0)
    path.write_text(json.dumps(cfg, indent=2))
    return model


def _torchrun() -> list[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(port),
    ]


def _train(launcher: list[str], model: Path, data: Path, out: Path, *extra: str) -> str:
    cmd = [
        *launcher,
        str(REPO / "launch/train.py"),
        "--model",
        str(model),
        "--data",
        str(data),
        "--output",
        str(out),
        "--deepspeed_config",
        MOE_JSON,
        "--max_steps",
        "6",
        "--micro_batch_size",
        "2",
        "--lr",
        "1e-2",
        "--warmup_steps",
        "1",
        "--save_every",
        "3",
        "--keep_last",
        "5",
        "--eval_every",
        "0",
        "--decode_every",
        "0",
        "--no_export",
        *extra,
    ]
    proc = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stderr


def _losses(run: Path) -> list[float]:
    return [json.loads(ln)["loss"] for ln in (run / "metrics.jsonl").read_text().splitlines()]


def _resumable_copy(run: Path, dest: Path) -> Path:
    """The run as a crash after step 3 would have left it (steps 4-6 gone)."""
    shutil.copytree(run, dest)
    shutil.rmtree(dest / "checkpoints" / "step_6")
    return dest


def _full(run: Path, step: int, num_experts: int | None):
    from trainer.train.reshard import read_full_state

    return read_full_state(run / "checkpoints" / f"step_{step}", num_experts=num_experts)


def _rel(a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor) -> float:
    return float((a - b).norm() / scale.norm().clamp_min(1e-30))


def _compare(straight: Path, resumed: Path, num_experts: int | None) -> dict[str, float]:
    """Worst differences of the resumed run from the uninterrupted one, over every tensor.

    ``loss_rel``: steps 4-6, relative. ``param_rel``: per parameter tensor, |resumed - straight|
    at step 6 over how far steps 4-6 moved it (|straight@6 - straight@3|). ``moment_rel``: per
    tensor, |resumed - straight| / |straight| of ``exp_avg`` and ``exp_avg_sq`` at step 6.
    """
    a, b = _losses(straight), _losses(resumed)
    assert len(a) == len(b) == 6 and a[:3] == b[:3]
    loss_rel = max(abs(x - y) / abs(x) for x, y in zip(a[3:], b[3:], strict=True))
    start, fa, fb = (
        _full(r, s, num_experts) for r, s in ((straight, 3), (straight, 6), (resumed, 6))
    )
    assert sorted(fa.fp32) == sorted(fb.fp32) and len(fa.fp32) > 10
    assert fa.step is not None and fb.step is not None and float(fa.step) == float(fb.step) == 6
    params = sorted(_rel(fb.fp32[n], fa.fp32[n], fa.fp32[n] - start.fp32[n]) for n in fa.fp32)
    moment = max(
        _rel(getattr(fb, m)[n], getattr(fa, m)[n], getattr(fa, m)[n])
        for m in ("exp_avg", "exp_avg_sq")
        for n in fa.fp32
    )
    figures = {
        "loss_rel": loss_rel,
        "param_rel": params[-1],
        "param_median": params[len(params) // 2],
        "moment_rel": moment,
    }
    print(f"elastic {straight.name} -> {resumed.name}: {figures}")
    return figures


def _within(figures: dict[str, float]) -> None:
    assert figures["loss_rel"] <= LOSS_RTOL, figures
    assert figures["param_rel"] <= PARAM_RTOL, figures
    assert figures["param_median"] <= PARAM_MEDIAN_RTOL, figures
    assert figures["moment_rel"] <= MOMENT_RTOL, figures


def _lose_moments(folder: Path) -> None:
    """Zero the Adam moments in a checkpoint's optimizer files (what a restart from export has)."""
    from trainer.train import checkpoint as ck
    from trainer.train.reshard import optimizer_files

    for path in optimizer_files(folder).values():
        sd = ck.safe_torch_load(path)
        for adam in sd["optimizer_state_dict"]["base_optimizer_state"]["state"].values():
            adam["exp_avg"].zero_()
            adam["exp_avg_sq"].zero_()
        torch.save(sd, path)
    files = {n: ck.file_record(folder / n) for n in ck._checked_files(folder)}
    (folder / ck.COMPLETE).write_text(json.dumps({"format": ck.RECORD_FORMAT, "files": files}))


@pytest.fixture(scope="module")
def moe_two(fx) -> Path:
    """The uninterrupted MoE run on 2 ranks, ep_size 2 (checkpoints at steps 3 and 6)."""
    straight = fx["root"] / "moe_two"
    _train(_torchrun(), fx["moe"], fx["data"], straight, *TWO_RANKS)
    return straight


def test_moe_two_ranks_ep2_resumed_on_one_rank(fx, moe_two, tmp_path):
    resumed = _resumable_copy(moe_two, tmp_path / "one")
    log = _train(ONE, fx["moe"], fx["data"], resumed, *ONE_RANK, "--resume")
    assert "elastic resume step=3 from world=2 ep_size=2 to world=1 ep_size=1" in log
    assert "the data continues from a new plan" not in log
    _within(_compare(moe_two, resumed, 4))


def test_elastic_tolerances_catch_lost_moments(fx, moe_two, tmp_path):
    """The same comparison, the resumed run's Adam moments zeroed: far outside the tolerances."""
    resumed = _resumable_copy(moe_two, tmp_path / "one")
    _lose_moments(resumed / "checkpoints" / "step_3")
    _train(ONE, fx["moe"], fx["data"], resumed, *ONE_RANK, "--resume")
    figures = _compare(moe_two, resumed, 4)
    assert figures["param_rel"] > 4 * PARAM_RTOL, figures
    assert figures["param_median"] > 10 * PARAM_MEDIAN_RTOL, figures
    assert figures["moment_rel"] > 4 * MOMENT_RTOL, figures


def test_resharded_state_is_exactly_the_saved_one(fx, moe_two, tmp_path, caplog):
    """Load the 2-rank checkpoint into a 1-rank engine and save it again: every fp32 master and
    Adam moment comes back bit for bit, the bf16 module weights are the masters rounded, and the
    export (``--export_only`` at another topology) writes the masters. With 1 loader slot instead
    of 2 the data position is samples seen (12) over the new micro batch x world, with a warning."""
    from trainer.train import checkpoint as ck
    from trainer.train import engine as eng
    from trainer.train.config import TrainConfig
    from trainer.train.export import export_model
    from trainer.train.reshard import checkpoint_ep_size, read_full_state
    from trainer.train.setup import open_run, prepare

    resumed = _resumable_copy(moe_two, tmp_path / "one")
    cfg = TrainConfig(
        model=str(fx["moe"]),
        data=str(fx["data"]),
        output=str(resumed),
        deepspeed_config=MOE_JSON,
        max_steps=6,
        micro_batch_size=2,
        grad_accum=2,
        num_workers=0,
        lr=1e-2,
        warmup_steps=1,
        resume=True,
    )
    saved_env, threads = dict(os.environ), torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        setup = prepare(cfg)
        with open_run(setup) as engine:
            with caplog.at_level("WARNING"):
                state = eng.resume_point(setup, engine).state
            assert (state.step, state.samples, state.micro_batches) == (3, 12, 6)
            assert "the data continues from a new plan at sample 12" in caplog.text
            ck.save_checkpoint(engine, tmp_path / "again", state, rank=0, keep_last=1)
            export_model(engine, setup.out / "export", tokenizer_dir=cfg.model, rank=0)
            module = {n: p.detach().clone() for n, p in engine.module.named_parameters()}
            shard = engine.module.expert_shard()
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        torch.set_num_threads(threads)
    assert checkpoint_ep_size(resumed / "checkpoints" / "step_3") == 2  # for unrecorded ones
    before = read_full_state(resumed / "checkpoints" / "step_3", num_experts=4)
    after = read_full_state(tmp_path / "again" / "step_3", num_experts=4)
    assert (before.world_size, before.ep_size, after.world_size, after.ep_size) == (2, 2, 1, 1)
    assert before.step is not None and after.step is not None and float(after.step) == 3
    assert sorted(before.fp32) == sorted(after.fp32)
    for n in before.fp32:
        for kind in ("fp32", "exp_avg", "exp_avg_sq"):
            assert torch.equal(getattr(before, kind)[n], getattr(after, kind)[n]), (kind, n)
    for n, p in module.items():
        want = before.fp32[shard.to_global(n)].view_as(p).to(p.dtype)
        assert torch.equal(p, want), n
    from safetensors.torch import load_file

    exported = load_file(str(resumed / "export" / "model.safetensors"))
    assert all(torch.equal(exported[n].flatten().float(), before.fp32[n]) for n in before.fp32)


def test_moe_one_rank_resumed_on_two_ranks_ep2(fx, tmp_path):
    straight = tmp_path / "one"
    _train(ONE, fx["moe"], fx["data"], straight, *ONE_RANK)
    resumed = _resumable_copy(straight, tmp_path / "two")
    log = _train(_torchrun(), fx["moe"], fx["data"], resumed, *TWO_RANKS, "--resume")
    assert "elastic resume step=3 from world=1 ep_size=1 to world=2 ep_size=2" in log
    assert "the data continues from a new plan" not in log
    _within(_compare(straight, resumed, 4))


def test_dense_two_ranks_resumed_on_one_rank(fx, tmp_path):
    straight = tmp_path / "two"
    _train(_torchrun(), fx["dense"], fx["data"], straight, *TWO_RANKS[2:], "--ep_size", "1")
    resumed = _resumable_copy(straight, tmp_path / "one")
    log = _train(ONE, fx["dense"], fx["data"], resumed, *ONE_RANK, "--resume")
    assert "elastic resume step=3 from world=2 ep_size=1 to world=1 ep_size=1" in log
    _within(_compare(straight, resumed, None))
