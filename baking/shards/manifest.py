"""``OUT_DIR/manifest.json``: the index of a bake, and what a trainer reads first.

It lists per split the shards (path relative to OUT_DIR, samples, bytes, sha256), per genome the
counts (bp, windows, samples, features per type, partial window features, failures), the grammar
(window length, types, the tokens the targets use), the arguments and the package
version. It holds no timestamps or timings, so the same inputs give the same manifest byte for byte.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PureWindowsPath

from baking import __version__
from baking.bake_config import BakeConfig, GenomeResult, length_totals
from baking.common.errors import ConfigError, InputError
from baking.common.files import read_json, write_text
from baking.shards.writer import safe_name
from baking.target_format.grammar import target_vocabulary

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT = "dna2gff-shards/1"
# What a second bake into a folder does with genomes of an earlier bake that it does not bake
EXISTING = ("refuse", "append", "overwrite")
# The options that shape the samples: genomes baked with different ones do not belong together
SHAPING = (
    "window_len",
    "stride",
    "offset",
    "types",
    "include_pseudo",
    "keep_empty",
    "rc",
    "seed",
    "val_fraction",
)


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
    shards = {s.path: s.to_json() for r in results if r.status == "ok" for s in r.shards}
    genomes = {r.name: r.to_json() for r in results}
    return assemble_manifest(genomes, shards, cfg, argv)


def assemble_manifest(
    genomes: dict[str, dict],
    shards: dict[str, dict],
    cfg: BakeConfig,
    argv: Sequence[str] | None = None,
    val_genomes: Sequence[str] | None = None,
) -> dict:
    """A manifest from genome entries (``GenomeResult.to_json``) and shard entries by path: splits,
    grammar and totals are derived from them, so a fresh bake and one appended to an earlier
    bake (``merge_genomes``) are described alike."""
    ok = [g for g in genomes.values() if g["status"] == "ok"]
    splits: dict[str, dict] = {}
    for split in ("train", "val"):
        listed = [shards[p] for g in ok for p in g["shards"] if p.startswith(f"{split}/")]
        splits[split] = {
            "samples": sum(s["samples"] for s in listed),
            "bytes": sum(s["bytes"] for s in listed),
            "shards": listed,
        }
    seen: Counter = Counter()
    features: Counter = Counter()
    for g in ok:
        seen.update(g["window_features"])
        features.update(g["features"])
    seen_types = [t for t in cfg.types if seen[t]]
    samples = sum(sum(g["samples"].values()) for g in ok)
    tokens = sum(g["target_tokens"] for g in ok)
    args = {"argv": list(argv) if argv is not None else None, **cfg.to_json()}
    if val_genomes is not None:
        args["val_genomes"] = list(val_genomes)
    return {
        "format": FORMAT,
        "version": __version__,
        "args": args,
        "grammar": {
            "window_len": cfg.window_len,
            "feature_types": list(cfg.types),
            "types_in_targets": seen_types,
            "tokens": target_vocabulary(seen_types),
            "doc": "docs/target-format.md",
        },
        "sample_fields": ["dna.txt", "features.json", "json"],
        "splits": splits,
        "genomes": genomes,
        "totals": {
            "genomes": len(ok),
            "failed": [n for n, g in genomes.items() if g["status"] != "ok"],
            "bp": sum(g["bp"] for g in ok),
            "windows": sum(g["windows"] for g in ok),
            "samples": samples,
            "features": dict(sorted(features.items())),
            "mean_target_tokens": round(tokens / max(1, samples), 2),
            **length_totals(ok),
        },
    }


def manifest_text(manifest: dict) -> str:
    """The manifest as written (``write_manifest``; the baker writes it before publishing)."""
    return json.dumps(manifest, indent=1) + "\n"


def write_manifest(out_dir: str | Path, manifest: dict) -> Path:
    """Write ``manifest.json`` atomically."""
    path = Path(out_dir) / MANIFEST
    write_text(path, manifest_text(manifest))
    return path


def load_manifest(out_dir: str | Path) -> dict:
    """Read ``OUT_DIR/manifest.json`` (``InputError`` if missing or not ours, or if a shard path
    would leave OUT_DIR: absolute, or with a ``..`` part)."""
    path = Path(out_dir) / MANIFEST
    if not path.is_file():
        raise InputError(path, "no manifest (is this a baked output folder?)")
    data = read_json(path, "manifest JSON")
    found = data.get("format") if isinstance(data, dict) else type(data).__name__
    if found != FORMAT:
        raise InputError(path, f"unknown manifest format {found!r}")
    check_shard_paths(path, data)
    return data


def path_problem(rel: str) -> str | None:
    """Why a manifest's shard path could point outside the data folder, or None. Checked on the
    text alone: a shard is found by joining the folder and this path, and a manifest must not
    reach a file elsewhere (``../../etc/x``, ``/data/other/x.tar``)."""
    if not rel:
        return "empty path"
    if "\0" in rel:
        return "contains a NUL character"
    if rel.startswith(("/", "\\")) or PureWindowsPath(rel).drive:
        return "absolute path"
    if ".." in re.split(r"[/\\]", rel):
        return "contains '..'"
    return None


def check_shard_paths(path: Path, data: dict) -> None:
    """``InputError`` naming ``path`` for a shard path that leaves its folder (``path_problem``);
    other layout problems are the reader's to report, with its own context."""
    splits = data.get("splits")
    for split, node in splits.items() if isinstance(splits, dict) else ():
        entries = node.get("shards") if isinstance(node, dict) else None
        for entry in entries if isinstance(entries, list) else ():
            rel = entry.get("path") if isinstance(entry, dict) else None
            problem = path_problem(rel) if isinstance(rel, str) else None
            if problem is not None:
                raise InputError(
                    path,
                    f"split {split!r}: shard path {rel!r}: {problem} (shard paths are relative "
                    "to the data folder and stay inside it)",
                )


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


