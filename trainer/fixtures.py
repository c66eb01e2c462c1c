"""Tiny models, tokenizers and shards for the trainer's tests and benchmarks (no ../shared needed).

Part of the package (not of ``tests/``) so that benchmarks import only the package.

Shards are written with ``webdataset.TarWriter`` in the documented sample format (``dna.txt``,
``features.json``, ``json``) with the baker's own feature writer, so the loader and the loss see what
the baker produces; the manifest uses the baker's field names (bytes and sha256 included).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path

from baking.shards.manifest import FORMAT as MANIFEST_FORMAT
from baking.target_format.grammar import WindowFeature, target_vocabulary
from baking.target_format.sample_features import FEATURES_FIELD, features_to_json

# The real NCBI genomes of the project's ../shared folder (absent on a user's machine: callers
# check ``.exists()`` and skip); one table for the tests' fixtures and the benchmarks.
SHARED_DIR = Path(os.environ.get("DNA2GFF_SHARED", Path(__file__).resolve().parents[2] / "shared"))
SHARED_GENOMES = SHARED_DIR / "data" / "genomes"
SHARED_DNABERT2 = SHARED_DIR / "data" / "dnabert2" / "DNABERT-2-117M"
SHARED_GENOME_PAIRS: dict[str, tuple[Path, Path]] = {
    name: (SHARED_GENOMES / folder / f"{stem}.fna.gz", SHARED_GENOMES / folder / f"{stem}.gff.gz")
    for name, folder, stem in [
        ("C.crescentus", "C.crescentus", "GCF_000022005.1_ASM2200v1_genomic"),
        ("E.coli", "E.coli", "GCF_000005845.2_ASM584v2_genomic"),
        ("phage", "phage_VT2-Sakai", "NC_000902.1"),
    ]
}

TYPES = ["CDS", "tRNA"]
WINDOW = 96


def random_dna(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("ACGT") for _ in range(n))


def make_tokenizer(out_dir: Path, seed: int = 0) -> Path:
    """A small DNABERT-2-format BPE tokenizer plus the target's annotation tokens."""
    from trainer.tokens.tokenizer import add_annotation_tokens, save_tokenizer, train_dna_tokenizer

    rng = random.Random(seed)
    tok = train_dna_tokenizer([random_dna(rng, 4000) for _ in range(4)], vocab_size=64)
    add_annotation_tokens(tok, target_vocabulary(TYPES))
    out_dir.mkdir(parents=True, exist_ok=True)
    save_tokenizer(tok, out_dir)
    return out_dir


def make_model(
    out_dir: Path,
    tok_dir: Path,
    *,
    use_moe: bool = True,
    num_experts: int = 4,
    hidden: int = 32,
    layers: int = 2,
    heads: int = 4,
    intermediate: int | None = None,
) -> Path:
    """A random tiny DNABERT-2 checkpoint turned into our encoder-decoder folder."""
    from trainer.distributed import disable_cpu_shm_comm, ensure_process_group
    from trainer.model.build import build_from_dnabert2
    from trainer.random_checkpoint import write_random_dnabert2
    from trainer.tokens.tokenizer import load_tokenizer

    disable_cpu_shm_comm()  # no ~50 s compile of DeepSpeed's CPU shm op on a fresh machine
    ensure_process_group()
    vocab = load_tokenizer(tok_dir).get_vocab_size(with_added_tokens=True)
    raw = out_dir.parent / (out_dir.name + "_dnabert2")
    write_random_dnabert2(
        raw,
        hidden_size=hidden,
        num_layers=layers,
        num_heads=heads,
        intermediate_size=intermediate or 2 * hidden,
        vocab_size=vocab,
        tokenizer_dir=tok_dir,
    )
    model = build_from_dnabert2(
        str(raw),
        use_moe=use_moe,
        num_experts=num_experts,
        moe_top_k=2,
        tie_weights=True,
        seed=0,
        hidden_dropout=0.0,
        # the tiny model the tests were written for: no pointer context or encoder head (the
        # config's defaults are the recommended model)
        pointer_context_bp=0,
        encoder_aux_weight=0.0,
    )
    model.save_pretrained(out_dir, tokenizer_dir=tok_dir)
    return out_dir


def sample(
    rng: random.Random, window_len: int = WINDOW, present: tuple[str, ...] = tuple(TYPES)
) -> tuple[str, bytes]:
    """A window of DNA and its ``features.json``: 0-2 features (CDS where 'ATG' occurs, to be
    learnable); types not in ``present`` are left out (the random draws stay the same)."""
    dna = random_dna(rng, window_len)
    feats = []
    pos = dna.find("ATG")
    if pos >= 0 and pos + 30 < window_len:
        feats.append(WindowFeature(pos, pos + 29, "+", "CDS", 0, False, False))
    if rng.random() < 0.3:
        s = rng.randrange(0, window_len - 20)
        feats.append(WindowFeature(s, s + 15, "-", "tRNA", None, False, False))
    return dna, features_to_json([f for f in feats if f.type in present], window_len)


def write_shards(
    data_dir: Path,
    counts: dict[str, list[int]],
    *,
    window_len: int = WINDOW,
    seed: int = 0,
    genome_per_shard: bool = False,
    present: tuple[str, ...] = tuple(TYPES),
) -> Path:
    """``counts = {"train": [n0, n1], "val": [n]}`` -> shards + manifest.json in ``data_dir``.

    ``genome_per_shard``: shard ``i`` holds genome ``g{i}``, listed in the manifest's ``genomes``
    as the baker does (default: every sample of genome ``g``, no ``genomes`` entry). The manifest
    lists every type of ``TYPES``, as a bake configured for them does; the samples hold only the
    types in ``present``."""
    import webdataset as wds

    rng = random.Random(seed)
    splits: dict[str, dict] = {}
    genomes: dict[str, dict] = {}
    for split, sizes in counts.items():
        (data_dir / split).mkdir(parents=True, exist_ok=True)
        entries = []
        for i, n in enumerate(sizes):
            rel = f"{split}/g-{i:04d}.tar"
            with wds.TarWriter(str(data_dir / rel)) as w:
                for j in range(n):
                    dna, features = sample(rng, window_len, present)
                    meta = {
                        "genome": f"g{i}" if genome_per_shard else "g",
                        "seqid": "s",
                        "start": j * window_len,
                        "end": (j + 1) * window_len,
                        "strand": "+",
                        "seq_length": 10**6,
                        "circular": False,
                        "window_len": window_len,
                    }
                    w.write(
                        {
                            "__key__": f"g_{i}_{j:06d}",
                            "dna.txt": dna,
                            FEATURES_FIELD: features,
                            "json": json.dumps(meta),
                        }
                    )
            raw = (data_dir / rel).read_bytes()
            if genome_per_shard:
                genomes.setdefault(f"g{i}", {"status": "ok", "shards": []})["shards"].append(rel)
            entries.append(
                {
                    "path": rel,
                    "samples": n,
                    "bytes": len(raw),
                    "sha256": hashlib.sha256(raw).hexdigest(),
                }
            )
        splits[split] = {"shards": entries}
    grammar = {
        "window_len": window_len,
        "feature_types": TYPES,
        "tokens": target_vocabulary(TYPES),
    }
    manifest = {"format": MANIFEST_FORMAT, "splits": splits, "grammar": grammar}
    if genomes:
        manifest["genomes"] = genomes
    (data_dir / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return data_dir
