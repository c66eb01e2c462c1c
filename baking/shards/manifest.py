"""``OUT_DIR/manifest.json``: the index of a bake, and what a trainer reads first.

It lists per split the shards (path relative to OUT_DIR, samples, bytes, sha256), per genome the
counts (bp, windows, samples, features per type, partial window features, failures), the grammar
(window length, types, the tokens the targets use), the arguments and the package version. It holds
no timestamps or timings, so the same inputs give the same manifest byte for byte.

Readers get a ``Manifest`` (a frozen dataclass), never the raw JSON: the format is checked once,
here, and the trainer, the loader and the re-bake check read attributes whose types are known.
The genome entries and totals stay JSON mappings: they are a report for people (and ``--append``
copies them verbatim), not something a reader computes with.

The format carries a version (``MANIFEST_FORMAT_VERSION``). Version 2 means the samples hold the
window's features in the neutral form (no digit target); a manifest of another version is refused
in one line that names the version found and the command that bakes the folder again.
"""

from __future__ import annotations

import json
import logging
import re
import shlex
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PureWindowsPath
from typing import Any

from baking import __version__
from baking.bake_config import BakeConfig, GenomeResult, length_totals
from baking.common.errors import ConfigError, InputError
from baking.common.files import read_json, write_text
from baking.shards.writer import safe_name
from baking.target_format.grammar import target_vocabulary

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT_NAME = "dna2gff-shards"
MANIFEST_FORMAT_VERSION = 2
"""2: samples hold the window's features in a neutral form, no digit target (issue 16);
1: samples held the digit-coordinate target. Raise it whenever what a sample holds changes."""
FORMAT = f"{FORMAT_NAME}/{MANIFEST_FORMAT_VERSION}"
REBAKE = "python launch/bake_data.py GENOME.fna.gz ANNOT.gff.gz OUT_DIR --overwrite"
"""The re-bake command a refusal names when the manifest does not record its own arguments."""
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
SPLIT_NAMES = ("train", "val")


@dataclass(frozen=True)
class ListedShard:
    """One shard as the manifest lists it (path relative to the data folder).

    ``bytes`` and ``sha256`` are None in a hand-made manifest: the loader then does not check the
    shard (the baker always records them)."""

    path: str
    samples: int
    bytes: int | None = None
    sha256: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path, "samples": self.samples}
        if self.bytes is not None:
            out["bytes"] = self.bytes
        if self.sha256 is not None:
            out["sha256"] = self.sha256
        return out


@dataclass(frozen=True)
class SplitIndex:
    """A split's shards and their totals."""

    samples: int = 0
    bytes: int = 0
    shards: tuple[ListedShard, ...] = ()
    problem: str | None = None
    """Why the split's listing is unusable (read from a damaged manifest); reported when the
    split is asked for, so that one bad split does not hide the others."""

    def to_json(self) -> dict[str, Any]:
        return {
            "samples": self.samples,
            "bytes": self.bytes,
            "shards": [s.to_json() for s in self.shards],
        }


@dataclass(frozen=True)
class ManifestGrammar:
    """What the targets of the bake are made of (``docs/target-format.md``); None where a
    hand-made manifest leaves a field out."""

    window_len: int | None = None
    feature_types: tuple[str, ...] | None = None
    """The configured types, in config order."""
    types_in_targets: tuple[str, ...] | None = None
    """The configured types some window contains."""
    tokens: tuple[str, ...] | None = None
    """The target tokens of those types."""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.window_len is not None:
            out["window_len"] = self.window_len
        for name in ("feature_types", "types_in_targets", "tokens"):
            value = getattr(self, name)
            if value is not None:
                out[name] = list(value)
        out["doc"] = "docs/target-format.md"
        return out