@dataclass
class Rerun:
    """What a bake does with an earlier bake in its folder (``plan_rerun``)."""

    keep: dict | None = None  # the earlier manifest, whose other genomes stay (``--append``)
    drop: list[Path] = field(default_factory=list)  # their shards, to delete (``--overwrite``)


def _few(names: Sequence[str], n: int = 5) -> str:
    shown = ", ".join(names[:n])
    return shown + (f" and {len(names) - n} more" if len(names) > n else "")


def plan_rerun(
    out_dir: str | Path, names: Sequence[str], cfg: BakeConfig, existing: str = "refuse"
) -> Rerun:
    """Check an earlier bake in ``out_dir`` against this run (``names``: its genomes), under the
    folder's lock and before any genome is read.

    Re-baking genomes replaces them. Genomes of the earlier bake that this run does not bake
    would otherwise vanish from ``manifest.json`` while their shards stay, so ``existing`` must
    say what to do with them: ``refuse`` (``ConfigError``), ``append`` (keep them: needs the same
    ``SHAPING`` options and their shards on disk) or ``overwrite`` (delete their shards).
    """
    if existing not in EXISTING:
        raise ConfigError(f"existing must be one of {EXISTING}, got {existing!r}")
    out = Path(out_dir)
    path = out / MANIFEST
    if not path.exists() and not path.is_symlink():
        return Rerun()
    try:
        prev = load_manifest(out)
        genomes = prev.get("genomes")
        if not isinstance(genomes, dict):
            raise InputError(path, "no 'genomes' table (damaged manifest)")
    except InputError as exc:
        if existing == "overwrite":
            log.warning("replacing unreadable %s (%s)", path, exc.reason)
            return Rerun()
        raise InputError(
            exc.path, f"{exc.reason} (--overwrite replaces it)", exc.line, exc.column
        ) from exc
    run = set(names)
    others = [n for n in genomes if n not in run]
    if not others:
        return Rerun()
    if existing == "refuse":
        raise ConfigError(
            f"{path}: holds {len(others)} genome(s) that this run does not bake ({_few(others)}); "
            "pass --append to add this run's genomes to them, or --overwrite to replace them "
            "(their shards are deleted)"
        )
    listed = _listed_shards(prev)
    if existing == "overwrite":
        drop = [out / p for n in others for p in _shards_of(genomes[n]) if p in listed]
        drop += [p for p in stale_shards(out, others, set()) if p not in drop]
        return Rerun(drop=[p for p in drop if p.is_file()])
    prefixes = {safe_name(n): n for n in names}
    clash = [f"{n!r} and {prefixes[safe_name(n)]!r}" for n in others if safe_name(n) in prefixes]
    if clash:
        raise ConfigError(
            f"{path}: genome names {clash[0]} give the same shard prefix; rename one, or "
            "--overwrite"
        )
    args: dict = prev["args"] if isinstance(prev.get("args"), dict) else {}
    now = cfg.to_json()
    differ = [f"{k}={args.get(k)!r} (now {now[k]!r})" for k in SHAPING if args.get(k) != now[k]]
    if differ:
        raise ConfigError(
            f"{path}: --append adds genomes to a bake with other options: {'; '.join(differ)}; "
            "use the same options, another folder, or --overwrite"
        )
    for n in others:
        _check_entry(path, n, genomes[n])
        for p in _shards_of(genomes[n]):
            if p not in listed or not (out / p).is_file():
                raise InputError(
                    out / p,
                    f"shard of genome {n!r} listed in {MANIFEST} is missing; bake {n} again "
                    "or use --overwrite",
                )
    return Rerun(keep=prev)


