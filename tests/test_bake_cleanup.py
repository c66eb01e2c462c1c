"""Nothing left behind by a bake that fails or is stopped (issue 19, case 6): a full disk, SIGINT,
SIGTERM and SIGKILL, with the pool or without; the disk-full error names the shard; the next bake
into a folder removes every stale temporary, not only its own genomes'."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from bake_helpers import BAKE, REPO, output_files, run_bake, small_genome

from baking.bake import bake
from baking.bake_config import BakeConfig, GenomeSpec
from baking.shards.manifest import load_manifest
from trainer.fixtures import SHARED_GENOME_PAIRS


def _shared(name: str) -> tuple[Path, Path]:
    fna, gff = SHARED_GENOME_PAIRS[name]
    if not fna.exists():
        pytest.skip(f"shared data absent: {fna}")
    return fna, gff


def _listing(tmp_path: Path, names: list[str]) -> Path:
    path = tmp_path / "genomes.tsv"
    path.write_text("".join(f"{n}\t{_shared(n)[0]}\t{_shared(n)[1]}\n" for n in names))
    return path


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 2 MiB tmpfs (root only; skipped where mounting is not permitted)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    run = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
    )
    if run.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs: {run.stderr.strip() or run.returncode}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.mark.shared
@pytest.mark.parametrize("workers", [1, 2])
def test_full_disk_names_the_shard_and_leaves_nothing(
    tmp_path: Path, small_disk: Path, workers: int
) -> None:
    """C. crescentus (~4.5 MB of shards) on a 2 MiB disk; the phage bakes fine before or beside
    it, so its finished temporaries must go too. Even ``--on_error skip`` stops: the disk is
    no genome's fault."""
    out = small_disk / "out"
    listing = _listing(tmp_path, ["phage", "C.crescentus"])
    run = run_bake(
        "--genomes", listing, out, "--workers", workers, "--on_error", "skip", "--no_progress"
    )
    assert run.returncode == 2, run.stderr
    errors = [ln for ln in run.stderr.splitlines() if ln.startswith("error:")]
    # C. crescentus fills the disk; with 2 workers the phage, written at the same time, could
    # be the one refused when the scheduler delays it
    names = ["C_crescentus"] if workers == 1 else ["C_crescentus", "phage"]
    assert errors in [
        [f"error: {out}/train/{n}-00000.tar: cannot write shard: no space left on device"]
        for n in names
    ], run.stderr
    assert "Traceback" not in run.stderr
    assert output_files(out) == []


