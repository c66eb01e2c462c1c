"""The fast decoding path (``StepDecoder``, ``encode_unpadded``) computes the reference's function.

``generate_ids_fast`` replaces the model's general cached ``decode`` step with one built
for annotate's shapes; these tests hold it to the reference path (``reference=True``, the code
annotate ran before) on a real genome's windows with a tiny random model: the same items for
greedy and beam search, with and without the ORF layer, log-probabilities equal up to float
rounding (the per-window products sum in another order), and the same GFF3 out of annotate.
"""

from __future__ import annotations

import functools
import random
from dataclasses import replace

import pytest
import torch

from baking.formats.fasta import read_fasta
from baking.orfs import genetic_code
from baking.target_format.grammar import target_vocabulary
from trainer.inference.annotate import AnnotateOptions, annotate_sequences
from trainer.inference.generate import encode_windows, generate_targets
from trainer.inference.step_decoder import encode_unpadded
from trainer.model import Dna2GffConfig, Dna2GffModel

TYPES = ["CDS", "tRNA"]
W = 300
CODE = genetic_code(11)


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    from trainer.tokens.tokenizer import add_annotation_tokens, train_dna_tokenizer

    rng = random.Random(0)
    seqs = ["".join(rng.choice("ACGT") for _ in range(5000)) for _ in range(4)]
    tok = train_dna_tokenizer(seqs, 64, tmp_path_factory.mktemp("tok"))
    add_annotation_tokens(tok, target_vocabulary(TYPES))
    return tok


def _model(tok, seed: int = 0) -> Dna2GffModel:
    torch.manual_seed(seed)
    cfg = Dna2GffConfig(
        vocab_size=tok.get_vocab_size(True),
        hidden_size=32,
        num_encoder_layers=2,
        num_decoder_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        coordinate_form="pointer",
        pointer_context_bp=5,
        window_len=W,
        feature_types=TYPES,
    )
    model = Dna2GffModel(cfg).eval()
    with torch.no_grad():  # sharper pointer logits: the untrained model then writes features
        assert model.pointer_head is not None
        model.pointer_head.query.weight.mul_(40)
    return model


@pytest.fixture(scope="module")
def phage() -> str:
    """The shared phage genome's sequence (skips when ../shared is absent)."""
    from trainer.fixtures import SHARED_GENOME_PAIRS

    fna, _ = SHARED_GENOME_PAIRS["phage"]
    if not fna.exists():
        pytest.skip(f"shared data absent: {fna}")
    return next(iter(read_fasta(fna)))[1]


def _windows(seq: str) -> list[str]:
    """Full windows, short ones (a sequence's last) and lower case: rows that finish at
    different steps, so finished windows leave the fast path's batch mid-way."""
    out = [seq[s : s + W] for s in range(0, 4000, 300)]
    return [*out, seq[5000:5120], seq[6000:6040].lower(), seq[7000 : 7000 + W]]


@pytest.mark.parametrize(("beams", "orf"), [(1, True), (3, False)])  # annotate's (3, True) below
def test_fast_path_decodes_what_the_reference_decodes(tok, phage, beams: int, orf: bool) -> None:
    model = _model(tok)
    windows = _windows(phage)
    kw = dict(max_new_tokens=40, num_beams=beams, orf_code=CODE if orf else None)
    ref = generate_targets(model, tok, windows, W, TYPES, reference=True, **kw)
    fast = generate_targets(model, tok, windows, W, TYPES, **kw)
    lengths = {len(r.tokens) for r in ref}
    assert len(lengths) > 2, "windows should finish at different steps"
    assert sum(len(r.tokens) for r in ref) > 5 * len(windows), "the model should write features"
    for r, f in zip(ref, fast):
        assert f.tokens == r.tokens
        assert f.complete == r.complete
        assert f.token_logprobs == pytest.approx(r.token_logprobs, rel=1e-4, abs=1e-4)


