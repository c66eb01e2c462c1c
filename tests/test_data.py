"""The shard loader: balanced slot plans, endless deterministic streams, exact resume, batch layout."""

from __future__ import annotations

import io
import itertools
import json
import tarfile
from pathlib import Path

import pytest
import torch

from baking.common.errors import InputError
from baking.shards.manifest import FORMAT as MANIFEST_FORMAT
from trainer.data.examples import Example, ExampleBuilder, build_example, collate_examples
from trainer.data.layout import BaseLayout
from trainer.data.loader import (
    IGNORE_INDEX,
    ShardBatches,
    ShardEntry,
    SlotPlan,
    TokenIds,
    batches_per_epoch,
    make_loader,
    pad_decoder,
    plan_slots,
    slot_stream,
    split_shards,
)
from trainer.fixtures import TYPES, make_tokenizer, write_shards
from trainer.tokens.tokenizer import WindowTooLong

IDS = TokenIds(bos=1, eos=2, pad=3)


def _builder(tok_dir: Path, max_src: int = 64, max_tgt: int = 64) -> ExampleBuilder:
    """The loader's example builder over the fixture tokenizer and types."""
    from trainer.tokens.tokenizer import load_tokenizer

    vocab = load_tokenizer(tok_dir).get_vocab_size(with_added_tokens=True)
    return ExampleBuilder(
        str(tok_dir), IDS, max_src, max_tgt, vocab_size=vocab, feature_types=TYPES
    )


def _example(src: list[int], tgt: list[int]) -> Example:
    """An example whose target is the token ids ``tgt`` (no positions), on an empty layout."""
    return Example(
        src,
        [IDS.bos, *tgt],
        [-1] * (len(tgt) + 1),
        [-1] * (len(tgt) + 1),
        [*tgt, IDS.eos],
        BaseLayout([], [], [], []),
        None,
    )


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory) -> Path:
    return make_tokenizer(tmp_path_factory.mktemp("tok"))


def _keys(it, n):
    return [s["__key__"] for s in itertools.islice(it, n)]


def test_plan_deals_shards_by_count_when_balanced():
    shards = [ShardEntry(f"s{i}", c) for i, c in enumerate([10, 9, 6, 5, 4, 2])]
    plans = plan_slots(shards, 2)
    assert all(p.stride == 1 for p in plans)
    assert sorted(p.total for p in plans) == [17, 19]
    assert sorted(s.path for p in plans for s in p.shards) == sorted(s.path for s in shards)


@pytest.mark.parametrize("counts,slots", [([1000, 5], 2), ([7], 3), ([3, 3], 4)])
def test_plan_strides_when_shards_are_uneven_or_few(counts, slots):
    plans = plan_slots([ShardEntry(f"s{i}", c) for i, c in enumerate(counts)], slots)
    assert [p.stride for p in plans] == [slots] * slots
    assert [p.offset for p in plans] == list(range(slots))
    # every global sample goes to exactly one slot, pass after pass
    total = sum(counts)
    for p in range(3):
        assert sum(plan.yield_in_pass(p) for plan in plans) == total


def test_yield_in_pass_matches_brute_force():
    plan = SlotPlan((ShardEntry("a", 7),), stride=3, offset=2)
    for p in range(5):
        brute = sum(1 for g in range(p * 7, (p + 1) * 7) if g % 3 == 2)
        assert plan.yield_in_pass(p) == brute


def test_batches_per_epoch_is_equal_and_at_least_one():
    assert batches_per_epoch(100, 2, 8) == 6
    assert batches_per_epoch(3, 4, 8) == 1


def test_stream_is_deterministic_endless_and_skips_exactly(tmp_path):
    write_shards(tmp_path, {"train": [7, 5]})
    shards = split_shards(tmp_path, "train")
    plan = SlotPlan(tuple(shards), 1, 0)
    first = _keys(slot_stream(plan, seed=1, slot=0, buffer=4), 40)  # > 3 passes
    assert first == _keys(slot_stream(plan, seed=1, slot=0, buffer=4), 40)
    assert first != _keys(slot_stream(plan, seed=2, slot=0, buffer=4), 40)
    assert sorted(first[:12]) == sorted(first[12:24])  # each pass is a permutation of all samples
    assert first[:12] != first[12:24]  # ... in a new order
    for skip in (0, 3, 12, 29):
        assert _keys(slot_stream(plan, 1, 0, 4, skip=skip), 40 - skip) == first[skip:]