@dataclass(frozen=True)
class Manifest:
    """A bake's ``manifest.json`` as readers see it (``load_manifest``; ``to_json`` writes it)."""

    splits: dict[str, SplitIndex] = field(default_factory=dict)
    grammar: ManifestGrammar = field(default_factory=ManifestGrammar)
    args: dict[str, Any] = field(default_factory=dict)
    """The bake's options (``BakeConfig.to_json``), its ``argv`` and ``val_genomes``."""
    genomes: dict[str, dict[str, Any]] | None = None
    """Per genome: ``GenomeResult.to_json`` (None: the manifest has no genome table)."""
    totals: dict[str, Any] = field(default_factory=dict)
    package_version: str | None = None
    sample_fields: tuple[str, ...] = ("dna.txt", "features.json", "json")
    format_version: int = MANIFEST_FORMAT_VERSION
    source: Path | None = field(default=None, compare=False)
    """The file it was read from (errors name it)."""

    def split(self, name: str) -> tuple[ListedShard, ...]:
        """The split's shards in manifest order (none when the manifest has no such split;
        ``InputError`` when its listing is damaged)."""
        node = self.splits.get(name)
        if node is None:
            return ()
        if node.problem is not None:
            raise InputError(self.source or MANIFEST, node.problem)
        return node.shards

    def listed_shards(self) -> dict[str, ListedShard]:
        """Every split's shards by path."""
        return {s.path: s for node in self.splits.values() for s in node.shards}

    @property
    def argv(self) -> list[str] | None:
        """The bake's command-line arguments, when it recorded them."""
        argv = self.args.get("argv")
        if isinstance(argv, list) and all(isinstance(a, str) for a in argv):
            return list(argv)
        return None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "format": f"{FORMAT_NAME}/{self.format_version}",
            "version": self.package_version,
            "args": self.args,
            "grammar": self.grammar.to_json(),
            "sample_fields": list(self.sample_fields),
            "splits": {name: node.to_json() for name, node in self.splits.items()},
        }
        if self.genomes is not None:
            out["genomes"] = self.genomes
        out["totals"] = self.totals
        return out

    @classmethod
    def from_json(cls, data: Any, path: Path) -> Manifest:
        """Check and convert the parsed JSON of ``path`` (``InputError`` naming it)."""
        if not isinstance(data, dict):
            raise InputError(path, f"unknown manifest format {type(data).__name__!r}")
        version = format_version(data.get("format"), path)
        if version != MANIFEST_FORMAT_VERSION:
            raise InputError(path, _version_refusal(version, data.get("args")))
        check_shard_paths(path, data)
        genomes = data.get("genomes")
        if genomes is not None and not isinstance(genomes, dict):
            raise InputError(path, "'genomes' must be a table (damaged manifest)")
        return cls(
            splits=_read_splits(data.get("splits"), path),
            grammar=_read_grammar(data.get("grammar"), data.get("args"), path),
            args=data["args"] if isinstance(data.get("args"), dict) else {},
            genomes=genomes,
            totals=data["totals"] if isinstance(data.get("totals"), dict) else {},
            package_version=data.get("version") if isinstance(data.get("version"), str) else None,
            sample_fields=_strings(data.get("sample_fields"))
            or ("dna.txt", "features.json", "json"),
            format_version=version,
            source=path,
        )


def format_version(found: Any, path: Path) -> int:
    """The version in a ``format`` value ``dna2gff-shards/N`` (``InputError`` for anything else)."""
    prefix = f"{FORMAT_NAME}/"
    if isinstance(found, str) and found.startswith(prefix) and found[len(prefix) :].isdigit():
        return int(found[len(prefix) :])
    raise InputError(path, f"unknown manifest format {found!r}")


def rebake_command(args: Any) -> str:
    """The command that bakes the folder again: the recorded arguments plus ``--overwrite``, or
    the general form when the manifest did not record them."""
    argv = args.get("argv") if isinstance(args, dict) else None
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        return REBAKE
    if "--overwrite" not in argv:
        argv = [*argv, "--overwrite"]
    return "python launch/bake_data.py " + shlex.join(argv)


def _version_refusal(version: int, args: Any) -> str:
    why = (
        "an older format (its samples hold digit targets)"
        if version < MANIFEST_FORMAT_VERSION
        else "a newer format than this dna2gff reads"
    )
    return (
        f"manifest format version {version} is {why}; this dna2gff reads version "
        f"{MANIFEST_FORMAT_VERSION}: bake the data again with `{rebake_command(args)}`"
    )


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _listed(entry: Any) -> ListedShard | None:
    """A shard entry, or None when it lacks a path or a sample count."""
    rel = entry.get("path") if isinstance(entry, dict) else None
    count = _int(entry.get("samples")) if isinstance(entry, dict) else None
    if not isinstance(rel, str) or count is None or count < 0:
        return None
    sha = entry.get("sha256")
    return ListedShard(rel, count, _int(entry.get("bytes")), sha if isinstance(sha, str) else None)


def _read_splits(raw: Any, path: Path) -> dict[str, SplitIndex]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise InputError(path, "'splits' must be a table of splits")
    splits: dict[str, SplitIndex] = {}
    for name, node in raw.items():
        entries = node.get("shards") if isinstance(node, dict) else None
        if not isinstance(entries, list):
            splits[name] = SplitIndex(problem=f"split {name!r} must list its shards")
            continue
        shards = [_listed(entry) for entry in entries]
        bad = next((e for e, shard in zip(entries, shards) if shard is None), None)
        if None in shards:
            splits[name] = SplitIndex(problem=f"bad shard entry in split {name!r}: {bad!r}")
            continue
        listed = tuple(s for s in shards if s is not None)
        samples = _int(node.get("samples"))
        size = _int(node.get("bytes"))
        splits[name] = SplitIndex(
            samples=samples if samples is not None else sum(s.samples for s in listed),
            bytes=size if size is not None else sum(s.bytes or 0 for s in listed),
            shards=listed,
        )
    return splits


def _strings(value: Any) -> tuple[str, ...] | None:
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    return None


