"""The decoder run one position at a time, for inference only.

``Dna2GffModel.decode`` with ``past_key_values`` is the general step (training shares its code),
and at annotate's shapes (windows x beams rows, one new position, a 1,536-base window) it spends
most of its time on work that does not change between steps. ``StepDecoder`` computes the same
function from the same modules, with that work done once:

- the cross-attention keys/values and padding bias are computed once per *window*, not per beam
  row, and never reordered: a beam step only reorders hypotheses inside a window, which all
  attend to the same source (the general cache copies them for every row at every step: a third
  of annotate's time);
- the pointer memory (per-base keys and inputs) stays one per window; the beams of a window are
  its queries (one ``(K, H) x (H, L)`` product per window instead of K);
- self-attention keys/values go into buffers allocated once (no growing ``torch.cat``), the
  causal ALiBi row of each step comes from a table built once;
- windows whose hypotheses have all finished leave the batch (``keep``): the slowest window of a
  batch no longer makes the others decode to its length.

``encode_unpadded`` is the encoder with each window's attention run on its own tokens: the
padded batch otherwise builds a (windows, heads, S, S) padding-masked ALiBi bias for every
batch, the largest single cost of the encoder at these shapes.

``bf16=True`` (annotate's ``--bf16`` on a CPU) runs the matrix-heavy part that is computed once
per window in bfloat16: the encoder, the pointer memory's projections and context convolution,
and the cross-attention K/V projection, from bfloat16 copies of those modules' weights (CPUs with
AMX/AVX512-BF16 run these products several times faster than in float32). Their results are
stored in float32 and every decoding step, the grammar and the beam search stay float32, so the
step-by-step choices see the same arithmetic; only the inputs they read are rounded. This is a
different function (items can differ where two choices are within rounding of each other), so
it is opt-in; its effect on F1 is measured in ``docs/annotate-evaluate.md``.

Equivalence with the reference step (``trainer.inference.generate.generate_ids``)
is tested in ``tests/test_step_decoder.py``.
"""

from __future__ import annotations

import copy
import math
import weakref
from typing import Any, TypeVar, cast

import torch
from torch import Tensor

from trainer.model.encoder import attention_bias, compute_dtype, masked_value, sdpa
from trainer.model.moe import MoEMLP
from trainer.model.pointer import (
    MAX_OFFSET,
    PointerMemory,
    WindowBases,
    base_one_hot,
    distance_bucket,
)

M = TypeVar("M", bound=torch.nn.Module)


_COPIES: weakref.WeakKeyDictionary[torch.nn.Module, tuple[tuple, torch.nn.Module]] = (
    weakref.WeakKeyDictionary()
)
"""module -> (what its weights were when copied, the copy in a dtype): ``in_dtype``'s cache."""


def in_dtype(module: M, dtype: torch.dtype | None) -> M:
    """``module`` itself (``dtype`` None) or a copy with its parameters and buffers in ``dtype``.

    A copy, not a cast of the model: the float32 model stays what other callers (and the float32
    path) use. Copies are cached per module and remade when a weight changed (another tensor or
    an in-place update, e.g. a training step between validations): ``deepcopy`` of these modules
    took ~10 ms each, ~2.5 ms per window at batch 32. A forked decoding child inherits the
    parent's copies.
    """
    if dtype is None:
        return module
    state = (
        dtype,
        *((t.data_ptr(), t._version) for t in (*module.parameters(), *module.buffers())),
    )
    hit = _COPIES.get(module)
    if hit is not None and hit[0] == state:
        return cast(M, hit[1])
    low = copy.deepcopy(module).to(dtype).eval()
    _COPIES[module] = (state, low)
    return low


def encode_unpadded(
    model: Any, input_ids: Tensor, attention_mask: Tensor, dtype: torch.dtype | None = None
) -> Tensor:
    """``model.encode`` (same modules, same result up to float rounding) with self-attention run
    window by window on the real tokens, under the unmasked ALiBi bias sliced from one table.

    The projections and MLP still run on the padded batch (one matrix product each); padding rows
    attend to nothing (zeros) and, as in ``DNABert2Encoder``, come out as 0. ``dtype`` (e.g.
    bfloat16) runs all of it on copies of the modules in that dtype and returns that dtype.
    """
    encoder = in_dtype(model.encoder, dtype)
    x = in_dtype(model.embeddings, dtype)(input_ids)  # (b, S, H)
    b, s, h = x.shape
    lengths = attention_mask.sum(dim=1).tolist()
    # the float32 model's slopes: a copy's buffers are in ``dtype``
    alibi = attention_bias(model.encoder.alibi_slopes, s, s, causal=False, dtype=compute_dtype(x))
    for layer in encoder.layers():
        att = layer.attention
        q, k, v = att.self(x, att.num_heads)  # (b, nh, S, hd)
        attended = x.new_zeros(b, s, h)
        for i, n in enumerate(lengths):
            one = slice(i, i + 1), slice(None), slice(0, n)
            attended[i, :n] = sdpa(q[one], k[one], v[one], alibi[:, :, :n, :n], 0.0)[0]
        x = layer.mlp(att.output(attended, x))
    return x * attention_mask[..., None].to(x.dtype)