def test_every_rank_gets_batches_even_from_one_tiny_shard(tmp_path, tok_dir):
    write_shards(tmp_path, {"train": [200, 3]})
    shards = split_shards(tmp_path, "train")
    enc = _builder(tok_dir)
    keys = []
    for rank in range(2):
        ds = ShardBatches(
            shards,
            enc,
            rank=rank,
            world_size=2,
            num_workers=0,
            micro_batch_size=4,
            seed=0,
            shuffle_buffer=8,
        )
        batches = list(itertools.islice(iter(ds), 25))  # one epoch = 203 // 8 = 25 batches
        assert all(b["input_ids"].shape[0] == 4 for b in batches)
        keys.append(ds.plans[rank].stride)
    assert keys == [2, 2]  # 200 vs 3 is too uneven for whole shards: strided


def test_resume_from_any_batch_with_workers(tmp_path, tok_dir):
    write_shards(tmp_path, {"train": [9, 8, 7, 6]})
    shards = split_shards(tmp_path, "train")
    enc = _builder(tok_dir)

    def run(start, n):
        ds = ShardBatches(
            shards,
            enc,
            rank=1,
            world_size=2,
            num_workers=2,
            micro_batch_size=3,
            seed=5,
            shuffle_buffer=4,
            start_batch=start,
        )
        return [b["input_ids"] for b in itertools.islice(iter(make_loader(ds, 2, seed=5)), n)]

    full = run(0, 9)
    for start in (1, 4, 5):
        resumed = run(start, 9 - start)
        assert all(torch.equal(a, b) for a, b in zip(full[start:], resumed))


