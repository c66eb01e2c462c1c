"""Genome FASTA -> windows -> constrained generation -> stitch/merge -> ORF snapping -> GFF3.

``annotate(model_dir, fasta, out, options)`` is the command on one genome (many genomes and
``torchrun`` ranks: ``annotate_many``); ``annotate_sequences`` the in-memory core (tests,
benchmarks), which is ``decode_windows`` (the model, batch by batch; a rank runs its share of
the batches) then ``finish_sequences`` (no model). Windows of all sequences are batched together; every
sequence's features are merged as described in ``merge.py``; CDS are snapped onto valid ORFs
(``snap.py``) unless switched off. Output: ``##sequence-region`` and a ``region`` line per sequence
(``Is_circular=true`` for circular ones, which lets origin-spanning features keep ``end > length``
as the GFF3 specification writes them), then for each prediction a ``gene`` with its child (CDS,
tRNA, ...) linked by ``ID``/``Parent``, source ``dna2gff``, score = the model's probability of the
feature's tokens (under the constrained distribution), named by the attribute
``score_type=model_probability``. The file is written atomically, and with it on request the
proteins (``.faa``) and gene sequences (``.ffn``) of ``baking.gene_sequences``.
"""

from __future__ import annotations

import functools
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from baking.common.errors import ConfigError, InputError
from baking.common.files import check_output
from baking.formats.fasta import reverse_complement
from baking.formats.gff3 import GFFFeature, write_gff3
from baking.target_format.grammar import DEFAULT_FEATURE_TYPES, PHASED_TYPES, target_vocabulary
from baking.target_format.pointers import MIN_ORF_CODONS
from baking.target_format.windows import WindowMeta, plan_windows, window_dna
from trainer.inference.adapt import SequenceInput, adapt_genome
from trainer.inference.batch_pool import batch_processes, decoded_batches
from trainer.inference.generate import GeneratedTarget, features_with_logprobs, generate_targets
from trainer.inference.merge import (
    MergeStats,
    Prediction,
    WindowCover,
    drop_outvoted,
    judged_votes,
    merge_windows,
)
from trainer.inference.select import select_genome
from trainer.inference.snap import complete_cds, genetic_code, snap_cds
from trainer.model.generation import SELECTIONS, DecodingSettings

log = logging.getLogger(__name__)

SOURCE = "dna2gff"
DECODING_OPTIONS = ("num_beams", "overlap", "min_votes", "min_orf_codons", "selection", "adapt")
"""The options a model folder may record as its defaults (``generation_config.json``)."""