def context_by_rows(context: torch.nn.Sequential, onehot: Tensor) -> Tensor:
    """The pointer head's context block (``Conv1d(4, H, 2c+1)``, GELU, ``Conv1d(H, H, 1)``) on
    one-hot bases (B, 4, L), as matrix products over rows of the unfolded input -> (B, L, H).

    The same function as running the block and transposing. Why: in bfloat16 on this CPU the
    convolutions ran ~4x slower than these products (64 windows of 1,560 bases: 267 against 70
    ms, ~3 ms a window, 13% of a ``--bf16`` window's CPU), the wide kernel over only 4 input
    channels suiting oneDNN's convolution poorly; the result also comes out in the (B, L, H)
    layout the memory sums in, with no transpose."""
    conv, act, mix = context
    assert isinstance(conv, torch.nn.Conv1d) and isinstance(mix, torch.nn.Conv1d)
    b, c, n = onehot.shape
    width, pad = conv.kernel_size[0], cast(tuple[int, ...], conv.padding)[0]
    cols = torch.nn.functional.pad(onehot, (pad, pad)).unfold(2, width, 1)  # (B, 4, L, k)
    cols = cols.permute(0, 2, 1, 3).reshape(b, n, c * width)
    hidden = act(
        torch.nn.functional.linear(cols, conv.weight.reshape(conv.out_channels, -1), conv.bias)
    )
    return torch.nn.functional.linear(hidden, mix.weight[:, :, 0], mix.bias)


def pointer_memory_by_token(model: Any, enc: Tensor, bases: WindowBases) -> PointerMemory:
    """``model.pointer_memory`` with the key and input projections applied to the encoder's
    tokens before they are gathered to bases (a linear map commutes with the gather): a window
    has ~3x more bases than BPE tokens, so this saves two thirds of both projections.

    A bfloat16 ``enc`` (``encode_unpadded(dtype=...)``) runs the projections and the context
    convolution on bfloat16 copies; the sums and norms run in float32, and the memory is float32.
    """
    head = model.pointer_head
    # a bfloat16 ``enc`` of a float32 model: the projections on bfloat16 copies, the rest in the
    # model's dtype (a model trained in bf16 under DeepSpeed is bf16 throughout: no copies)
    own = head.key.weight.dtype
    low = enc.dtype if enc.dtype != own else None
    b, s, h = enc.shape
    # rows of the flattened (B*S, H) projections: whole rows copied (``gather`` with an index
    # expanded over H costs ~10x more here)
    rows = (bases.token + torch.arange(b, device=enc.device)[:, None] * s).reshape(-1)

    def to_bases(t: Tensor) -> Tensor:  # (B, S, H) per token -> (B, L, H) per base, model dtype
        return t.reshape(b * s, h).index_select(0, rows).view(b, -1, h).to(own)

    key_e = to_bases(in_dtype(head.key, low)(enc))  # = key(gathered enc)
    inp_e = to_bases(in_dtype(head.inp, low)(enc))
    # the model's sums in its order, in place: (B, L, H) temporaries are ~25 MB a batch each
    feats = head.offset(bases.offset.clamp(max=MAX_OFFSET - 1))
    feats += head.codon5(bases.codon5)
    feats += head.codon3(bases.codon3)
    if head.context is not None:
        onehot = base_one_hot(bases.codon5, bases.codon3, bases.mask, enc.dtype)
        if low is None:  # the model's own convolution: the float32 path computes its function
            feats += head.context(onehot).transpose(1, 2)
        else:
            feats += context_by_rows(in_dtype(head.context, low), onehot)
    keys = head.key_norm(key_e.add_(feats))
    inputs = head.inp_norm(inp_e.add_(feats))
    return PointerMemory(keys, inputs, bases.mask.bool())


