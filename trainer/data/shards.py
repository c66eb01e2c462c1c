"""The split's shards as the manifest lists them: path, samples, digest, genome.

The loader's first stage reads this list; it is the manifest's view for the trainer (the baker's
own shard record is ``baking.shards.writer.ShardInfo``), checked to exist before any work.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from baking.common.errors import InputError
from baking.shards.manifest import Manifest, load_manifest


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


def read_manifest(data_dir: str | Path) -> Manifest:
    """The baker's manifest, read by the baker's own reader (it owns the format)."""
    return load_manifest(data_dir)


def split_shards(data_dir: str | Path, split: str) -> list[ShardEntry]:
    """The split's non-empty shards as absolute paths with counts, checked to exist."""
    root = Path(data_dir)
    manifest = read_manifest(root)
    owner = _shard_genomes(manifest)
    shards: list[ShardEntry] = []
    for listed in manifest.split(split):
        path = (root / listed.path).resolve()
        if not path.is_file():
            raise InputError(path, f"shard listed in manifest.json (split {split!r}) is missing")
        if listed.samples:
            shards.append(
                ShardEntry(
                    str(path), listed.samples, listed.sha256, listed.bytes, owner.get(listed.path)
                )
            )
    return shards


def _shard_genomes(manifest: Manifest) -> dict[str, str]:
    """Shard path (relative, as listed) -> the genome the manifest lists it under."""
    out: dict[str, str] = {}
    for name, entry in (manifest.genomes or {}).items():
        paths = entry.get("shards") if isinstance(entry, dict) else None
        for rel in paths if isinstance(paths, list) else []:
            if isinstance(rel, str):
                out[rel] = str(name)
    return out
