"""Pointer coordinates: the decoder points at a base (an encoder token and a base inside it).

Why: DNABERT-2 has no position embeddings (ALiBi is relative only) and its BPE tokens are 1-32 bp
long, so a decoder that *writes* "1234" must count bases over hundreds of variable-length tokens --
nothing in the network carries a base position. Pointing needs no counting: the decoder scores
every base of the window against its state and picks one (pointer networks, span extraction).

Per base ``b`` of a window (token ``j`` holds it, at offset ``o`` inside the token)::

    key[b]   = LN(W_k enc[j] + off[o] + codon5[b] + codon3[b])
    input[b] = LN(W_i enc[j] + off[o] + codon5[b] + codon3[b])     # next decoder input after b
    logit[t, b] = (q_t . key[b] + q_t . dist[bucket(b - anchor_t)]) / sqrt(H),   q_t = W_q h_t

``codon5``/``codon3`` embed the three bases starting / ending at ``b`` (so a key knows whether it
sits on a start or a stop codon without decoding the BPE token); with ``pointer_context_bp = c``
the key and input also get ``ctx[b] = W_2 GELU(conv(onehot(bases))[b])``, a convolution over the
``2c + 1`` bases around ``b``: the ribosome-binding site that marks the true start codon of a
reading frame lies 5-15 bp from it, usually in another BPE token; ``dist`` embeds the signed,
log-bucketed distance from the last coordinate the target wrote (``anchor``: -1 before any, the
window's length after a cut end), which is what "the next feature after the previous one" needs.
This is the per-base factorisation of (token pointer, offset): one softmax over bases.

The decoder's distribution at every step is one softmax over the vocabulary logits *and* the base
logits ("joint logits": columns ``0..V-1`` tokens, ``V + b`` base ``b``), so the grammar can offer
``<cut>`` and positions at the same step.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from trainer.model.config import Dna2GffConfig

MAX_OFFSET = (
    64  # offsets inside a token; longer tokens share the last embedding (pointing stays exact)
)
NO_CODON = 64  # a codon running past the window (or holding a non-ACGT letter)
DIST_BINS = 40  # per sign: exact below 8, then 4 bins per doubling up to 2048
POINTER_INIT_STD = 0.02
AUX_CLASSES = 10
"""Encoder token labels: 0 none, 1-3 ``+`` CDS codon position, 4-6 ``-`` CDS codon position,
7 in a start codon of a CDS, 8 in a stop codon, 9 RNA gene (see ``trainer.data.examples``)."""


BASE_AUX_CLASSES = 3
"""Per-base labels on the pointer keys: 0 nothing, 1 where a CDS begins (the base the target
writes for its 5' end: a ``+`` CDS's first base, a ``-`` CDS's last), 2 where one ends (its 3'
end: the stop codon's outer base); see ``trainer.data.examples.base_labels``."""


def base_one_hot(codon5: Tensor, codon3: Tensor, base_mask: Tensor, dtype: torch.dtype) -> Tensor:
    """(B, 4, L) one-hot bases, read back from the codon codes the layout already carries (a base
    is the first of the codon starting at it, or the last of the one ending at it); a non-ACGT
    letter and padding are all-zero columns."""
    first, last = codon5 < NO_CODON, codon3 < NO_CODON
    base = torch.where(
        first, codon5 // 16, torch.where(last, codon3 % 4, torch.full_like(codon5, 4))
    )
    base = torch.where(base_mask.bool(), base, torch.full_like(base, 4))
    return nn.functional.one_hot(base, 5)[..., :4].to(dtype).transpose(1, 2)


def distance_bucket(d: Tensor) -> Tensor:
    """Signed log buckets of integer distances: ``[0, 2*DIST_BINS)``, 0..7 exact per sign."""
    a = d.abs()
    log = 8 + torch.floor(torch.log2(a.clamp(min=8).float() / 8) * 4).long()
    b = torch.where(a < 8, a, log).clamp(max=DIST_BINS - 1)
    return torch.where(d < 0, DIST_BINS + b, b)


@dataclass
class WindowBases:
    """The base arrays of a batch of windows (``trainer.data.layout``), each (B, L): per base the
    encoder position of its token, its offset inside the token, the codons starting / ending at it
    (``NO_CODON`` past the window) and whether it is a real base (not padding)."""

    token: Tensor
    offset: Tensor
    codon5: Tensor
    codon3: Tensor
    mask: Tensor

    BATCH_KEYS = ("base_token", "base_offset", "codon5", "codon3", "base_mask")
    """The names a batch dict gives these fields, in field order."""

    @classmethod
    def from_batch(cls, batch: Mapping[str, Tensor]) -> WindowBases:
        return cls(*(batch[k] for k in cls.BATCH_KEYS))


@dataclass
class PointerInputs:
    """What the decoder needs besides token ids, as one structure: the windows' bases and, per
    decoder position, the pointed base (-1 where the input is a token) and the anchor of the
    distance term; for a constrained loss also what the decoder may write at each step."""

    bases: WindowBases
    positions: Tensor
    """(B, T) base fed as input at each position, -1 where the input is a token"""
    anchors: Tensor
    """(B, T) anchor for the base logits predicted at each position"""
    allowed: Tensor | None = None
    """(B, T, V + L) what the constrained decoder allows at each step (None: no constraint)"""

    DECODER_KEYS = ("decoder_positions", "decoder_anchors", "decoder_allowed")
    """The names a batch dict gives ``positions``, ``anchors`` and ``allowed``."""

    @classmethod
    def from_batch(cls, batch: Mapping[str, Tensor]) -> PointerInputs | None:
        """The pointer inputs of a collated batch (``trainer.data.examples``); None for a batch
        without base arrays (the model then scores target tokens only)."""
        if WindowBases.BATCH_KEYS[0] not in batch:
            return None
        positions, anchors, allowed = cls.DECODER_KEYS
        return cls(
            WindowBases.from_batch(batch), batch[positions], batch[anchors], batch.get(allowed)
        )


@dataclass
class PointerMemory:
    """Per-base keys and next-step inputs of a batch of windows (computed once per encoding)."""

    keys: Tensor
    """(B, L, H)"""
    inputs: Tensor
    """(B, L, H)"""
    base_mask: Tensor
    """(B, L) bool: real bases"""

    def index_select(self, index: Tensor) -> PointerMemory:
        return PointerMemory(
            self.keys.index_select(0, index),
            self.inputs.index_select(0, index),
            self.base_mask.index_select(0, index),
        )


class PointerHead(nn.Module):
    """Base keys, the query, the distance embedding and the pointed-base decoder input."""

    def __init__(self, config: Dna2GffConfig) -> None:
        super().__init__()
        h = config.hidden_size
        self.hidden = h
        self.key = nn.Linear(h, h)
        self.inp = nn.Linear(h, h)
        self.query = nn.Linear(h, h)
        self.offset = nn.Embedding(MAX_OFFSET, h)
        self.codon5 = nn.Embedding(NO_CODON + 1, h)
        self.codon3 = nn.Embedding(NO_CODON + 1, h)
        self.distance = nn.Embedding(2 * DIST_BINS, h)
        self.key_norm = nn.LayerNorm(h, eps=config.layer_norm_eps)
        self.inp_norm = nn.LayerNorm(h, eps=config.layer_norm_eps)
        c = config.pointer_context_bp
        self.context: nn.Sequential | None = None
        if c > 0:
            self.context = nn.Sequential(
                nn.Conv1d(4, h, kernel_size=2 * c + 1, padding=c), nn.GELU(), nn.Conv1d(h, h, 1)
            )

    def reset_parameters(self, generator: torch.Generator) -> None:
        """N(0, 0.02) weights, zero biases, unit norms, from ``generator`` (seeded by the caller)."""
        with torch.no_grad():
            for m in (self.key, self.inp, self.query):
                m.weight.copy_(torch.randn(m.weight.shape, generator=generator) * POINTER_INIT_STD)
                m.bias.zero_()
            for e in (self.offset, self.codon5, self.codon3, self.distance):
                e.weight.copy_(torch.randn(e.weight.shape, generator=generator) * POINTER_INIT_STD)
            for n in (self.key_norm, self.inp_norm):
                n.weight.fill_(1.0)
                n.bias.zero_()
            if self.context is not None:  # drawn last: the other parts match a model without it
                for conv in self.context:
                    if not isinstance(conv, nn.Conv1d) or conv.bias is None:
                        continue
                    w = torch.randn(conv.weight.shape, generator=generator) * POINTER_INIT_STD
                    conv.weight.copy_(w)
                    conv.bias.zero_()

    def memory(self, enc: Tensor, bases: WindowBases) -> PointerMemory:
        """Keys and inputs of every base: ``enc`` (B, S, H), the base arrays (B, L)."""
        h = enc.shape[-1]
        e = torch.gather(enc, 1, bases.token.unsqueeze(-1).expand(-1, -1, h))  # (B, L, H)
        feats = (
            self.offset(bases.offset.clamp(max=MAX_OFFSET - 1))
            + self.codon5(bases.codon5)
            + self.codon3(bases.codon3)
        )
        if self.context is not None:
            feats = feats + self.context(
                base_one_hot(bases.codon5, bases.codon3, bases.mask, e.dtype)
            ).transpose(1, 2)
        keys = self.key_norm(self.key(e) + feats)
        inputs = self.inp_norm(self.inp(e) + feats)
        return PointerMemory(keys, inputs, bases.mask.bool())

    def logits(self, hidden: Tensor, memory: PointerMemory, anchors: Tensor) -> Tensor:
        """(B, T, L) base logits for decoder states (B, T, H) and anchors (B, T)."""
        q = self.query(hidden)
        scale = 1.0 / math.sqrt(self.hidden)
        scores = torch.matmul(q, memory.keys.transpose(1, 2)) * scale  # (B, T, L)
        length = memory.keys.shape[1]
        pos = torch.arange(length, device=hidden.device)
        # anchors lie in [-1, length]: one bucket per possible distance, then index
        table = distance_bucket(torch.arange(-length - 1, length + 1, device=hidden.device))
        bucket = table[pos[None, None, :] - anchors[:, :, None] + length + 1]  # (B, T, L)
        qd = torch.matmul(q, self.distance.weight.t()) * scale  # (B, T, 2*DIST_BINS)
        scores = scores + torch.gather(qd, -1, bucket)
        masked = torch.finfo(scores.dtype).min / 2
        return scores.masked_fill(~memory.base_mask[:, None, :], masked)

    def step_inputs(self, x: Tensor, memory: PointerMemory, positions: Tensor) -> Tensor:
        """Decoder inputs: token embeddings ``x`` (B, T, H), replaced by the pointed base's input
        where ``positions`` (B, T) is a base (>= 0)."""
        h = x.shape[-1]
        idx = positions.clamp(min=0).unsqueeze(-1).expand(-1, -1, h)
        pointed = torch.gather(memory.inputs, 1, idx).to(x.dtype)
        return torch.where((positions >= 0).unsqueeze(-1), pointed, x)