class StepDecoder:
    """Incremental decoding state of ``b`` windows x ``k`` beam rows (row ``r*k + j``: beam j of
    window r) for at most ``max_len`` decoder positions."""

    def __init__(
        self,
        model: Any,
        enc: Tensor,
        attention_mask: Tensor,
        memory: PointerMemory,
        k: int,
        max_len: int,
    ) -> None:
        """``enc`` (b, S, H) encoder output, ``attention_mask`` (b, S), ``memory`` one per window.

        A bfloat16 ``enc`` gets its cross-attention K/V projected by bfloat16 copies of the
        projections and stored in float32: the steps themselves run in float32."""
        self.model = model
        self.layers = model.decoder.layers()
        self.has_moe = any(isinstance(layer.mlp, MoEMLP) for layer in self.layers)
        head = model.pointer_head
        self.head = head
        self.k = k
        self.nh = model.config.num_attention_heads
        b, _, h = enc.shape
        self.hd = h // self.nh
        # a bfloat16 ``enc`` of a float32 model (``--bf16`` on a CPU): K/V from bfloat16 copies,
        # kept in the model's dtype; a model that is bf16 itself (training) runs as it is
        own = head.key.weight.dtype
        low = enc.dtype if enc.dtype != own else None
        dtype = compute_dtype(enc) if low is None else own
        device = enc.device
        pad = ~attention_mask.bool()[:, None, None, :]  # (b, 1, 1, S)
        cross_bias = torch.zeros(pad.shape, dtype=dtype, device=device)
        self.cross_bias = cross_bias.masked_fill(pad, masked_value(dtype))
        # contiguous once: sdpa reads them every step (the projection's permuted view costs ~6%)
        # With ``low`` the K/V and the pointer keys stay in bfloat16: each step streams them
        # from memory (64 windows: ~16 MB per layer of K/V, ~65 MB of pointer keys), and those
        # reads, not the products, were the steps' time (cross-attention 22% of a window's CPU)
        kv_dtype = low or own
        self.cross_bias = self.cross_bias.to(kv_dtype)
        self.cross_kv: list[tuple[Tensor, Tensor]] = []
        for layer in self.layers:
            ck, cv = in_dtype(layer.crossattention, low).project_kv(enc)
            self.cross_kv.append((ck.to(kv_dtype).contiguous(), cv.to(kv_dtype).contiguous()))
        if low is not None:
            memory = PointerMemory(memory.keys.to(low), memory.inputs, memory.base_mask)
        self.memory = memory
        # self-attention K/V per layer: (rows, nh, capacity, hd), grown by doubling in ``step``
        rows = b * k
        self.self_k: list[Tensor] = []
        self.self_v: list[Tensor] = []
        self.rows, self.max_len, self.t = rows, max_len, 0
        # causal ALiBi: bias[h, t, j] = -slope_h * (t - j) for j <= t (attention_bias' formula)
        slopes = model.encoder.alibi_slopes
        pos = torch.arange(max_len, device=device)
        dist = pos[:, None] - pos[None, :]
        alibi = -slopes.float()[:, None, None] * dist.clamp(min=0)
        self.alibi = alibi.masked_fill(dist < 0, masked_value(dtype)).to(dtype)  # (nh, T, T)
        length = memory.keys.shape[1]
        self.length = length
        span = torch.arange(-length - 1, length + 1, device=device)
        self.buckets = distance_bucket(span)  # bucket of (base - anchor) at index + length + 1
        self.base_pos = torch.arange(length, device=device)
        self.scale = 1.0 / math.sqrt(head.hidden)
        self.window_of_row = torch.arange(b, device=device).repeat_interleave(k)

    # ------------------------------------------------------------------ batch bookkeeping
    def keep(self, windows: Tensor) -> None:
        """Keep only these windows (indices into the current ones, ascending), with all their
        beam rows: the finished ones leave the batch."""
        k = self.k
        rows = (windows[:, None] * k + torch.arange(k, device=windows.device)).reshape(-1)
        self.cross_kv = [
            (a.index_select(0, windows), v.index_select(0, windows)) for a, v in self.cross_kv
        ]
        self.cross_bias = self.cross_bias.index_select(0, windows)
        self.memory = self.memory.index_select(windows)
        self.self_k = [buf[:, :, : self.t].index_select(0, rows) for buf in self.self_k]
        self.self_v = [buf[:, :, : self.t].index_select(0, rows) for buf in self.self_v]
        self.rows = rows.numel()
        self.window_of_row = torch.arange(windows.numel(), device=windows.device)
        self.window_of_row = self.window_of_row.repeat_interleave(k)

    def reorder(self, order: Tensor) -> None:
        """Beam step: row ``i`` continues the hypothesis of row ``order[i]`` (same window)."""
        t = self.t
        for buf in (*self.self_k, *self.self_v):
            buf[:, :, :t] = buf[:, :, :t].index_select(0, order)

    def _grown(self, buf: Tensor, t: int) -> Tensor:
        """``buf`` (rows, nh, cap, hd) with room for position ``t`` (its first ``t`` kept)."""
        cap = min(self.max_len, max(16, 2 * buf.shape[2]))
        out = buf.new_empty((buf.shape[0], buf.shape[1], cap, buf.shape[3]))
        out[:, :, :t] = buf[:, :, :t]
        return out

    # ------------------------------------------------------------------------ one step
    def step(self, ids: Tensor, positions: Tensor, anchors: Tensor) -> Tensor:
        """Joint logits (rows, V + L) of the next position for decoder inputs ``ids`` (rows,),
        pointed bases ``positions`` (rows,; -1 for a token) and distance anchors (rows,)."""
        model, head = self.model, self.head
        x = model.embeddings(ids[:, None])  # (rows, 1, H)
        inputs = self.memory.inputs[self.window_of_row, positions.clamp(min=0)]  # (rows, H)
        x = torch.where((positions >= 0)[:, None, None], inputs[:, None, :].to(x.dtype), x)
        rows, t = self.rows, self.t
        if t >= self.max_len:
            raise ValueError(f"StepDecoder holds {self.max_len} positions")
        bias = self.alibi[None, :, t : t + 1, : t + 1]  # (1, nh, 1, t + 1)
        nh, hd, k = self.nh, self.hd, self.k
        for i, layer in enumerate(self.layers):
            att = layer.attention
            q, kk, vv = att.self(x, nh)  # (rows, nh, 1, hd)
            if len(self.self_k) <= i:
                self.self_k.append(kk.new_empty((rows, nh, 0, hd)))
                self.self_v.append(vv.new_empty((rows, nh, 0, hd)))
            if t >= self.self_k[i].shape[2]:  # grow by doubling: most windows stop early
                self.self_k[i] = self._grown(self.self_k[i], t)
                self.self_v[i] = self._grown(self.self_v[i], t)
            self.self_k[i][:, :, t : t + 1] = kk
            self.self_v[i][:, :, t : t + 1] = vv
            keys, values = self.self_k[i][:, :, : t + 1], self.self_v[i][:, :, : t + 1]
            x = att.output(sdpa(q, keys, values, bias, 0.0), x)
            cross = layer.crossattention
            h = x.shape[-1]
            cq = cross.q(x).view(rows // k, k, nh, hd).transpose(1, 2)  # (b, nh, k, hd)
            ck, cv = self.cross_kv[i]
            out = torch.nn.functional.scaled_dot_product_attention(
                cq.to(ck.dtype), ck, cv, attn_mask=self.cross_bias
            ).to(x.dtype)  # (b, nh, k, hd)
            x = cross.output(out.transpose(1, 2).reshape(rows, 1, h), x)
            mlp_out = layer.mlp(x)
            x = mlp_out[0] if isinstance(layer.mlp, MoEMLP) else mlp_out
        self.t = t + 1
        logits = model.lm_head(x)[:, 0].float()  # (rows, V)
        # pointer logits: the K beam queries of a window against its base keys
        q = head.query(x).view(rows // k, k, -1)  # (b, k, H)
        keys = self.memory.keys
        scores = torch.matmul(q.to(keys.dtype), keys.transpose(1, 2)).to(q.dtype) * self.scale
        n = self.length
        bucket = self.buckets[self.base_pos[None, :] - anchors.view(-1, 1) + n + 1]  # (rows, L)
        qd = torch.matmul(q, head.distance.weight.t()) * self.scale  # (b, k, 2*DIST_BINS)
        scores = scores + torch.gather(qd, -1, bucket.view(rows // k, k, n))
        masked = torch.finfo(scores.dtype).min / 2
        scores = scores.masked_fill(~self.memory.base_mask[:, None, :], masked)
        return torch.cat([logits, scores.reshape(rows, n).float()], dim=-1)
