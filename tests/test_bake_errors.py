"""Bad input through the real command: a message naming the file, the line and the reason, exit
code 2, and nothing left in the output folder (no shard, no temporary file, no manifest)."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
from bake_helpers import output_files, random_dna, run_bake, small_genome, write_pair

from baking.shards.manifest import load_manifest

GOOD = "chr\tRefSeq\tCDS\t10\t99\t.\t+\t0\tID=c1"


def _case(tmp_path: Path, features: list[str], seqs: dict[str, str] | None = None):
    return write_pair(tmp_path / "in", "g", seqs or {"chr": random_dna(3000, 1)}, features)


def _fails(tmp_path: Path, fna: Path, gff: Path, where: str, reason: str) -> None:
    out = tmp_path / "out"
    run = run_bake(fna, gff, out, "--window", "500", "--extract_tokens", out / "tokens.txt")
    assert run.returncode == 2, run.stderr
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {where}"), last
    assert reason in last, last
    assert output_files(out) == []


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])


def test_truncated_gzip_fasta(tmp_path: Path) -> None:
    fna, gff = _case(tmp_path, [GOOD], {"chr": random_dna(60000, 2)})
    _truncate(fna)
    _fails(tmp_path, fna, gff, f"{fna}: ", "truncated or corrupt gzip")


def test_truncated_gzip_gff(tmp_path: Path) -> None:
    fna, gff = _case(tmp_path, [GOOD] * 3000)
    _truncate(gff)
    _fails(tmp_path, fna, gff, f"{gff}:", "truncated or corrupt gzip")


@pytest.mark.parametrize("which", ["fasta", "gff"])
def test_empty_file(tmp_path: Path, which: str) -> None:
    fna, gff = _case(tmp_path, [GOOD])
    bad = fna if which == "fasta" else gff
    bad.write_bytes(b"")
    _fails(tmp_path, fna, gff, f"{bad}: ", "empty file")


@pytest.mark.parametrize("which", ["fasta", "gff"])
def test_binary_garbage(tmp_path: Path, which: str) -> None:
    fna, gff = _case(tmp_path, [GOOD])
    bad = fna if which == "fasta" else gff
    bad.write_bytes(gzip.compress((bytes(range(128, 256)) + bytes(range(128))) * 8))
    reason = "not a FASTA file" if which == "fasta" else "not a text file"
    _fails(tmp_path, fna, gff, f"{bad}:", reason)


@pytest.mark.parametrize(
    "line, reason",
    [
        ("chr\tRefSeq\tCDS\t10\t99\t.\t+\t0", "expected 9 tab-separated columns, found 8"),
        ("chr\tRefSeq\tCDS\t10\t9x9\t.\t+\t0\tID=c2", "end '9x9' is not a non-negative integer"),
        ("chr\tRefSeq\tCDS\t-10\t99\t.\t+\t0\tID=c2", "start '-10' is not a non-negative integer"),
        ("chr\tRefSeq\tCDS\t99\t10\t.\t+\t0\tID=c2", "end 10 < start 99"),
        (
            "chr\tRefSeq\tCDS\t2950\t3050\t.\t+\t0\tID=c2",
            "past the end of linear sequence 'chr' (3000 bp)",
        ),
        ("chrX\tRefSeq\tCDS\t10\t99\t.\t+\t0\tID=c2", "seqid 'chrX' is not in the FASTA file"),
        ("chr\tRefSeq\ttRNA\t10\t99\t.\t.\t.\tID=t2", "tRNA feature has strand '.'"),
    ],
)
def test_bad_gff_line(tmp_path: Path, line: str, reason: str) -> None:
    fna, gff = _case(tmp_path, [GOOD, line])
    _fails(tmp_path, fna, gff, f"{gff}:5: ", reason)  # header, sequence-region, region, GOOD


def test_duplicate_fasta_ids(tmp_path: Path) -> None:
    fna, gff = _case(tmp_path, [GOOD])
    fna.write_bytes(gzip.compress(b">chr\nACGT\n>plasmid\nAC\n>chr\nGG\n"))
    _fails(tmp_path, fna, gff, f"{fna}:5: ", "duplicate sequence id 'chr'")


def test_missing_file_and_bad_options(tmp_path: Path) -> None:
    fna, gff = _case(tmp_path, [GOOD])
    _fails(tmp_path, tmp_path / "nope.fna", gff, f"{tmp_path / 'nope.fna'}: ", "no such file")
    run = run_bake(fna, gff, tmp_path / "out", "--stride", "5000", "--window", "100")
    assert run.returncode == 2 and "stride must be in 1..window_len" in run.stderr
    run = run_bake(fna, gff, tmp_path / "out", "--types", "CDS,bad type")
    assert run.returncode == 2 and "cannot be a grammar token" in run.stderr
    assert output_files(tmp_path / "out") == []


def test_crlf_and_soft_masked_dna_are_accepted(tmp_path: Path) -> None:
    dna = random_dna(3000, 4)
    masked = dna[:1000].lower() + dna[1000:2000] + dna[2000:].lower().replace("a", "n")
    fna, gff = write_pair(tmp_path / "in", "g", {"chr": masked}, [GOOD], gz=False)
    fna.write_bytes(fna.read_bytes().replace(b"\n", b"\r\n"))
    gff.write_bytes(gff.read_bytes().replace(b"\n", b"\r\n"))
    out = tmp_path / "out"
    run = run_bake(fna, gff, out, "--window", "1000")
    assert run.returncode == 0, run.stderr
    assert load_manifest(out).totals["features"] == {"CDS": 1}


def test_on_error_skip_and_stop_with_many_genomes(tmp_path: Path) -> None:
    good_fna, good_gff = small_genome(tmp_path / "in", "good")
    bad_fna, bad_gff = _case(tmp_path, [GOOD, "chr\tRefSeq\tCDS\t99\t10\t.\t+\t0\tID=x"])
    listing = tmp_path / "genomes.tsv"
    listing.write_text(f"good\t{good_fna}\t{good_gff}\n# a comment\nbad\t{bad_fna}\t{bad_gff}\n")
    out = tmp_path / "out"
    run = run_bake("--genomes", listing, out, "--window", "1000")
    assert run.returncode == 2 and f"error: {bad_gff}:5: end 10 < start 99" in run.stderr
    assert output_files(out) == []
    run = run_bake("--genomes", listing, out, "--window", "1000", "--on_error", "skip")
    assert run.returncode == 0, run.stderr
    m = load_manifest(out)
    assert m.genomes["bad"]["status"] == "failed"
    assert m.genomes["bad"]["error"].endswith("end 10 < start 99")
    assert m.totals["failed"] == ["bad"] and m.totals["genomes"] == 1
    assert output_files(out) == [
        "manifest.json",
        *[s.path for s in m.split("train")],
    ]


def test_bad_genome_list(tmp_path: Path) -> None:
    listing = tmp_path / "genomes.tsv"
    listing.write_text("only\ttwo\n")
    run = run_bake("--genomes", listing, tmp_path / "out")
    assert run.returncode == 2 and f"error: {listing}:1: expected 3 columns" in run.stderr


def test_sequence_region_mismatch_and_previous_output_kept(tmp_path: Path) -> None:
    """A failing re-run leaves the previous run's shards and manifest exactly as they were."""
    from baking.bake import bake
    from baking.bake_config import BakeConfig, GenomeSpec
    from baking.common.errors import InputError

    fna, gff = small_genome(tmp_path / "in", "g")
    out = tmp_path / "out"
    cfg = BakeConfig(window_len=1000, progress=False)
    bake([GenomeSpec("g", str(fna), str(gff))], cfg, out)
    before = {p: (out / p).read_bytes() for p in output_files(out)}
    bad = tmp_path / "in" / "bad.gff"
    bad.write_text(gzip.decompress(gff.read_bytes()).decode().replace("chr 1 6000", "chr 1 6001"))
    with pytest.raises(
        InputError, match="##sequence-region chr ends at 6001 but the FASTA sequence has 6000"
    ):
        bake([GenomeSpec("g", str(fna), str(bad))], BakeConfig(window_len=500, progress=False), out)
    assert {p: (out / p).read_bytes() for p in output_files(out)} == before


