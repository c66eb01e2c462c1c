"""``OUT_DIR/manifest.json``: the index of a bake, and what a trainer reads first.

It lists per split the shards (path relative to OUT_DIR, samples, bytes, sha256), per genome the
counts (bp, windows, samples, features per type, partial window features, failures), the grammar
(window length, coordinate width, types, the tokens the targets use), the arguments and the package
version. It holds no timestamps or timings, so the same inputs give the same manifest byte for byte.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from baking import __version__
from baking.bake_config import BakeConfig, GenomeResult, length_totals
from baking.common.errors import InputError
from baking.common.files import read_json, write_json
from baking.shards.writer import safe_name
from baking.target.grammar import coordinate_width, target_vocabulary

MANIFEST = "manifest.json"
FORMAT = "dna2gff-shards/1"


def types_in_targets(results: Sequence[GenomeResult], types: Sequence[str]) -> list[str]:
    """The configured types that some window of a successful genome contains, in config order."""
    seen: Counter = Counter()
    for r in results:
        if r.status == "ok":
            seen.update(r.window_features)
    return [t for t in types if seen[t]]


def build_manifest(
    results: Sequence[GenomeResult], cfg: BakeConfig, argv: Sequence[str] | None = None
) -> dict:
    """The manifest of a finished bake (shard paths are the final names)."""
    splits: dict[str, dict] = {}
    for split in ("train", "val"):
        shards = [
            s
            for r in results
            if r.status == "ok"
            for s in r.shards
            if s.path.startswith(f"{split}/")
        ]
        splits[split] = {
            "samples": sum(s.samples for s in shards),
            "bytes": sum(s.bytes for s in shards),
            "shards": [s.to_json() for s in shards],
        }
    ok = [r for r in results if r.status == "ok"]
    seen_types = types_in_targets(results, cfg.types)
    features: Counter = Counter()
    for r in ok:
        features.update(r.features)
    samples = sum(sum(r.samples.values()) for r in ok)
    tokens = sum(r.target_tokens for r in ok)
    return {
        "format": FORMAT,
        "version": __version__,
        "args": {"argv": list(argv) if argv is not None else None, **cfg.to_json()},
        "grammar": {
            "window_len": cfg.window_len,
            "coordinate_width": coordinate_width(cfg.window_len),
            "feature_types": list(cfg.types),
            "types_in_targets": seen_types,
            "tokens": target_vocabulary(seen_types, cfg.window_len),
            "doc": "docs/target-format.md",
        },
        "sample_fields": ["dna.txt", "target.txt", "json"],
        "splits": splits,
        "genomes": {r.name: r.to_json() for r in results},
        "totals": {
            "genomes": len(ok),
            "failed": [r.name for r in results if r.status != "ok"],
            "bp": sum(r.bp for r in ok),
            "windows": sum(r.windows for r in ok),
            "samples": samples,
            "features": dict(sorted(features.items())),
            "mean_target_tokens": round(tokens / max(1, samples), 2),
            **length_totals(ok),
        },
    }


def write_manifest(out_dir: str | Path, manifest: dict) -> Path:
    """Write ``manifest.json`` atomically."""
    path = Path(out_dir) / MANIFEST
    write_json(path, manifest, indent=1)
    return path


def load_manifest(out_dir: str | Path) -> dict:
    """Read ``OUT_DIR/manifest.json`` (``InputError`` if missing or not ours)."""
    path = Path(out_dir) / MANIFEST
    if not path.is_file():
        raise InputError(path, "no manifest (is this a baked output folder?)")
    data = read_json(path, "manifest JSON")
    found = data.get("format") if isinstance(data, dict) else type(data).__name__
    if found != FORMAT:
        raise InputError(path, f"unknown manifest format {found!r}")
    return data


def stale_shards(out_dir: str | Path, genome_names: Sequence[str], keep: set[str]) -> list[Path]:
    """Shards of these genomes from earlier runs that the new manifest does not list."""
    out = []
    for name in genome_names:
        pattern = re.compile(re.escape(safe_name(name)) + r"-\d{5}\.tar")
        for split in ("train", "val"):
            folder = Path(out_dir) / split
            if not folder.is_dir():
                continue
            for p in sorted(folder.iterdir()):
                rel = f"{split}/{p.name}"
                if pattern.fullmatch(p.name) and rel not in keep:
                    out.append(p)
    return out
