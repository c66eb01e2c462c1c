"""Constrained decoding: greedy and beam search with the KV cache (the project's one search).

At every step one distribution covers the target tokens (``<cut>``, strands, phases, types,
``[SEP]``) and every base of the window; the target grammar
(``baking.target_format.pointers.PointerAutomaton``) masks it to what may come next, so even an
untrained model only writes targets that decode. With ``orf_code`` (a genetic code:
``starts``/``stops`` codon sets) a CDS can only be decoded as a valid ORF of the window's DNA: the
model only chooses *which* ORF is a gene. A row that hits ``max_new_tokens`` before END is cut
back to its last accepting point.

Each item's log-probability is taken under the *constrained* distribution (softmax over what is
allowed only): a forced choice (the stop of a ``+`` CDS whose start is chosen) costs nothing, and
a feature's score is the probability of the choices the model actually had.

``generate_ids`` runs the model's general ``decode`` step (the reference);
``generate_ids_fast`` the same search with ``StepDecoder`` (annotate's default); both share
``_Hyp``, the masks and ``_beam_step``.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from baking.target_format.grammar import END, PHASED_TYPES, WindowFeature, target_vocabulary
from baking.target_format.pointers import (
    CUT,
    END_SLOT,
    MIN_ORF_CODONS,
    START_SLOT,
    Item,
    OrfSites,
    PointerAutomaton,
    PointerState,
    is_position,
    items_to_feature,
)
from trainer.data.layout import BaseLayout, base_layout, layout_tensors

NEG_INF = float("-inf")


@dataclass
class GeneratedTarget:
    """One window's generated target items (END/``[SEP]`` excluded: token strings and base
    positions) and their log-probabilities.

    ``complete`` is False when the row ran out of ``max_new_tokens`` and was cut back to its last
    accepting point.
    """

    tokens: list[Item]
    token_logprobs: list[float]
    complete: bool = True
    source_tokens: int = 0
    """Encoder positions of the window (``[CLS]``/``[SEP]`` included), so annotate can compare
    them with the model's training limit without tokenising twice; 0 when unknown (an oracle)."""


@dataclass
class _Hyp:
    state: PointerState
    items: list[Item]
    logprobs: list[float]
    anchor: int = -1
    score: float = 0.0
    done: bool = False
    accept_len: int = 0

    def extended(self, item: Item, logprob: float) -> _Hyp:
        if item == END:
            return _Hyp(
                self.state,
                self.items,
                self.logprobs,
                self.anchor,
                self.score + logprob,
                True,
                len(self.items),
            )
        slot = self.state.slot
        anchor = self.anchor
        if slot == START_SLOT:
            anchor = -1 if item == CUT else int(item)
        elif slot == END_SLOT:
            anchor = self.state.length if item == CUT else int(item)
        state = self.state.advance(item)
        items, lps = [*self.items, item], [*self.logprobs, logprob]
        accept = len(items) if state.accepting else self.accept_len
        return _Hyp(state, items, lps, anchor, self.score + logprob, False, accept)

    def result(self) -> GeneratedTarget:
        if self.done:
            return GeneratedTarget(list(self.items), list(self.logprobs), True)
        n = self.accept_len
        return GeneratedTarget(self.items[:n], self.logprobs[:n], False)


class _Masks:
    """Row masks over (target tokens + bases): token part from a small table, base part built
    from the allowed positions (a range is one slice)."""

    def __init__(self, tokens: Sequence[str], n_bases: int, device: torch.device) -> None:
        self.column_of = {t: j for j, t in enumerate(tokens)}
        self.k = len(tokens)
        self.n = n_bases
        self.device = device

    def __call__(self, hyps: Sequence[_Hyp]) -> Tensor:
        mask = torch.full((len(hyps), self.k + self.n), NEG_INF)
        for r, h in enumerate(hyps):
            if h.done:
                mask[r, self.column_of[END]] = 0.0
                continue
            allowed = h.state.allowed()
            for t in allowed.tokens:
                mask[r, self.column_of[t]] = 0.0
            pos = allowed.positions
            if isinstance(pos, range):
                if len(pos):
                    mask[r, self.k + pos.start : self.k + pos.stop] = 0.0
            elif pos:
                mask[r, torch.tensor(pos, dtype=torch.long) + self.k] = 0.0
        return mask.to(self.device)