def _default_sigint() -> None:
    """A child started from a background job inherits SIGINT ignored (POSIX shells do that to
    asynchronous commands) and Python then leaves it ignored: the bake under test must get the
    disposition a terminal gives it, whatever runs the suite."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = 60.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end and proc.poll() is None:
        if predicate():
            return True
        time.sleep(0.002)
    return False


def _temps(out: Path) -> list[str]:
    return [f for f in output_files(out) if f.endswith(".tar.tmp")]


@pytest.mark.slow
@pytest.mark.shared
@pytest.mark.parametrize("sig, workers", [(signal.SIGINT, 1), (signal.SIGTERM, 2)])
def test_interrupted_bake_removes_its_temporaries(tmp_path: Path, sig: int, workers: int) -> None:
    """The signal arrives while C. crescentus is being written and the phage's finished shard
    waits under its temporary name for the end of the run (the 103 MB left by a SIGINT in the
    issue were such finished genomes); the run ends with ``error: interrupted`` and leaves no
    file, and no pool worker writes on after it."""
    out = tmp_path / "out"
    listing = _listing(tmp_path, ["phage", "C.crescentus", "E.coli"])
    proc = subprocess.Popen(
        [sys.executable, str(BAKE), "--genomes", listing, out, "--window", "500"]
        + ["--workers", str(workers), "--shard_size", "1M", "--no_progress"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        preexec_fn=_default_sigint,
    )
    try:
        hit = _wait_for(lambda: any("C_crescentus" in t for t in _temps(out)), proc)
        assert hit, "the bake ended before C. crescentus's temporary shard was seen"
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert [ln for ln in stderr.splitlines() if ln.startswith("error:")] == ["error: interrupted"]
    assert "Traceback" not in stderr
    time.sleep(0.5)  # a surviving worker would write more
    assert output_files(out) == []


@pytest.mark.slow
@pytest.mark.shared
def test_sigkilled_bake_is_cleaned_up_by_the_next_one(tmp_path: Path) -> None:
    """SIGKILL runs no clean-up: its temporaries (and its lock file) stay until the next bake
    into the folder, which removes them under its lock although its genome is another one."""
    out = tmp_path / "out"
    listing = _listing(tmp_path, ["phage", "C.crescentus"])
    proc = subprocess.Popen(
        [sys.executable, str(BAKE), "--genomes", listing, out, "--window", "500"]
        + ["--shard_size", "1M", "--no_progress"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=REPO,
    )
    try:
        assert _wait_for(lambda: any("phage" in t for t in _temps(out)), proc)
        proc.kill()
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    left = _temps(out)
    assert left, "SIGKILL left no temporaries: nothing to test"
    fna, gff = small_genome(tmp_path / "in", "other")
    run = run_bake(fna, gff, out, "--window", "1000", "--name", "other")
    assert run.returncode == 0, run.stderr
    m = load_manifest(out)
    assert list(m.genomes) == ["other"]
    assert output_files(out) == [
        "manifest.json",
        *[s.path for s in m.split("train")],
    ]


def test_stale_temporaries_of_any_genome_are_swept(tmp_path: Path) -> None:
    """A run deletes every temporary of a killed earlier run (shards of any genome, a half-written
    manifest), never a finished shard it does not own."""
    out = tmp_path / "out"
    for rel in ("train/.gone-00000.tar.tmp", "val/.Other_2-00012.tar.tmp"):
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(b"x" * 1000)
    (out / ".manifest.json.k3j4h5.tmp.json").write_text("{")
    (out / "train" / "gone-00000.tar").write_bytes(b"a finished shard: not a temporary")
    (out / "train" / "notes.tmp").write_text("not ours")
    fna, gff = small_genome(tmp_path / "in")
    bake(
        [GenomeSpec("small", str(fna), str(gff))], BakeConfig(window_len=1000, progress=False), out
    )
    assert output_files(out) == [
        "manifest.json",
        "train/gone-00000.tar",
        "train/notes.tmp",
        "train/small-00000.tar",
    ]


def test_full_disk_at_the_manifest_publishes_no_shard(tmp_path: Path, small_disk: Path) -> None:
    """The manifest is written before the shards are renamed: when the disk fills up exactly at
    the manifest, the shards are still temporaries and go, instead of published shards that no
    manifest describes (a trainer would read an older manifest over newer shards)."""
    from baking.common.errors import OutputError

    fna, gff = small_genome(tmp_path / "in")
    spec = [GenomeSpec("small", str(fna), str(gff))]
    cfg = BakeConfig(window_len=200, shard_size=65536, progress=False)
    bake(spec, cfg, tmp_path / "probe")
    pages = sum(-(-p.stat().st_size // 4096) for p in (tmp_path / "probe").rglob("*.tar"))
    free = os.statvfs(small_disk).f_bavail
    (small_disk / "filler").write_bytes(bytes(4096 * (free - pages - 1)))  # 1: the lock file
    out = small_disk / "out"
    with pytest.raises(OutputError) as exc:
        bake(spec, cfg, out)
    assert (exc.value.path, exc.value.reason) == (
        str(out / "manifest.json"),
        "no space left on device",
    )
    assert output_files(out) == []  # no published shard, no temporary
    assert sorted(os.listdir(out)) == []  # nor an empty split folder
