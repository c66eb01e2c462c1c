"""Many genomes in one call, shared over ``torchrun`` ranks: the model loads once per process.

Why: people annotate hundreds of bacterial genomes at a time, and one model load plus one
process per genome is most of the cost for small ones. ``annotate_genomes`` reads the genomes one
after another, cuts each into the same batches ``annotate_sequences`` would (batches never span two
genomes), and hands batch ``k`` of the run (counted over all genomes) to rank ``k % world``. Each
*round* (consecutive genomes holding at least ``world`` batches) ends with one gather: rank 0
merges every window's features exactly as one process would (``finish_sequences`` sorts them by
window number) and writes the genome's files. A batch's result does not depend on which rank ran
it, so the output is byte-identical to one process (``tests/test_annotate_many.py``).

A genome whose FASTA is bad fails on every rank alike (each reads it): with ``on_error="stop"``
the run ends there (``Dna2GffError`` naming the genome; the genomes before it are written), with
``"skip"`` the others still run and the error is raised at the end. Either way ``summary.tsv``
lists every genome: bp, genes, seconds, status.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tqdm import tqdm

from baking.common.errors import ConfigError, Dna2GffError, InputError
from baking.common.files import write_text
from baking.genome_list import ON_ERROR, SUMMARY_COLUMNS, GenomeJob, GenomeOutputs
from trainer.distributed import all_gather, join_torchrun_group, leave_process_group
from trainer.inference.annotate import (
    AnnotateOptions,
    AnnotateSummary,
    WindowResult,
    count_batches,
    decode_windows,
    finish_sequences,
    header_comment,
    load_model,
    log_orf_layer,
    read_genome,
    resolve_grammar,
    resolve_options,
    window_stride,
    with_decoding,
    write_outputs,
)

log = logging.getLogger(__name__)


@dataclass
class GenomeResult:
    """What became of one genome (a row of ``summary.tsv``)."""

    name: str
    fasta: str
    transl_table: int
    bp: int = 0
    genes: int = 0
    seconds: float = 0.0
    status: str = "not run"
    """``ok``, ``failed`` or ``not run`` (a run stopped at an earlier genome's error)."""
    error: str = ""
    summary: AnnotateSummary | None = field(default=None, repr=False)

    def row(self) -> str:
        values = (self.name, self.fasta, self.transl_table, self.bp, self.genes)
        return "\t".join(
            [*map(str, values), f"{self.seconds:.2f}", self.status, self.error.replace("\t", " ")]
        )


def write_summary(path: str | Path, results: Sequence[GenomeResult]) -> None:
    """The run's ``summary.tsv`` (one row per genome, in the order given), atomically."""
    lines = ["\t".join(SUMMARY_COLUMNS), *(r.row() for r in results)]
    write_text(path, "\n".join(lines) + "\n")


@dataclass
class _Pending:
    """A genome read and planned, waiting for its round to be decoded."""

    index: int
    seqs: list[tuple[str, str]]
    options: AnnotateOptions
    first_batch: int


def _share(first_batch: int, rank: int, world: int) -> Callable[[int], bool]:
    """Which of a genome's batches this rank runs: the run's batch ``first_batch + k`` goes to
    rank ``(first_batch + k) % world`` (round robin over all genomes, so small genomes spread)."""
    return lambda k: (first_batch + k) % world == rank


def _job_options(job: GenomeJob, options: AnnotateOptions) -> AnnotateOptions:
    if job.transl_table is None or job.transl_table == options.transl_table:
        return options
    return replace(options, transl_table=job.transl_table)


def _device_for_rank(device: str, world: int, local_rank: int) -> str:
    """``cuda`` under a multi-process launcher means each rank's own GPU (``cuda:LOCAL_RANK``;
    more ranks than GPUs share them round robin)."""
    if world == 1 or device != "cuda":
        return device
    import torch

    return f"cuda:{local_rank % max(torch.cuda.device_count(), 1)}"


def annotate_genomes(
    model_dir: str | Path,
    jobs: Sequence[GenomeJob],
    outputs: Sequence[GenomeOutputs],
    options: AnnotateOptions,
    *,
    on_error: str = "stop",
    summary_tsv: str | Path | None = None,
    check_circular: bool = False,
) -> list[GenomeResult]:
    """Annotate every genome of ``jobs`` into its ``outputs``; the model loads once.

    Under ``torchrun`` every rank calls this with the same arguments; rank 0 writes. Returns one
    ``GenomeResult`` per job (rank 0's are complete). ``check_circular``: refuse ``--circular``
    ids a genome lacks (one-genome calls, as before); else such ids are only logged.
    """
    if on_error not in ON_ERROR:
        raise ConfigError(f"on_error must be one of {', '.join(ON_ERROR)}, got {on_error!r}")
    if len(jobs) != len(outputs):
        raise ValueError("one GenomeOutputs per GenomeJob")
    for job in jobs:  # a cheap check before the model loads
        if on_error == "stop" and not job.fasta.is_file():
            missing = InputError(job.fasta, "no such file")
            raise missing if len(jobs) == 1 else GenomeError(f"genome {job.name}: {missing}")
    created = False
    try:
        rank, world, local_rank, created = join_torchrun_group()
        options = replace(
            options,
            device=_device_for_rank(options.device, world, local_rank),
            progress=options.progress and rank == 0,
        )
        return _run(
            model_dir, jobs, outputs, options, on_error, summary_tsv, check_circular, rank, world
        )
    finally:
        leave_process_group(created)


def _run(
    model_dir: str | Path,
    jobs: Sequence[GenomeJob],
    outputs: Sequence[GenomeOutputs],
    options: AnnotateOptions,
    on_error: str,
    summary_tsv: str | Path | None,
    check_circular: bool,
    rank: int,
    world: int,
) -> list[GenomeResult]:
    results = [
        GenomeResult(j.name, str(j.fasta), _job_options(j, options).transl_table) for j in jobs
    ]
    preread: dict[int, list[tuple[str, str]]] = {}
    if len(jobs) == 1 and summary_tsv is None:  # one genome: a bad FASTA costs no model load
        preread[0] = _read_checked(jobs[0], options, check_circular)
    model, tokenizer = load_model(model_dir, options.device)
    options = with_decoding(options, getattr(model, "decoding", None))
    window_len, types = resolve_grammar(model, tokenizer, options)
    window_stride(options, window_len)  # fail before any work
    log_orf_layer(model, options)
    trained_len = getattr(model.config, "max_src_tokens", None)
    log.info(
        "model=%s window_len=%d types=%s genomes=%d ranks=%d",
        model_dir,
        window_len,
        types,
        len(jobs),
        world,
    )
    circular_seen: set[str] = set()
    first_error: Dna2GffError | None = None
    bar = tqdm(
        total=len(jobs),
        unit="genome",
        desc="genomes",
        disable=not options.progress or len(jobs) < 2,
        position=0,
    )

    def fail(i: int, exc: Dna2GffError) -> Dna2GffError:
        nonlocal first_error
        results[i].status, results[i].error = "failed", str(exc)
        named = exc if len(jobs) == 1 else GenomeError(f"genome {jobs[i].name}: {exc}")
        first_error = first_error or named
        if on_error == "skip" and len(jobs) > 1:
            log.warning("skipped: %s", named)
        bar.update(1)
        return named

    def run_round(pending: list[_Pending]) -> None:
        t0 = time.perf_counter()
        mine: dict[int, list[WindowResult]] = {}
        for g in pending:
            mine[g.index] = decode_windows(
                model,
                tokenizer,
                g.seqs,
                g.options,
                window_len,
                types,
                run_batch=_share(g.first_batch, rank, world),
                desc=jobs[g.index].name if len(jobs) > 1 else "annotate",
                nested=len(jobs) > 1,
            )
        gathered = all_gather(mine)
        if rank != 0:
            return
        decode_s = time.perf_counter() - t0
        round_bp = sum(len(s) for g in pending for _, s in g.seqs) or 1
        for g in pending:
            t1 = time.perf_counter()
            res = results[g.index]
            decoded = [w for part in gathered for w in part[g.index]]
            opts = resolve_options(g.options, model)
            try:
                # t0 such that the summary's seconds are this genome's share of the round's
                # decoding (by bp) plus its own merging and writing
                share = decode_s * sum(len(s) for _, s in g.seqs) / round_bp
                features, regions, summary = finish_sequences(
                    g.seqs, decoded, opts, t1 - share, trained_len
                )
                comment = header_comment(model_dir, model.config, window_len, g.options)
                out = outputs[g.index]
                write_outputs(
                    g.seqs,
                    features,
                    regions,
                    comment,
                    opts.transl_table,
                    out.gff3,
                    out.faa,
                    out.ffn,
                )
            except Dna2GffError as exc:
                named = fail(g.index, exc)
                if on_error == "stop":
                    raise named from exc
                continue
            bp = sum(len(s) for _, s in g.seqs)
            res.bp, res.status, res.summary = bp, "ok", summary
            res.genes = sum(f.type == "gene" for f in features)
            res.seconds = share + time.perf_counter() - t1
            bar.update(1)

    pending: list[_Pending] = []
    batches_in_round = next_batch = 0
    stopped = False
    try:
        with bar:
            for i, job in enumerate(jobs):
                opts = _job_options(job, options)
                try:
                    seqs = preread.pop(i, None) or _read_checked(job, options, check_circular)
                    circular_seen |= {sid for sid, _ in seqs} & set(options.circular)
                    n_batches = count_batches(seqs, opts, window_len)
                except Dna2GffError as exc:
                    fail(i, exc)
                    if on_error == "stop":
                        stopped = True
                        break
                    continue
                pending.append(_Pending(i, seqs, opts, next_batch))
                next_batch += n_batches
                batches_in_round += n_batches
                if batches_in_round >= world:
                    run_round(pending)
                    pending, batches_in_round = [], 0
            if pending:
                run_round(pending)
    finally:
        if rank == 0 and summary_tsv is not None:
            write_summary(summary_tsv, results)
    unused = sorted(set(options.circular) - {"all"} - circular_seen)
    if unused and not check_circular:
        log.warning("--circular names sequences no genome holds: %s", ", ".join(unused))
    if first_error is not None:
        if len(jobs) == 1 or stopped:
            raise first_error
        failed = [r.name for r in results if r.status == "failed"]
        raise _SomeFailed(
            f"{len(failed)} of {len(jobs)} genomes failed ({', '.join(failed[:5])}"
            f"{', ...' if len(failed) > 5 else ''}); the others are written"
            + (f"; see {summary_tsv}" if summary_tsv else "")
            + f"; first: {first_error}"
        )
    return results


def _read_checked(
    job: GenomeJob, options: AnnotateOptions, check_circular: bool
) -> list[tuple[str, str]]:
    """A genome's records; with ``check_circular`` every ``--circular`` id must be among them."""
    seqs = read_genome(job.fasta)
    unknown = sorted(set(options.circular) - {"all"} - {sid for sid, _ in seqs})
    if check_circular and unknown:
        raise ConfigError(
            f"--circular names sequences not in {job.fasta.name}: {', '.join(unknown)}"
        )
    return seqs


class _SomeFailed(Dna2GffError):
    """``--on_error skip``: the run finished, but not every genome."""


class GenomeError(Dna2GffError):
    """A genome's own error, with the genome's name in front (which of 200 genomes is bad)."""


def summary_json(results: Sequence[GenomeResult]) -> dict[str, Any]:
    """The figures of a many-genome run, for ``--summary_json``."""
    return {
        "genomes": [
            {
                "name": r.name,
                "status": r.status,
                "error": r.error,
                **(r.summary.as_dict() if r.summary else {"bp": r.bp}),
            }
            for r in results
        ]
    }
