"""Small hand-made genomes and a CLI runner shared by the baker's tests."""

from __future__ import annotations

import gzip
import os
import random
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BAKE = REPO / "launch" / "bake_data.py"


def random_dna(n: int, seed: int) -> str:
    rng = random.Random(seed)
    return "".join(rng.choice("ACGT") for _ in range(n))


def write_pair(
    folder: Path,
    name: str,
    seqs: dict[str, str],
    features: list[str],
    circular: tuple[str, ...] = (),
    gz: bool = True,
) -> tuple[Path, Path]:
    """Write ``name.fna[.gz]`` and ``name.gff[.gz]``: one ``region`` per sequence (with
    ``Is_circular=true`` for ``circular``) followed by ``features`` (tab-separated lines)."""
    folder.mkdir(parents=True, exist_ok=True)
    fasta = "".join(f">{k}\n{v}\n" for k, v in seqs.items())
    gff = ["##gff-version 3"]
    for k, v in seqs.items():
        gff.append(f"##sequence-region {k} 1 {len(v)}")
        extra = ";Is_circular=true" if k in circular else ""
        gff.append(f"{k}\tRefSeq\tregion\t1\t{len(v)}\t.\t+\t.\tID={k}:1..{len(v)}{extra}")
    gff.extend(features)
    suffix = ".gz" if gz else ""
    fna_path, gff_path = folder / f"{name}.fna{suffix}", folder / f"{name}.gff{suffix}"
    for path, text in ((fna_path, fasta), (gff_path, "\n".join(gff) + "\n")):
        data = text.encode()
        path.write_bytes(gzip.compress(data, mtime=0) if gz else data)
    return fna_path, gff_path


def small_genome(folder: Path, name: str = "small", seed: int = 1) -> tuple[Path, Path]:
    """A 6 kbp circular chromosome and a 1.5 kbp linear plasmid with genes on both strands, an
    origin-spanning CDS, overlapping genes, a pseudogene and a gene-free stretch."""
    chrom, plasmid = random_dna(6000, seed), random_dna(1500, seed + 1)
    f = [
        "chr\tRefSeq\tgene\t5801\t6300\t.\t+\t.\tID=gene-o",
        "chr\tRefSeq\tCDS\t5801\t6300\t.\t+\t0\tID=cds-o;Parent=gene-o",
        "chr\tRefSeq\tgene\t400\t1299\t.\t+\t.\tID=gene-a",
        "chr\tRefSeq\tCDS\t400\t1299\t.\t+\t0\tID=cds-a;Parent=gene-a",
        "chr\tRefSeq\tgene\t1290\t2500\t.\t-\t.\tID=gene-b",
        "chr\tRefSeq\tCDS\t1290\t2500\t.\t-\t0\tID=cds-b;Parent=gene-b",
        "chr\tRefSeq\tgene\t2600\t2675\t.\t+\t.\tID=gene-t",
        "chr\tRefSeq\ttRNA\t2600\t2675\t.\t+\t.\tID=rna-t;Parent=gene-t",
        "chr\tRefSeq\texon\t2600\t2675\t.\t+\t.\tID=exon-t;Parent=rna-t",
        "chr\tRefSeq\tpseudogene\t2700\t3000\t.\t+\t.\tID=gene-p;pseudo=true",
        "chr\tRefSeq\tCDS\t2700\t3000\t.\t+\t0\tID=cds-p;Parent=gene-p;pseudo=true",
        "plasmid\tRefSeq\tgene\t100\t1400\t.\t-\t.\tID=gene-c",
        "plasmid\tRefSeq\tCDS\t100\t1400\t.\t-\t0\tID=cds-c;Parent=gene-c",
    ]
    return write_pair(folder, name, {"chr": chrom, "plasmid": plasmid}, f, circular=("chr",))


def run_bake(*args: str | Path, timeout: int = 120, mpi: int = 0) -> subprocess.CompletedProcess:
    """Run ``launch/bake_data.py`` (optionally under ``mpirun -n mpi``) and capture its output."""
    cmd = [sys.executable, str(BAKE), *map(str, args)]
    env = dict(os.environ)
    if mpi:
        cmd = ["mpirun", "--oversubscribe", "-n", str(mpi), *cmd]
        env.update(
            OMPI_ALLOW_RUN_AS_ROOT="1",
            OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
            OMPI_MCA_btl="self,vader",
        )
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)


def output_files(out: Path) -> list[str]:
    """Everything under ``out`` (relative paths), to prove nothing was left behind."""
    return (
        sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
        if out.exists()
        else []
    )