def test_collate_shifts_targets_and_pads():
    pairs = [([1, 10, 11, 2], [20, 21, 22]), ([1, 12, 2], [])]
    b = collate_examples([_example(s, t) for s, t in pairs], IDS.pad, max_tgt=16)
    assert b["input_ids"].tolist() == [[1, 10, 11, 2], [1, 12, 2, 3]]
    assert b["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]
    assert b["decoder_input_ids"].tolist() == [[1, 20, 21, 22], [1, 3, 3, 3]]
    assert b["labels"].tolist() == [[20, 21, 22, 2], [2, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX]]
    assert b["decoder_attention_mask"].tolist() == [[1, 1, 1, 1], [1, 0, 0, 0]]
    p = pad_decoder(b, 6, IDS.pad)
    assert p["labels"].shape == (2, 6) and p["labels"][0, 4:].tolist() == [IGNORE_INDEX] * 2
    assert p["decoder_attention_mask"][0].tolist() == [1, 1, 1, 1, 0, 0]


def test_collate_rounds_lengths_up_to_a_multiple():
    pairs = [([1, 10, 11, 12, 13, 2], [20, 21]), ([1, 12, 2], [])]
    b = collate_examples([_example(s, t) for s, t in pairs], IDS.pad, max_tgt=6, multiple=4)
    assert b["input_ids"].shape == (2, 8) and b["attention_mask"][0].tolist() == [1] * 6 + [0] * 2
    assert b["labels"].shape == (2, 4) and b["labels"][0].tolist() == [20, 21, 2, IGNORE_INDEX]
    long = [_example([1, 2], list(range(20, 30)))]
    assert collate_examples(long, IDS.pad, max_tgt=6, multiple=4)["labels"].shape == (
        1,
        6,
    )  # never past max_tgt


def test_builder_uppercases_and_maps_targets(tok_dir):
    from baking.target_format.grammar import WindowFeature

    enc = _builder(tok_dir)
    dna = "acgtacgtacgtacgtacgtacgtacgtacgtacgtacgt"
    feats = [WindowFeature(3, 20, "+", "tRNA")]
    kw = dict(tokenizer=enc.tokenizer, token_ids=enc.token_ids, bos=1, eos=2, vocab_size=1000)
    lower = build_example(dna, feats, max_src=64, with_encoder_labels=False, **kw)
    upper = build_example(dna.upper(), feats, max_src=64, with_encoder_labels=False, **kw)
    assert lower.src == upper.src and lower.labels == upper.labels
    assert lower.src[0] == 1 and lower.src[-1] == 2 and 0 not in lower.src  # no [UNK]
    with pytest.raises(
        WindowTooLong, match=r"40 bp are \d+ encoder tokens.*over --max_src_tokens 8"
    ):  # refused, not cut
        build_example(dna, feats, max_src=8, with_encoder_labels=False, **kw)
    ids = lower.labels[:2]  # <tRNA> <+>, then the two positions
    assert ids == [enc.token_ids["<tRNA>"], enc.token_ids["<+>"]] and all(i > 8 for i in ids)
    assert lower.labels[2:] == [1000 + 3, 1000 + 20, 2]
    with pytest.raises(KeyError, match="<nope>"):
        build_example(
            dna, [WindowFeature(3, 20, "+", "nope")], max_src=64, with_encoder_labels=False, **kw
        )


def test_manifest_errors(tmp_path):
    with pytest.raises(InputError, match="no manifest"):
        split_shards(tmp_path, "train")
    write_shards(tmp_path, {"train": [4]})
    (tmp_path / "train" / "g-0000.tar").unlink()
    with pytest.raises(InputError, match=r"g-0000\.tar: shard listed in manifest\.json"):
        split_shards(tmp_path, "train")
    (tmp_path / "manifest.json").write_text(
        json.dumps({"format": MANIFEST_FORMAT, "splits": {"train": {"shards": [{"path": 3}]}}})
    )
    with pytest.raises(InputError, match="bad shard entry"):
        split_shards(tmp_path, "train")
    assert split_shards(tmp_path, "val") == []


def test_count_mismatch_and_corrupt_shard(tmp_path):
    write_shards(tmp_path, {"train": [4]})
    m = json.loads((tmp_path / "manifest.json").read_text())
    m["splits"]["train"]["shards"][0]["samples"] = 5
    (tmp_path / "manifest.json").write_text(json.dumps(m))
    plan = SlotPlan(tuple(split_shards(tmp_path, "train")), 1, 0)
    with pytest.raises(InputError, match="holds 4 samples but manifest.json says 5"):
        list(itertools.islice(slot_stream(plan, 0, 0, 2), 10))
    shard = tmp_path / "train" / "g-0000.tar"
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2 + 100])
    with pytest.raises(InputError, match="g-0000.tar: unreadable shard"):
        list(itertools.islice(slot_stream(plan, 0, 0, 2), 10))


def test_tar_members_group_by_key(tmp_path):
    from trainer.data.stages import checked_shards, tar_samples

    path = tmp_path / "x.tar"
    with tarfile.open(path, "w") as tf:
        for name, data in [("a.dna.txt", b"AC"), ("a.target.txt", b""), ("b.dna.txt", b"G")]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    samples = list(tar_samples(checked_shards([ShardEntry(str(path), -1)])))
    assert samples == [
        {"__key__": "a", "__shard__": str(path), "dna.txt": b"AC", "target.txt": b""},
        {"__key__": "b", "__shard__": str(path), "dna.txt": b"G"},
    ]


def _one_pass(data_dir: Path, split: str = "train") -> list[dict]:
    shards = split_shards(data_dir, split)
    plan = SlotPlan(tuple(shards), 1, 0)
    return list(itertools.islice(slot_stream(plan, 0, 0, 4), plan.total))


