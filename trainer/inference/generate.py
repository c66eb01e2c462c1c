"""Grammar-constrained batched decoding with the KV cache: greedy and beam search.

At every step the logits of each row are masked to the tokens the target grammar allows next
(``baking.target_format.grammar.GrammarAutomaton``), so even an untrained model can only write well-formed
features with coordinates inside the window. The grammar's END marker maps to ``[SEP]``. A row
that hits ``max_new_tokens`` before END is cut back to its last accepting point, so the output
always decodes.

Each emitted token's log-probability is taken under the *constrained* distribution (softmax over
the allowed tokens only): a token the grammar forces costs nothing, and a feature's score is the
probability of the choices the model actually had.

The model contract (``trainer.model.Dna2GffModel``): ``encode(input_ids, attention_mask)`` ->
(B, S, H) and ``decode(decoder_input_ids, encoder_hidden, encoder_attention_mask,
past_key_values=None, use_cache=False)`` -> (logits (B, T, V), cache), the cache offering
``index_select(index)`` to reorder rows for beam search.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

NEG_INF = float("-inf")


class DecodingState(Protocol):
    """What decoding needs of a grammar state (``baking.target_format.grammar``'s automaton states)."""

    @property
    def accepting(self) -> bool: ...

    def allowed(self) -> Collection[str]: ...

    def advance(self, token: str) -> DecodingState: ...


@dataclass
class GeneratedTarget:
    """One window's generated target tokens (END/``[SEP]`` excluded) and their log-probabilities.

    ``complete`` is False when the row ran out of ``max_new_tokens`` and was cut back to its last
    accepting point.
    """

    tokens: list[str]
    token_logprobs: list[float]
    complete: bool = True
    source_tokens: int = 0
    """Encoder positions of the window (``[CLS]``/``[SEP]`` included), so annotate can compare
    them with the model's training limit without tokenising twice; 0 when unknown (an oracle)."""


@dataclass
class _Hyp:
    """A partial output: grammar state, tokens so far, and the last point the grammar accepted."""

    state: Any
    tokens: list[str]
    logprobs: list[float]
    score: float = 0.0
    done: bool = False
    accept_len: int = 0

    def extended(self, token: str, logprob: float, end_marker: str) -> _Hyp:
        if token == end_marker:
            return _Hyp(
                self.state, self.tokens, self.logprobs, self.score + logprob, True, len(self.tokens)
            )
        state = _advance(self.state, token)
        toks, lps = [*self.tokens, token], [*self.logprobs, logprob]
        accept = len(toks) if state.accepting else self.accept_len
        return _Hyp(state, toks, lps, self.score + logprob, False, accept)

    def result(self) -> GeneratedTarget:
        if self.done:
            return GeneratedTarget(list(self.tokens), list(self.logprobs), True)
        n = self.accept_len
        return GeneratedTarget(self.tokens[:n], self.logprobs[:n], False)


def _advance(state: Any, token: str) -> Any:
    """The state after ``token``; the automaton's ``advance`` returns a new state."""
    return state.advance(token)


class _MaskTable:
    """Additive masks over the grammar's columns (0 allowed, -inf not), one row per distinct
    allowed set, kept as one device tensor so a step gathers all rows' masks in one operation."""

    def __init__(self, columns: Sequence[str], device: torch.device) -> None:
        self.column_of = {t: j for j, t in enumerate(columns)}
        self.width = len(columns)
        self.device = device
        self._row_of: dict[frozenset[str], int] = {}
        self._rows: list[list[float]] = []
        self._table: Tensor | None = None

    def __call__(self, alloweds: Sequence[Collection[str]]) -> Tensor:
        """(len(alloweds), G) masks."""
        ids = []
        for allowed in alloweds:
            key = allowed if isinstance(allowed, frozenset) else frozenset(allowed)
            i = self._row_of.get(key)
            if i is None:
                i = self._row_of[key] = len(self._rows)
                row = [NEG_INF] * self.width
                for t in key:
                    row[self.column_of[t]] = 0.0
                self._rows.append(row)
                self._table = None
            ids.append(i)
        if self._table is None:
            self._table = torch.tensor(self._rows, dtype=torch.float32, device=self.device)
        return self._table[torch.tensor(ids, dtype=torch.long, device=self.device)]


class _Fetch:
    """Copy a small device tensor to the host without waiting for work queued after it.

    On CUDA the copy goes to pinned memory and an event marks its end, so the host can advance
    the grammar while the device already runs the next decoding step; on CPU it is a plain copy.
    """

    def __init__(self, t: Tensor) -> None:
        self.event = None
        if t.is_cuda:
            self.host = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
            self.host.copy_(t, non_blocking=True)
            self.event = torch.cuda.Event()
            self.event.record()
        else:
            self.host = t

    def get(self) -> list:
        if self.event is not None:
            self.event.synchronize()
        return self.host.tolist()


def _allowed(hyp: _Hyp, end_marker: str) -> Collection[str]:
    return hyp.state.allowed() if not hyp.done else (end_marker,)


@torch.no_grad()
def generate_ids(
    model: Any,
    input_ids: Tensor,
    attention_mask: Tensor,
    start_states: Sequence[Any],
    token_to_id: Mapping[str, int],
    *,
    end_marker: str,
    bos_id: int,
    max_new_tokens: int = 256,
    num_beams: int = 1,
) -> list[GeneratedTarget]:
    """Decode a batch of encoder inputs under the grammar.

    ``start_states`` holds each row's initial grammar state (a short last window has its own
    length); ``token_to_id`` maps every grammar token *and* ``end_marker`` (to the EOS id) to
    vocabulary ids.
    """
    if num_beams < 1:
        raise ValueError(f"num_beams must be >= 1, got {num_beams}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    b = input_ids.shape[0]
    if len(start_states) != b:
        raise ValueError(f"{len(start_states)} start states for a batch of {b}")
    k = num_beams
    enc = model.encode(input_ids, attention_mask)  # (B, S, H)
    if k > 1:
        enc = enc.repeat_interleave(k, dim=0)  # (B*K, S, H)
        attention_mask = attention_mask.repeat_interleave(k, dim=0)
    device = enc.device
    # beams[row] holds K hypotheses (greedy: 1); flat row r*K+j is beam j of row r.
    beams: list[list[_Hyp]] = [[_Hyp(st, [], []) for _ in range(k)] for st in start_states]
    # Only the grammar's tokens can be chosen, so only their logits are read: "columns".
    columns = list(token_to_id)
    col_ids = torch.tensor([token_to_id[t] for t in columns], dtype=torch.long, device=device)
    masks = _MaskTable(columns, device)
    dec_in = torch.full((b * k, 1), bos_id, dtype=torch.long, device=device)
    logits, cache = model.decode(dec_in, enc, attention_mask, past_key_values=None, use_cache=True)
    for step in range(max_new_tokens):
        last = logits[:, -1].index_select(-1, col_ids).float()  # (B*K, G)
        hyps = [h for row in beams for h in row]
        bias = masks([_allowed(h, end_marker) for h in hyps])  # (B*K, G)
        logp = torch.log_softmax(last + bias, dim=-1)  # the constrained distribution
        more = step + 1 < max_new_tokens
        if k == 1:
            best_lp, best = logp.max(dim=-1)  # (B,) log-prob and column index
            picked = _Fetch(torch.stack([best.to(best_lp.dtype), best_lp]))
            if more:  # queue the next step on the device before the host reads this one
                dec_in = col_ids[best][:, None]
                logits, cache = model.decode(
                    dec_in, enc, attention_mask, past_key_values=cache, use_cache=True
                )
            cols, lps = picked.get()
            beams = [
                [h if h.done else h.extended(columns[int(c)], lp, end_marker)]
                for h, c, lp in zip(hyps, cols, lps)
            ]
        else:
            beams, next_cols, order = _beam_step(beams, logp, k, columns, end_marker, step)
            if more:
                cache = cache.index_select(order.to(device))
                dec_in = col_ids[next_cols.to(device)][:, None]
                logits, cache = model.decode(
                    dec_in, enc, attention_mask, past_key_values=cache, use_cache=True
                )
        if all(h.done for row in beams for h in row):
            break
    out = []
    for row in beams:
        best_hyp = max(row, key=lambda h: (h.done, h.score / max(1, len(h.tokens) + h.done)))
        out.append(best_hyp.result())
    return out


def _beam_step(
    beams: list[list[_Hyp]],
    logp: Tensor,
    k: int,
    columns: Sequence[str],
    end_marker: str,
    step: int,
) -> tuple[list[list[_Hyp]], Tensor, Tensor]:
    """One beam-search step: each row keeps its K best (hypothesis, token) continuations.

    A finished hypothesis is carried over unchanged (one candidate, no added score). At step 0
    all K beams of a row are identical, so only beam 0 expands.
    """
    eos_col = columns.index(end_marker)
    width = logp.shape[-1]
    top_lp, top_col = logp.topk(min(k, width), dim=-1)  # (B*K, K)
    new_beams: list[list[_Hyp]] = []
    next_cols: list[int] = []
    order: list[int] = []
    for r, row in enumerate(beams):
        cands: list[tuple[float, int, int, float]] = []  # (score, beam j, column, token lp)
        for j, h in enumerate(row):
            if step == 0 and j > 0:
                break
            flat = r * k + j
            if h.done:
                cands.append((h.score, j, eos_col, 0.0))
                continue
            for lp, t in zip(top_lp[flat].tolist(), top_col[flat].tolist()):
                if lp > NEG_INF:
                    cands.append((h.score + lp, j, t, lp))
        cands.sort(key=lambda c: -c[0])
        chosen = cands[:k]
        while len(chosen) < k:  # fewer legal continuations than beams: duplicate the best
            chosen.append(chosen[0])
        new_row = []
        for _, j, t, lp in chosen:
            h = row[j]
            new_row.append(h if h.done else h.extended(columns[t], lp, end_marker))
            next_cols.append(t)
            order.append(r * k + j)
        new_beams.append(new_row)
    return (
        new_beams,
        torch.tensor(next_cols, dtype=torch.long),
        torch.tensor(order, dtype=torch.long),
    )


def encode_windows(
    tokenizer: Any, windows_dna: Sequence[str], *, bos_id: int, eos_id: int, pad_id: int
) -> tuple[Tensor, Tensor]:
    """Encoder inputs as the trainer builds them: ``[CLS] dna-BPE [SEP]``, right-padded."""
    from trainer.tokens.tokenizer import encode_sources

    rows = [s.ids(bos_id, eos_id) for s in encode_sources(tokenizer, windows_dna)]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)  # (B, S)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    return ids, mask


def grammar_token_ids(
    tokenizer: Any, feature_types: Sequence[str], window_len: int, eos_id: int
) -> dict[str, int]:
    """Vocabulary ids of every target token of the grammar, plus its END marker -> ``eos_id``.

    Raises ``ConfigError`` when the tokenizer lacks a grammar token (the model was built for other
    feature types or a shorter window).
    """
    from baking.common.errors import ConfigError
    from baking.target_format.grammar import END, target_vocabulary

    out: dict[str, int] = {}
    missing = []
    for tok in target_vocabulary(feature_types, window_len):
        if tok == END:
            continue
        i = tokenizer.token_to_id(tok)
        if i is None:
            missing.append(tok)
        else:
            out[tok] = i
    if missing:
        raise ConfigError(
            f"tokenizer lacks {len(missing)} grammar token(s) for types={list(feature_types)} "
            f"window_len={window_len}: {missing[:5]}"
        )
    out[END] = eos_id
    return out


def generate_targets(
    model: Any,
    tokenizer: Any,
    windows_dna: Sequence[str],
    window_len: int,
    feature_types: Sequence[str],
    *,
    max_new_tokens: int = 256,
    num_beams: int = 1,
    device: str | torch.device = "cpu",
) -> list[GeneratedTarget]:
    """Generate the target tokens of each window (DNA strings, 5'->3') under the grammar.

    The entry point the trainer's validation and ``annotate`` share; ``model`` is a
    ``Dna2GffModel`` (its config gives the special ids), ``tokenizer`` a ``tokenizers.Tokenizer``.
    """
    from baking.target_format.grammar import END, GrammarAutomaton

    if not windows_dna:
        return []
    cfg = model.config
    token_to_id = grammar_token_ids(tokenizer, feature_types, window_len, cfg.eos_token_id)
    automaton = GrammarAutomaton(list(feature_types), window_len)
    ids, mask = encode_windows(
        tokenizer,
        windows_dna,
        bos_id=cfg.bos_token_id,
        eos_id=cfg.eos_token_id,
        pad_id=cfg.pad_token_id,
    )
    was_training = model.training
    model.eval()
    try:
        out = generate_ids(
            model,
            ids.to(device),
            mask.to(device),
            [automaton.start(min(len(dna), window_len)) for dna in windows_dna],
            token_to_id,
            end_marker=END,
            bos_id=cfg.bos_token_id,
            max_new_tokens=max_new_tokens,
            num_beams=num_beams,
        )
        for target, n in zip(out, mask.sum(dim=1).tolist()):
            target.source_tokens = int(n)
        return out
    finally:
        model.train(was_training)
