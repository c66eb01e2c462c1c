"""Constrained decoding (the one beam search): a table-driven fake model and a tiny grammar with
known best answers, then the real model and grammar."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pytest
import torch
from torch import Tensor

from baking.target_format.pointers import Allowed
from trainer.data.layout import BaseLayout
from trainer.inference.generate import generate_ids
from trainer.model.pointer import NO_CODON, PointerMemory

END = "<END>"
# ids: 0 pad, 1 bos, 2 eos, 3 A, 4 B, 5 x, 6 y
TOK = {"A": 3, "B": 4, "x": 5, "y": 6, END: 2}


@dataclass(frozen=True)
class State:
    """Grammar: (A|B) (x|y), repeated; accepting after each pair; END only when accepting."""

    seen: tuple[str, ...] = ()
    slot: int = -1  # never a coordinate slot: the fake grammar writes tokens only
    length: int = 1

    @property
    def accepting(self) -> bool:
        return len(self.seen) % 2 == 0

    def allowed(self) -> Allowed:
        return Allowed(frozenset(["x", "y"] if len(self.seen) % 2 else ["A", "B", END]), ())

    def advance(self, token: str) -> State:
        assert token in self.allowed().tokens and token != END, token
        return State((*self.seen, token))


@dataclass
class Config:
    vocab_size: int = 7
    bos_token_id: int = 1
    eos_token_id: int = 2


@dataclass
class Cache:
    history: Tensor  # (B, t) every decoder input seen so far

    def index_select(self, index: Tensor) -> Cache:
        return Cache(self.history.index_select(0, index))


def _probs(table: dict[int, dict[int, float]], vocab: int = 7) -> Tensor:
    out = torch.full((vocab, vocab), -30.0)
    for last, row in table.items():
        for tok, p in row.items():
            out[last, tok] = math.log(p)
    return out


@dataclass
class FakeModel:
    """Next-token logits from a table indexed by the last decoder input; the cache keeps inputs."""

    table: Tensor
    config: Config = field(default_factory=Config)
    calls: list[int] = field(default_factory=list)
    last_cache: Cache | None = None

    def encode(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        return torch.zeros(input_ids.shape[0], input_ids.shape[1], 4)

    def pointer_memory(self, enc, bases) -> PointerMemory:
        b, n = bases.token.shape
        return PointerMemory(torch.zeros(b, n, 4), torch.zeros(b, n, 4), bases.mask.bool())

    def decode(self, dec_in, enc, enc_mask, past_key_values=None, use_cache=False, pointer=None):
        assert enc.shape[0] == dec_in.shape[0] == enc_mask.shape[0]
        if past_key_values is not None:
            assert dec_in.shape[1] == 1, "with a cache only the new token is fed"
            hist = torch.cat([past_key_values.history, dec_in], dim=1)
        else:
            hist = dec_in
        self.calls.append(dec_in.shape[1])
        self.last_cache = Cache(hist)
        logits = self.table[dec_in[:, -1]][:, None, :]  # (B, 1, V)
        bases = torch.full((*logits.shape[:2], pointer.memory.keys.shape[1]), -30.0)
        return torch.cat([logits, bases], dim=-1), self.last_cache  # joint (B, 1, V + L)


TRAP = {
    1: {3: 0.6, 4: 0.4, 2: 1e-6},  # after BOS: A 0.6, B 0.4, END ~0
    3: {5: 0.5, 6: 0.5},  # after A: x or y
    4: {5: 0.99, 6: 0.01},  # after B: x almost surely
    5: {2: 0.9, 3: 0.05, 4: 0.05},
    6: {2: 0.9, 3: 0.05, 4: 0.05},
}


def _run(model: FakeModel, rows: int = 1, **kw) -> list:
    ids = torch.ones(rows, 3, dtype=torch.long)
    mask = torch.ones(rows, 3, dtype=torch.long)
    layouts = [BaseLayout([1], [0], [NO_CODON], [NO_CODON])] * rows  # one base, never allowed
    return generate_ids(model, ids, mask, layouts, [State()] * rows, TOK, **kw)


def test_greedy_takes_the_locally_best_path_and_uses_the_cache() -> None:
    model = FakeModel(_probs(TRAP))
    (out,) = _run(model)
    assert out.tokens == ["A", "x"] and out.complete
    assert out.token_logprobs[0] == pytest.approx(math.log(0.6), abs=1e-4)
    # BOS, A, x, then END: one new token per step, nothing decoded after END
    assert model.calls == [1, 1, 1]


def test_beam_search_escapes_the_greedy_trap() -> None:
    model = FakeModel(_probs(TRAP))
    outs = _run(model, rows=2, num_beams=3)
    for out in outs:
        assert out.tokens == ["B", "x"]
        assert sum(out.token_logprobs) == pytest.approx(math.log(0.4 * 0.99), abs=1e-3)
    # The cache rows were reordered with the beams: beam 0 of each row saw BOS B x.
    hist = model.last_cache.history
    assert hist[0, :3].tolist() == [1, 4, 5] and hist[3, :3].tolist() == [1, 4, 5]


def test_mask_forbids_what_the_model_prefers() -> None:
    # The model wants END right away and after A wants B, but the grammar forbids B there.
    table = {1: {2: 0.5, 3: 0.3, 4: 0.2}, 3: {4: 0.98, 5: 0.01, 6: 0.01}, 5: {2: 1.0}, 6: {2: 1.0}}
    model = FakeModel(_probs(table))
    (out,) = _run(model)
    assert out.tokens == []  # END was allowed at the start and most likely
    model2 = FakeModel(_probs({**table, 1: {3: 0.9, 2: 0.1}}))
    (out2,) = _run(model2)
    assert out2.tokens[0] == "A" and out2.tokens[1] in ("x", "y")
    # Constrained probability: x and y share the mass the grammar left (0.5 each).
    assert math.exp(out2.token_logprobs[1]) == pytest.approx(0.5, abs=1e-3)


def test_truncation_cuts_back_to_last_accepting_point() -> None:
    table = {1: {3: 1.0}, 3: {5: 1.0}, 5: {3: 1.0}}  # A x A x A ... never END
    model = FakeModel(_probs(table))
    (out,) = _run(model, max_new_tokens=5)  # A x A x A -> cut to A x A x
    assert out.tokens == ["A", "x", "A", "x"] and not out.complete
    (beam,) = _run(FakeModel(_probs(table)), max_new_tokens=5, num_beams=2)
    assert len(beam.tokens) % 2 == 0  # a finished beam (END forced in) is preferred if any


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="num_beams"):
        _run(FakeModel(_probs(TRAP)), num_beams=0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        _run(FakeModel(_probs(TRAP)), max_new_tokens=0)


# ------------------------------------------------------------------ the real model and grammar


@pytest.mark.shared
def test_generate_targets_with_untrained_model_always_decodes(dnabert2_tokenizer_dir) -> None:
    """Whatever an untrained model prefers, the output is a valid target for its window."""
    import random

    from baking.target_format.grammar import target_vocabulary
    from baking.target_format.pointers import decode_pointer_target
    from trainer.inference.generate import generate_targets
    from trainer.model import Dna2GffConfig, Dna2GffModel
    from trainer.tokens.tokenizer import add_annotation_tokens, load_tokenizer

    types, wlen = ["CDS", "tRNA"], 300
    tok = load_tokenizer(dnabert2_tokenizer_dir)
    add_annotation_tokens(tok, target_vocabulary(types))
    cfg = Dna2GffConfig(
        vocab_size=tok.get_vocab_size(True),
        hidden_size=32,
        num_encoder_layers=2,
        num_decoder_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
    )
    rng = random.Random(0)
    windows = ["".join(rng.choice("ACGT") for _ in range(wlen)) for _ in range(3)]
    windows.append("acgtnNACGT" * 5)  # a short last window, lower case and N
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = Dna2GffModel(cfg).train()
        for beams in (1, 3):
            outs = generate_targets(
                model, tok, windows, wlen, types, max_new_tokens=40, num_beams=beams
            )
            assert model.training  # restored
            assert len(outs) == len(windows)
            for dna, out in zip(windows, outs):
                assert len(out.tokens) == len(out.token_logprobs)
                assert all(lp <= 1e-6 for lp in out.token_logprobs)
                feats = decode_pointer_target(out.tokens, min(len(dna), wlen), types)
                assert all(f.end < len(dna) for f in feats)
    assert generate_targets(model, tok, [], wlen, types) == []


@pytest.mark.shared
def test_batching_and_padding_do_not_change_the_output(dnabert2_tokenizer_dir) -> None:
    """A window decodes the same alone or batched with a shorter (padded) one: the encoder mask
    reaches cross-attention and the KV cache keeps rows apart."""
    import random

    from baking.target_format.grammar import target_vocabulary
    from trainer.inference.generate import generate_targets
    from trainer.model import Dna2GffConfig, Dna2GffModel
    from trainer.tokens.tokenizer import add_annotation_tokens, load_tokenizer

    types, wlen = ["CDS"], 200
    tok = load_tokenizer(dnabert2_tokenizer_dir)
    add_annotation_tokens(tok, target_vocabulary(types))
    cfg = Dna2GffConfig(
        vocab_size=tok.get_vocab_size(True),
        hidden_size=32,
        num_encoder_layers=2,
        num_decoder_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        hidden_dropout=0.0,
    )
    torch.manual_seed(3)
    model = Dna2GffModel(cfg)
    rng = random.Random(1)
    long_w = "".join(rng.choice("ACGT") for _ in range(wlen))
    short_w = "".join(rng.choice("ACGT") for _ in range(60))
    together = generate_targets(model, tok, [long_w, short_w], wlen, types, max_new_tokens=30)
    alone = [
        generate_targets(model, tok, [w], wlen, types, max_new_tokens=30)[0]
        for w in (long_w, short_w)
    ]
    for a, b in zip(together, alone):
        assert a.tokens == b.tokens
        assert a.token_logprobs == pytest.approx(b.token_logprobs, abs=1e-4)
