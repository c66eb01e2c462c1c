"""Bake genomes into webdataset shards: one genome per task, tasks over a process pool and MPI ranks.

Stages per genome (``bake_genome``): read GFF3 (and check its cross-line rules: Parent links,
multi-feature IDs, CDS phases) and FASTA -> choose features -> plan windows ->
clip features into each window (and its reverse complement) -> ``features.json`` -> shard writer.
All input checks happen before the first sample is written, and shards stay under temporary names
until the whole run has succeeded (``bake``), so bad input never leaves a half-written output. A
run that fails or is stopped (SIGINT, SIGTERM; pool workers included) deletes its temporaries;
one killed outright leaves them to the next run into the folder, which sweeps them under its lock.

Parallelism: genomes are independent. ``--workers N`` runs them on a process pool; under
``mpirun -n K`` (mpi4py importable, world size > 1) rank r takes genomes r, r+K, ...; rank 0
gathers the results, renames the shards, writes ``manifest.json`` and the token file. Shard names
start with the genome's name, so no two tasks ever write the same file.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing as mp
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING

from baking.bake_config import (
    SPLITS,
    TRAIN_MAX_SRC_TOKENS,
    TRAIN_MAX_TGT_TOKENS,
    BakeConfig,
    GenomeResult,
    GenomeSpec,
    encoder_tokens_estimate,
    warn_lengths,
)
from baking.common.errors import ConfigError, Dna2GffError, InputError, OutputError
from baking.formats.fasta import read_fasta
from baking.formats.gff3 import read_gff3
from baking.formats.gff3_semantics import check_gff3_semantics
from baking.shards.lock import output_lock
from baking.shards.writer import ShardWriter, safe_name, sample_fields, sweep_temps
from baking.target_format.coverage import check_coverage
from baking.target_format.features import SequenceInfo, select_features, sequence_infos
from baking.target_format.pointers import encode_pointer_target
from baking.target_format.sample_features import features_to_json
from baking.target_format.transl_table import resolve_transl_table
from baking.target_format.windows import (
    FeatureIndex,
    WindowMeta,
    plan_windows,
    sample_dna,
    window_features,
)

if TYPE_CHECKING:
    from baking.shards.manifest import Manifest, Rerun

log = logging.getLogger(__name__)


def _unit(*parts: object) -> float:
    """A deterministic uniform number in [0, 1) from ``parts`` (seeded per-window choices)."""
    h = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") / 2**64


def _regions(
    info: SequenceInfo, split_all: str | None, val_fraction: float
) -> list[tuple[str, tuple[int, int] | None]]:
    """(split, region) blocks of one sequence; ``None`` = the whole sequence (may wrap)."""
    if split_all is not None:
        return [(split_all, None)]
    if not val_fraction:
        return [("train", None)]
    cut = round(info.length * (1.0 - val_fraction))
    out: list[tuple[str, tuple[int, int] | None]] = []
    if cut > 0:
        out.append(("train", (0, cut)))
    if cut < info.length:
        out.append(("val", (cut, info.length)))
    return out


def bake_genome(spec: GenomeSpec, cfg: BakeConfig, out_dir: str | Path) -> GenomeResult:
    """Bake one genome into temporary shards; raises ``Dna2GffError`` on bad input."""
    t0 = time.perf_counter()
    res = GenomeResult(spec.name, spec.fasta, spec.gff)
    doc = read_gff3(spec.gff)
    res.transl_table, res.transl_table_source = resolve_transl_table(
        spec.transl_table, doc.features, spec.gff
    )
    attrs = [dict(f.attributes) for f in doc.features]
    check_gff3_semantics(doc, spec.gff, region_ranges=False, attrs=attrs)  # vs FASTA: below
    seqs = dict(read_fasta(spec.fasta))
    infos = sequence_infos(doc, {k: len(v) for k, v in seqs.items()}, spec.gff)
    feats, stats = select_features(doc, infos, cfg.types, spec.gff, cfg.include_pseudo, attrs)
    coverage = check_coverage(
        spec.gff,
        cfg.types,
        Counter(f.type for f in doc.features),
        {s: len(v) for s, v in feats.items()},
        {f.seqid for f in doc.features} | set(doc.sequence_regions),
        {s: i.length for s, i in infos.items()},
        cfg.unannotated,
    )
    del doc, attrs
    for seqid in coverage.skipped:
        del infos[seqid], feats[seqid]
    res.gene_free_sequences, res.skipped_sequences = coverage.gene_free, coverage.skipped
    res.features = stats.kept
    res.pseudo_dropped, res.duplicates_dropped = stats.pseudo_dropped, stats.duplicates_dropped
    res.sequences = [
        {"seqid": i.seqid, "length": i.length, "circular": i.circular} for i in infos.values()
    ]
    res.bp = sum(i.length for i in infos.values())
    prefix = safe_name(spec.name)
    writers = {s: ShardWriter(out_dir, s, prefix, cfg.shard_size) for s in SPLITS}
    split_all = "val" if spec.name in cfg.val_genomes else None
    window_len, stride = cfg.window_len, cfg.stride
    assert stride is not None
    plan = [
        (si, seqid, info, split, ws, we)
        for si, (seqid, info) in enumerate(infos.items())
        for split, region in _regions(info, split_all, cfg.val_fraction)
        for ws, we in plan_windows(
            info.length,
            window_len,
            stride,
            circular=info.circular,
            region=region,
            offset=cfg.offset,
        )
    ]
    indexes = {seqid: FeatureIndex(feats[seqid], info) for seqid, info in infos.items()}
    try:
        bar = _progress(cfg, spec.name, len(plan), unit="window")
        for si, seqid, info, split, ws, we in plan:
            if bar is not None:
                bar.update(1)
            res.windows += 1
            index = indexes[seqid]
            plus = window_features(index, ws, we, "+")
            if (
                not plus
                and cfg.keep_empty < 1.0
                and _unit(cfg.seed, spec.name, seqid, ws, "empty") >= cfg.keep_empty
            ):
                res.empty_windows_dropped += 1
                continue
            for strand in _strands(cfg, spec.name, seqid, ws):
                meta = WindowMeta(
                    spec.name,
                    seqid,
                    ws,
                    we,
                    strand,
                    info.length,
                    info.circular,
                    window_len,
                    res.transl_table,
                )
                wf = window_features(index, ws, we, "-") if strand == "-" else plus
                # the target's length (decoder items) is counted here, its spelling is the trainer's
                target = encode_pointer_target(wf, we - ws)
                key = f"{prefix}_{si:04d}_{ws:010d}_{'p' if strand == '+' else 'm'}"
                dna = sample_dna(seqs[seqid], ws, we, strand)
                features = features_to_json(wf, we - ws)
                writers[split].write(key, sample_fields(dna, features, meta.to_json()))
                res.samples[split] += 1
                res.target_tokens += len(target)
                res.max_target_tokens = max(res.max_target_tokens, len(target))
                res.long_targets += len(target) + 1 > TRAIN_MAX_TGT_TOKENS
                res.long_windows += encoder_tokens_estimate(dna) > TRAIN_MAX_SRC_TOKENS
                for f in wf:
                    res.window_features[f.type] += 1
                    res.partial_window_features += f.cut_left or f.cut_right
        if bar is not None:
            bar.close()
        for s in SPLITS:
            res.shards.extend(writers[s].close())
    except BaseException:
        for w in writers.values():
            w.abort()
        raise
    res.seconds = time.perf_counter() - t0
    log.info(
        "genome=%s transl_table=%d (%s) bp=%d windows=%d samples=%d shards=%d seconds=%.2f",
        spec.name,
        res.transl_table,
        res.transl_table_source,
        res.bp,
        res.windows,
        sum(res.samples.values()),
        len(res.shards),
        res.seconds,
    )
    return res


def _strands(cfg: BakeConfig, genome: str, seqid: str, ws: int) -> tuple[str, ...]:
    if cfg.rc == "none":
        return ("+",)
    if cfg.rc == "both":
        return ("+", "-")
    return ("-",) if _unit(cfg.seed, genome, seqid, ws, "rc") < 0.5 else ("+",)


def _progress(cfg: BakeConfig, name: str, total: int, unit: str = "bp"):
    if not cfg.progress:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=name, unit=unit, unit_scale=unit == "bp", leave=False)


def bake_genome_safe(spec: GenomeSpec, cfg: BakeConfig, out_dir: str) -> GenomeResult:
    """``bake_genome`` that returns a failed result instead of raising a project error."""
    try:
        return bake_genome(spec, cfg, out_dir)
    except Dna2GffError as exc:
        log.debug("genome failed", exc_info=True)
        res = GenomeResult(spec.name, spec.fasta, spec.gff, status="failed", error=str(exc))
        if isinstance(exc, InputError):  # rebuilt by the caller: exceptions cross processes badly
            res.input_error = (exc.path, exc.reason, exc.line)
        if isinstance(exc, OutputError):  # a full disk is no genome's fault: the run stops
            res.output_error = (exc.path, exc.reason)
        return res


def bake_local(
    specs: Sequence[GenomeSpec], cfg: BakeConfig, out_dir: str | Path
) -> list[GenomeResult]:
    """Bake ``specs`` in this process or on a pool of ``cfg.workers`` processes (input order kept).

    With ``on_error='stop'`` the first failure cancels genomes not yet started; an output error
    (a full disk) always does.
    """
    out = str(out_dir)
    results: list[GenomeResult] = []
    if cfg.workers <= 1 or len(specs) <= 1:
        for spec in specs:
            results.append(bake_genome_safe(spec, cfg, out))
            if _stops(results[-1], cfg):
                break
        return results
    quiet = BakeConfig(**{**cfg.__dict__, "progress": False})
    ctx = mp.get_context("spawn" if _mpi_env() else "fork")
    pool = ProcessPoolExecutor(
        max_workers=min(cfg.workers, len(specs)), mp_context=ctx, initializer=_worker_init
    )
    bar = None
    try:
        futures = [pool.submit(bake_genome_safe, s, quiet, out) for s in specs]
        bar = _progress(cfg, "genomes", len(specs), unit="genome")  # after the workers forked
        stopping = False
        for fut in futures:
            if stopping and fut.cancel():
                continue
            r = fut.result()  # a started genome must finish so its temporary shards are known
            results.append(r)
            if bar is not None:
                bar.update(1)
            if _stops(r, cfg) and not stopping:
                stopping = True
                for f in futures:
                    f.cancel()
    except BaseException:  # SIGINT, SIGTERM, a dead worker: no worker may write on after us
        _stop_pool(pool)
        raise
    pool.shutdown(wait=True)
    if bar is not None:
        bar.close()
    return results


def _stops(r: GenomeResult, cfg: BakeConfig) -> bool:
    return r.status != "ok" and (cfg.on_error == "stop" or r.output_error is not None)


def _worker_init() -> None:
    """Pool workers leave SIGINT to the parent (a terminal's Ctrl-C reaches the whole group) and
    end on SIGTERM by raising ``SystemExit``, so their shard writers delete their temporaries."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _stop_pool(pool: ProcessPoolExecutor) -> None:
    """Cancel genomes not started, SIGTERM the workers (each deletes its temporary shards, see
    ``_worker_init``) and wait for them, so none writes after the caller's clean-up."""
    procs = list((getattr(pool, "_processes", None) or {}).values())  # no public API in 3.11
    pool.shutdown(wait=False, cancel_futures=True)
    for p in procs:
        if p.is_alive():
            p.terminate()
    for p in procs:
        p.join(timeout=60)
        if p.is_alive():
            p.kill()
            p.join()


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (a batch system's kill, ``timeout``) unwinds like Ctrl-C, so clean-up runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    old = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _mpi_env() -> bool:
    """True when launched by an MPI launcher (importing mpi4py otherwise would be wasted time)."""
    return any(
        k in os.environ
        for k in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS")
    )


def mpi_comm():
    """The MPI world communicator when running under MPI with more than one rank, else None."""
    if not _mpi_env():
        return None
    try:
        from mpi4py import MPI
    except ImportError:
        log.warning("MPI launcher detected but mpi4py is missing: baking everything on this rank")
        return None
    comm = MPI.COMM_WORLD
    return comm if comm.Get_size() > 1 else None


def check_specs(specs: Sequence[GenomeSpec]) -> None:
    """Genome names must be unique, also after reduction to shard-name characters."""
    if not specs:
        raise ConfigError("no genomes to bake")
    seen: dict[str, str] = {}
    for s in specs:
        key = safe_name(s.name)
        if key in seen:
            raise ConfigError(
                f"genome names {seen[key]!r} and {s.name!r} give the same shard prefix {key!r}"
            )
        seen[key] = s.name


def bake(
    specs: Sequence[GenomeSpec],
    cfg: BakeConfig,
    out_dir: str | Path,
    extract_tokens: str | Path | None = None,
    argv: Sequence[str] | None = None,
    existing: str = "refuse",
) -> tuple[Manifest | None, list[GenomeResult]]:
    """Bake every genome, then (rank 0) publish shards, ``manifest.json`` and the token file.

    Returns ``(manifest, results)`` on rank 0 and ``(None, [])`` elsewhere. With
    ``on_error='stop'`` any failure removes this run's temporary shards and raises
    ``Dna2GffError``; with ``'skip'`` failed genomes are listed in the manifest. A second run
    into the same folder while this one holds ``OUT_DIR/.bake.lock`` fails with ``ConfigError``.
    ``existing`` says what happens to genomes of an earlier bake in the folder that this run
    does not bake (``baking.shards.manifest.plan_rerun``: refuse, append or overwrite). Under
    the lock, temporaries of a killed earlier run are deleted first; an interrupted run (SIGINT,
    SIGTERM, an error) deletes its own.
    """
    from baking.shards.manifest import Rerun, plan_rerun

    check_specs(specs)
    missing = [g for g in cfg.val_genomes if g not in {s.name for s in specs}]
    if missing:
        raise ConfigError(f"val_genomes names unknown genomes: {', '.join(missing)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    comm = mpi_comm()
    rank = comm.Get_rank() if comm is not None else 0
    with ExitStack() as stack:
        stack.enter_context(_sigterm_as_interrupt())
        busy: str | None = None
        rerun = Rerun()
        if rank == 0:  # one lock per run: rank 0 publishes, the other ranks only write temporaries
            try:
                stack.enter_context(output_lock(out))
                _sweep_stale(out)  # before any rank writes: every temporary here is stale
                rerun = plan_rerun(out, [s.name for s in specs], cfg, existing)
            except Dna2GffError as exc:
                busy = str(exc)
        if comm is not None:
            busy = comm.bcast(busy, root=0)
        if busy is not None:
            raise ConfigError(busy)
        done = _bake_and_publish(specs, cfg, out, comm, extract_tokens, argv, rerun)
    return done


def _sweep_stale(out: Path) -> None:
    """Delete every temporary of an earlier run that could not clean up (SIGKILL, power loss)."""
    from baking.shards.manifest import MANIFEST

    files, size = sweep_temps(out)
    for p in out.glob(f".{MANIFEST}.*.tmp.json"):  # ``atomic_path``'s name for the manifest
        files, size = files + 1, size + p.stat().st_size
        p.unlink(missing_ok=True)
    if files:
        log.info("removed %d temporary files (%d bytes) left by an interrupted run", files, size)


def _bake_and_publish(
    specs: Sequence[GenomeSpec],
    cfg: BakeConfig,
    out: Path,
    comm,
    extract_tokens: str | Path | None,
    argv: Sequence[str] | None,
    rerun: Rerun,
) -> tuple[Manifest | None, list[GenomeResult]]:
    """``bake`` once the output folder is locked: bake this rank's genomes, then publish.

    Whatever ends it early (an error, SIGINT, SIGTERM) deletes the temporary shards of the
    genomes this process is answerable for: its own while baking, every genome's once rank 0
    has gathered them.
    """
    rank, size = (comm.Get_rank(), comm.Get_size()) if comm is not None else (0, 1)
    mine = list(specs[rank::size])
    answerable = {safe_name(s.name) for s in mine}
    try:
        results = bake_local(mine, cfg, out)
        if comm is not None:
            gathered = comm.gather(results, root=0)
            if rank == 0:
                order = {s.name: i for i, s in enumerate(specs)}
                answerable = {safe_name(s.name) for s in specs}
                results = sorted(
                    (r for part in gathered for r in part), key=lambda r: order[r.name]
                )
        error, manifest = (
            _publish(specs, results, cfg, out, extract_tokens, argv, rerun)
            if rank == 0
            else (None, None)
        )
    except BaseException:
        sweep_temps(out, answerable)
        _remove_empty_splits(out)
        raise
    if comm is not None:
        error = comm.bcast(error, root=0)
    if error is not None:  # rebuilt here: the project's exceptions do not survive a bcast
        if isinstance(error, tuple):  # (path, reason): OutputError; (path, reason, line): input
            raise (OutputError(*error) if len(error) == 2 else InputError(*error))
        raise Dna2GffError(error)
    return manifest, results if rank == 0 else []


def _remove_empty_splits(out: Path) -> None:
    """``train/``/``val/`` folders a failed run created and left empty (``rmdir`` refuses any
    folder that holds a file, so an earlier bake's are safe)."""
    for split in SPLITS:
        with suppress(OSError):
            (out / split).rmdir()


def _publish(
    specs: Sequence[GenomeSpec],
    results: list[GenomeResult],
    cfg: BakeConfig,
    out: Path,
    extract_tokens: str | Path | None,
    argv: Sequence[str] | None,
    rerun: Rerun,
) -> tuple[str | tuple | None, Manifest | None]:
    """Rank 0: rename the shards, write ``manifest.json`` and the token file, or, when the run
    failed, delete its temporaries. Returns (the error to raise on every rank, the manifest).

    The manifest is written to its temporary file *before* the shards are renamed: on a full
    disk it is the write that fails, and the run then leaves its temporaries to the clean-up
    instead of published shards that no manifest describes.
    """
    from baking.common.files import atomic_path
    from baking.formats.tokens_file import merge_tokens
    from baking.shards.manifest import (
        MANIFEST,
        build_manifest,
        manifest_text,
        merge_genomes,
        stale_shards,
        types_in_targets,
    )
    from baking.shards.writer import finalise
    from baking.target_format.grammar import target_vocabulary

    failed = [r for r in results if r.status != "ok"]
    ok_shards = [s for r in results if r.status == "ok" for s in r.shards]
    fatal = next((r for r in failed if r.output_error is not None), None)
    if fatal is not None or (failed and (cfg.on_error == "stop" or len(failed) == len(specs))):
        sweep_temps(out, {safe_name(s.name) for s in specs})
        _remove_empty_splits(out)
        if fatal is not None:
            return fatal.output_error, None
        if len(failed) > 1:
            error = failed[0].error or f"genome {failed[0].name} failed"
            return f"{error} (and {len(failed) - 1} more failed genomes)", None
        return failed[0].input_error or failed[0].error or f"genome {failed[0].name} failed", None
    for r in failed:
        log.warning("skipped genome=%s error=%s", r.name, r.error)
    manifest = build_manifest(results, cfg, argv)
    if rerun.keep is not None:
        manifest = merge_genomes(rerun.keep, manifest, cfg, argv)
    with atomic_path(out / MANIFEST) as tmp:
        tmp.write_text(manifest_text(manifest), encoding="utf-8")
        finalise(out, ok_shards)
        listed = {s.path for s in ok_shards}
        for p in [*stale_shards(out, [s.name for s in specs], listed), *rerun.drop]:
            if p.relative_to(out).as_posix() not in listed:  # a same-prefix earlier genome
                p.unlink(missing_ok=True)
    warn_lengths(manifest.totals, cfg.window_len)
    if extract_tokens is not None:
        seen = types_in_targets(results, cfg.types)
        merge_tokens(extract_tokens, target_vocabulary(seen))
    return None, manifest


def format_summary(results: Sequence[GenomeResult], seconds: float, types: Sequence[str]) -> str:
    """The final table: one row per genome and a total (Mbp/s over the wall time)."""
    ok = [r for r in results if r.status == "ok"]
    type_cols = [t for t in types if any(r.features[t] for r in ok)]
    head = ["genome", "code", "Mbp", "windows", "samples", *type_cols, "shards", "seconds", "Mbp/s"]
    rows = []
    for r in results:
        if r.status != "ok":
            rows.append([r.name, "FAILED", (r.error or "")[:60]])
            continue
        rows.append(
            [
                r.name,
                str(r.transl_table),
                f"{r.bp / 1e6:.3f}",
                str(r.windows),
                str(sum(r.samples.values())),
                *[str(r.features[t]) for t in type_cols],
                str(len(r.shards)),
                f"{r.seconds:.2f}",
                f"{r.bp / 1e6 / max(r.seconds, 1e-9):.1f}",
            ]
        )
    bp = sum(r.bp for r in ok)
    rows.append(
        [
            f"TOTAL ({len(ok)})",
            "",
            f"{bp / 1e6:.3f}",
            str(sum(r.windows for r in ok)),
            str(sum(sum(r.samples.values()) for r in ok)),
            *[str(sum(r.features[t] for r in ok)) for t in type_cols],
            str(sum(len(r.shards) for r in ok)),
            f"{seconds:.2f}",
            f"{bp / 1e6 / max(seconds, 1e-9):.1f}",
        ]
    )
    widths = [max(len(x[i]) for x in [head, *rows] if i < len(x)) for i in range(len(head))]
    lines = ["  ".join(c.ljust(widths[i]) for i, c in enumerate(row)) for row in [head, *rows]]
    return "\n".join(lines)