@dataclass
class AnnotateOptions:
    """How to annotate; every field is a command-line option of ``annotate``."""

    batch_size: int = 64
    num_beams: int = 1
    max_new_tokens: int = 256
    overlap: int | None = None
    """Bases shared by neighbouring windows; default half the window (most genes are then whole
    in at least one window: 83% of E. coli's CDS at 2000 bp, against 70% with a quarter)."""
    window_len: int | None = None
    """Only for a model whose config lacks ``window_len`` (it wins otherwise)."""
    feature_types: tuple[str, ...] | None = None
    """Types to write (each must be one the model knows; default all of them). A model whose
    config lacks ``feature_types`` decodes exactly these."""
    snap: bool = True
    complete_orfs: bool = True
    """Complete a CDS whose one end no window closed into an ORF from its closed end."""
    snap_window: int = 30
    min_votes: float = 0.5
    """A whole CDS (completed ones too) that several windows hold whole must have been predicted
    by this share of them (0 = off)."""
    one_start_per_stop: bool = True
    """Keep one CDS per stop codon (the best-supported start)."""
    selection: str = "votes"
    """How CDS are chosen after snapping: ``votes`` (``min_votes``, then ``one_start_per_stop``)
    or ``genome`` (every candidate scored from the windows, one consistent set chosen over the
    whole sequence under overlap rules; ``select.py``), which replaces both."""
    adapt: bool = False
    """Learn the genome's own coding and start statistics from the model's confident genes and
    choose CDS among every ORF with them and the windows' votes together (``adapt.py``)."""
    orf_constraint: bool = True
    """Decode a CDS only as a valid ORF of the window (``--transl_table``)."""
    min_orf_codons: int | None = None
    """With the ORF constraint: the shortest whole CDS (codons, start and stop included); None =
    the one the model's config records (``tune_orf``), else ``MIN_ORF_CODONS`` (30)."""
    transl_table: int = 11
    circular: tuple[str, ...] = ()
    """Sequence ids to treat as circular; ``("all",)`` for every sequence."""
    device: str = "cpu"
    bf16: bool | None = None
    """bfloat16 autocast; default on for CUDA, off on CPU."""
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("batch_size", "num_beams", "max_new_tokens"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.overlap is not None and self.overlap < 0:
            raise ConfigError(f"overlap must be >= 0, got {self.overlap}")
        if self.min_orf_codons is not None and self.min_orf_codons < 2:
            raise ConfigError(
                f"min_orf_codons must be >= 2 (a start and a stop codon), got {self.min_orf_codons}"
            )
        if self.snap_window < 0:
            raise ConfigError(f"snap_window must be >= 0, got {self.snap_window}")
        if self.selection not in SELECTIONS:
            raise ConfigError(
                f"selection must be one of {', '.join(SELECTIONS)}, got {self.selection!r}"
            )
        if not 0.0 <= self.min_votes <= 1.0:  # a share of windows; also refuses NaN
            raise ConfigError(f"min_votes must be a share in [0, 1], got {self.min_votes}")
        genetic_code(self.transl_table)  # raises ConfigError for an unknown table
        check_device(self.device)


def check_device(device: str) -> None:
    """Refuse a device this machine does not have before a model is loaded onto it.

    Without this, ``--device cuda`` on a machine without a GPU fails inside the weights reader
    and the error names ``model.safetensors``, which is not what is wrong.
    """
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"--device={device!r} is not a device (cpu, cuda, cuda:1, ...)") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"--device={device}: no CUDA GPU is available on this machine; use --device cpu"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(
                f"--device={device}: this machine has {torch.cuda.device_count()} CUDA GPU(s) "
                f"(cuda:0 .. cuda:{torch.cuda.device_count() - 1})"
            )
    elif dev.type not in ("cpu", "meta") and not _backend_available(dev.type):
        raise ConfigError(f"--device={device}: no {dev.type} device is available on this machine")


def _backend_available(kind: str) -> bool:
    backend = getattr(torch, kind, None) or getattr(torch.backends, kind, None)
    is_available = getattr(backend, "is_available", None)
    return bool(is_available()) if callable(is_available) else False


@dataclass
class AnnotateSummary:
    """Figures of one run, logged and returned (benchmarks read ``bp_per_s``)."""

    sequences: int = 0
    bp: int = 0
    windows: int = 0
    seconds: float = 0.0
    features: dict[str, int] = field(default_factory=dict)
    snap: dict[str, int] = field(default_factory=dict)
    merge: dict[str, int] = field(default_factory=dict)
    truncated_windows: int = 0
    long_windows: int = 0
    """Windows over the encoder length the model was trained with (``config.max_src_tokens``)."""
    longest_window_tokens: int = 0

    @property
    def bp_per_s(self) -> float:
        return self.bp / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "bp_per_s": self.bp_per_s}


def _is_circular(seqid: str, circular: Sequence[str]) -> bool:
    return "all" in circular or seqid in circular


def _batches(items: Any, size: int) -> Any:
    batch: list = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def min_orf_codons(options: AnnotateOptions, config: Any) -> int:
    """The ORF layer's shortest whole CDS: the option, else the model's tuned N, else 30.

    The tuned N is in the folder's ``generation_config.json`` (``with_decoding`` puts it into the
    options); a folder written before that file existed recorded it in ``config.json``."""
    if options.min_orf_codons is not None:
        return options.min_orf_codons
    recorded = getattr(config, "min_orf_codons", None)
    return int(recorded) if recorded is not None else MIN_ORF_CODONS


def with_decoding(
    options: AnnotateOptions,
    decoding: DecodingSettings | None,
    given: Sequence[str] = DECODING_OPTIONS,
) -> AnnotateOptions:
    """``options`` with the model's recorded decoding settings as defaults.

    ``given`` names the options the user set (a command-line flag wins over the model); the
    library's callers set every option, so by default only ``min_orf_codons`` left at None is
    filled. Without recorded settings the options are returned as they are (today's defaults)."""
    if decoding is None:
        return options
    changes = {
        name: value
        for name, value in decoding.recorded().items()
        if name not in given or (name == "min_orf_codons" and options.min_orf_codons is None)
    }
    return replace(options, **changes) if changes else options