def _read_grammar(raw: Any, args: Any, path: Path) -> ManifestGrammar:
    """The ``grammar`` table; an older bake without one falls back to its ``args``."""
    g = raw if isinstance(raw, dict) else {}
    a = args if isinstance(args, dict) else {}
    window = g.get("window_len", a.get("window_len"))
    if window is not None and (_int(window) is None or window <= 0):
        raise InputError(path, f"grammar: window_len must be a positive integer, got {window!r}")
    return ManifestGrammar(
        window_len=window,
        feature_types=_strings(g.get("feature_types", a.get("types"))),
        types_in_targets=_strings(g.get("types_in_targets")),
        tokens=_strings(g.get("tokens")),
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
) -> Manifest:
    """The manifest of a finished bake (shard paths are the final names)."""
    shards = {
        s.path: ListedShard(s.path, s.samples, s.bytes, s.sha256)
        for r in results
        if r.status == "ok"
        for s in r.shards
    }
    genomes = {r.name: r.to_json() for r in results}
    return assemble_manifest(genomes, shards, cfg, argv)


def assemble_manifest(
    genomes: dict[str, dict],
    shards: dict[str, ListedShard],
    cfg: BakeConfig,
    argv: Sequence[str] | None = None,
    val_genomes: Sequence[str] | None = None,
) -> Manifest:
    """A manifest from genome entries (``GenomeResult.to_json``) and shards by path: splits,
    grammar and totals are derived from them, so a fresh bake and one appended to an earlier
    bake (``merge_genomes``) are described alike."""
    ok = [g for g in genomes.values() if g["status"] == "ok"]
    splits: dict[str, SplitIndex] = {}
    for split in SPLIT_NAMES:
        listed = tuple(shards[p] for g in ok for p in g["shards"] if p.startswith(f"{split}/"))
        splits[split] = SplitIndex(
            samples=sum(s.samples for s in listed),
            bytes=sum(s.bytes or 0 for s in listed),
            shards=listed,
        )
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
    return Manifest(
        package_version=__version__,
        args=args,
        grammar=ManifestGrammar(
            window_len=cfg.window_len,
            feature_types=tuple(cfg.types),
            types_in_targets=tuple(seen_types),
            tokens=tuple(target_vocabulary(seen_types)),
        ),
        splits=splits,
        genomes=genomes,
        totals={
            "genomes": len(ok),
            "failed": [n for n, g in genomes.items() if g["status"] != "ok"],
            "bp": sum(g["bp"] for g in ok),
            "windows": sum(g["windows"] for g in ok),
            "samples": samples,
            "features": dict(sorted(features.items())),
            "mean_target_tokens": round(tokens / max(1, samples), 2),
            **length_totals(ok),
        },
    )


def manifest_text(manifest: Manifest) -> str:
    """The manifest as written (``write_manifest``; the baker writes it before publishing)."""
    return json.dumps(manifest.to_json(), indent=1) + "\n"


def write_manifest(out_dir: str | Path, manifest: Manifest) -> Path:
    """Write ``manifest.json`` atomically."""
    path = Path(out_dir) / MANIFEST
    write_text(path, manifest_text(manifest))
    return path


def load_manifest(out_dir: str | Path) -> Manifest:
    """Read ``OUT_DIR/manifest.json`` (``InputError`` if missing, not ours, of another format
    version, malformed, or if a shard path would leave OUT_DIR: absolute, or with a ``..`` part)."""
    path = Path(out_dir) / MANIFEST
    if not path.is_file():
        raise InputError(path, "no manifest (is this a baked output folder?)")
    return Manifest.from_json(read_json(path, "manifest JSON"), path)


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

    keep: Manifest | None = None  # the earlier manifest, whose other genomes stay (``--append``)
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
        genomes = prev.genomes
        if genomes is None:
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
    listed = prev.listed_shards()
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
    args = prev.args
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


def _shards_of(genome: object) -> list[str]:
    paths = genome.get("shards") if isinstance(genome, dict) else None
    return [p for p in paths if isinstance(p, str)] if isinstance(paths, list) else []


def merge_genomes(
    prev: Manifest, manifest: Manifest, cfg: BakeConfig, argv: Sequence[str] | None = None
) -> Manifest:
    """This run's ``manifest`` plus the earlier bake's other genomes (``--append``): earlier
    genomes first, in their order (a re-baked one takes its new entry in place), then new ones.
    ``args`` are this run's, with ``val_genomes`` naming every val genome of the result."""
    new = manifest.genomes or {}
    genomes = {n: new.get(n, g) for n, g in (prev.genomes or {}).items()}
    genomes.update({n: g for n, g in new.items() if n not in genomes})
    shards = {**prev.listed_shards(), **manifest.listed_shards()}
    old_val = set(prev.args.get("val_genomes") or [])
    val = [n for n in genomes if (n in cfg.val_genomes if n in new else n in old_val)]
    return assemble_manifest(genomes, shards, cfg, argv, val)