def test_altered_shard_is_refused_by_name(tmp_path):
    import trainer.data.stages as stages

    data = write_shards(tmp_path, {"train": [12]})
    assert len(_one_pass(data)) == 12  # intact: the whole pass reads without a word
    shard = tmp_path / "train" / "g-0000.tar"
    raw = bytearray(shard.read_bytes())
    i = raw.index(b"dna.txt") + 512  # first DNA payload: one base changed, same size
    raw[i] = ord("A") if raw[i] != ord("A") else ord("C")
    shard.write_bytes(bytes(raw))
    stages.VERIFIED.clear()
    with pytest.raises(InputError, match=r"train/g-0000\.tar: sha256 mismatch"):
        _one_pass(data)
    shard.write_bytes(bytes(raw) + bytes(1024))  # still a valid tar, but not the baked one
    stages.VERIFIED.clear()
    with pytest.raises(InputError, match=r"g-0000\.tar: size mismatch"):
        _one_pass(data)


def _bad_shard(tmp_path: Path, field: str, value: bytes | None) -> Path:
    """Baked-style data whose sample 2 has ``field`` replaced (None: removed)."""
    import hashlib

    import webdataset as wds

    data = write_shards(tmp_path, {"train": [4]})
    shard = tmp_path / "train" / "g-0000.tar"
    samples = [{k: v for k, v in s.items() if not k.startswith("__s")} for s in _one_pass(data)]
    samples.sort(key=lambda s: s["__key__"])
    with wds.TarWriter(str(shard)) as w:
        for j, s in enumerate(samples):
            if j == 2:
                # a digit ``target.txt`` stands in for the features, as in a shard of the old format
                drop = "features.json" if field == "target.txt" else field
                s = {k: v for k, v in s.items() if k != drop}
                if value is not None:
                    s[field] = value
            w.write(s)
    manifest = json.loads((data / "manifest.json").read_text())
    raw = shard.read_bytes()
    entry = manifest["splits"]["train"]["shards"][0]
    entry.update(bytes=len(raw), sha256=hashlib.sha256(raw).hexdigest())
    (data / "manifest.json").write_text(json.dumps(manifest))
    return data


@pytest.mark.parametrize(
    "field,value,reason",
    [
        ("dna.txt", None, "no dna.txt in this sample"),
        ("dna.txt", "ACGTé".encode(), "dna.txt: not ascii text"),
        ("json", b"{not json", "json: not valid JSON"),
        ("json", b"[" * 100_000 + b"]" * 100_000, "json: nested too deeply"),
        ("features.json", None, "no features.json in this sample"),
        ("features.json", b"[{]", "features.json: not valid JSON"),
        (
            "features.json",
            b'[{"type":"no_such_type","strand":"+","start":1,"end":5,"phase":null,'
            b'"cut_left":false,"cut_right":false}]',
            "features.json: feature type 'no_such_type' is not one of the model's (CDS, tRNA)",
        ),
        (
            "target.txt",
            b"<0> <5> <+> <tRNA>",
            "no features.json: the shard was baked in the retired",
        ),
    ],
)
def test_bad_sample_fields_name_shard_and_key(tmp_path, tok_dir, field, value, reason):
    import re

    import trainer.data.loader as loader
    import trainer.data.stages as stages

    data = _bad_shard(tmp_path, field, value)
    stages.VERIFIED.clear()
    enc = _builder(tok_dir)
    want = rf"train/g-0000\.tar: g_0_000002: {re.escape(reason)}"
    for workers in (0, 1):  # in the process and through a DataLoader worker: the same error
        ds = ShardBatches(
            split_shards(data, "train"),
            enc,
            rank=0,
            world_size=1,
            num_workers=workers,
            micro_batch_size=4,
            seed=0,
            shuffle_buffer=1,
        )
        with pytest.raises(InputError, match=want):
            next(loader.iter_batches(make_loader(ds, workers)))


# ------------------------------------------------------------------------------ genome balancing


def _draws(data: Path, alpha: float, passes: int, *, slot: int = 0, slots: int = 1, seed=3):
    """Per pass of one slot's balanced stream: samples per genome, and the balance used."""
    from collections import Counter

    from trainer.data.balance import GenomeBalance
    from trainer.data.slots import pass_yield

    shards = split_shards(data, "train")
    balance = GenomeBalance.for_shards(shards, alpha, seed=seed)
    plan = plan_slots(shards, slots)[slot]
    stream = slot_stream(plan, seed, slot, 16, balance=balance)
    per_pass = []
    for p in range(passes):
        n = pass_yield(plan, seed, slot, p, balance)
        taken = list(itertools.islice(stream, n))
        per_pass.append(Counter(json.loads(s["json"])["genome"] for s in taken))
    return balance, per_pass