def window_stride(options: AnnotateOptions, window_len: int) -> int:
    """Distance between window starts: the window minus the overlap (default half)."""
    overlap = options.overlap if options.overlap is not None else window_len // 2
    if overlap >= window_len:
        raise ConfigError(f"overlap={overlap} must be smaller than window_len={window_len}")
    return window_len - overlap


def iter_windows(
    seqs: Sequence[tuple[str, str]], window_len: int, stride: int, circular: Sequence[bool]
) -> Iterator[tuple[int, WindowMeta, str]]:
    """``(sequence index, window, + strand DNA)`` for every window, sequence by sequence.

    Windows follow the baker's plan (``baking.target_format.windows.plan_windows``): on a circular sequence they
    wrap over the origin, on a linear one the last window ends at the sequence end.
    """
    for i, (seqid, seq) in enumerate(seqs):
        n = len(seq)
        if n == 0:
            continue
        for start, end in plan_windows(n, window_len, stride, circular=circular[i]):
            meta = WindowMeta("", seqid, start, end, "+", n, circular[i], window_len)
            yield i, meta, window_dna(seq, start, end)


@dataclass(frozen=True)
class WindowResult:
    """What generation wrote for one window: ``index`` is the window's place in the order
    ``iter_windows`` gives (merging reads window numbers from it), ``seq`` its sequence's index."""

    index: int
    seq: int
    meta: WindowMeta
    features: list
    complete: bool
    source_tokens: int = 0
    """Encoder tokens of the window (``GeneratedTarget.source_tokens``; 0 where not known)."""


def resolve_options(options: AnnotateOptions, model: Any) -> AnnotateOptions:
    """``options`` with the ORF layer's N fixed (one N for the ORF decoder and completed CDS)."""
    return replace(options, min_orf_codons=min_orf_codons(options, getattr(model, "config", None)))


