"""Sparse-upcycled MoE MLP for the decoder, a thin wrapper around ``deepspeed.moe.layer.MoE``.

Three jobs, each in one place:
- *build*: every expert starts as a copy of the layer's pre-trained gated FFN (``upcycle``); the
  router (``gate.wg``) is random, N(0, 0.02). With all experts equal and top-k gates normalised to
  sum to 1, the MoE output equals the dense output at init, whatever the router says.
- *plumb the loss*: ``forward`` returns the output and DeepSpeed's load-balancing ``l_aux``; the model
  sums those into ``Seq2SeqOutput.aux_loss`` and the trainer weights it.
- *report load*: ``last_load`` is the fraction of routed token slots each (global) expert got in the
  last forward, for TensorBoard.

Evaluation is made deterministic and drop-free: DeepSpeed's top-2 gate samples the second expert
with Gumbel noise and drops tokens over capacity; both are useful while training, but at inference a
cached step-by-step decode must give the same result as one full forward, so in ``eval()`` we turn
the sampling off and never drop tokens.

The layer also owns the *expert index*: DeepSpeed numbers a rank's experts 0..local-1, a model
folder stores them under global ids ("canonical" state dict) so a folder saved at one expert-parallel
size loads at any other. Rank r of an ``ep_size``-way group holds global experts
``r*local .. (r+1)*local - 1``; ``ExpertShard`` maps state-dict keys both ways and ``gather_experts``
collects every rank's experts for saving.

DeepSpeed (0.19.x) offers no public accessor for the router, the expert modules or the gate's
sampling/dropping switches; where we reach past ``deepspeed.moe.layer.MoE``'s constructor and
``forward`` a comment names the attribute (list in docs/model.md).
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from trainer.distributed import expert_parallel_group
from trainer.model.config import Dna2GffConfig
from trainer.model.encoder import GatedFFN

ROUTER_INIT_STD = 0.02
# Where DeepSpeed 0.19.x keeps the local experts inside ``MoE`` (``MoE.deepspeed_moe`` ->
# ``MOELayer.experts`` -> ``Experts.deepspeed_experts``, a ModuleList): no public name exists, and
# the saved state-dict keys follow it, so it is spelled once, here.
EXPERTS_PREFIX = "moe.deepspeed_moe.experts.deepspeed_experts."
_EXPERT_KEY = re.compile(r"^((?:.+\.)?" + re.escape(EXPERTS_PREFIX) + r")(\d+)\.(.+)$")


def is_expert_key(key: str) -> bool:
    """Whether a state-dict key names a tensor of one expert (``...deepspeed_experts.N.*``)."""
    return _EXPERT_KEY.match(key) is not None


@dataclass(frozen=True)
class ExpertShard:
    """The experts one expert-parallel rank holds: global ids ``first .. first + local - 1``.

    Maps state-dict keys between the rank's modules (local ids 0..local-1) and the canonical form
    (global ids); keys that are not expert tensors pass through unchanged.
    """

    num_experts: int
    ep_size: int = 1
    ep_rank: int = 0

    @property
    def local(self) -> int:
        return self.num_experts // self.ep_size

    @property
    def first(self) -> int:
        return self.ep_rank * self.local

    def to_global(self, key: str) -> str:
        """A key of this rank's module -> its canonical key."""
        match = _EXPERT_KEY.match(key)
        if not match:
            return key
        return f"{match.group(1)}{self.first + int(match.group(2))}.{match.group(3)}"

    def to_local(self, key: str) -> str | None:
        """A canonical key -> this rank's key; None for an expert another rank holds."""
        match = _EXPERT_KEY.match(key)
        if not match:
            return key
        e = int(match.group(2))
        if not self.first <= e < self.first + self.local:
            return None
        return f"{match.group(1)}{e - self.first}.{match.group(3)}"

    def all_global(self, key: str) -> list[str]:
        """The canonical keys a key of this rank's module stands for in a complete model.

        Local expert 0's key -> the same tensor of every global expert; the other local experts'
        keys -> [] (expert 0 covered them); any other key -> itself.
        """
        match = _EXPERT_KEY.match(key)
        if not match:
            return [key]
        if int(match.group(2)) != 0:
            return []
        return [f"{match.group(1)}{e}.{match.group(3)}" for e in range(self.num_experts)]