def _bake_shared(tmp_path: Path, names: set[str]) -> Path:
    """Bake some genomes of benchmarks/shared_corpus.tsv (skips without ../shared)."""
    from launch.bake_data import _main as bake_main

    table = Path(__file__).resolve().parents[1] / "benchmarks" / "shared_corpus.tsv"
    rows = [ln.split("\t") for ln in table.read_text().splitlines() if not ln.startswith("#")]
    lines = ["name\tfasta\tgff\ttransl_table"]
    for r in rows[1:]:
        if r[0] in names:
            fna, gff = (table.parent / r[1]).resolve(), (table.parent / r[2]).resolve()
            if not fna.is_file():
                pytest.skip(f"shared data absent: {fna}")
            lines.append("\t".join([r[0], str(fna), str(gff), r[3]]))
    listing = tmp_path / "genomes.tsv"
    listing.write_text("\n".join(lines) + "\n")
    out = tmp_path / "baked"
    assert bake_main(["--genomes", str(listing), str(out)]) == 0
    return out


def test_genome_balance_gives_small_real_genomes_their_share(tmp_path):
    """Four shared genomes, 0.06-4.6 Mbp: with alpha 0.5 every pass gives each genome
    sqrt(windows)/sum sqrt of the pass (up to one window), not its size; alpha 1 is size."""
    from trainer.data.balance import genome_shares

    names = {"phage_VT2-Sakai", "Carsonella_ruddii_HT", "Mycoplasma_genitalium_G37", "E.coli"}
    data = _bake_shared(tmp_path, names)
    sizes = {}
    for s in split_shards(data, "train"):
        sizes[s.genome] = sizes.get(s.genome, 0) + s.count
    assert set(sizes) == names and sizes["E.coli"] > 50 * sizes["phage_VT2-Sakai"]
    total = sum(sizes.values())
    want = genome_shares(sizes, 0.5)
    balance, per_pass = _draws(data, 0.5, 2)
    assert balance is not None
    for drawn in per_pass:
        assert set(drawn) == names
        assert abs(sum(drawn.values()) - total) <= len(names)  # a pass keeps its length
        for g in names:
            assert abs(drawn[g] - want[g] * total) <= 1, (g, drawn[g], want[g] * total)
    assert per_pass[0]["phage_VT2-Sakai"] > 3 * sizes["phage_VT2-Sakai"]  # not drowned
    assert per_pass[0]["E.coli"] < 0.8 * sizes["E.coli"]
    none, by_size = _draws(data, 1.0, 1)
    assert none is None and dict(by_size[0]) == sizes


def test_balanced_stream_is_deterministic_and_resumes_exactly(tmp_path):
    """Same seed, same stream; a skip lands on the same sample however many passes it spans
    (whole passes are skipped by arithmetic); another seed draws other windows."""
    from trainer.data.balance import GenomeBalance

    write_shards(tmp_path, {"train": [40, 12, 3]}, genome_per_shard=True)
    shards = split_shards(tmp_path, "train")
    balance = GenomeBalance.for_shards(shards, 0.3, seed=1)
    assert balance is not None and balance.rates["g2"] > 3 > 1 > balance.rates["g0"]
    plan = SlotPlan(tuple(shards), 1, 0)
    first = _keys(slot_stream(plan, 1, 0, 8, balance=balance), 200)  # > 3 passes
    assert first == _keys(slot_stream(plan, 1, 0, 8, balance=balance), 200)
    other = GenomeBalance.for_shards(shards, 0.3, seed=2)
    assert first != _keys(slot_stream(plan, 2, 0, 8, balance=other), 200)
    for skip in (1, 50, 55, 121, 170):
        assert _keys(slot_stream(plan, 1, 0, 8, skip, balance), 200 - skip) == first[skip:]