def count_batches(
    seqs: Sequence[tuple[str, str]], options: AnnotateOptions, window_len: int
) -> int:
    """How many batches ``decode_windows`` cuts ``seqs`` into (ranks share them by number)."""
    stride = window_stride(options, window_len)
    circular = [_is_circular(sid, options.circular) for sid, _ in seqs]
    n = sum(1 for _ in iter_windows(seqs, window_len, stride, circular))
    return -(-n // options.batch_size)


def decode_windows(
    model: Any,
    tokenizer: Any,
    seqs: Sequence[tuple[str, str]],
    options: AnnotateOptions,
    window_len: int,
    feature_types: Sequence[str],
    generate: Callable[..., list[GeneratedTarget]] | None = None,
    *,
    run_batch: Callable[[int], bool] | None = None,
    desc: str = "annotate",
    nested: bool = False,
) -> list[WindowResult]:
    """Generate every window of ``seqs`` (or the batches ``run_batch(k)`` accepts) -> features.

    Batches are cut the same way whatever runs them, so a batch's result does not depend on how
    many processes share the work (``annotate_many``). Arguments as ``annotate_sequences``;
    ``desc`` names the progress bar, ``nested`` puts it under a bar over genomes.
    """
    options = resolve_options(options, model)
    min_codons = min_orf_codons(options, None)
    use_bf16 = options.bf16 if options.bf16 is not None else str(options.device).startswith("cuda")
    # on a CPU: bf16 is the fast path's bfloat16 encoder (step_decoder), which
    # keeps the decoding in float32 and on both cores; autocast elsewhere
    cpu_bf16 = use_bf16 and generate is None and torch.device(options.device).type == "cpu"
    own_decoder = generate is None
    if generate is None:
        code = genetic_code(options.transl_table) if options.orf_constraint else None
        generate = functools.partial(
            generate_targets, orf_code=code, min_orf_codons=min_codons, bf16=cpu_bf16
        )
    stride = window_stride(options, window_len)
    circular = [_is_circular(sid, options.circular) for sid, _ in seqs]
    decoded: list[WindowResult] = []
    autocast = (
        torch.autocast(device_type=torch.device(options.device).type, dtype=torch.bfloat16)
        if use_bf16 and not cpu_bf16
        else nullcontext()
    )
    bar = tqdm(
        total=sum(len(s) for _, s in seqs),
        unit="bp",
        unit_scale=True,
        desc=desc,
        disable=not options.progress,
        leave=not nested,
        position=1 if nested else None,
    )
    windows = enumerate(iter_windows(seqs, window_len, stride, circular))
    mine: list[list[tuple[int, tuple[int, WindowMeta, str]]]] = []
    for k, batch in enumerate(_batches(windows, options.batch_size)):
        if run_batch is not None and not run_batch(k):  # another rank's (in step with ours)
            bar.update(min(bar.total - bar.n, stride * len(batch)))
        else:
            mine.append(batch)

    def decode(dna: Sequence[str]) -> list[GeneratedTarget]:
        return generate(
            model,
            tokenizer,
            dna,
            window_len,
            feature_types,
            max_new_tokens=options.max_new_tokens,
            num_beams=options.num_beams,
            device=options.device,
        )

    # annotate's own decoder takes whole batches in one forked process per core; a caller's
    # ``generate`` (the benchmark's reference path, tests' oracles) runs here, batch by batch
    processes = batch_processes(model, options.device, len(mine)) if own_decoder else 1
    with bar, autocast:
        dna_batches = ([dna for _, (_, _, dna) in batch] for batch in mine)
        with decoded_batches(decode, dna_batches, processes) as results:
            for batch, targets in zip(mine, results, strict=True):
                for (w, (i, meta, _)), target in zip(batch, targets):
                    feats = features_with_logprobs(
                        target.tokens, target.token_logprobs, meta.length
                    )
                    n_src = int(getattr(target, "source_tokens", 0))  # an oracle may not count
                    decoded.append(WindowResult(w, i, meta, feats, target.complete, n_src))
                bar.update(min(bar.total - bar.n, stride * len(batch)))
    return decoded


def annotate_sequences(
    model: Any,
    tokenizer: Any,
    seqs: Sequence[tuple[str, str]],
    options: AnnotateOptions,
    window_len: int,
    feature_types: Sequence[str],
    generate: Callable[..., list[GeneratedTarget]] | None = None,
) -> tuple[list[GFFFeature], dict[str, tuple[int, int]], AnnotateSummary]:
    """Annotate ``(seqid, DNA)`` pairs; returns GFF3 features, sequence regions and a summary.

    ``generate`` has ``generate_targets``' signature; tests pass an oracle to check everything
    after the model (windows, stitching, merging, snapping, GFF3) against a known annotation.
    The default decoder applies the ORF constraint unless ``options.orf_constraint`` is off.
    """
    t0 = time.perf_counter()
    decoded = decode_windows(model, tokenizer, seqs, options, window_len, feature_types, generate)
    trained_len = getattr(getattr(model, "config", None), "max_src_tokens", None)
    return finish_sequences(seqs, decoded, resolve_options(options, model), t0, trained_len)


def finish_sequences(
    seqs: Sequence[tuple[str, str]],
    decoded: Sequence[WindowResult],
    options: AnnotateOptions,
    t0: float,
    trained_len: int | None = None,
) -> tuple[list[GFFFeature], dict[str, tuple[int, int]], AnnotateSummary]:
    """Every window's features (from one process or gathered from several) -> GFF3 features.

    ``options`` as ``resolve_options`` returns them; ``t0`` the ``perf_counter`` the run began at;
    ``trained_len`` the encoder length the model was trained with (windows over it are counted).
    """
    circular = [_is_circular(sid, options.circular) for sid, _ in seqs]
    results: list[list[tuple[WindowMeta, list]]] = [[] for _ in seqs]
    summary = AnnotateSummary(sequences=len(seqs), bp=sum(len(s) for _, s in seqs))
    for r in sorted(decoded, key=lambda r: r.index):
        summary.windows += 1
        summary.truncated_windows += not r.complete
        if trained_len is not None and r.source_tokens > trained_len:
            summary.long_windows += 1  # seen whole, as in training, but never this long
        summary.longest_window_tokens = max(summary.longest_window_tokens, r.source_tokens)
        results[r.seq].append((r.meta, r.features))
    if summary.long_windows:
        log.warning(
            "%d of %d windows are longer than the %d encoder tokens the model was trained with "
            "(longest %d): the encoder sees them whole, as in training, but never saw one this long",
            summary.long_windows,
            summary.windows,
            trained_len,
            summary.longest_window_tokens,
        )
    features, regions = _finish(seqs, circular, results, options, summary)
    summary.seconds = time.perf_counter() - t0
    log.info(
        "annotate sequences=%d bp=%d windows=%d seconds=%.2f bp_per_s=%.0f features=%s snap=%s "
        "merge=%s truncated_windows=%d",
        summary.sequences,
        summary.bp,
        summary.windows,
        summary.seconds,
        summary.bp_per_s,
        summary.features,
        summary.snap,
        summary.merge,
        summary.truncated_windows,
    )
    return features, regions, summary


def _snap_all(
    preds: Sequence[Prediction], seq: str, circular: bool, options: AnnotateOptions, snaps: Counter
) -> list[tuple[Prediction, str]]:
    """Snap complete CDS onto ORFs; two predictions landing on one ORF keep the more probable
    (with ``--selection genome`` it also keeps both predictions' windows: they are its votes)."""
    code = genetic_code(options.transl_table)
    final: dict[tuple[int, int, str, str], tuple[Prediction, str]] = {}
    minus = ""  # the sequence's reverse complement, made once when first needed
    for p in preds:
        status = ""
        if p.orphan:
            if p.strand == "-" and not minus:
                minus = reverse_complement(seq)
            done = complete_cds(
                seq,
                p.start,
                p.end,
                p.strand,
                code,
                open_left=p.partial_left,
                open_right=p.partial_right,
                window=options.snap_window,
                minus=minus or None,
            )
            # the ORF decoder's shortest whole CDS holds for completed ones too: a model's
            # stray one-ended piece otherwise becomes a 2-codon "gene"
            if done is not None and (done[1] - done[0] + 1) // 3 < (
                options.min_orf_codons or MIN_ORF_CODONS
            ):
                snaps["completion_short"] += 1
                continue
            snaps["completed" if done else "completion_failed"] += 1
            if done is None:
                continue
            p = replace(
                p,
                start=done[0],
                end=done[1],
                phase=0,
                orphan=False,
                partial_left=False,
                partial_right=False,
            )
            status = "completed"
        if p.type == "CDS" and options.snap and not p.partial and status != "completed":
            res = snap_cds(
                seq, p.start, p.end, p.strand, code, window=options.snap_window, circular=circular
            )
            status = res.status
            snaps[status] += 1
            if status == "moved":
                p = replace(p, start=res.start, end=res.end, phase=0)
        key = (p.start, p.end, p.strand, p.type)
        if key in final:
            snaps["merged"] += 1
            other = final[key][0]
            if options.selection == "genome":  # one gene: every window that wrote it counts
                windows = p.windows | other.windows
                p, other = replace(p, windows=windows), replace(other, windows=windows)
                final[key] = (other, final[key][1])
            if other.prob >= p.prob:
                continue
        final[key] = (p, status)
    return [final[k] for k in sorted(final)]


