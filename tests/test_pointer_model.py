"""The pointer model: head, loader samples, cached decoding, ORF-constrained generation."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from test_pointers import _cut_piece_ok

from baking.orfs import genetic_code
from baking.target_format.grammar import WindowFeature, target_vocabulary
from baking.target_format.pointers import OrfSites, decode_pointer_target
from trainer.data.examples import (
    base_labels,
    build_example,
    clip_features,
    collate_examples,
    encoder_labels,
)
from trainer.data.layout import base_layout
from trainer.inference.generate import generate_ids, generate_targets
from trainer.model import Dna2GffConfig, Dna2GffModel
from trainer.model.pointer import PointerInputs, PointerMemory, WindowBases
from trainer.model.seq2seq import PointerStep
from trainer.tokens.tokenizer import WindowTooLong

TYPES = ["CDS", "tRNA"]
CODE = genetic_code(11)


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    from trainer.tokens.tokenizer import add_annotation_tokens, train_dna_tokenizer

    rng = random.Random(0)
    seqs = ["".join(rng.choice("ACGT") for _ in range(5000)) for _ in range(4)]
    tok = train_dna_tokenizer(seqs, 64, tmp_path_factory.mktemp("tok"))
    add_annotation_tokens(tok, target_vocabulary(TYPES))
    return tok


def _config(tok, **kw) -> Dna2GffConfig:
    fields = dict(
        vocab_size=tok.get_vocab_size(True),
        hidden_size=32,
        num_encoder_layers=2,
        num_decoder_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        hidden_dropout=0.0,
    )
    fields.update(kw)
    return Dna2GffConfig(**fields)


def _sample(tok, dna: str, feats, window_len: int, enc_labels: bool = False):
    ids = {t: tok.token_to_id(t) for t in target_vocabulary(TYPES)}
    return build_example(
        dna,
        feats,
        tokenizer=tok,
        token_ids=ids,
        bos=1,
        eos=2,
        max_src=4096,
        vocab_size=tok.get_vocab_size(True),
        with_encoder_labels=enc_labels,
    )


def _forward_inputs(batch):
    keys = ("input_ids", "attention_mask", "decoder_input_ids", "decoder_attention_mask")
    return {**{k: batch[k] for k in keys}, "pointer": PointerInputs.from_batch(batch)}


def test_base_layout_maps_every_base_once(tok) -> None:
    dna = "ACGTTGCAAGGCTTAACGATCGATCGGATTACA" * 3
    enc = tok.encode(dna, add_special_tokens=False)
    lay = base_layout(dna, enc.offsets, len(enc.ids))
    assert lay.length == len(dna)
    for b in range(len(dna)):
        j = lay.token[b]
        a, e = enc.offsets[j - 1]
        assert a + lay.offset[b] == b < e
    assert lay.codon5[0] == 16 * 0 + 4 * 1 + 2  # ACG
    assert lay.codon3[2] == lay.codon5[0] and lay.codon3[0] == lay.codon3[1] == 64
    short = base_layout(dna, enc.offsets, 3)  # only 3 tokens reach the encoder
    assert short.length == enc.offsets[2][1]


def test_a_window_over_the_limit_is_refused_never_cut(tok) -> None:
    feats = [WindowFeature(10, 290, "-", "CDS", 1), WindowFeature(250, 299, "+", "tRNA")]
    clipped = clip_features(feats, 200)
    assert clipped == [WindowFeature(10, 199, "-", "CDS", (1 - 91) % 3, False, True)]
    rng = random.Random(2)
    dna = "".join(rng.choice("ACGT") for _ in range(300))
    ids = {t: tok.token_to_id(t) for t in target_vocabulary(TYPES)}

    def sample(max_src: int):
        return build_example(
            dna,
            feats,
            tokenizer=tok,
            token_ids=ids,
            bos=1,
            eos=2,
            max_src=max_src,
            vocab_size=1000,
            with_encoder_labels=True,
        )

    n_tokens = len(tok.encode(dna, add_special_tokens=False).ids) + 2
    with pytest.raises(WindowTooLong, match=rf"300 bp are {n_tokens} encoder tokens"):
        sample(40)  # it used to keep 38 tokens and clip the target to the bases they cover
    s = sample(n_tokens)  # exactly at the limit: the whole window and its whole target
    assert s.layout.length == 300 and len(s.src) == n_tokens
    items = [lab - 1000 if lab >= 1000 else tok.id_to_token(lab) for lab in s.labels[:-1]]
    assert decode_pointer_target(items, 300) == feats
    assert s.enc_labels is not None and len(s.enc_labels) == len(s.src)


def test_encoder_labels_mark_frames_and_codons(tok) -> None:
    dna = "A" * 30 + "ATGAAACCCTAA" + "A" * 30
    f = WindowFeature(30, 41, "+", "CDS", 0)
    enc = tok.encode(dna, add_special_tokens=False)
    lay = base_layout(dna, enc.offsets, len(enc.ids))
    labels = encoder_labels([f], lay, len(enc.ids) + 2)
    assert labels[0] == labels[-1] == -100  # [CLS], [SEP]
    assert labels[lay.token[30]] == 7 and labels[lay.token[41]] == 8
    assert labels[lay.token[0]] == 0 and labels[lay.token[70]] == 0
    coding = {labels[lay.token[b]] for b in range(34, 38)}
    assert coding <= {1, 2, 3, 7, 8} and coding & {1, 2, 3}


def test_base_labels_mark_closed_cds_ends_only(tok) -> None:
    feats = [
        WindowFeature(10, 39, "+", "CDS", 0, False, False),
        WindowFeature(50, 99, "-", "CDS", 0, False, True),  # 5' end (high) cut by the edge
        WindowFeature(0, 20, "-", "CDS", 0, True, False),  # 3' end (low) cut
        WindowFeature(60, 80, "+", "tRNA"),
    ]
    labels = base_labels(feats, 100)
    marked = {b: c for b, c in enumerate(labels) if c}
    assert marked == {10: 1, 39: 2, 50: 2, 20: 1}


def test_base_aux_head_scores_every_base_and_its_loss_trains_the_keys(tok) -> None:
    """``base_aux_weight`` adds a head on the pointer keys; its loss reaches the pointer head's
    parameters (the keys the decoder scores), and a model without it has no head."""
    from trainer.train.step import base_aux_loss

    torch.manual_seed(0)
    model = Dna2GffModel(_config(tok, base_aux_weight=0.5, pointer_context_bp=4))
    rng = random.Random(2)
    dna = "".join(rng.choice("ACGT") for _ in range(150))
    feats = [WindowFeature(10, 39, "+", "CDS", 0, False, False)]
    batch = collate_examples([_sample(tok, dna, feats, 150, True)], 3, 512)
    assert batch["base_labels"].shape == batch["base_mask"].shape
    out = model(**_forward_inputs(batch))
    assert out.base_logits is not None and out.base_logits.shape[:2] == batch["base_mask"].shape
    loss = base_aux_loss(out, batch)
    assert loss is not None and float(loss) > 0
    loss.backward()
    assert model.pointer_head.key.weight.grad.abs().sum() > 0
    assert model.pointer_head.context[0].weight.grad.abs().sum() > 0
    assert Dna2GffModel(_config(tok)).base_aux is None
    assert base_aux_loss(Dna2GffModel(_config(tok))(**_forward_inputs(batch)), batch) is None


def test_base_aux_class_weight_is_a_weighted_mean_that_lifts_the_rare_bases(tok) -> None:
    """Weight w on the begin/end classes: the loss is sum(w_i * nll_i) / sum(w_i) over the set
    labels, so with w > 1 a wrongly called begin base moves it more than an easy "neither" base
    does; w = 1 is the plain cross-entropy and the config refuses w <= 0."""
    from types import SimpleNamespace

    from baking.common.errors import ConfigError
    from trainer.train.step import base_aux_loss

    logits = torch.tensor([[[4.0, 0.0, 0.0], [4.0, 0.0, 0.0], [4.0, 0.0, 0.0], [0.0, 2.0, 0.0]]])
    labels = torch.tensor([[0, 0, 1, -100, -100]])  # longer than the logits, as batches are
    out, batch = SimpleNamespace(base_logits=logits), {"base_labels": labels}
    nll = -torch.log_softmax(logits[0, :3], -1)[torch.arange(3), labels[0, :3]]
    plain = base_aux_loss(out, batch)
    weighted = base_aux_loss(out, batch, 50.0)
    assert plain is not None and weighted is not None
    assert torch.allclose(plain, nll.mean())
    assert torch.allclose(weighted, (nll[0] + nll[1] + 50 * nll[2]) / 52)
    assert float(weighted) > 2 * float(plain)  # the one begin base, called "neither", dominates
    with pytest.raises(ConfigError, match="base_aux_class_weight"):
        _config(tok, base_aux_weight=0.5, base_aux_class_weight=0.0)


def test_base_one_hot_reads_bases_back_from_codon_codes(tok) -> None:
    from trainer.model.pointer import base_one_hot

    dna = "ACGTNACGGTA"
    lay = base_layout(dna, tok.encode(dna, add_special_tokens=False).offsets, 64)
    c5, c3 = torch.tensor([lay.codon5]), torch.tensor([lay.codon3])
    mask = torch.ones(1, len(dna), dtype=torch.bool)
    mask[0, -1] = False  # padding
    hot = base_one_hot(c5, c3, mask, torch.float32)[0]  # (4, L)
    want = ["ACGT".find(c) if c in "ACGT" else None for c in dna[:-1]] + [None]
    for b, base in enumerate(want):
        column = hot[:, b].tolist()
        assert column == ([0.0] * 4 if base is None else [float(i == base) for i in range(4)])


def test_pointer_context_sees_nearby_bases_outside_the_token_and_no_further(tok) -> None:
    """With ``pointer_context_bp=20`` and the encoder states held fixed, a base's key changes
    when a base 15 bp away changes and not when one 25 bp away does (codons reach 2 bp)."""
    torch.manual_seed(0)
    model = Dna2GffModel(_config(tok, pointer_context_bp=20)).eval()
    rng = random.Random(5)
    dna = "".join(rng.choice("ACGT") for _ in range(120))

    def keys(seq: str) -> torch.Tensor:
        batch = collate_examples([_sample(tok, seq, [], 120)], 3, 512)
        enc = torch.ones(1, batch["input_ids"].shape[1], 32)
        n = batch["base_token"].shape[1]
        memory = model.pointer_memory(
            enc,
            WindowBases(
                torch.zeros(1, n, dtype=torch.long),  # every base reads the same encoder state
                torch.zeros(1, n, dtype=torch.long),
                batch["codon5"],
                batch["codon3"],
                batch["base_mask"],
            ),
        )
        return memory.keys[0]

    def flip(seq: str, at: int) -> str:
        return seq[:at] + ("A" if seq[at] != "A" else "C") + seq[at + 1 :]

    with torch.no_grad():
        k = keys(dna)
        assert not torch.allclose(keys(flip(dna, 75))[60], k[60])
        assert torch.equal(keys(flip(dna, 85))[60], k[60])
        assert torch.equal(keys(flip(dna, 35))[60], k[60])
    plain = Dna2GffModel(_config(tok, pointer_context_bp=0)).eval()  # 20 is the default
    assert plain.pointer_head.context is None


@pytest.mark.parametrize("context_bp", [0, 20])
def test_cached_decoding_equals_full_forward_and_reload(
    tok, tmp_path: Path, context_bp: int
) -> None:
    torch.manual_seed(0)
    model = Dna2GffModel(_config(tok, encoder_aux_weight=0.5, pointer_context_bp=context_bp)).eval()
    rng = random.Random(1)
    dna = "".join(rng.choice("ACGT") for _ in range(300))
    feats = [
        WindowFeature(0, 40, "+", "CDS", 2, True, False),
        WindowFeature(60, 299, "-", "CDS", 0, False, True),
        WindowFeature(100, 180, "+", "tRNA"),
    ]
    batch = collate_examples([_sample(tok, dna, feats, 300, True)], 3, 512)
    with torch.no_grad():
        full = model(**_forward_inputs(batch))
        assert full.encoder_logits is not None
        enc = model.encode(batch["input_ids"], batch["attention_mask"])
        memory = model.pointer_memory(enc, WindowBases.from_batch(batch))
        cache = None
        steps = []
        for t in range(batch["decoder_input_ids"].shape[1]):
            sl = slice(t, t + 1)
            step = PointerStep(
                memory, batch["decoder_positions"][:, sl], batch["decoder_anchors"][:, sl]
            )
            logits, cache = model.decode(
                batch["decoder_input_ids"][:, sl],
                enc,
                batch["attention_mask"],
                past_key_values=cache,
                use_cache=True,
                pointer=step,
            )
            steps.append(logits)
    torch.testing.assert_close(torch.cat(steps, 1), full.logits, rtol=1e-4, atol=1e-4)
    model.save_pretrained(tmp_path / "m")
    again = Dna2GffModel.from_pretrained(tmp_path / "m").eval()
    assert again.config.coordinate_form == "pointer" and again.config.encoder_aux_weight == 0.5
    assert again.config.pointer_context_bp == context_bp
    with torch.no_grad():
        torch.testing.assert_close(again(**_forward_inputs(batch)).logits, full.logits)


class RandomLogits(torch.nn.Module):
    """A stand-in model whose every logit is random: constrained decoding must still only write
    valid targets (and, with the ORF layer, valid ORFs) whatever it prefers."""

    def __init__(self, config: Dna2GffConfig, seed: int) -> None:
        super().__init__()
        self.config = config
        self.gen = torch.Generator().manual_seed(seed)

    def encode(self, input_ids, attention_mask):
        return torch.zeros(*input_ids.shape, 4)

    def pointer_memory(self, enc, bases):
        b, n = bases.token.shape
        return PointerMemory(torch.zeros(b, n, 4), torch.zeros(b, n, 4), bases.mask.bool())

    def decode(self, ids, enc, mask, past_key_values=None, use_cache=False, pointer=None):
        n = pointer.memory.keys.shape[1]
        logits = torch.randn(ids.shape[0], 1, self.config.vocab_size + n, generator=self.gen) * 3
        return logits, _NoCache()


class _NoCache:
    def index_select(self, index):
        return self


@pytest.mark.parametrize("beams", [1, 3])
def test_orf_constrained_decoding_never_emits_an_invalid_orf(tok, beams: int) -> None:
    from baking import synthetic
    from baking.target_format.windows import sample_dna

    genome = synthetic.generate_genome(synthetic.SyntheticConfig(seed=6, chromosome_length=20_000))
    seq = genome.sequences[0].seq
    rng = random.Random(4)
    windows = [sample_dna(seq, s, s + 400, rng.choice("+-")) for s in range(0, 16_000, 500)]
    windows += [
        "".join(rng.choice("AATTGC") for _ in range(rng.choice([3, 50, 400]))) for _ in range(8)
    ]
    cfg = _config(tok)
    n_cds = 0
    for seed in range(3):
        model = RandomLogits(cfg, seed)
        outs = generate_targets(
            model, tok, windows, 400, TYPES, max_new_tokens=80, num_beams=beams, orf_code=CODE
        )
        for dna, out in zip(windows, outs):
            orf = OrfSites(dna.upper(), CODE.starts, CODE.stops)
            feats = decode_pointer_target(out.tokens, len(dna), TYPES, orf)  # valid, ORF layer on
            for f in feats:
                if f.type == "CDS":
                    n_cds += 1
                    assert _cut_piece_ok(dna.upper(), f), (dna, f)
            assert all(lp <= 1e-6 for lp in out.token_logprobs)
    assert n_cds > 50


def test_untrained_model_decodes_valid_targets_batched_like_alone(tok) -> None:
    torch.manual_seed(3)
    model = Dna2GffModel(_config(tok)).eval()
    with torch.no_grad():  # a biased head so the untrained model writes features
        model.pointer_head.query.weight.mul_(50)
    rng = random.Random(3)
    windows = ["".join(rng.choice("ACGT") for _ in range(n)) for n in (300, 120, 300)]
    both = generate_targets(model, tok, windows, 300, TYPES, max_new_tokens=30)
    for i, dna in enumerate(windows):
        alone = generate_targets(model, tok, [dna], 300, TYPES, max_new_tokens=30)[0]
        assert alone.tokens == both[i].tokens
        decode_pointer_target(alone.tokens if alone.complete else alone.tokens, len(dna), TYPES)
    with pytest.raises(ValueError):
        generate_ids(
            model, torch.zeros(1, 3, dtype=torch.long), torch.ones(1, 3), [], [], {}, num_beams=0
        )


def test_a_pointer_model_learns_exact_coordinates(tok) -> None:
    """Overfit two windows: greedy constrained decoding then writes their targets exactly
    (the pointer head, the joint loss and the step inputs work together)."""
    from trainer.train.step import token_loss

    torch.manual_seed(0)
    model = Dna2GffModel(_config(tok))
    rng = random.Random(7)
    data = []
    for _ in range(2):
        dna = "".join(rng.choice("ACGT") for _ in range(200))
        feats = [
            WindowFeature(a, a + rng.randrange(20, 60), rng.choice("+-"), "tRNA")
            for a in sorted(rng.sample(range(0, 130), 3))
        ]
        data.append((dna, feats))
    batch = collate_examples([_sample(tok, d, f, 200) for d, f in data], 3, 512)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(150):
        out = model(**_forward_inputs(batch))
        loss, _ = token_loss(out.logits, batch["labels"], None)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if float(loss.detach()) < 0.01:
            break
    outs = generate_targets(model, tok, [d for d, _ in data], 200, TYPES)
    for (_dna, feats), out in zip(data, outs):
        assert decode_pointer_target(out.tokens, 200) == sorted(feats)


def test_constrained_loss_masks_keep_the_gold_and_force_orf_ends(tok) -> None:
    """On a synthetic genome's windows (both strands) the ORF layer allows every gold item,
    forces a '+' CDS's end after its start, and the masked loss is the constrained one."""
    from baking import synthetic
    from baking.target_format.features import GenomeFeature, SequenceInfo
    from baking.target_format.windows import FeatureIndex, sample_dna, window_features

    genome = synthetic.generate_genome(synthetic.SyntheticConfig(seed=8, chromosome_length=20_000))
    s0 = genome.sequences[0]
    ref = [
        GenomeFeature(f.seqid, f.start, f.end, f.strand, f.type, f.phase)
        for f in genome.features
        if f.seqid == s0.seqid and f.type in TYPES
    ]
    index = FeatureIndex(ref, SequenceInfo(s0.seqid, len(s0.seq), True))
    ids = {t: tok.token_to_id(t) for t in target_vocabulary(TYPES)}
    v = tok.get_vocab_size(True)
    samples = []
    forced = 0
    for start in range(0, 15_000, 700):
        for strand in "+-":
            wf = window_features(index, start, start + 600, strand)
            dna = sample_dna(s0.seq, start, start + 600, strand)
            s = build_example(
                dna,
                wf,
                tokenizer=tok,
                token_ids=ids,
                bos=1,
                eos=2,
                max_src=4096,
                vocab_size=v,
                with_encoder_labels=False,
                constrain=CODE,
                feature_types=TYPES,
            )
            assert s.allowed is not None and len(s.allowed) == len(s.labels)
            items = s.labels[:-1]
            for k, (lab, (tids, pos)) in enumerate(zip(s.labels, s.allowed)):
                assert (lab - v in pos) if lab >= v else (lab in tids)
                plus_cds = k >= 3 and items[k - 3] == ids["<CDS>"] and items[k - 2] == ids["<+>"]
                if plus_cds and items[k - 1] >= v:  # END after a closed '+' start: forced
                    assert len(pos) + len(tids) == 1
                    forced += 1
            samples.append(s)
    assert forced > 5
    batch = collate_examples(samples[:6], 3, 512, 1, v)
    torch.manual_seed(0)
    model = Dna2GffModel(_config(tok)).eval()
    with torch.no_grad():
        masked = model(**_forward_inputs(batch)).logits
        free = model(**_forward_inputs({k: x for k, x in batch.items() if k != "decoder_allowed"}))
    from trainer.train.step import token_loss

    lm, _ = token_loss(masked, batch["labels"], None)
    lf, _ = token_loss(free.logits, batch["labels"], None)
    assert float(lm) < float(lf)  # renormalised over fewer choices


