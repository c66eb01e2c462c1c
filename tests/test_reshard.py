"""Rebuilding full fp32 masters and Adam moments from ZeRO-1/2 optimizer files (no training).

Synthetic files in DeepSpeed 0.19's layout, 2 ranks with ``ep_size 2`` and 4 experts: a dense group
whose flat buffer ZeRO split over both ranks (one parameter straddles the cut), and an expert group
per rank holding that rank's 2 experts under *local* names. The rebuild must put the straddling
parameter back together in rank order and give rank 1's local experts 0, 1 their global ids 2, 3.
The end-to-end checks (real DeepSpeed engines, 1 <-> 2 ranks) are in ``test_elastic_resume.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from baking.common.errors import InputError
from trainer.train import reshard

EXPERT = "dec.mlp.moe.deepspeed_moe.experts.deepspeed_experts.{}.w"
A = torch.arange(6, dtype=torch.float32)  # dense "a.weight", 6 values
B = torch.arange(100, 104, dtype=torch.float32)  # dense "b.bias", 4 values
EXPERTS = {e: torch.full((3,), 10.0 * e) for e in range(4)}  # global expert e's values


def _frag(numel: int, start: int):
    from deepspeed.utils.tensor_fragment import fragment_address

    return fragment_address(numel=numel, start=start)


def _write(folder: Path, *, ranks: tuple[int, ...] = (0, 1), mapping_bug: bool = False) -> None:
    """What two ZeRO-2 ranks save: partitions of 5 dense values and each rank's 2 experts."""
    dense = torch.cat([A, B])  # the group's flat buffer, split 5 | 5
    for r in ranks:
        flat0 = dense[5 * r : 5 * r + 5].clone()
        maps0 = (
            {"a.weight": _frag(5, 0)}
            if r == 0
            else {"a.weight": _frag(1, 0), "b.bias": _frag(4 if not mapping_bug else 9, 1)}
        )
        flat1 = torch.cat([EXPERTS[2 * r], EXPERTS[2 * r + 1]])
        maps1 = {EXPERT.format(0): _frag(3, 0), EXPERT.format(1): _frag(3, 3)}
        state = {
            g: {"step": torch.tensor(3.0), "exp_avg": f * 2, "exp_avg_sq": f * f}
            for g, f in enumerate((flat0, flat1))
        }
        sd = {
            "optimizer_state_dict": {
                "base_optimizer_state": {
                    "state": state,
                    "param_groups": [
                        {"name": "decay", "params": [0]},
                        {"name": "ep_size_2", "moe": True, "params": [1]},
                    ],
                },
                "single_partition_of_fp32_groups": [flat0, flat1],
                "param_slice_mappings": [maps0, maps1],
            }
        }
        torch.save(sd, folder / f"bf16_zero_pp_rank_{r}_mp_rank_00_optim_states.pt")


def test_full_state_is_put_back_together_with_global_expert_ids(tmp_path):
    _write(tmp_path)
    full = reshard.read_full_state(tmp_path, num_experts=4)
    assert (full.world_size, full.ep_size, float(full.step)) == (2, 2, 3.0)
    assert torch.equal(full.fp32["a.weight"], A) and torch.equal(full.fp32["b.bias"], B)
    assert torch.equal(full.exp_avg["a.weight"], A * 2)
    assert torch.equal(full.exp_avg_sq["b.bias"], B * B)
    for e, values in EXPERTS.items():
        assert torch.equal(full.fp32[EXPERT.format(e)], values), e
        assert torch.equal(full.exp_avg[EXPERT.format(e)], values * 2), e
    assert reshard.checkpoint_ep_size(tmp_path) == 2


def test_only_the_wanted_parameters_are_kept(tmp_path):
    _write(tmp_path)
    wanted = {"b.bias", EXPERT.format(3)}
    full = reshard.read_full_state(tmp_path, num_experts=4, wanted=wanted)
    assert set(full.fp32) == wanted and torch.equal(full.fp32[EXPERT.format(3)], EXPERTS[3])


def test_a_missing_rank_file_is_one_error(tmp_path):
    _write(tmp_path, ranks=(1,))
    with pytest.raises(
        InputError, match=r"ZeRO optimizer files for ranks 0..N-1 expected, found \[1\]"
    ):
        reshard.read_full_state(tmp_path, num_experts=4)


def test_hostile_optimizer_files_are_one_error_naming_the_file(tmp_path):
    _write(tmp_path, mapping_bug=True)  # a fragment reaching past its partition
    with pytest.raises(InputError) as err:
        reshard.read_full_state(tmp_path, num_experts=4)
    assert err.value.path.endswith("bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt")
    assert err.value.reason.startswith("not a ZeRO-1/2 optimizer state (RuntimeError")
    torch.save({"optimizer_state_dict": {"nothing": 1}}, tmp_path / err.value.path)
    with pytest.raises(InputError, match="not a ZeRO-1/2 optimizer state .KeyError"):
        reshard.read_full_state(tmp_path, num_experts=4)
