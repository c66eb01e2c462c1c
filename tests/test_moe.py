"""DeepSpeed MoE decoder MLPs: upcycled experts, aux loss, expert load, any ep_size on load."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from trainer.distributed import free_port
from trainer.model.build import build_from_dnabert2
from trainer.model.encoder import GatedMLP
from trainer.model.moe import EXPERTS_PREFIX, ExpertShard, MoEMLP, is_expert_key, load_fractions
from trainer.model.seq2seq import Dna2GffModel
from trainer.random_checkpoint import write_random_dnabert2

SIZES = dict(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=48, vocab_size=60)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_random_dnabert2(tmp_path_factory.mktemp("ck") / "dnabert2", **SIZES)


def inputs(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 60, (3, 8), generator=gen)
    mask = torch.ones_like(ids)
    mask[2, 5:] = 0
    dec = torch.randint(5, 60, (3, 6), generator=gen)
    return ids, mask, dec


@pytest.mark.parametrize("top_k", [1, 2])
def test_moe_output_equals_dense_output_at_init(checkpoint, top_k):
    dense = build_from_dnabert2(str(checkpoint)).eval()
    moe = build_from_dnabert2(str(checkpoint), use_moe=True, num_experts=4, moe_top_k=top_k).eval()
    ids, mask, dec = inputs()
    want = dense(ids, mask, dec).logits
    got = moe(ids, mask, dec).logits
    if top_k == 2:  # normalised top-2 gates sum to 1 over identical experts
        assert torch.allclose(got, want, atol=1e-5)
    else:  # top-1 scales by the gate probability: equal only up to that factor, never identical
        assert not torch.allclose(got, want, atol=1e-5)
    # training mode (dropout off, no token dropping): still equal, Gumbel sampling or not
    for model in (dense, moe):
        model.train()
        for m in model.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
    for layer in moe.moe_layers().values():
        layer.drop_tokens = False
    if top_k == 2:
        assert torch.allclose(moe(ids, mask, dec).logits, dense(ids, mask, dec).logits, atol=1e-5)


def test_layer_level_upcycling(checkpoint):
    model = build_from_dnabert2(str(checkpoint), use_moe=True, num_experts=4).eval()
    src = build_from_dnabert2(str(checkpoint)).eval().decoder.layer[0].mlp
    assert isinstance(src, GatedMLP)
    layer = model.decoder.layer[0].mlp
    assert isinstance(layer, MoEMLP) and len(layer.local_experts) == 4
    for expert in layer.local_experts:
        assert torch.equal(expert.gated_layers.weight, src.gated_layers.weight)
        assert torch.equal(expert.wo.bias, src.wo.bias)
        assert expert.gated_layers.weight.data_ptr() != src.gated_layers.weight.data_ptr()
    assert 0.01 < layer.router.weight.std() < 0.03  # random router N(0, 0.02)
    x = torch.randn(2, 5, 32)
    out, l_aux = layer(x)
    assert torch.allclose(out, src(x), atol=1e-5) and l_aux.ndim == 0


def test_aux_loss_and_expert_load(checkpoint):
    model = build_from_dnabert2(str(checkpoint), use_moe=True, num_experts=4).train()
    ids, mask, dec = inputs(1)
    out = model(ids, mask, dec, labels=dec)
    assert out.aux_loss.ndim == 0 and out.aux_loss > 0
    load = model.expert_load()
    assert sorted(load) == [0, 1] and all(v.shape == (4,) for v in load.values())
    assert all(torch.allclose(v.sum(), torch.tensor(1.0)) for v in load.values())
    out.aux_loss.backward()  # the balancing loss reaches the routers
    router = model.decoder.layer[0].mlp.router.weight
    assert router.grad is not None and router.grad.abs().sum() > 0
    dense = build_from_dnabert2(str(checkpoint))
    assert dense(ids, mask, dec).aux_loss == 0 and dense.expert_load() == {}
    assert torch.equal(load_fractions(torch.tensor([0, 0])), torch.tensor([0.0, 0.0]))


def test_eval_is_deterministic(checkpoint):
    model = build_from_dnabert2(str(checkpoint), use_moe=True, num_experts=4).eval()
    with torch.no_grad():  # make the router decisive so a sampled 2nd expert would show
        for layer in model.moe_layers().values():
            layer.router.weight.mul_(50)
            for j, expert in enumerate(layer.local_experts):
                expert.wo.bias.add_(j)
    ids, mask, dec = inputs(2)
    torch.manual_seed(0)
    a = model(ids, mask, dec).logits
    torch.manual_seed(1)
    b = model(ids, mask, dec).logits
    assert torch.equal(a, b)


@pytest.mark.parametrize("ep_size", [2, 4])
def test_saved_model_loads_at_any_ep_size(checkpoint, tmp_path, ep_size):
    full = build_from_dnabert2(str(checkpoint), use_moe=True, num_experts=4)
    with torch.no_grad():  # make experts distinguishable
        for layer in full.moe_layers().values():
            for j, expert in enumerate(layer.local_experts):
                expert.wo.bias.fill_(float(j))
    full.save_pretrained(tmp_path / "m")
    local = 4 // ep_size
    seen = []
    for rank in range(ep_size):
        part = Dna2GffModel.from_pretrained(tmp_path / "m", ep_size=ep_size, ep_rank=rank)
        experts = part.decoder.layer[1].mlp.local_experts
        assert len(experts) == local
        # DeepSpeed's expert tags survive loading (its optimizer groups rely on them)
        assert all(p.allreduce is False for p in experts.parameters())
        assert not any(p.is_meta for p in part.parameters())
        seen += [e.wo.bias[0].item() for e in experts]
        canon = part.canonical_state_dict()
        globals_ = sorted(
            {
                k.split("deepspeed_experts.")[1].split(".")[0]
                for k in canon
                if "deepspeed_experts" in k
            }
        )
        assert globals_ == [str(rank * local + j) for j in range(local)]
        assert torch.equal(
            canon["encoder.layer.0.mlp.wo.weight"],
            full.state_dict()["encoder.layer.0.mlp.wo.weight"],
        )
    assert seen == [0.0, 1.0, 2.0, 3.0]  # every expert held by exactly one rank, in order
    with pytest.raises(ValueError, match="ep_size=3"):
        Dna2GffModel.from_pretrained(tmp_path / "m", ep_size=3)


def test_expert_shard_maps_keys_between_local_and_global_ids():
    """Rank 1 of 2 with 16 experts holds global 8..15 as local 0..7 (two-digit ids included)."""
    key = f"decoder.layer.1.mlp.{EXPERTS_PREFIX}{{}}.wo.weight"
    shard = ExpertShard(num_experts=16, ep_size=2, ep_rank=1)
    assert (shard.local, shard.first) == (8, 8)
    assert shard.to_global(key.format(2)) == key.format(10)
    assert shard.to_local(key.format(15)) == key.format(7)
    assert shard.to_local(key.format(7)) is None  # rank 0's expert
    assert shard.to_local(key.format(16)) is None  # no such expert
    other = "decoder.layer.1.mlp.layernorm.weight"
    assert shard.to_global(other) == shard.to_local(other) == other
    assert not is_expert_key(other) and is_expert_key(key.format(3))
    assert shard.all_global(key.format(0)) == [key.format(e) for e in range(16)]
    assert shard.all_global(key.format(1)) == [] and shard.all_global(other) == [other]
    assert not is_expert_key(f"{EXPERTS_PREFIX}x.wo.weight")  # an index must be a number


def test_partial_expert_set_is_an_error(checkpoint, tmp_path):
    model = build_from_dnabert2(str(checkpoint), use_moe=True, num_experts=4)
    sd = model.canonical_state_dict()
    sd = {k: v for k, v in sd.items() if "deepspeed_experts.3." not in k}
    with pytest.raises(Exception, match="deepspeed_experts.3"):
        model.load_canonical_state_dict(sd)


def test_plain_process_group_and_deepspeed_parallelism(tmp_path, checkpoint):
    """In a fresh interpreter: a 1-process gloo world lets DeepSpeed set up expert groups."""
    code = textwrap.dedent(
        f"""
        import torch, torch.distributed as dist
        from trainer.distributed import ensure_process_group, expert_parallel_rank
        from trainer.model.build import build_from_dnabert2
        assert ensure_process_group() is True and ensure_process_group() is False
        assert dist.get_world_size() == 1 and expert_parallel_rank(1) == 0
        model = build_from_dnabert2({str(checkpoint)!r}, use_moe=True, num_experts=4).eval()
        for layer in model.moe_layers().values():
            layer.moe.set_deepspeed_parallelism()
        ids = torch.randint(5, 60, (2, 6))
        out = model(ids, torch.ones_like(ids), ids[:, :3])
        assert torch.isfinite(out.logits).all()
        print("ok")
        """
    )
    env = {"DS_ACCELERATOR": "cpu", "PATH": "/usr/bin:/bin"}
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip().endswith("ok")


EP2_SCRIPT = """
import os, sys, torch, torch.distributed as dist
from trainer.distributed import ensure_process_group
from trainer.model.seq2seq import Dna2GffModel
dist.init_process_group("gloo")
ensure_process_group()  # reuses the launcher's group
rank = dist.get_rank()
model = Dna2GffModel.from_pretrained(sys.argv[1], ep_size=2).eval()
for layer in model.moe_layers().values():
    layer.moe.set_deepspeed_parallelism()