def test_fast_encoder_matches_the_model_encoder(tok, phage) -> None:
    model = _model(tok)
    cfg = model.config
    windows = [phage[:W], phage[900:1000], phage[2000 : 2000 + W]]
    ids, mask = encode_windows(
        tok, windows, bos_id=cfg.bos_token_id, eos_id=cfg.eos_token_id, pad_id=cfg.pad_token_id
    )
    assert mask.sum(1).min() < mask.shape[1], "one window should be padded"
    with torch.no_grad():
        ref = model.encode(ids, mask)
        fast = encode_unpadded(model, ids, mask)
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-5)
    assert torch.equal(fast[~mask.bool()], torch.zeros_like(fast[~mask.bool()]))


def test_annotate_writes_the_same_gff3_on_either_path(tok, phage) -> None:
    model = _model(tok, seed=1)
    seqs = [("phage", phage[:3000])]
    opts = AnnotateOptions(batch_size=8, num_beams=3, max_new_tokens=30, progress=False)
    reference = functools.partial(
        generate_targets, reference=True, orf_code=CODE, min_orf_codons=30
    )
    fast_gff, _, _ = annotate_sequences(model, tok, seqs, opts, W, TYPES)
    ref_gff, _, summary = annotate_sequences(model, tok, seqs, opts, W, TYPES, generate=reference)
    assert summary.features.get("CDS", 0) > 0
    assert fast_gff == ref_gff


def test_pointer_memory_by_token_matches_the_model(tok, phage) -> None:
    from trainer.data.layout import layout_tensors
    from trainer.inference.generate import window_layouts
    from trainer.inference.step_decoder import pointer_memory_by_token

    model = _model(tok)
    cfg = model.config
    windows = [phage[:W], phage[900:1000]]
    ids, mask = encode_windows(
        tok, windows, bos_id=cfg.bos_token_id, eos_id=cfg.eos_token_id, pad_id=cfg.pad_token_id
    )
    arrays = layout_tensors(window_layouts(tok, windows)[1], "cpu")
    with torch.no_grad():
        enc = model.encode(ids, mask)
        ref = model.pointer_memory(enc, arrays)
        fast = pointer_memory_by_token(model, enc, arrays)
    torch.testing.assert_close(fast.keys, ref.keys, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fast.inputs, ref.inputs, atol=1e-5, rtol=1e-5)
    assert torch.equal(fast.base_mask, ref.base_mask)


def test_threads_decode_what_one_thread_decodes(tok, phage) -> None:
    from trainer.inference.generate import decode_workers

    model = _model(tok)
    windows = _windows(phage)
    kw = dict(max_new_tokens=30, num_beams=2, orf_code=CODE)
    one = generate_targets(model, tok, windows, W, TYPES, workers=1, **kw)
    threads = torch.get_num_threads()
    two = generate_targets(model, tok, windows, W, TYPES, workers=2, **kw)
    assert torch.get_num_threads() == threads, "the process's thread count is restored"
    for a, b in zip(one, two, strict=True):
        assert b.tokens == a.tokens
        assert b.token_logprobs == pytest.approx(a.token_logprobs, rel=1e-4, abs=1e-4)
    assert model.training is False
    # one thread where threads would change the computation or compete with the device
    assert decode_workers(model, windows, "cuda") == 1
    assert decode_workers(model, windows[:3], "cpu") == 1


def _reporting(real, log, line):
    """``real`` that first appends ``line(*args)`` to ``log``: a forked child's memory is its own,
    so decoding in children is observed through a file."""

    def spy(*args, **kw):
        with open(log, "a") as f:
            f.write(f"{line(*args)}\n")
        return real(*args, **kw)

    return spy