# What ``assemble_manifest`` reads of a genome entry kept by ``--append``
_ENTRY = {
    "status": str,
    "shards": list,
    "samples": dict,
    "features": dict,
    "window_features": dict,
    "bp": int,
    "windows": int,
    "target_tokens": int,
}


def _check_entry(path: Path, name: str, entry: object) -> None:
    """``InputError`` unless an earlier genome's entry has what a merged manifest is made of."""
    bad = [
        k
        for k, kind in _ENTRY.items()
        if not isinstance(entry, dict) or not isinstance(entry.get(k), kind)
    ]
    if bad:
        raise InputError(
            path,
            f"genome {name!r}: missing or malformed {', '.join(bad)} (damaged manifest; "
            "--overwrite replaces it)",
        )


def _listed_shards(manifest: dict) -> dict[str, dict]:
    """Shard entries of every split by path."""
    out: dict[str, dict] = {}
    for node in (manifest.get("splits") or {}).values():
        for e in node.get("shards", []) if isinstance(node, dict) else []:
            if isinstance(e, dict) and isinstance(e.get("path"), str):
                out[e["path"]] = e
    return out


def _shards_of(genome: object) -> list[str]:
    paths = genome.get("shards") if isinstance(genome, dict) else None
    return [p for p in paths if isinstance(p, str)] if isinstance(paths, list) else []


def merge_genomes(
    prev: dict, manifest: dict, cfg: BakeConfig, argv: Sequence[str] | None = None
) -> dict:
    """This run's ``manifest`` plus the earlier bake's other genomes (``--append``): earlier
    genomes first, in their order (a re-baked one takes its new entry in place), then new ones.
    ``args`` are this run's, with ``val_genomes`` naming every val genome of the result."""
    new = manifest["genomes"]
    genomes = {n: new.get(n, g) for n, g in prev["genomes"].items()}
    genomes.update({n: g for n, g in new.items() if n not in genomes})
    shards = {**_listed_shards(prev), **_listed_shards(manifest)}
    old_val = set(prev.get("args", {}).get("val_genomes") or [])
    val = [n for n in genomes if (n in cfg.val_genomes if n in new else n in old_val)]
    return assemble_manifest(genomes, shards, cfg, argv, val)