assert model.ep_rank == rank
data = torch.load(sys.argv[2])
with torch.no_grad():
    logits = model(data["ids"], data["mask"], data["dec"]).logits
assert torch.allclose(logits, data["want"], atol=1e-5), (logits - data["want"]).abs().max()
model.save_pretrained(sys.argv[3])  # gathers experts; rank 0 writes
print("rank", rank, "ok")
"""


@pytest.mark.slow
def test_expert_parallel_two_processes_match_one(checkpoint, tmp_path):
    """Two gloo ranks at ep_size=2 (all-to-all through DeepSpeed) give the ep_size=1 logits, and
    saving from them gathers every expert back into the same canonical file."""
    from safetensors.torch import load_file

    model = build_from_dnabert2(str(checkpoint), use_moe=True, num_experts=4)
    with torch.no_grad():
        for layer in model.moe_layers().values():
            for j, expert in enumerate(layer.local_experts):
                expert.wo.bias.add_(0.1 * j)
    model.save_pretrained(tmp_path / "m")
    model.eval()
    ids, mask, dec = inputs(4)
    with torch.no_grad():
        want = model(ids, mask, dec).logits
    torch.save({"ids": ids, "mask": mask, "dec": dec, "want": want}, tmp_path / "data.pt")
    port = free_port()
    repo = str(Path(__file__).resolve().parents[1])
    procs = []
    for rank in range(2):
        env = dict(
            os.environ,
            DS_ACCELERATOR="cpu",
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port),
            RANK=str(rank),
            WORLD_SIZE="2",
            LOCAL_RANK=str(rank),
            PYTHONPATH=repo,
        )
        args = [
            sys.executable,
            "-c",
            EP2_SCRIPT,
            str(tmp_path / "m"),
            str(tmp_path / "data.pt"),
            str(tmp_path / "out"),
        ]
        procs.append(
            subprocess.Popen(
                args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        )
    results = [p.communicate(timeout=240) for p in procs]
    for p, (out, err) in zip(procs, results):
        assert p.returncode == 0, err[-3000:]
        assert out.strip().endswith("ok")
    a = load_file(str(tmp_path / "m" / "model.safetensors"))
    b = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