def _item_of(col: int, tokens: Sequence[str]) -> Item:
    return tokens[col] if col < len(tokens) else col - len(tokens)


def _inputs(
    items: Sequence[Item], anchors: Sequence[int], token_ids: dict[str, int], eos: int
) -> tuple[list[int], list[int], list[int]]:
    """Decoder step inputs for the newest item of each row: id, pointed base, anchor."""
    ids, pos = [], []
    for item in items:
        if is_position(item):
            ids.append(eos)
            pos.append(int(item))
        else:
            ids.append(token_ids[str(item)])
            pos.append(-1)
    return ids, pos, list(anchors)


def _check_search(num_beams: int, max_new_tokens: int) -> None:
    """The arguments both decoding paths share must describe a search that can run."""
    if num_beams < 1:
        raise ValueError(f"num_beams must be >= 1, got {num_beams}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")


def _columns(token_ids: dict[str, int], device: torch.device) -> tuple[list[str], Tensor]:
    """The target tokens in column order (END last) and their vocabulary ids on ``device``."""
    tokens = [t for t in token_ids if t != END] + [END]
    return tokens, torch.tensor([token_ids[t] for t in tokens], dtype=torch.long, device=device)


def _choose(
    beams: list[list[_Hyp]], logp: Tensor, k: int, tokens: Sequence[str], step: int
) -> tuple[list[list[_Hyp]], Tensor | None]:
    """One search step over the constrained log-probabilities (rows, K + L): greedy for one beam,
    else ``_beam_step``; the row order the cache must follow (None: unchanged)."""
    if k > 1:
        return _beam_step(beams, logp, k, tokens, step)
    hyps = [h for row in beams for h in row]
    best_lp, best = logp.max(dim=-1)
    chosen = [
        [h if h.done else h.extended(_item_of(int(c), tokens), float(lp))]
        for h, c, lp in zip(hyps, best.tolist(), best_lp.tolist())
    ]
    return chosen, None


def _next_inputs(
    beams: Sequence[Sequence[_Hyp]], token_ids: dict[str, int], eos: int
) -> tuple[list[int], list[int], list[int]]:
    """Decoder inputs of every row for the next step: the newest item's id, pointed base, anchor."""
    flat = [h for row in beams for h in row]
    newest: list[Item] = [h.items[-1] if h.items and not h.done else END for h in flat]
    return _inputs(newest, [h.anchor for h in flat], token_ids, eos)


def _best(beams: Sequence[Sequence[_Hyp]]) -> list[GeneratedTarget]:
    """Each window's result: a finished hypothesis first, then the best length-normalised score."""
    out = []
    for row in beams:
        best_hyp = max(row, key=lambda h: (h.done, h.score / max(1, len(h.items) + h.done)))
        out.append(best_hyp.result())
    return out


