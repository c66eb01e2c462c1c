"""The baker end to end: the seed's command, the sample contract, determinism, splits, augmentation,
shard bounds, the token file and re-runs over an existing output folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import webdataset as wds
from bake_helpers import output_files, run_bake, small_genome

from baking.bake import bake
from baking.bake_config import BakeConfig, GenomeSpec
from baking.formats.fasta import read_fasta_dict, reverse_complement
from baking.formats.gff3 import read_gff3
from baking.shards.manifest import Manifest, load_manifest
from baking.target_format.features import select_features, sequence_infos
from baking.target_format.grammar import DEFAULT_FEATURE_TYPES, WindowFeature
from baking.target_format.pointers import decode_pointer_target, encode_pointer_target
from baking.target_format.sample_features import features_from_json
from baking.target_format.stitch import stitch
from baking.target_format.windows import WindowMeta, mirror

META_KEYS = [
    "genome",
    "seqid",
    "start",
    "end",
    "strand",
    "seq_length",
    "circular",
    "window_len",
    "transl_table",
]


def read_samples(out: Path, split: str = "train") -> list[dict]:
    m = load_manifest(out)
    urls = [str(out / s.path) for s in m.split(split)]
    if not urls:
        return []
    return list(wds.WebDataset(urls, shardshuffle=False).decode())


def window_features(sample: dict, length: int) -> list[WindowFeature]:
    """A read sample's ``features.json`` (webdataset decodes it to a list) as window features."""
    return features_from_json(json.dumps(sample["features.json"]), length)


def _bake(tmp_path: Path, name: str = "out", **kw) -> tuple[Path, Manifest]:
    fna, gff = small_genome(tmp_path / "in")
    out = tmp_path / name
    cfg = BakeConfig(**{"window_len": 1000, "progress": False, **kw})
    manifest, _ = bake([GenomeSpec("small", str(fna), str(gff))], cfg, out)
    assert manifest is not None
    return out, manifest


@pytest.mark.shared
def test_seed_command_on_the_phage(tmp_path: Path, genome_pair) -> None:
    fna, gff = genome_pair("phage")
    out = tmp_path / "processed"
    tokens = tmp_path / "data" / "new_tokens.txt"
    run = run_bake(fna, gff, out, "--extract_tokens", tokens)
    assert run.returncode == 0, run.stderr
    assert "Mbp/s" in run.stdout and "TOTAL (1)" in run.stdout
    m = load_manifest(out)
    assert m.totals["genomes"] == 1 and m.totals["features"] == {"CDS": 83, "tRNA": 3}
    samples = read_samples(out)
    assert len(samples) == m.splits["train"].samples == 31
    assert tokens.read_text().split("\n")[:3] == ["<cut>", "<+>", "<->"]  # no digit tokens
    assert set(tokens.read_text().split()) >= {"<cut>", "<+>", "<->", "<p0>", "<CDS>", "<tRNA>"}
    seq = read_fasta_dict(fna)["NC_000902.1"]
    types = m.grammar.types_in_targets
    results = []
    for s in samples:
        meta = s["json"]
        assert list(meta) == META_KEYS
        assert s["dna.txt"] == seq[meta["start"] : meta["end"]]
        n = meta["end"] - meta["start"]
        feats = window_features(s, n)
        # the target the trainer builds from them is one the automaton accepts
        assert decode_pointer_target(encode_pointer_target(feats, n), n, types) == feats
        results.append((WindowMeta.from_json(meta), feats))
    # the shards alone give back the annotation
    doc = read_gff3(gff)
    infos = sequence_infos(doc, {"NC_000902.1": len(seq)}, str(gff))
    feats, _ = select_features(doc, infos, DEFAULT_FEATURE_TYPES, str(gff))
    assert sorted(f.to_genome_feature() for f in stitch(results)) == feats["NC_000902.1"]


def test_small_genome_choices(tmp_path: Path) -> None:
    out, m = _bake(tmp_path)
    g = m.genomes["small"]
    assert g["features"] == {"CDS": 4, "tRNA": 1}  # pseudogene CDS, gene, exon, region left out
    assert g["pseudo_dropped"] == 1
    assert g["sequences"] == [
        {"seqid": "chr", "length": 6000, "circular": True},
        {"seqid": "plasmid", "length": 1500, "circular": False},
    ]
    samples = read_samples(out)
    spans = [(s["json"]["seqid"], s["json"]["start"], s["json"]["end"]) for s in samples]
    assert spans == [("chr", i * 1000, i * 1000 + 1000) for i in range(6)] + [
        ("plasmid", 0, 1000),
        ("plasmid", 500, 1500),
    ]
    first = window_features(samples[0], 1000)[0]
    assert first == WindowFeature(0, 299, "+", "CDS", 1, True, False)  # the origin-spanning CDS
    items = [encode_pointer_target(window_features(s, 1000), 1000) for s in samples]
    assert m.totals["mean_target_tokens"] == pytest.approx(
        sum(len(i) for i in items) / len(samples), abs=0.01
    )


