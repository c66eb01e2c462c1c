"""The split's shards as the manifest lists them: path, samples, digest, genome.

The loader's first stage reads this list; it is the manifest's view for the trainer (the baker's
own shard record is ``baking.shards.writer.ShardInfo``), checked to exist before any work.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from baking.common.errors import InputError
from baking.shards.manifest import load_manifest


@dataclass(frozen=True)
class ShardEntry:
    """One tar shard of a split: how many samples, bytes and which sha256 the manifest records."""

    path: str
    count: int
    sha256: str | None = None
    """None when the manifest has none (hand-made or older data): the shard is not checked."""
    size: int | None = None
    genome: str | None = None
    """The genome whose windows the shard holds (the manifest's ``genomes[NAME].shards``); None
    when the manifest does not say (hand-made data). Genome balancing needs it."""


def read_manifest(data_dir: str | Path) -> dict[str, Any]:
    """The baker's manifest, read by the baker's own reader (it owns the format)."""
    return load_manifest(data_dir)


def split_shards(data_dir: str | Path, split: str) -> list[ShardEntry]:
    """The split's non-empty shards as absolute paths with counts, checked to exist."""
    root = Path(data_dir)
    manifest = read_manifest(root)
    entries = _split_entries(manifest, split, root / "manifest.json")
    owner = _shard_genomes(manifest)
    shards: list[ShardEntry] = []
    for entry in entries:
        rel, count = entry.get("path"), entry.get("samples")
        if not isinstance(rel, str) or not isinstance(count, int) or count < 0:
            raise InputError(
                root / "manifest.json", f"bad shard entry in split {split!r}: {entry!r}"
            )
        path = (root / rel).resolve()
        if not path.is_file():
            raise InputError(path, f"shard listed in manifest.json (split {split!r}) is missing")
        sha, size = entry.get("sha256"), entry.get("bytes")
        if count:
            shards.append(
                ShardEntry(
                    str(path),
                    count,
                    sha if isinstance(sha, str) else None,
                    size if isinstance(size, int) else None,
                    owner.get(rel),
                )
            )
    return shards


def _shard_genomes(manifest: dict[str, Any]) -> dict[str, str]:
    """Shard path (relative, as listed) -> the genome the manifest lists it under."""
    out: dict[str, str] = {}
    genomes = manifest.get("genomes")
    if not isinstance(genomes, dict):
        return out
    for name, entry in genomes.items():
        paths = entry.get("shards") if isinstance(entry, dict) else None
        for rel in paths if isinstance(paths, list) else []:
            if isinstance(rel, str):
                out[rel] = str(name)
    return out


def _split_entries(manifest: dict[str, Any], split: str, where: Path) -> list[dict[str, Any]]:
    """``manifest["splits"][split]["shards"]`` (baking.shards.manifest's layout); [] when absent."""
    node = (manifest.get("splits") or {}).get(split)
    if node is None:
        return []
    shards = node.get("shards") if isinstance(node, dict) else None
    if not isinstance(shards, list):
        raise InputError(where, f"split {split!r} must list its shards")
    return shards
