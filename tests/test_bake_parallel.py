"""Parallel baking gives the same shards as serial baking: a process pool, and MPI ranks."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from bake_helpers import output_files, run_bake, small_genome, write_pair

from baking.bake import bake
from baking.bake_config import BakeConfig, GenomeSpec
from baking.shards.manifest import load_manifest


def _genomes(tmp_path: Path, n: int = 3) -> Path:
    lines = []
    for i in range(n):
        fna, gff = small_genome(tmp_path / "in", f"g{i}", seed=i)
        lines.append(f"genome.{i}\t{fna.relative_to(tmp_path)}\t{gff.relative_to(tmp_path)}")
    listing = tmp_path / "genomes.tsv"
    listing.write_text("\n".join(lines) + "\n")
    return listing


def _comparable(out: Path) -> tuple[dict, dict[str, bytes]]:
    m = load_manifest(out)
    m.args.pop("argv")
    m.args.pop("workers")
    files = {p: (out / p).read_bytes() for p in output_files(out) if p.endswith(".tar")}
    return m, files


def test_pool_equals_serial(tmp_path: Path) -> None:
    listing = _genomes(tmp_path)
    serial = run_bake("--genomes", listing, tmp_path / "serial", "--window", "700", "--rc", "both")
    pool = run_bake(
        "--genomes", listing, tmp_path / "pool", "--window", "700", "--rc", "both", "--workers", "2"
    )
    assert serial.returncode == 0 and pool.returncode == 0, pool.stderr
    a, b = _comparable(tmp_path / "serial"), _comparable(tmp_path / "pool")
    assert a == b
    assert sorted(a[1]) == [f"train/genome_{i}-00000.tar" for i in range(3)]
    assert "TOTAL (3)" in pool.stdout


def test_pool_stop_on_error_leaves_nothing(tmp_path: Path) -> None:
    good = [small_genome(tmp_path / "in", f"g{i}", seed=i) for i in range(3)]
    bad = write_pair(
        tmp_path / "in", "bad", {"chr": "ACGT" * 100}, ["chr\t.\tCDS\t5\t1\t.\t+\t0\tID=x"]
    )
    specs = [GenomeSpec(f"g{i}", str(f), str(g)) for i, (f, g) in enumerate(good)]
    specs.insert(1, GenomeSpec("bad", str(bad[0]), str(bad[1])))
    cfg = BakeConfig(window_len=500, workers=2, progress=False)
    with pytest.raises(Exception, match="end 1 < start 5"):
        bake(specs, cfg, tmp_path / "out")
    assert output_files(tmp_path / "out") == []


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("mpirun") is None, reason="mpirun not installed")
def test_mpi_ranks_equal_serial(tmp_path: Path) -> None:
    pytest.importorskip("mpi4py")
    listing = _genomes(tmp_path)
    serial = run_bake("--genomes", listing, tmp_path / "serial", "--window", "700")
    mpi = run_bake("--genomes", listing, tmp_path / "mpi", "--window", "700", mpi=2, timeout=180)
    assert serial.returncode == 0, serial.stderr
    assert mpi.returncode == 0, mpi.stderr + mpi.stdout
    assert _comparable(tmp_path / "serial") == _comparable(tmp_path / "mpi")
    assert mpi.stdout.count("TOTAL (3)") == 1  # only rank 0 reports
    # a bad genome on rank 1 stops every rank and leaves nothing behind
    with listing.open("a") as fh:
        fh.write("bad\tin/g0.fna.gz\tin/bad.gff\n")
    write_pair(
        tmp_path / "in", "bad", {"chr": "ACGT"}, ["chr\t.\tCDS\t5\t1\t.\t+\t0\tID=x"], gz=False
    )
    failed = run_bake(
        "--genomes", listing, tmp_path / "mpi_bad", "--window", "700", mpi=2, timeout=180
    )
    assert failed.returncode != 0 and "end 1 < start 5" in failed.stderr
    assert output_files(tmp_path / "mpi_bad") == []