def test_split_batch_decodes_in_forked_processes(tok, phage, monkeypatch, tmp_path) -> None:
    """Two workers run in two processes (threads of one process shared one core's worth: the
    decoding loop holds the GIL) and return what one worker returns; a child's error reaches
    the caller."""
    import multiprocessing
    import os

    from trainer.inference import generate as pg

    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("no fork on this platform (threads are used)")
    model = _model(tok)
    windows = _windows(phage)
    log = tmp_path / "pids"
    real = pg.generate_targets
    monkeypatch.setattr(pg, "generate_targets", _reporting(real, log, lambda *a: os.getpid()))
    kw = dict(max_new_tokens=30, num_beams=2, orf_code=CODE)
    one = real(model, tok, windows, W, TYPES, workers=1, **kw)
    two = real(model, tok, windows, W, TYPES, workers=2, **kw)
    pids = set(map(int, log.read_text().split()))
    assert len(pids) == 2 and os.getpid() in pids, "one part here, one in a forked child"
    assert [t.tokens for t in two] == [t.tokens for t in one]

    def boom(part):
        if part is not windows_parts[0]:
            raise ValueError("child failed")
        return []

    windows_parts = [windows[:2], windows[2:]]
    with pytest.raises(ValueError, match="child failed"):
        pg._in_forks(windows_parts, boom)
    assert pg._FORK_JOB is None


def test_unsplit_batch_runs_on_one_core(tok, phage, monkeypatch) -> None:
    """A batch too small to split (a genome's last) does not run on torch's intra-op threads,
    which made it 5x slower than one thread on the 2-core box."""
    from trainer.inference import generate as pg

    model = _model(tok)
    windows = _windows(phage)[:3]
    seen: list[int] = []
    real = pg.generate_ids_fast

    def spy(*args, **kw):
        seen.append(torch.get_num_threads())
        return real(*args, **kw)

    monkeypatch.setattr(pg, "generate_ids_fast", spy)
    # a plain annotate has no process group; an in-process training test earlier in the suite
    # leaves one (inside a torch.distributed job the batch is never split: another rule)
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: False)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert pg.decode_workers(model, windows, "cpu") == 1
        generate_targets(model, tok, windows, W, TYPES, max_new_tokens=20, orf_code=CODE)
        assert seen == [1]
        assert torch.get_num_threads() == 2, "the process's thread count is restored"
    finally:
        torch.set_num_threads(threads)


# ----------------------------------------------------------------------------- bfloat16 path
def test_bf16_encoder_and_memory_stay_close_to_float32(tok, phage) -> None:
    """``dtype=bfloat16`` runs copies of the modules (the model stays float32) and gives the
    float32 results to bfloat16's precision; the pointer memory comes back in float32."""
    from trainer.data.layout import layout_tensors
    from trainer.inference.generate import window_layouts
    from trainer.inference.step_decoder import pointer_memory_by_token

    model = _model(tok)
    cfg = model.config
    windows = [phage[:W], phage[900:1000], phage[2000 : 2000 + W]]
    ids, mask = encode_windows(
        tok, windows, bos_id=cfg.bos_token_id, eos_id=cfg.eos_token_id, pad_id=cfg.pad_token_id
    )
    arrays = layout_tensors(window_layouts(tok, windows)[1], "cpu")
    with torch.inference_mode():
        ref = encode_unpadded(model, ids, mask)
        low = encode_unpadded(model, ids, mask, torch.bfloat16)
        ref_mem = pointer_memory_by_token(model, ref, arrays)
        low_mem = pointer_memory_by_token(model, low, arrays)
    assert low.dtype == torch.bfloat16 and low_mem.keys.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in model.parameters()), "the model is not cast"
    assert torch.equal(low[~mask.bool()].float(), torch.zeros_like(ref[~mask.bool()]))
    scale = ref.abs().max().item()
    error = (low.float() - ref).abs()
    assert 0 < error.max().item() < 0.1 * scale, "bfloat16 rounding, nothing worse"
    assert error.mean().item() < 0.01 * scale
    for a, b in [(low_mem.keys, ref_mem.keys), (low_mem.inputs, ref_mem.inputs)]:
        assert 0 < (a - b).abs().mean().item() < 0.02 * b.abs().mean().item()
    # the bfloat16 copies are cached, and remade when a weight changes (a training step)
    with torch.inference_mode():
        assert torch.equal(encode_unpadded(model, ids, mask, torch.bfloat16), low)
    with torch.no_grad():
        model.encoder.layers()[0].mlp.wo.weight.mul_(3)
    with torch.inference_mode():
        changed = encode_unpadded(model, ids, mask, torch.bfloat16)
        assert not torch.equal(changed, low)
        torch.testing.assert_close(
            changed.float(), encode_unpadded(model, ids, mask), atol=0.1 * scale, rtol=0.05
        )