def test_pad_decoder_keeps_a_pointer_batch_consistent(tok) -> None:
    """Expert parallelism pads every rank's decoder to one length: the pointer tensors (positions,
    anchors, constrained-loss masks) grow with it and the padded batch still runs."""
    from trainer.data.loader import pad_decoder

    rng = random.Random(11)
    dna = "".join(rng.choice("ACGT") for _ in range(200))
    ids = {t: tok.token_to_id(t) for t in target_vocabulary(TYPES)}
    v = tok.get_vocab_size(True)
    s = build_example(
        dna,
        [WindowFeature(5, 80, "+", "tRNA")],
        tokenizer=tok,
        token_ids=ids,
        bos=1,
        eos=2,
        max_src=4096,
        vocab_size=v,
        with_encoder_labels=False,
        constrain=CODE,
        feature_types=TYPES,
    )
    batch = collate_examples([s], 3, 512, 1, v)
    t = batch["decoder_input_ids"].shape[1]
    padded = pad_decoder(batch, t + 5, 3)
    for key in ("decoder_input_ids", "decoder_positions", "decoder_anchors", "labels"):
        assert padded[key].shape == (1, t + 5)
    assert padded["decoder_allowed"].shape[:2] == (1, t + 5)
    assert bool(padded["decoder_allowed"][:, t:].all())
    model = Dna2GffModel(_config(tok)).eval()
    with torch.no_grad():
        a = model(**_forward_inputs(batch)).logits
        b = model(**_forward_inputs(padded)).logits[:, :t]
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_pointer_inputs_travel_as_one_structure(tok) -> None:
    """A collated batch's base arrays and decoder positions become one ``PointerInputs`` at the
    model's door; without base arrays there is none and the model scores target tokens only."""
    rng = random.Random(12)
    dna = "".join(rng.choice("ACGT") for _ in range(120))
    v = tok.get_vocab_size(True)
    batch = collate_examples([_sample(tok, dna, [WindowFeature(5, 60, "+", "tRNA")], 120)], 3, 512)
    inputs = PointerInputs.from_batch(batch)
    assert inputs is not None and inputs.allowed is None
    assert inputs.bases.token is batch["base_token"] and inputs.bases.mask is batch["base_mask"]
    assert inputs.positions is batch["decoder_positions"]
    assert inputs.anchors is batch["decoder_anchors"]
    model = Dna2GffModel(_config(tok)).eval()
    with torch.no_grad():
        joint = model(**_forward_inputs(batch)).logits
        tokens_only = {k: x for k, x in batch.items() if k not in WindowBases.BATCH_KEYS}
        assert PointerInputs.from_batch(tokens_only) is None
        plain = model(**_forward_inputs(tokens_only)).logits
    assert joint.shape[-1] == v + 120 and plain.shape[-1] == v
