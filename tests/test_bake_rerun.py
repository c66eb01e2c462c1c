"""A second bake into a folder, and bakes sharing a token file (issue 19, case 9): nothing is
silently dropped from the manifest, and no token is lost to a concurrent merge."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from bake_helpers import REPO, output_files, run_bake, small_genome

from baking.formats.tokens_file import read_tokens
from baking.shards.manifest import Manifest, load_manifest


def _pairs(tmp_path: Path) -> dict[str, tuple[Path, Path]]:
    return {n: small_genome(tmp_path / "in", n, seed=i) for i, n in enumerate(("g1", "g2", "g3"))}


def _snapshot(out: Path) -> dict[str, bytes]:
    return {p: (out / p).read_bytes() for p in output_files(out)}


def _consistent(out: Path) -> Manifest:
    """The manifest lists exactly the shards on disk, with their true sizes and hashes."""
    m = load_manifest(out)
    listed = [s for sp in m.splits.values() for s in sp.shards]
    assert sorted(["manifest.json", *(s.path for s in listed)]) == output_files(out)
    for s in listed:
        data = (out / s.path).read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (s.bytes, s.sha256)
    for split, node in m.splits.items():
        assert node.samples == sum(s.samples for s in node.shards), split
    assert m.totals["samples"] == sum(n.samples for n in m.splits.values())
    return m


def test_second_genome_into_a_folder_is_refused_appended_or_overwritten(tmp_path: Path) -> None:
    pairs = _pairs(tmp_path)
    out = tmp_path / "out"
    base = ["--window", "1000", "--no_progress"]
    assert run_bake(*pairs["g1"], out, "--name", "g1", *base).returncode == 0
    before = _snapshot(out)

    run = run_bake(*pairs["g2"], out, "--name", "g2", *base)  # used to drop g1 silently
    assert run.returncode == 2, run.stderr
    assert [ln for ln in run.stderr.splitlines() if ln.startswith("error:")] == [
        f"error: {out}/manifest.json: holds 1 genome(s) that this run does not bake (g1); "
        "pass --append to add this run's genomes to them, or --overwrite to replace them "
        "(their shards are deleted)"
    ]
    assert _snapshot(out) == before

    run = run_bake(*pairs["g2"], out, "--name", "g2", "--append", *base, "--val_genomes", "g2")
    assert run.returncode == 0, run.stderr
    m = _consistent(out)
    assert list(m.genomes) == ["g1", "g2"] and m.totals["genomes"] == 2
    assert m.args["val_genomes"] == ["g2"]
    assert [s.path for s in m.split("val")] == ["val/g2-00000.tar"]
    assert all(before[p] == (out / p).read_bytes() for p in before if p != "manifest.json")
    one = json.loads(before["manifest.json"])
    assert m.totals["bp"] == 2 * one["totals"]["bp"]

    assert run_bake(*pairs["g1"], out, "--name", "g1", *base).returncode == 2  # g2 would go
    g1_again = run_bake(*pairs["g1"], out, "--name", "g1", "--append", *base, "--rc", "both")
    assert g1_again.returncode == 2 and "rc='none' (now 'both')" in g1_again.stderr
    g1_again = run_bake(*pairs["g1"], out, "--name", "g1", "--append", *base)
    assert g1_again.returncode == 0, g1_again.stderr
    m = _consistent(out)  # re-baked in place, g2 kept
    assert list(m.genomes) == ["g1", "g2"] and m.args["val_genomes"] == ["g2"]

    run = run_bake(*pairs["g3"], out, "--name", "g3", "--append", "--window", "500")
    assert run.returncode == 2
    assert "--append adds genomes to a bake with other options: window_len=1000 (now 500)" in (
        run.stderr
    )

    run = run_bake(*pairs["g3"], out, "--name", "g3", "--overwrite", *base)
    assert run.returncode == 0, run.stderr
    assert list(_consistent(out).genomes) == ["g3"]  # g1's and g2's shards are gone


def test_append_refuses_a_missing_earlier_shard(tmp_path: Path) -> None:
    pairs = _pairs(tmp_path)
    out = tmp_path / "out"
    assert run_bake(*pairs["g1"], out, "--name", "g1", "--window", "1000").returncode == 0
    (out / "train" / "g1-00000.tar").unlink()
    run = run_bake(*pairs["g2"], out, "--name", "g2", "--window", "1000", "--append")
    assert run.returncode == 2
    assert f"error: {out}/train/g1-00000.tar: shard of genome 'g1' listed in manifest.json is " in (
        run.stderr
    )


def test_append_refuses_a_damaged_earlier_entry(tmp_path: Path) -> None:
    pairs = _pairs(tmp_path)
    out = tmp_path / "out"
    assert run_bake(*pairs["g1"], out, "--name", "g1", "--window", "1000").returncode == 0
    m = json.loads((out / "manifest.json").read_text())
    del m["genomes"]["g1"]["bp"]
    m["genomes"]["g1"]["samples"] = 8
    (out / "manifest.json").write_text(json.dumps(m))
    run = run_bake(*pairs["g2"], out, "--name", "g2", "--window", "1000", "--append")
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert (
        f"error: {out}/manifest.json: genome 'g1': missing or malformed samples, bp (damaged "
        "manifest; --overwrite replaces it)" in run.stderr
    )


@pytest.mark.parametrize(
    "path, problem",
    [("../../etc/passwd", "contains '..'"), ("/etc/passwd", "absolute path")],
)
def test_manifest_shard_paths_stay_inside_the_folder(
    tmp_path: Path, path: str, problem: str
) -> None:
    """A manifest is data: its shard paths must not reach files outside the folder, whoever reads
    it (``load_manifest`` is the reader of the baker, the trainer and the rerun check)."""
    from baking.common.errors import InputError
    from trainer.data.loader import split_shards

    pairs = _pairs(tmp_path)
    out = tmp_path / "out"
    assert run_bake(*pairs["g1"], out, "--name", "g1", "--window", "1000").returncode == 0
    m = json.loads((out / "manifest.json").read_text())
    m["splits"]["train"]["shards"][0]["path"] = path
    (out / "manifest.json").write_text(json.dumps(m))
    for read in (load_manifest, lambda d: split_shards(d, "train")):
        with pytest.raises(InputError, match=f"shard path {path!r}: {problem}") as exc:
            read(out)
        assert exc.value.path == str(out / "manifest.json")
    run = run_bake(*pairs["g2"], out, "--name", "g2", "--window", "1000", "--append")
    assert run.returncode == 2 and f"error: {out}/manifest.json: split 'train'" in run.stderr


MERGER = """
import sys, time
from baking.formats.tokens_file import merge_tokens
path, me, start = sys.argv[1], sys.argv[2], float(sys.argv[3])
time.sleep(max(0.0, start - time.time()))
for i in range(40):
    merge_tokens(path, ["<%s_%d>" % (me, i)])
"""


@pytest.mark.slow
def test_concurrent_token_merges_lose_nothing(tmp_path: Path) -> None:
    """Four processes merge 40 tokens each into one file at the same moment: unlocked, the
    read-modify-write lost tokens (3 of 8 two-bake trials in the issue)."""
    import os
    import time

    tokens = tmp_path / "data" / "new_tokens.txt"
    start = time.time() + 1.5
    env = dict(os.environ, PYTHONPATH=str(REPO))
    procs = [
        subprocess.Popen([sys.executable, "-c", MERGER, str(tokens), f"p{k}", str(start)], env=env)
        for k in range(4)
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0, 0]
    got = read_tokens(tokens)
    assert sorted(got) == sorted(f"<p{k}_{i}>" for k in range(4) for i in range(40))
    assert sorted(os.listdir(tokens.parent)) == ["new_tokens.txt"]  # lock and temporaries gone