def gather_experts(state: dict[str, Tensor], ep_size: int) -> dict[str, Tensor]:
    """Add every other rank's expert tensors (canonical keys) to ``state``, in place.

    A collective over the expert-parallel group: every rank of it must call it.
    """
    import torch.distributed as dist

    group = expert_parallel_group(ep_size)
    mine = {k: v.detach().cpu() for k, v in state.items() if is_expert_key(k)}
    parts: list[Any] = [None] * ep_size
    dist.all_gather_object(parts, mine, group=group)
    for part in parts:
        state.update(part)
    return state


def load_fractions(exp_counts: Tensor) -> Tensor:
    """Token slots per expert -> fractions summing to 1 (zeros when nothing was routed)."""
    counts = exp_counts.detach().float()
    total = counts.sum()
    return counts / total if total > 0 else counts


class MoEMLP(nn.Module):
    """Decoder MLP block with experts: ``layernorm(x + MoE(x))`` (post-LN, like ``GatedMLP``)."""

    def __init__(self, config: Dna2GffConfig, ep_size: int = 1) -> None:
        super().__init__()
        from deepspeed.moe.layer import MoE  # deferred: importing deepspeed is slow and logs

        if config.num_experts % ep_size:
            raise ValueError(f"num_experts={config.num_experts} not divisible by ep_size={ep_size}")
        self.num_experts = config.num_experts
        self.ep_size = ep_size
        self.drop_tokens = config.moe_drop_tokens
        self.moe = MoE(
            config.hidden_size,
            expert=GatedFFN(config),
            num_experts=config.num_experts,
            ep_size=ep_size,
            k=config.moe_top_k,
            capacity_factor=config.moe_capacity_factor,
            eval_capacity_factor=config.moe_eval_capacity_factor,
            min_capacity=config.moe_min_capacity,
            drop_tokens=config.moe_drop_tokens,
            use_rts=False,
        )
        nn.init.normal_(self.router.weight, std=ROUTER_INIT_STD)
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.last_load: Tensor = torch.zeros(config.num_experts)

    @property
    def router(self) -> nn.Linear:
        """The gate's linear layer. No public API in DeepSpeed 0.19.x: ``MoE.deepspeed_moe``
        (``MOELayer``) -> ``.gate`` (``TopKGate``) -> ``.wg``."""
        return self.moe.deepspeed_moe.gate.wg

    @property
    def local_experts(self) -> nn.ModuleList:
        """This rank's experts, in local order. No public API in DeepSpeed 0.19.x: the ModuleList
        at ``EXPERTS_PREFIX`` (``MoE.deepspeed_moe.experts.deepspeed_experts``)."""
        return self.moe.deepspeed_moe.experts.deepspeed_experts

    def upcycle(self, dense: GatedFFN) -> None:
        """Copy a dense gated FFN's weights into every local expert (sparse upcycling)."""
        state = copy.deepcopy(dense.state_dict())
        for expert in self.local_experts:
            expert.load_state_dict({k: v for k, v in state.items() if k in expert.state_dict()})

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``x`` (B, T, H) -> (normed output (B, T, H), load-balancing loss (scalar))."""
        # DeepSpeed 0.19.x fixes ``top2_2nd_expert_sampling`` and ``drop_tokens`` in the
        # constructor and reads them from ``TopKGate`` on every call whatever ``training`` says;
        # no public setter exists, so the gate's attributes are switched here.
        gate = self.moe.deepspeed_moe.gate
        gate.top2_2nd_expert_sampling = self.training
        gate.drop_tokens = self.drop_tokens and self.training
        out, l_aux, exp_counts = self.moe(x)
        self.last_load = load_fractions(exp_counts)
        return self.layernorm(x + out.to(x.dtype)), l_aux