def test_balanced_ranks_take_equal_full_batches_and_resume(tmp_path, tok_dir):
    """Two ranks of two workers, uneven genomes, balanced: every rank yields full batches for
    as long as asked, and a resume from any batch continues the same batches."""
    write_shards(tmp_path, {"train": [60, 20, 6, 2]}, genome_per_shard=True)
    shards = split_shards(tmp_path, "train")
    enc = _builder(tok_dir)

    def run(rank, start, n):
        ds = ShardBatches(
            shards,
            enc,
            rank=rank,
            world_size=2,
            num_workers=2,
            micro_batch_size=3,
            seed=5,
            shuffle_buffer=4,
            start_batch=start,
            genome_balance=0.5,
        )
        assert ds.balance is not None
        return [b["input_ids"] for b in itertools.islice(iter(make_loader(ds, 2, seed=5)), n)]

    epoch = batches_per_epoch(88, 2, 3)
    for rank in (0, 1):
        full = run(rank, 0, 2 * epoch)
        assert len(full) == 2 * epoch and all(b.shape[0] == 3 for b in full)
    for start in (3, epoch + 1):
        resumed = run(1, start, 6)
        assert all(torch.equal(a, b) for a, b in zip(full[start:], resumed))


def test_balance_refuses_what_it_cannot_count(tmp_path):
    """A sample whose json names another genome than its shard's manifest entry is refused by
    shard and key; shards the manifest names no genome for, among named ones, are refused up
    front; alpha outside [0, 1] too. One genome, genomes of one size, or alpha 1 need no stage."""
    from baking.common.errors import ConfigError
    from trainer.data.balance import GenomeBalance

    data = write_shards(tmp_path, {"train": [6, 4]}, genome_per_shard=True)
    shards = split_shards(data, "train")
    assert [s.genome for s in shards] == ["g0", "g1"]
    assert GenomeBalance.for_shards(shards, 1.0, 0) is None
    assert GenomeBalance.for_shards(shards[:1], 0.5, 0) is None
    equal = [ShardEntry("a.tar", 5, genome="a"), ShardEntry("b.tar", 5, genome="b")]
    assert GenomeBalance.for_shards(equal, 0.3, 0) is None  # equal genomes: nothing to balance
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ConfigError, match="genome_balance must be in"):
            GenomeBalance.for_shards(shards, bad, 0)
    with pytest.raises(ConfigError, match="names none for 1 shard"):
        GenomeBalance.for_shards([shards[0], ShardEntry("x.tar", 3)], 0.5, 0)
    m = json.loads((data / "manifest.json").read_text())
    m["genomes"]["g0"]["shards"], m["genomes"]["g1"]["shards"] = (
        ["train/g-0001.tar"],
        ["train/g-0000.tar"],
    )
    (data / "manifest.json").write_text(json.dumps(m))
    swapped = split_shards(data, "train")
    balance = GenomeBalance.for_shards(swapped, 0.5, 0)
    assert balance is not None
    plan = SlotPlan(tuple(swapped), 1, 0)
    with pytest.raises(InputError, match=r"g-000\d\.tar: g_\d_00000\d: json: genome 'g\d', but"):
        list(itertools.islice(slot_stream(plan, 0, 0, 2, balance=balance), 10))


@pytest.mark.parametrize("value", ["1.5", "-0.5", "nan"])
def test_train_cli_refuses_a_genome_balance_outside_0_1(tmp_path, capsys, value):
    from launch.train import main

    (tmp_path / "m").mkdir()
    (tmp_path / "d").mkdir()
    argv = ["--model", str(tmp_path / "m"), "--data", str(tmp_path / "d")]
    assert main([*argv, "--output", str(tmp_path / "o"), "--genome_balance", value]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: genome_balance must be in [0, 1], got {float(value)}"]
    assert not (tmp_path / "o").exists()


def test_a_changed_genome_balance_is_named_at_resume():
    """Another --genome_balance at resume draws other windows from then on: the log says so."""
    from trainer.train.resume_check import changed_settings, make_record

    def record(alpha):
        return make_record(model={}, data={}, target={}, settings={"genome_balance": alpha})

    assert changed_settings(record(1.0), record(0.5)) == "genome_balance 1.0 -> 0.5"
    assert changed_settings(record(0.5), record(0.5)) is None