HOLD_LOCK = """
import sys
from baking.shards.lock import output_lock
with output_lock(sys.argv[1]):
    print("locked", flush=True)
    sys.stdin.read()
"""


@pytest.mark.slow
def test_second_run_into_a_locked_folder_fails_fast_and_a_crashed_holder_does_not_block(
    tmp_path: Path,
) -> None:
    """Two runs into one folder would race (the last manifest wins, the other's shards stay
    unlisted): while one process holds OUT_DIR/.bake.lock a second bake fails at once, writing
    nothing; once the holder is killed (a crash: its file stays) the next bake runs normally."""
    import os
    import signal
    import subprocess
    import sys

    from bake_helpers import REPO

    fna, gff = small_genome(tmp_path / "in", "g")
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(out)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        run = run_bake(fna, gff, out, "--window", "1000")
        assert run.returncode == 2, run.stderr
        errors = [ln for ln in run.stderr.splitlines() if ln.startswith("error:")]
        assert errors == [
            f"error: {out}: another bake_data run is writing to this folder (.bake.lock is "
            "locked); wait for it to finish or bake into another folder"
        ]
        assert output_files(out) == [".bake.lock"]  # the holder's, nothing of the failed run
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert output_files(out) == [".bake.lock"]  # a crash leaves the file, unlocked
    run = run_bake(fna, gff, out, "--window", "1000")
    assert run.returncode == 0, run.stderr
    m = load_manifest(out)
    assert output_files(out) == [
        "manifest.json",
        *[s.path for s in m.split("train")],
    ]