def test_bf16_path_decodes_nearly_what_float32_decodes(tok, phage) -> None:
    """The bfloat16 path is a different function: a choice within rounding of another may flip.
    On a real genome's windows most windows decode the same items, the rest stay grammatical
    (the decoding itself runs in float32 under the same grammar), and the reference refuses it."""
    model = _model(tok)
    windows = [phage[s : s + W] for s in range(0, 6000, 300)]
    kw = dict(max_new_tokens=30, num_beams=3, orf_code=CODE, min_orf_codons=30)
    f32 = generate_targets(model, tok, windows, W, TYPES, workers=1, **kw)
    low = generate_targets(model, tok, windows, W, TYPES, workers=1, bf16=True, **kw)
    assert sum(len(t.tokens) for t in f32) > 5 * len(windows), "the model should write features"
    same = sum(a.tokens == b.tokens for a, b in zip(f32, low))
    assert same >= 0.8 * len(windows), f"{same} of {len(windows)} windows decode the same"
    print(f"bf16: {same} of {len(windows)} windows decode the same items")
    for a, b in zip(f32, low):
        if a.tokens == b.tokens:
            assert b.token_logprobs == pytest.approx(a.token_logprobs, abs=0.1)
    assert any(a.token_logprobs != b.token_logprobs for a, b in zip(f32, low)), "bf16 ran"
    two = generate_targets(model, tok, windows, W, TYPES, workers=2, bf16=True, **kw)
    assert [t.tokens for t in two] == [t.tokens for t in low], "the split keeps bf16"
    with pytest.raises(ValueError, match="bf16"):
        generate_targets(model, tok, windows, W, TYPES, reference=True, bf16=True)


def test_annotate_bf16_on_a_cpu_runs_the_bf16_fast_path(tok, phage, monkeypatch, tmp_path) -> None:
    """``--bf16`` on a CPU with a pointer model: the fast path's bfloat16 part, no autocast (which
    would keep the batch on one core and run the decoding in bfloat16 too)."""
    from trainer.inference import generate as pg

    model = _model(tok, seed=1)
    log = tmp_path / "seen"  # batches may be decoded in forked children: they report by file
    real = pg.generate_ids_fast

    def spy(*args, **kw):
        with open(log, "a") as f:
            f.write(f"{bool(kw.get('bf16'))} {torch.is_autocast_enabled('cpu')}\n")
        return real(*args, **kw)

    monkeypatch.setattr(pg, "generate_ids_fast", spy)
    seqs = [("phage", phage[:2000])]
    for bf16 in (True, None, False):
        log.write_text("")
        opts = AnnotateOptions(batch_size=8, num_beams=2, max_new_tokens=20, bf16=bf16)
        annotate_sequences(model, tok, seqs, replace(opts, progress=False), W, TYPES)
        seen = log.read_text().splitlines()
        assert seen and all(s == f"{bool(bf16)} False" for s in seen), (bf16, seen)