def _one_start_per_stop(
    snapped: Sequence[tuple[Prediction, str]], snaps: Counter, metas: Sequence[WindowMeta]
) -> list[tuple[Prediction, str]]:
    """Keep one CDS per stop codon (strand and 3' end): the one more of the windows holding both
    starts predicted (``merge.judged_votes``: a window that cut the farther start off never saw
    it), then the one more windows predicted, then the more probable. Overlapping windows that
    disagree on a gene's start otherwise each leave a copy; a bacterial stop codon ends one gene."""
    best: dict[tuple[str, int], int] = {}  # stop codon -> index into snapped
    held_by = WindowCover(metas)
    for i, (p, _) in enumerate(snapped):
        if p.type != "CDS":
            continue
        stop = (p.strand, p.end if p.strand == "+" else p.start)
        if stop in best:
            snaps["same_stop_dropped"] += 1
            q = snapped[best[stop]][0]
            votes_q, votes_p = judged_votes(q, p, held_by)
            if (votes_q, len(q.windows), q.prob) >= (votes_p, len(p.windows), p.prob):
                continue
        best[stop] = i
    kept = set(best.values())
    return [x for i, x in enumerate(snapped) if x[0].type != "CDS" or i in kept]


def _vote(
    snapped: list[tuple[Prediction, str]],
    metas: Sequence[WindowMeta],
    options: AnnotateOptions,
    stats: MergeStats,
    snaps: Counter,
) -> list[tuple[Prediction, str]]:
    """``--selection votes``: drop outvoted CDS, then keep one start per stop."""
    if options.min_votes > 0:  # after completion: a completed orphan is voted on too
        kept = drop_outvoted([p for p, _ in snapped], metas, options.min_votes, stats)
        ids = {id(p) for p in kept}
        snapped = [(p, s) for p, s in snapped if id(p) in ids]
    if options.one_start_per_stop:  # after the votes: an outvoted start does not compete
        snapped = _one_start_per_stop(snapped, snaps, metas)
    return snapped