@torch.no_grad()
def generate_ids(
    model: Any,
    input_ids: Tensor,
    attention_mask: Tensor,
    layouts: Sequence[BaseLayout],
    start_states: Sequence[PointerState],
    token_ids: dict[str, int],
    *,
    max_new_tokens: int = 256,
    num_beams: int = 1,
) -> list[GeneratedTarget]:
    """Decode a batch under the target grammar; ``token_ids`` maps every target token and END
    (to the EOS id) to vocabulary ids. ``start_states`` holds each row's initial grammar state
    (a short last window has its own length)."""
    _check_search(num_beams, max_new_tokens)
    from trainer.model.seq2seq import PointerStep

    cfg = model.config
    b, k = input_ids.shape[0], num_beams
    device = input_ids.device
    enc = model.encode(input_ids, attention_mask)
    memory = model.pointer_memory(enc, layout_tensors(layouts, device))
    if k > 1:
        enc = enc.repeat_interleave(k, dim=0)
        attention_mask = attention_mask.repeat_interleave(k, dim=0)
        memory = memory.index_select(torch.arange(b, device=device).repeat_interleave(k))
    n_bases = memory.keys.shape[1]
    tokens, tok_cols = _columns(token_ids, device)
    v = cfg.vocab_size
    masks = _Masks(tokens, n_bases, device)
    beams = [[_Hyp(st, [], []) for _ in range(k)] for st in start_states]
    rows = b * k
    step_in = PointerStep(
        memory,
        torch.full((rows, 1), -1, dtype=torch.long, device=device),
        torch.full((rows, 1), -1, dtype=torch.long, device=device),
    )
    dec_in = torch.full((rows, 1), cfg.bos_token_id, dtype=torch.long, device=device)
    logits, cache = model.decode(dec_in, enc, attention_mask, use_cache=True, pointer=step_in)
    for step in range(max_new_tokens):
        last = logits[:, -1].float()
        joint = torch.cat([last.index_select(-1, tok_cols), last[:, v : v + n_bases]], dim=-1)
        hyps = [h for row in beams for h in row]
        logp = torch.log_softmax(joint + masks(hyps), dim=-1)  # (rows, K + L)
        beams, order = _choose(beams, logp, k, tokens, step)
        if all(h.done for row in beams for h in row) or step + 1 == max_new_tokens:
            break
        ids, pos, anchors = _next_inputs(beams, token_ids, cfg.eos_token_id)
        if order is not None:
            cache = cache.index_select(order.to(device))
        step_in = PointerStep(
            memory,
            torch.tensor(pos, dtype=torch.long, device=device)[:, None],
            torch.tensor(anchors, dtype=torch.long, device=device)[:, None],
        )
        dec_in = torch.tensor(ids, dtype=torch.long, device=device)[:, None]
        logits, cache = model.decode(
            dec_in, enc, attention_mask, past_key_values=cache, use_cache=True, pointer=step_in
        )
    return _best(beams)


class _MaskRows:
    """``_Masks`` with one row tensor per distinct allowed set, built once: a state's ``Allowed``
    is computed once and shared by every hypothesis in that state, so a step stacks cached rows
    instead of filling a (rows, K + L) tensor item by item."""

    def __init__(self, tokens: Sequence[str], n_bases: int, device: torch.device) -> None:
        self.build = _Masks(tokens, n_bases, device)
        self._rows: dict[int, tuple[Any, Tensor]] = {}  # id(Allowed) -> (Allowed, row)
        end = torch.full((self.build.k + n_bases,), NEG_INF)
        end[self.build.column_of[END]] = 0.0
        self._end = end.to(device)

    def __call__(self, hyps: Sequence[_Hyp]) -> Tensor:
        rows = []
        for h in hyps:
            if h.done:
                rows.append(self._end)
                continue
            allowed = h.state.allowed()
            hit = self._rows.get(id(allowed))
            if hit is None:  # the Allowed is kept alive with its row, so its id stays unique
                hit = self._rows[id(allowed)] = (allowed, self.build([h])[0])
            rows.append(hit[1])
        return torch.stack(rows)


def generate_ids_fast(
    model: Any,
    input_ids: Tensor,
    attention_mask: Tensor,
    layouts: Sequence[BaseLayout],
    start_states: Sequence[PointerState],
    token_ids: dict[str, int],
    *,
    max_new_tokens: int = 256,
    num_beams: int = 1,
    bf16: bool = False,
) -> list[GeneratedTarget]:
    """``generate_ids`` (the reference: same arguments, same search, same results) with
    the decoder run by ``StepDecoder``: per-window cross-attention and pointer memory, buffers
    allocated once, finished windows leaving the batch. Annotate's default. ``bf16``: the
    per-window part in bfloat16 (``trainer.inference.step_decoder``; not the same results)."""
    _check_search(num_beams, max_new_tokens)
    from trainer.inference.step_decoder import (
        StepDecoder,
        encode_unpadded,
        pointer_memory_by_token,
    )

    cfg = model.config
    b, k = input_ids.shape[0], num_beams
    device = input_ids.device
    enc = encode_unpadded(model, input_ids, attention_mask, torch.bfloat16 if bf16 else None)
    memory = pointer_memory_by_token(model, enc, layout_tensors(layouts, device))
    n_bases = memory.keys.shape[1]
    tokens, tok_cols = _columns(token_ids, device)
    v = cfg.vocab_size
    masks = _MaskRows(tokens, n_bases, device)
    beams = [[_Hyp(st, [], []) for _ in range(k)] for st in start_states]
    dec = StepDecoder(model, enc, attention_mask, memory, k, max_new_tokens)
    active = list(range(b))  # windows still decoding, in batch order
    rows = b * k
    start = torch.full((rows,), -1, dtype=torch.long, device=device)
    bos = torch.full((rows,), cfg.bos_token_id, dtype=torch.long, device=device)
    logits = dec.step(bos, start, start)
    for step in range(max_new_tokens):
        sub = [beams[w] for w in active]
        hyps = [h for row in sub for h in row]
        joint = torch.cat([logits.index_select(-1, tok_cols), logits[:, v : v + n_bases]], dim=-1)
        logp = torch.log_softmax(joint + masks(hyps), dim=-1)  # (rows, K + L)
        sub, order = _choose(sub, logp, k, tokens, step)
        for w, row in zip(active, sub):
            beams[w] = row
        if all(h.done for row in sub for h in row) or step + 1 == max_new_tokens:
            break
        if order is not None:
            dec.reorder(order.to(device))
        still = [i for i, row in enumerate(sub) if not all(h.done for h in row)]
        if len(still) < len(sub) and not dec.has_moe:  # MoE capacity depends on the batch
            dec.keep(torch.tensor(still, dtype=torch.long, device=device))
            active = [active[i] for i in still]
            sub = [sub[i] for i in still]
        ids, pos, anchors = _next_inputs(sub, token_ids, cfg.eos_token_id)
        logits = dec.step(
            torch.tensor(ids, dtype=torch.long, device=device),
            torch.tensor(pos, dtype=torch.long, device=device),
            torch.tensor(anchors, dtype=torch.long, device=device),
        )
    return _best(beams)