# ------------------------------------------------- whole batches in persistent forked processes
def test_annotate_decodes_whole_batches_in_processes_forked_once(tok, phage, monkeypatch, tmp_path):
    """On two cores annotate's decoder hands whole batches to two processes forked once (not a
    fork per batch, and the parent decodes none), and writes what one process writes."""
    import multiprocessing
    import os

    from trainer.inference import annotate as pa

    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("no fork on this platform")
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: False)
    model = _model(tok)
    seqs = [("phage", phage[:6000])]
    opts = AnnotateOptions(batch_size=8, num_beams=2, max_new_tokens=30, progress=False)
    log = tmp_path / "pids"
    real = pa.generate_targets
    spy = _reporting(real, log, lambda *a: f"{os.getpid()} {len(a[2])}")
    monkeypatch.setattr(pa, "generate_targets", spy)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one, _, s1 = annotate_sequences(model, tok, seqs, opts, W, TYPES)
        calls_here = log.read_text().split("\n")[:-1]
        log.unlink()
        torch.set_num_threads(2)
        two, _, s2 = annotate_sequences(model, tok, seqs, opts, W, TYPES)
    finally:
        torch.set_num_threads(threads)
    calls = [tuple(map(int, line.split())) for line in log.read_text().splitlines()]
    pids = {pid for pid, _ in calls}
    assert s1.windows == s2.windows > 3 * opts.batch_size, "several batches per process"
    assert len(calls) == len(calls_here) == -(-s2.windows // opts.batch_size), "one call a batch"
    assert len(pids) == 2 and os.getpid() not in pids, "two children forked once; none here"
    assert [n for _, n in calls] == [int(c.split()[1]) for c in calls_here], "whole batches"
    assert [str(f) for f in two] == [str(f) for f in one]


def test_a_failing_batch_is_raised_in_the_caller_and_the_children_stop():
    import multiprocessing

    from trainer.inference import batch_pool

    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("no fork on this platform")

    def decode(batch):
        if batch[0] == "bad":
            raise ValueError("batch failed in a child")
        return [len(x) for x in batch]

    with batch_pool.decoded_batches(decode, [["a"], ["bb"], ["ccc"]], 2) as out:
        assert list(out) == [[1], [2], [3]], "results come back in the batches' order"
    failing = batch_pool.decoded_batches(decode, [["a"], ["bad"], ["c"]], 2)
    with pytest.raises(ValueError, match="batch failed in a child"), failing as out:
        list(out)
    assert batch_pool._JOB is None


def test_batch_processes_rules(tok, monkeypatch) -> None:
    from trainer.inference.batch_pool import batch_processes

    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: False)
    model = _model(tok)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert batch_processes(model, "cpu", 10) == 2
        assert batch_processes(model, "cpu", 1) == 1, "one batch: split inside it instead"
        assert batch_processes(model, "cuda", 10) == 1, "an accelerator runs batches itself"
        assert batch_processes(object(), "cpu", 10) == 1, "a stand-in model decodes here"
        torch.set_num_threads(1)
        assert batch_processes(model, "cpu", 10) == 1
    finally:
        torch.set_num_threads(threads)


def test_context_block_by_rows_is_the_convolution(tok, phage) -> None:
    """The pointer head's context block as row products (the ``--bf16`` path) computes what its
    two convolutions compute, on a real genome's bases and in float32 to rounding."""
    from trainer.data.layout import layout_tensors
    from trainer.inference.generate import window_layouts
    from trainer.inference.step_decoder import context_by_rows
    from trainer.model.pointer import base_one_hot

    model = _model(tok, seed=2)
    head = model.pointer_head
    assert head is not None and head.context is not None
    with torch.no_grad():  # random weights: zero-initialised convolution biases would hide a bug
        for p in head.context.parameters():
            p.normal_(0, 0.5)
    _, layouts = window_layouts(tok, _windows(phage))
    bases = layout_tensors(layouts, "cpu")
    onehot = base_one_hot(bases.codon5, bases.codon3, bases.mask, torch.float32)
    with torch.inference_mode():
        want = head.context(onehot).transpose(1, 2)
        got = context_by_rows(head.context, onehot)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert want.abs().mean() > 0.1, "the block computes something to compare"