def _finish(
    seqs: Sequence[tuple[str, str]],
    circular: Sequence[bool],
    results: Sequence[Sequence[tuple[WindowMeta, list]]],
    options: AnnotateOptions,
    summary: AnnotateSummary,
) -> tuple[list[GFFFeature], dict[str, tuple[int, int]]]:
    out: list[GFFFeature] = []
    regions: dict[str, tuple[int, int]] = {}
    counts: Counter[str] = Counter()
    snaps: Counter[str] = Counter()
    merge_total = MergeStats()
    keep = set(options.feature_types) if options.feature_types else None
    chosen: list[list[tuple[Prediction, str]]] = []
    inputs: list[SequenceInput] = []
    written: list[tuple[str, int, bool]] = []
    for i, (seqid, seq) in enumerate(seqs):
        if not seq:
            continue
        regions[seqid] = (1, len(seq))
        written.append((seqid, len(seq), circular[i]))
        preds, stats = merge_windows(results[i], keep_cds_orphans=options.complete_orfs)
        metas = [m for m, _ in results[i]]
        snapped = _snap_all(preds, seq, circular[i], options, snaps)
        if options.adapt:  # the seeds are what the votes keep; the candidates are every ORF
            by_votes = options.selection == "votes"  # else the votes only pick seeds: not counted
            voted = _vote(
                list(snapped),
                metas,
                options,
                stats if by_votes else MergeStats(),
                snaps if by_votes else Counter(),
            )
            inputs.append(SequenceInput(seqid, seq, circular[i], snapped, metas, voted))
            if options.selection == "genome":
                snapped = select_genome(snapped, metas, len(seq), circular[i], snaps)
            else:
                snapped = voted
        elif options.selection == "genome":  # replaces the votes and one start per stop
            snapped = select_genome(snapped, metas, len(seq), circular[i], snaps)
        else:
            snapped = _vote(snapped, metas, options, stats, snaps)
        for name, value in asdict(stats).items():
            setattr(merge_total, name, getattr(merge_total, name) + value)
        chosen.append(snapped)
    if options.adapt and inputs:  # one set of statistics for the whole genome (all contigs)
        adapted = adapt_genome(inputs, genetic_code(options.transl_table), counts=snaps)
        if adapted is not None:
            chosen = adapted
    n_gene = 0
    for (seqid, length, circ), snapped in zip(written, chosen):
        out.append(region_line(seqid, length, circ))
        for p, status in snapped:
            if keep is not None and p.type not in keep:
                continue
            n_gene += 1
            counts[p.type] += 1
            out.extend(gene_lines(n_gene, p, status))
    summary.features = dict(counts)
    summary.snap = dict(snaps)
    summary.merge = asdict(merge_total)
    return out, regions


def region_line(seqid: str, length: int, circular: bool) -> GFFFeature:
    """The ``region`` line of one sequence, as every dna2gff predictor writes it."""
    attrs: tuple[tuple[str, str], ...] = (("ID", f"{seqid}:1..{length}"),)
    if circular:
        attrs += (("Is_circular", "true"),)
    return GFFFeature(seqid, SOURCE, "region", 1, length, None, "+", None, attrs)