def _beam_step(
    beams: list[list[_Hyp]], logp: Tensor, k: int, tokens: Sequence[str], step: int
) -> tuple[list[list[_Hyp]], Tensor]:
    """Each row keeps its K best (hypothesis, item) continuations; a finished one is carried."""
    top_lp, top_col = logp.topk(min(k, logp.shape[-1]), dim=-1)
    new_beams: list[list[_Hyp]] = []
    order: list[int] = []
    for r, row in enumerate(beams):
        cands: list[tuple[float, int, int, float]] = []
        for j, h in enumerate(row):
            if step == 0 and j > 0:
                break
            if h.done:
                cands.append((h.score, j, -1, 0.0))
                continue
            for lp, c in zip(top_lp[r * k + j].tolist(), top_col[r * k + j].tolist()):
                if lp > NEG_INF:
                    cands.append((h.score + lp, j, c, lp))
        cands.sort(key=lambda c: -c[0])
        chosen = cands[:k]
        while len(chosen) < k:
            chosen.append(chosen[0])
        new_row = []
        for _, j, c, lp in chosen:
            h = row[j]
            new_row.append(h if h.done else h.extended(_item_of(c, tokens), lp))
            order.append(r * k + j)
        new_beams.append(new_row)
    return new_beams, torch.tensor(order, dtype=torch.long)


def target_token_ids(tokenizer: Any, feature_types: Sequence[str], eos_id: int) -> dict[str, int]:
    """Vocabulary ids of the target's tokens, plus END -> ``eos_id``; ``ConfigError`` when the
    tokenizer lacks one (the model was built for other feature types)."""
    from baking.common.errors import ConfigError

    out: dict[str, int] = {}
    missing = []
    for tok in target_vocabulary(feature_types):
        i = tokenizer.token_to_id(tok)
        if i is None:
            missing.append(tok)
        else:
            out[tok] = i
    if missing:
        raise ConfigError(
            f"tokenizer lacks {len(missing)} target token(s) for types={list(feature_types)}: "
            f"{missing[:5]}"
        )
    out[END] = eos_id
    return out


