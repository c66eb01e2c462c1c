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
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from trainer.model.config import Dna2GffConfig
from trainer.model.encoder import GatedFFN

ROUTER_INIT_STD = 0.02
EXPERTS_PREFIX = "moe.deepspeed_moe.experts.deepspeed_experts."


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
        return self.moe.deepspeed_moe.gate.wg

    @property
    def local_experts(self) -> nn.ModuleList:
        return self.moe.deepspeed_moe.experts.deepspeed_experts

    def upcycle(self, dense: GatedFFN) -> None:
        """Copy a dense gated FFN's weights into every local expert (sparse upcycling)."""
        state = copy.deepcopy(dense.state_dict())
        for expert in self.local_experts:
            expert.load_state_dict({k: v for k, v in state.items() if k in expert.state_dict()})

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``x`` (B, T, H) -> (normed output (B, T, H), load-balancing loss (scalar))."""
        gate = self.moe.deepspeed_moe.gate
        gate.top2_2nd_expert_sampling = self.training
        gate.drop_tokens = self.drop_tokens and self.training
        out, l_aux, exp_counts = self.moe(x)
        self.last_load = load_fractions(exp_counts)
        return self.layernorm(x + out.to(x.dtype)), l_aux