SCORE_TYPE = "model_probability"
"""What column 6 holds (attribute ``score_type``): the model's probability of the feature, the
mean over the windows that wrote it of the product of its tokens' probabilities (``merge.py``)."""


def gene_lines(
    n: int, p: Prediction, snap_status: str, score_type: str | None = SCORE_TYPE
) -> list[GFFFeature]:
    """A ``gene`` and its child feature (CDS, tRNA, ...) for one prediction; shared by annotate and
    the ORF-rule control so that both write the same GFF3. ``score_type`` names what the score
    column is (``None``: no attribute, for a score that is no model's)."""
    score = round(p.prob, 4)
    gene_id = f"gene{n}"
    extra: tuple[tuple[str, str], ...] = (("partial", "true"),) if p.partial else ()
    if score_type:
        extra += (("score_type", score_type),)
    gene = GFFFeature(
        p.seqid, SOURCE, "gene", p.start, p.end, score, p.strand, None, (("ID", gene_id), *extra)
    )
    child_attrs = (("ID", f"{p.type.lower()}{n}"), ("Parent", gene_id), *extra)
    if snap_status:
        child_attrs += (("snap", snap_status),)
    phase = (p.phase or 0) if p.type in PHASED_TYPES else None
    child = GFFFeature(p.seqid, SOURCE, p.type, p.start, p.end, score, p.strand, phase, child_attrs)
    return [gene, child]


def load_model(model_dir: str | Path, device: str) -> tuple[Any, Any]:
    """The model and tokenizer of a model folder (``InputError`` for a folder without weights)."""
    from trainer.model import Dna2GffModel
    from trainer.tokens.tokenizer import load_tokenizer

    folder = Path(model_dir)
    if not folder.is_dir():
        raise InputError(folder, "model folder not found")
    model = Dna2GffModel.from_pretrained(folder, map_location=device)
    model.eval()
    tokenizer = load_tokenizer(folder)
    return model, tokenizer


def resolve_grammar(model: Any, tokenizer: Any, options: AnnotateOptions) -> tuple[int, list[str]]:
    """Window length and feature types: the model's config first, the options as a fallback."""
    cfg = model.config
    window_len = cfg.window_len or options.window_len
    if not window_len:
        raise ConfigError(
            "the model's config.json has no window_len (set by training); pass --window_len"
        )
    if cfg.window_len and options.window_len and options.window_len != cfg.window_len:
        log.warning(
            "ignoring --window_len=%d: the model was trained on %d",
            options.window_len,
            cfg.window_len,
        )
    wanted = list(dict.fromkeys(options.feature_types or ()))
    known = model_feature_types(cfg, tokenizer)
    unknown = [t for t in wanted if t not in known]
    if unknown:
        raise ConfigError(
            f"--types: unknown feature type(s) {', '.join(unknown)}; the model knows "
            + (", ".join(known) if known else "none (its config and tokenizer name no type)")
        )
    if cfg.feature_types:  # decode with the grammar the model was trained on
        types = list(cfg.feature_types)
    else:
        types = wanted or [t for t in DEFAULT_FEATURE_TYPES if t in known]
    if not types:
        raise ConfigError(
            "no feature types: the model config and tokenizer name none; pass --types"
        )
    return int(window_len), types


def model_feature_types(cfg: Any, tokenizer: Any) -> list[str]:
    """The types a model can write: its config's, else every type token its tokenizer holds."""
    if cfg.feature_types:
        return list(cfg.feature_types)
    grammar = set(target_vocabulary(()))  # cut, strands, phases: not types
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    tokens = sorted((i, t) for t, i in vocab.items() if t.startswith("<") and t.endswith(">"))
    # ``<0>``..``<9>``: the digit tokens of tokenizers made before issue 16, never a type
    return [t[1:-1] for _, t in tokens if t not in grammar and len(t) > 2 and not t[1:-1].isdigit()]


def read_genome(fasta: str | Path) -> list[tuple[str, str]]:
    """A genome FASTA's ``(seqid, DNA)`` records (``InputError`` for a file that is not one)."""
    from baking.formats.fasta import read_fasta

    fasta = Path(fasta)
    if not fasta.is_file():
        raise InputError(fasta, "no such file")
    seqs = list(read_fasta(fasta))
    if not seqs:
        raise InputError(fasta, "no sequences (expected FASTA)")
    return seqs


