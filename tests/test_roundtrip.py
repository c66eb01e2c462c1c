"""The exact round trip: features -> windows -> the shard's features.json -> target items ->
features -> stitched genome features equals the source annotation, on generated edge cases and on
EVERY window of the real genomes in ../shared."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import pytest

from baking.formats.fasta import read_fasta
from baking.formats.gff3 import read_gff3
from baking.target_format.features import (
    GenomeFeature,
    SequenceInfo,
    select_features,
    sequence_infos,
)
from baking.target_format.grammar import DEFAULT_FEATURE_TYPES
from baking.target_format.pointers import decode_pointer_target, encode_pointer_target
from baking.target_format.sample_features import features_from_json, features_to_json
from baking.target_format.stitch import stitch
from baking.target_format.windows import FeatureIndex, WindowMeta, plan_windows, window_features


def round_trip(
    infos: dict[str, SequenceInfo],
    feats: dict[str, Sequence[GenomeFeature]],
    window_len: int,
    stride: int,
    strand: str = "+",
    offset: int = 0,
) -> tuple[int, int]:
    """Assert both round trips (through the shard's ``features.json`` and the target); returns
    (windows, target items)."""
    results = []
    tokens = 0
    for seqid, info in infos.items():
        index = FeatureIndex(feats[seqid], info)
        for ws, we in plan_windows(
            info.length, window_len, stride, circular=info.circular, offset=offset
        ):
            meta = WindowMeta("g", seqid, ws, we, strand, info.length, info.circular, window_len)
            wf = window_features(index, ws, we, strand)
            stored = features_from_json(features_to_json(wf, we - ws), we - ws)
            toks = encode_pointer_target(stored, we - ws)
            tokens += len(toks)
            decoded = decode_pointer_target(toks, we - ws)
            assert sorted(decoded) == sorted(wf), (meta, wf, decoded)
            results.append((meta, decoded))
    stitched = stitch(results)
    assert not [f for f in stitched if f.partial_left or f.partial_right]
    got = sorted(f.to_genome_feature() for f in stitched)
    expected = sorted(f for v in feats.values() for f in v)
    assert got == expected
    return len(results), tokens


def _conflict(a: GenomeFeature, b: GenomeFeature, n: int) -> bool:
    """Two features that windows cannot tell apart: one strand and type, overlapping, and not
    nested CDSs sharing their stop codon (same 3' end, same frame). See docs/target-format.md."""
    if a.strand != b.strand or a.type != b.type:
        return False
    pa = {p % n for p in range(a.start, a.end + 1)}
    if not pa.intersection(p % n for p in range(b.start, b.end + 1)):
        return False
    if a.type != "CDS":
        return True
    if a.strand == "+":
        return not (a.end == b.end and (a.start + a.phase - b.start - b.phase) % 3 == 0)
    return not (a.start == b.start and (a.end - a.phase - b.end + b.phase) % 3 == 0)


def _random_genome(
    rng: random.Random,
) -> tuple[dict[str, SequenceInfo], dict[str, list[GenomeFeature]]]:
    """Random sequences and features, overlapping freely except where windows are ambiguous."""
    infos, feats = {}, {}
    for i in range(rng.randrange(1, 4)):
        n = rng.choice([150, 400, 1000, 3000])
        info = SequenceInfo(f"s{i}", n, rng.random() < 0.6)
        out: set[GenomeFeature] = set()
        for _ in range(rng.randrange(0, 25)):
            length = rng.choice([3, 30, 90, 300, 900, 2000])
            length = min(length, n)
            start = rng.randrange(1, n + 1 if info.circular else n - length + 2)
            end = start + length - 1
            ftype = rng.choice(["CDS", "CDS", "tRNA"])
            phase = rng.randrange(3) if ftype == "CDS" else None
            g = GenomeFeature(info.seqid, start, end, rng.choice("+-"), ftype, phase)
            if not any(_conflict(g, o, n) for o in out):
                out.add(g)
        infos[info.seqid] = info
        feats[info.seqid] = sorted(out)
    return infos, feats


def test_edge_cases_by_hand() -> None:
    info = SequenceInfo("c", 1000, True)
    lin = SequenceInfo("l", 500, False)
    feats = {
        "c": [
            GenomeFeature("c", 951, 1050, "+", "CDS", 0),  # across the origin
            GenomeFeature("c", 990, 1600, "-", "CDS", 2),  # across the origin, longer than a window
            GenomeFeature("c", 1, 700, "+", "rRNA"),  # longer than most windows
            GenomeFeature("c", 100, 400, "+", "CDS", 0),  # nested genes sharing a stop codon
            GenomeFeature("c", 190, 400, "+", "CDS", 0),
            GenomeFeature("c", 150, 300, "-", "CDS", 1),  # overlapping, other strand
            GenomeFeature("c", 150, 300, "-", "CDS", 0),  # same span, other frame
            GenomeFeature("c", 600, 699, "+", "tRNA"),  # exactly one window
        ],
        "l": [
            GenomeFeature("l", 1, 500, "-", "CDS", 0),  # the whole linear sequence
            GenomeFeature("l", 1, 1, "+", "tRNA"),
            GenomeFeature("l", 500, 500, "+", "tRNA"),
        ],
    }
    for window_len, stride in [(100, 100), (100, 37), (250, 250), (1000, 500), (2000, 2000)]:
        for strand in "+-":
            round_trip({"c": info, "l": lin}, feats, window_len, stride, strand)


def test_generated_genomes() -> None:
    rng = random.Random(11)
    for _ in range(150):
        infos, feats = _random_genome(rng)
        window_len = rng.choice([50, 100, 333, 1000])
        stride = rng.randrange(max(1, window_len // 4), window_len + 1)
        round_trip(infos, feats, window_len, stride, rng.choice("+-"), rng.randrange(stride))


def test_partial_features_are_flagged_when_windows_are_missing() -> None:
    info = SequenceInfo("l", 1000, False)
    index = FeatureIndex([GenomeFeature("l", 50, 450, "+", "CDS", 0)], info)
    results = []
    for ws, we in [(0, 200), (400, 600)]:  # the window over 200..400 never comes
        meta = WindowMeta("g", "l", ws, we, "+", 1000, False, 200)
        results.append((meta, window_features(index, ws, we)))
    out = stitch(results)
    assert [(f.start, f.end, f.partial_left, f.partial_right) for f in out] == [
        (50, 200, False, True),
        (401, 450, True, False),
    ]
    assert out[0].pieces == ((0, 0),) and out[1].pieces == ((1, 0),)
    assert out[1].phase == (0 - 351) % 3


def test_synthetic_genomes_round_trip(tmp_path) -> None:
    synthetic = pytest.importorskip("baking.synthetic")
    genome = synthetic.generate_genome(synthetic.SyntheticConfig(seed=3))
    fna, gff = synthetic.write_genome(genome, tmp_path, "syn")
    _check_files(str(fna), str(gff), [(2000, 2000, "+"), (500, 200, "-")])


def _check_files(fna: str, gff: str, settings) -> list[tuple[int, int]]:
    doc = read_gff3(gff)
    lengths = {k: len(v) for k, v in read_fasta(fna)}
    infos = sequence_infos(doc, lengths, gff)
    feats, _ = select_features(doc, infos, DEFAULT_FEATURE_TYPES, gff)
    assert sum(map(len, feats.values())) > 0
    return [round_trip(infos, feats, w, s, strand) for w, s, strand in settings]


@pytest.mark.shared
def test_every_window_of_the_phage(genome_pair) -> None:
    fna, gff = genome_pair("phage")
    _check_files(str(fna), str(gff), [(2000, 2000, "+"), (2000, 500, "-"), (300, 300, "+")])


@pytest.mark.shared
@pytest.mark.parametrize("name", ["C.crescentus", "E.coli"])
def test_every_window_of_bacterial_genomes(genome_pair, name: str) -> None:
    """Default windows on both strands, plus an overlapping grid with an offset."""
    fna, gff = genome_pair(name)
    (windows, tokens), _ = _check_files(str(fna), str(gff), [(2000, 2000, "+"), (2000, 1300, "-")])
    print(f"{name}: windows={windows} mean_target_tokens={tokens / windows:.1f}")


# ------------------------------------------------------------------- through the trainer's path


def pointer_round_trip(
    infos: dict[str, SequenceInfo],
    feats: dict[str, Sequence[GenomeFeature]],
    seqs: dict[str, str],
    tokenizer,
    window_len: int,
    stride: int,
    strand: str,
) -> tuple[int, int]:
    """The target through the trainer's own path: the shard's features.json -> the loader's
    example (positions as encoder token + offset from the real tokenizer's offsets) -> items read
    back from the joint labels and the base layout -> features -> stitched genome.
    Returns (windows, windows over 510 DNABERT-2 tokens)."""
    from baking.target_format.windows import sample_dna
    from trainer.data.examples import build_example

    vocab = 100_000  # joint label space: ids below are tokens, V + b is base b
    names = ["<cut>", "<+>", "<->", "<p0>", "<p1>", "<p2>"]
    names += [f"<{t}>" for t in DEFAULT_FEATURE_TYPES]
    token_ids = {t: i for i, t in enumerate(names)}
    name_of = {i: t for t, i in token_ids.items()}
    results = []
    long_windows = 0
    for seqid, info in infos.items():
        index = FeatureIndex(feats[seqid], info)
        for ws, we in plan_windows(info.length, window_len, stride, circular=info.circular):
            meta = WindowMeta("g", seqid, ws, we, strand, info.length, info.circular, window_len)
            wf = window_features(index, ws, we, strand)
            dna = sample_dna(seqs[seqid], ws, we, strand)
            stored = features_from_json(features_to_json(wf, we - ws), we - ws)
            s = build_example(
                dna,
                stored,
                tokenizer=tokenizer,
                token_ids=token_ids,
                bos=-1,
                eos=-2,
                max_src=1 << 20,
                vocab_size=vocab,
                with_encoder_labels=False,
            )
            long_windows += len(s.src) > 512
            lay = s.layout
            assert lay.length == len(dna)
            items = []
            for lab, pos in zip(s.labels[:-1], s.positions[1:]):
                if lab >= vocab:
                    b = lab - vocab
                    assert pos == b  # the next input points at the same base
                    j, o = lay.token[b], lay.offset[b]  # encoder token, base inside it
                    assert lay.token.index(j) + o == b  # the pair names the base exactly
                    items.append(b)
                else:
                    items.append(name_of[lab])
            decoded = decode_pointer_target(items, we - ws)
            assert sorted(decoded) == sorted(wf), (meta, wf, decoded)
            assert encode_pointer_target(decoded, we - ws) == items
            results.append((meta, decoded))
    stitched = stitch(results)
    assert not [f for f in stitched if f.partial_left or f.partial_right]
    got = sorted(f.to_genome_feature() for f in stitched)
    assert got == sorted(f for v in feats.values() for f in v)
    return len(results), long_windows


def _pointer_files(fna: str, gff: str, tokenizer, settings) -> None:
    doc = read_gff3(gff)
    seqs = dict(read_fasta(fna))
    infos = sequence_infos(doc, {k: len(v) for k, v in seqs.items()}, gff)
    feats, _ = select_features(doc, infos, DEFAULT_FEATURE_TYPES, gff)
    for w, s, strand in settings:
        windows, long_windows = pointer_round_trip(infos, feats, seqs, tokenizer, w, s, strand)
        print(f"{Path(fna).name} w={w} s={s} {strand}: windows={windows} over_512={long_windows}")


@pytest.mark.shared
def test_pointer_form_every_window_of_the_phage(genome_pair, dnabert2_tokenizer_dir) -> None:
    from trainer.tokens.tokenizer import load_tokenizer

    fna, gff = genome_pair("phage")
    tok = load_tokenizer(dnabert2_tokenizer_dir)
    _pointer_files(str(fna), str(gff), tok, [(2000, 2000, "+"), (2000, 500, "-"), (300, 300, "+")])


@pytest.mark.shared
@pytest.mark.slow
@pytest.mark.parametrize("name", ["C.crescentus", "E.coli"])
def test_pointer_form_every_window_of_bacterial_genomes(
    genome_pair, dnabert2_tokenizer_dir, name: str
) -> None:
    """Both strands, through the real DNABERT-2 tokenizer's offsets."""
    from trainer.tokens.tokenizer import load_tokenizer

    fna, gff = genome_pair(name)
    tok = load_tokenizer(dnabert2_tokenizer_dir)
    _pointer_files(str(fna), str(gff), tok, [(2000, 2000, "+"), (2000, 2000, "-")])


def test_pointer_form_synthetic_and_random_genomes(tmp_path) -> None:
    """Synthetic genomes and random multi-sequence genomes, with a small trained tokenizer."""
    from baking import synthetic
    from trainer.tokens.tokenizer import train_dna_tokenizer

    genome = synthetic.generate_genome(synthetic.SyntheticConfig(seed=4, chromosome_length=30_000))
    fna, gff = synthetic.write_genome(genome, tmp_path, "syn")
    tok = train_dna_tokenizer([s.seq for s in genome.sequences], 64, tmp_path / "tok")
    _pointer_files(str(fna), str(gff), tok, [(1536, 512, "+"), (1536, 768, "-")])
    rng = random.Random(12)
    for _ in range(30):
        infos, feats = _random_genome(rng)
        seqs = {k: "".join(rng.choice("ACGT") for _ in range(i.length)) for k, i in infos.items()}
        w = rng.choice([50, 333, 1000])
        pointer_round_trip(
            infos, feats, seqs, tok, w, rng.randrange(w // 4, w + 1), rng.choice("+-")
        )