def _padded(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    """Right-padded (B, S) ids and their mask (1 = real token)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    return ids, mask


def encode_windows(
    tokenizer: Any, windows_dna: Sequence[str], *, bos_id: int, eos_id: int, pad_id: int
) -> tuple[Tensor, Tensor]:
    """Encoder inputs as the trainer builds them: ``[CLS] dna-BPE [SEP]``, right-padded."""
    from trainer.tokens.tokenizer import encode_sources

    rows = [s.ids(bos_id, eos_id) for s in encode_sources(tokenizer, windows_dna)]
    return _padded(rows, pad_id)


def window_layouts(
    tokenizer: Any, windows_dna: Sequence[str]
) -> tuple[list[list[int]], list[BaseLayout]]:
    """Token ids (no specials) and base layouts of windows, as the trainer builds them."""
    from trainer.tokens.tokenizer import encode_sources

    sources = encode_sources(tokenizer, windows_dna)
    layouts = [base_layout(d.upper(), s.offsets, len(s.body)) for d, s in zip(windows_dna, sources)]
    return [s.body for s in sources], layouts


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
    orf_code: Any = None,
    min_orf_codons: int = MIN_ORF_CODONS,
    reference: bool = False,
    workers: int | None = None,
    bf16: bool = False,
) -> list[GeneratedTarget]:
    """Generate each window's target (items: token strings and base positions) under the grammar.

    The entry point the trainer's validation and ``annotate`` share; ``model`` is a
    ``Dna2GffModel`` (its config gives the special ids), ``tokenizer`` a ``tokenizers.Tokenizer``.

    ``orf_code`` (``starts``/``stops`` codon sets, e.g. ``snap.genetic_code(11)``) turns on the
    ORF constraint for CDS; a CDS closed at both ends then spans at least ``min_orf_codons``.
    ``reference`` decodes with ``generate_ids`` (the model's general ``decode`` step)
    instead of ``generate_ids_fast``: the same results, kept as the check and the
    benchmark's "before". ``bf16`` (fast path only) runs the encoder, pointer memory and
    cross-attention K/V in bfloat16 (``trainer.inference.step_decoder``): faster on CPUs with
    bfloat16 units, not the same function (annotate's ``--bf16`` on a CPU).

    ``workers`` (default: ``decode_workers``) > 1 splits the batch into that many parts decoded
    at once by as many threads, each running torch on one core: a CPU's intra-op threads help
    little at these shapes (many small operations, and a busy core makes the others wait) while
    whole windows are independent; the results are the same windows' (float rounding aside).
    """
    if not windows_dna:
        return []
    if bf16 and reference:
        raise ValueError("bf16 is a fast-path option; the reference path runs in float32")
    n = decode_workers(model, windows_dna, device) if workers is None else workers
    # a batch too small to split still runs on one core: torch's intra-op threads made a
    # 5-window remainder batch 5x slower than one thread on this 2-core box
    one_core = workers is None and torch.get_num_threads() > 1 and splittable(model, device)
    if (n > 1 or one_core) and not reference:
        was_training = model.training
        model.eval()  # before the threads: each restores the mode it found
        try:
            return _in_threads(
                n,
                windows_dna,
                lambda part: generate_targets(
                    model,
                    tokenizer,
                    part,
                    window_len,
                    feature_types,
                    max_new_tokens=max_new_tokens,
                    num_beams=num_beams,
                    device=device,
                    orf_code=orf_code,
                    min_orf_codons=min_orf_codons,
                    workers=1,
                    bf16=bf16,
                ),
            )
        finally:
            model.train(was_training)
    cfg = model.config
    token_ids = target_token_ids(tokenizer, feature_types, cfg.eos_token_id)
    bodies, layouts = window_layouts(tokenizer, windows_dna)
    rows = [[cfg.bos_token_id, *ids, cfg.eos_token_id] for ids in bodies]
    input_ids, mask = _padded(rows, cfg.pad_token_id)
    automaton = PointerAutomaton(list(feature_types), window_len)
    states = []
    for dna, lay in zip(windows_dna, layouts):
        length = max(1, min(lay.length, window_len))
        orf = None
        if orf_code is not None:
            orf = OrfSites(dna[:length], orf_code.starts, orf_code.stops, min_orf_codons)
        states.append(automaton.start(length, orf))
    was_training = model.training
    model.eval()
    from trainer.model import Dna2GffModel

    # the fast path runs the model's own modules; a stand-in model (tests) has only ``decode``
    fast = not reference and isinstance(model, Dna2GffModel)
    run = generate_ids_fast if fast else generate_ids
    # the reference runs as it always did (its own no_grad): the "before" of the benchmark
    mode = torch.inference_mode() if fast else nullcontext()
    try:
        with mode:
            out = run(
                model,
                input_ids.to(device),
                mask.to(device),
                layouts,
                states,
                token_ids,
                max_new_tokens=max_new_tokens,
                num_beams=num_beams,
                **({"bf16": bf16} if fast else {}),  # a stand-in model decodes in float32
            )
        for target, row in zip(out, rows):
            target.source_tokens = len(row)
        return out
    finally:
        model.train(was_training)


MIN_WINDOWS_PER_WORKER = 8
"""Below this a thread's decoding batch is so small that per-step overhead eats the gain."""


def decode_workers(model: Any, windows: Sequence[str], device: str | torch.device) -> int:
    """Threads for one batch: torch's CPU thread count, when decoding may run in threads.

    Not on an accelerator (its kernels already run in parallel), not under autocast (it is a
    per-thread setting), not with MoE layers (expert parallelism communicates) and not inside a
    torch.distributed job (the trainer's validation): there one thread decodes, as before.
    """
    if not splittable(model, device):
        return 1
    return max(1, min(torch.get_num_threads(), len(windows) // MIN_WINDOWS_PER_WORKER))


def splittable(model: Any, device: str | torch.device) -> bool:
    """Whether a batch may be decoded in parts on one core each (``decode_workers``' rules)."""
    from trainer.model import Dna2GffModel

    if torch.device(device).type != "cpu" or not isinstance(model, Dna2GffModel):
        return False
    if torch.is_autocast_enabled("cpu") or model.config.use_moe:
        return False
    return not (torch.distributed.is_available() and torch.distributed.is_initialized())


def _in_threads(n: int, windows: Sequence[str], run: Any) -> list[GeneratedTarget]:
    """``run`` on ``n`` contiguous parts of ``windows``, decoded at once, torch on one core each
    meanwhile (the process-wide setting is restored after).

    Forked processes where the platform forks (Linux): the decoding loop is ~30% Python and small
    operator dispatches that hold the GIL, so two Python threads of one process gave no second
    core's worth (E. coli 500 kbp: 37.3 s wall with two threads against 28.9 s with one, the
    same CPU seconds as wall). A forked child shares the loaded model copy-on-write and returns
    only its windows' targets (pickled). Elsewhere, threads.
    """
    size = -(-len(windows) // n)
    parts = [windows[i : i + size] for i in range(0, len(windows), size)]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        if len(parts) > 1 and "fork" in multiprocessing.get_all_start_methods():
            results = _in_forks(parts, run)
        else:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(len(parts)) as pool:
                results = list(pool.map(run, parts))
    finally:
        torch.set_num_threads(threads)
    return [t for part in results for t in part]


_FORK_JOB: tuple[Any, list[Sequence[str]]] | None = None
"""(run, parts) handed to forked children by inheritance (a closure does not pickle)."""


def _run_forked_part(i: int) -> list[GeneratedTarget]:
    """In a forked child: torch on one core, then part ``i`` of the parent's job."""
    assert _FORK_JOB is not None, "only called in a child forked by _in_forks"
    torch.set_num_threads(1)
    run, parts = _FORK_JOB
    return list(run(parts[i]))


def _in_forks(parts: list[Sequence[str]], run: Any) -> list[list[GeneratedTarget]]:
    """Part 0 in this process, the others in as many forked children, at the same time."""
    global _FORK_JOB
    _FORK_JOB = (run, parts)
    try:
        with multiprocessing.get_context("fork").Pool(len(parts) - 1) as pool:
            others = pool.map_async(_run_forked_part, range(1, len(parts)))
            first = list(run(parts[0]))
            return [first, *others.get()]
    finally:
        _FORK_JOB = None


def features_with_logprobs(
    items: Sequence[Item], logprobs: Sequence[float], length: int
) -> list[tuple[WindowFeature, float]]:
    """Split a generated target into features, each with the summed log-probability of its
    items; ``ValueError`` for a target that ends inside a feature."""
    out: list[tuple[WindowFeature, float]] = []
    acc = 0.0
    feature: list[Item] = []
    for item, lp in zip(items, logprobs):
        if item == END:
            break
        feature.append(item)
        acc += lp
        ftype = str(feature[0])[1:-1]
        if len(feature) == 5 or (len(feature) == 4 and ftype not in PHASED_TYPES):
            out.append((items_to_feature(feature, length), acc))
            feature, acc = [], 0.0
    if feature:
        raise ValueError(f"target ends inside a feature: {feature}")
    return out