def header_comment(
    model_dir: str | Path, config: Any, window_len: int, options: AnnotateOptions
) -> str:
    """The ``#`` line under the GFF3 version: model and the options that shape the calls.

    ``selection=genome`` is written when chosen; no ``selection=`` means votes, so the default's
    output stays byte for byte what it was before the option existed."""
    # ``coordinates=pointer``: the one target form since issue 16, still written so that a GFF3
    # header reads as it did when there were two
    comment = (
        f"dna2gff annotate model={Path(model_dir).name} window_len={window_len} "
        f"beams={options.num_beams} snap={options.snap} transl_table={options.transl_table} "
        f"coordinates=pointer orf_constraint={options.orf_constraint} "
        f"min_orf_codons={min_orf_codons(options, config)}"
    )
    if options.selection != "votes":
        comment += f" selection={options.selection}"
    if options.adapt:
        comment += " adapt=True"
    return comment


def write_outputs(
    seqs: Sequence[tuple[str, str]],
    features: Sequence[GFFFeature],
    regions: dict[str, tuple[int, int]],
    comment: str,
    transl_table: int,
    out: str | Path,
    faa: str | Path | None = None,
    ffn: str | Path | None = None,
) -> None:
    """Write one genome's GFF3 (and proteins / gene sequences when asked), each atomically.

    The FASTA files are written first and the GFF3 last, so a GFF3 that exists was written with
    its companions."""
    from baking.formats.fasta_out import write_fasta
    from baking.gene_sequences import gene_records

    if faa is not None or ffn is not None:
        records = gene_records(features, dict(seqs), genetic_code(transl_table))
        if faa is not None:
            write_fasta(faa, records.proteins)
        if ffn is not None:
            write_fasta(ffn, records.genes)
    write_gff3(out, features, regions, [comment])


def log_orf_layer(model: Any, options: AnnotateOptions) -> None:
    """Say which N the ORF layer uses and where it comes from."""
    if options.orf_constraint:
        n = min_orf_codons(options, model.config)
        decoding = getattr(model, "decoding", None)
        source = (
            "the model's generation_config.json (tuned)"
            if decoding is not None and decoding.min_orf_codons == options.min_orf_codons
            else "--min_orf_codons"
            if options.min_orf_codons is not None
            else "the model's config.json (tuned)"
            if model.config.min_orf_codons is not None
            else "the default"
        )
        log.info("ORF layer: a whole CDS spans >= %d codons (%s)", n, source)


def annotate(
    model_dir: str | Path,
    fasta: str | Path,
    out: str | Path,
    options: AnnotateOptions,
    *,
    faa: str | Path | None = None,
    ffn: str | Path | None = None,
) -> AnnotateSummary:
    """The ``annotate`` command on one genome: read FASTA, annotate every sequence, write GFF3
    (and ``faa`` proteins, ``ffn`` gene sequences) atomically. Many genomes, or several
    processes: ``annotate_many.annotate_genomes``, which writes the same bytes."""
    fasta = Path(fasta)
    folder = Path(model_dir)
    inputs = [fasta, *(folder / n for n in ("config.json", "model.safetensors"))]
    for path in (out, faa, ffn):
        if path is not None:
            check_output(path, inputs)
    seqs = read_genome(fasta)
    unknown = sorted(set(options.circular) - {"all"} - {sid for sid, _ in seqs})
    if unknown:
        raise ConfigError(f"--circular names sequences not in {fasta.name}: {', '.join(unknown)}")
    model, tokenizer = load_model(model_dir, options.device)
    options = with_decoding(options, getattr(model, "decoding", None))
    window_len, types = resolve_grammar(model, tokenizer, options)
    window_stride(options, window_len)  # fail before any work
    log_orf_layer(model, options)
    log.info(
        "model=%s window_len=%d types=%s options=%s", model_dir, window_len, types, asdict(options)
    )
    features, regions, summary = annotate_sequences(
        model, tokenizer, seqs, options, window_len, types
    )
    comment = header_comment(model_dir, model.config, window_len, options)
    write_outputs(seqs, features, regions, comment, options.transl_table, out, faa, ffn)
    return summary
