"""baking.formats.fasta: what the reader accepts (gzip, CRLF, soft-masking, IUPAC) and what it rejects."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from baking.common.errors import InputError
from baking.formats.fasta import normalise_sequence, read_fasta, read_fasta_dict, reverse_complement


def _write(path: Path, text: str, gz: bool = False) -> Path:
    data = text.encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


@pytest.mark.parametrize("gz", [False, True])
def test_reads_plain_and_gzip_with_soft_masking_and_iupac(tmp_path: Path, gz: bool) -> None:
    p = _write(tmp_path / "g.fa", ">chr1 some description\nacgtACGT\nnnRYkm\n>plasmid\nGG\n", gz)
    assert list(read_fasta(p)) == [("chr1", "ACGTACGTNNNNNN"), ("plasmid", "GG")]


def test_crlf_line_ends(tmp_path: Path) -> None:
    p = _write(tmp_path / "g.fa", ">a\r\nACGT\r\nTT\r\n>b\r\nC\r\n")
    assert read_fasta_dict(p) == {"a": "ACGTTT", "b": "C"}


def test_truncated_gzip_is_rejected(tmp_path: Path) -> None:
    data = gzip.compress((">a\n" + "ACGT" * 5000 + "\n").encode())
    p = tmp_path / "t.fa.gz"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated or corrupt gzip") as exc:
        list(read_fasta(p))
    assert str(p) in str(exc.value)


def test_empty_and_garbage_files(tmp_path: Path) -> None:
    empty = _write(tmp_path / "e.fa", "")
    with pytest.raises(InputError, match="empty file"):
        list(read_fasta(empty))
    garbage = tmp_path / "g.fa"
    garbage.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(InputError, match="not a FASTA file"):
        list(read_fasta(garbage))
    with pytest.raises(InputError, match="no such file"):
        list(read_fasta(tmp_path / "missing.fa"))


def test_duplicate_ids_name_the_line(tmp_path: Path) -> None:
    p = _write(tmp_path / "d.fa", ">a\nAC\n>b\nGG\n>a x\nTT\n")
    with pytest.raises(InputError, match="duplicate sequence id 'a'") as exc:
        list(read_fasta(p))
    assert exc.value.line == 5


def test_invalid_character_names_record_and_line(tmp_path: Path) -> None:
    p = _write(tmp_path / "bad.fa", ">a\nACGT\n>b\nACGT\nAC*T\n")
    with pytest.raises(InputError, match=r"sequence 'b' contains invalid character '\*'") as exc:
        list(read_fasta(p))
    assert exc.value.line == 5 and f"{p}:5:" in str(exc.value)


def test_empty_record_is_rejected(tmp_path: Path) -> None:
    p = _write(tmp_path / "e.fa", ">a\n>b\nAC\n")
    with pytest.raises(InputError, match="'a' is empty"):
        list(read_fasta(p))


def test_normalise_and_reverse_complement() -> None:
    assert normalise_sequence("acgtuRYSWKMBDHVN") == "ACGTNNNNNNNNNNNN"
    assert reverse_complement("AACGTN") == "NACGTT"
    with pytest.raises(InputError):
        normalise_sequence("ACG-T")


@pytest.mark.shared
def test_real_phage(genome_pair) -> None:
    fna, _ = genome_pair("phage")
    seqs = read_fasta_dict(fna)
    assert list(seqs) == ["NC_000902.1"]
    assert len(seqs["NC_000902.1"]) == 60942
    assert set(seqs["NC_000902.1"]) <= set("ACGTN")
