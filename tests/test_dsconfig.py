"""DeepSpeed config filling: "auto" from the command line, explicit values win, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from baking.common.errors import ConfigError, InputError
from trainer.distributed import disable_cpu_shm_comm
from trainer.train.config import TrainConfig
from trainer.train.dsconfig import (
    DEFAULT_CONFIG,
    check_ep_size,
    load_ds_config,
    resolve_ds_config,
)

REPO = Path(__file__).resolve().parents[1]


def _cfg(**kw) -> TrainConfig:
    return TrainConfig(model="m", data="d", output="o", **kw)


@pytest.mark.parametrize("name", ["zero2_bf16.json", "zero2_bf16_moe.json"])
def test_shipped_configs_fill_completely(name):
    ds = load_ds_config(REPO / "ds_configs" / name)
    r = resolve_ds_config(
        ds, _cfg(micro_batch_size=3, grad_accum=2, lr=1e-3, warmup_steps=5), 4, 50
    )
    c = r.config
    assert (r.micro_batch_size, r.grad_accum, r.bf16) == (3, 2, True)
    assert c["train_batch_size"] == 3 * 2 * 4
    assert c["optimizer"]["params"]["lr"] == 1e-3
    assert c["optimizer"]["params"]["torch_adam"] is True  # compiles nothing
    assert c["zero_optimization"]["stage"] == 2
    assert c["scheduler"]["params"]["total_num_steps"] == 50
    assert c["scheduler"]["params"]["warmup_num_steps"] == 5
    assert "auto" not in json.dumps(c)
    assert "auto" in json.dumps(ds), "the input dict must not be modified"


def test_explicit_values_win_and_are_reported_back():
    ds = dict(DEFAULT_CONFIG, train_micro_batch_size_per_gpu=2, gradient_accumulation_steps=3)
    r = resolve_ds_config(ds, _cfg(micro_batch_size=8, grad_accum=1), world_size=2, total_steps=10)
    assert (r.micro_batch_size, r.grad_accum) == (2, 3)
    assert r.config["train_batch_size"] == 12


def test_inconsistent_batch_sizes_name_the_numbers():
    ds = dict(DEFAULT_CONFIG, train_batch_size=10)
    with pytest.raises(
        ConfigError, match=r"train_batch_size=10 must equal .*per_gpu=4 x .* x world_size=2"
    ):
        resolve_ds_config(ds, _cfg(micro_batch_size=4), world_size=2, total_steps=10)


def test_unfillable_auto_is_named():
    ds = dict(DEFAULT_CONFIG, mystery={"knob": "auto"})
    with pytest.raises(ConfigError, match=r"mystery\.knob"):
        resolve_ds_config(ds, _cfg(), world_size=1, total_steps=10)


def test_no_bf16_and_short_schedules():
    r = resolve_ds_config(DEFAULT_CONFIG, _cfg(bf16=False, warmup_steps=100), 1, 3)
    assert r.bf16 is False and r.config["bf16"]["enabled"] is False
    assert r.config["scheduler"]["params"]["warmup_num_steps"] == 2  # warmup shorter than the run


def test_bad_files(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_ds_config(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{\n  "a": 1,\n  oops\n}')
    with pytest.raises(InputError, match=r"bad\.json:3:3: not valid JSON"):
        load_ds_config(bad)
    (tmp_path / "list.json").write_text("[1]")
    with pytest.raises(InputError, match="JSON object"):
        load_ds_config(tmp_path / "list.json")


def test_check_ep_size():
    check_ep_size(2, 4, 8)
    check_ep_size(1, 3, None)
    with pytest.raises(ConfigError, match="must divide the world size 3"):
        check_ep_size(2, 3, 8)
    with pytest.raises(ConfigError, match="must divide the number of experts 6"):
        check_ep_size(4, 4, 6)
    with pytest.raises(ConfigError, match="needs a MoE model"):
        check_ep_size(2, 2, None)


def test_train_config_validation():
    with pytest.raises(ConfigError, match="micro_batch_size must be a positive integer, got 0"):
        _cfg(micro_batch_size=0)
    with pytest.raises(ConfigError, match="lr must be > 0"):
        _cfg(lr=0.0)
    with pytest.raises(ConfigError, match="unknown TrainConfig field"):
        TrainConfig.from_dict({"model": "m", "data": "d", "output": "o", "bogus": 1})
    c = _cfg(epochs=1.5, deepspeed_config="ds.json")
    assert TrainConfig.from_dict(c.to_dict()) == c


def test_shm_comm_op_is_disabled():
    import deepspeed.ops as ds_ops

    disable_cpu_shm_comm()
    assert ds_ops.__compatible_ops__["deepspeed_shm_comm"] is False