def test_reruns_are_byte_identical(tmp_path: Path) -> None:
    out1, m1 = _bake(tmp_path, "a", rc="random", keep_empty=0.5, offset=7)
    out2, m2 = _bake(tmp_path, "b", rc="random", keep_empty=0.5, offset=7)
    assert m1 == m2
    for s in m1.split("train"):
        assert (out1 / s.path).read_bytes() == (out2 / s.path).read_bytes()
    assert (out1 / "manifest.json").read_bytes() == (out2 / "manifest.json").read_bytes()


def test_reverse_complement_samples(tmp_path: Path) -> None:
    out, _ = _bake(tmp_path, rc="both")
    samples = read_samples(out)
    by_window: dict[tuple, dict] = {}
    for s in samples:
        by_window.setdefault((s["json"]["seqid"], s["json"]["start"]), {})[s["json"]["strand"]] = s
    assert all(set(v) == {"+", "-"} for v in by_window.values())
    for pair in by_window.values():
        p, m = pair["+"], pair["-"]
        n = p["json"]["end"] - p["json"]["start"]
        assert m["dna.txt"] == reverse_complement(p["dna.txt"])
        fp = window_features(p, n)
        fm = window_features(m, n)
        assert sorted(mirror(fm, n)) == sorted(fp)


def test_val_fraction_blocks_never_overlap_train(tmp_path: Path) -> None:
    out, m = _bake(tmp_path, val_fraction=0.25)
    train, val = read_samples(out, "train"), read_samples(out, "val")
    assert train and val
    cut = {"chr": 4500, "plasmid": 1125}
    assert all(s["json"]["end"] <= cut[s["json"]["seqid"]] for s in train)
    assert all(s["json"]["start"] >= cut[s["json"]["seqid"]] for s in val)
    assert m.splits["val"].samples == len(val)


def test_val_genomes_and_empty_windows(tmp_path: Path) -> None:
    out, m = _bake(tmp_path, val_genomes=("small",), keep_empty=0.0)
    assert m.split("train") == () and m.splits["val"].samples > 0
    assert all(s["features.json"] for s in read_samples(out, "val"))
    assert m.genomes["small"]["empty_windows_dropped"] >= 1  # chr 3000..5000 has no gene


def test_shard_size_bound(tmp_path: Path) -> None:
    out, m = _bake(tmp_path, window_len=200, shard_size=16384)
    shards = m.split("train")
    assert len(shards) > 3
    assert all(s.bytes <= 16384 and (out / s.path).stat().st_size == s.bytes for s in shards)
    assert sum(s.samples for s in shards) == len(read_samples(out))


def test_token_file_is_merged_in_stable_order(tmp_path: Path) -> None:
    tokens = tmp_path / "new_tokens.txt"
    tokens.write_text("<tRNA>\n<my_token>\n")
    fna, gff = small_genome(tmp_path / "in")
    cfg = BakeConfig(window_len=1000, progress=False)
    bake([GenomeSpec("small", str(fna), str(gff))], cfg, tmp_path / "o", extract_tokens=tokens)
    lines = tokens.read_text().splitlines()
    assert lines[:2] == ["<tRNA>", "<my_token>"]
    assert lines[2:] == [
        "<cut>",
        "<+>",
        "<->",
        "<p0>",
        "<p1>",
        "<p2>",
        "<CDS>",
    ]
    bake([GenomeSpec("small", str(fna), str(gff))], cfg, tmp_path / "o", extract_tokens=tokens)
    assert tokens.read_text().splitlines() == lines


def test_rerun_over_a_partial_output_folder(tmp_path: Path) -> None:
    out, m = _bake(tmp_path, window_len=200, shard_size=16384)
    n_before = len(m.split("train"))
    (out / "train" / ".small-00005.tar.tmp").write_bytes(b"half")  # a crashed run's leftovers
    (out / "train" / "small-00099.tar").write_bytes(b"stale")
    (out / "train" / "other-00000.tar").write_bytes(b"another genome")
    out, m = _bake(tmp_path, window_len=1000)
    listed = {s.path for s in m.split("train")}
    assert len(listed) == 1 < n_before
    files = output_files(out)
    assert not [f for f in files if "small-" in f and f not in listed]
    assert "train/other-00000.tar" in files  # not ours to delete
    assert json.loads((out / "manifest.json").read_text())["splits"]["train"]["samples"] == 8


def test_cli_helpers(tmp_path: Path) -> None:
    from launch.bake_data import default_name, parse_size, read_genome_list

    assert (
        parse_size("256M") == 256 * 2**20
        and parse_size("1G") == 2**30
        and parse_size("4096") == 4096
    )
    assert default_name("/x/GCF_1.2_ASM_genomic.fna.gz") == "GCF_1.2_ASM_genomic"
    listing = tmp_path / "sub" / "list.tsv"
    listing.parent.mkdir()
    listing.write_text("# name fasta gff\n\nA\ta.fna.gz\t../b.gff\n")
    (spec,) = read_genome_list(listing)
    assert (spec.name, spec.fasta, spec.gff) == (
        "A",
        str(tmp_path / "sub" / "a.fna.gz"),
        str(tmp_path / "sub" / ".." / "b.gff"),
    )
