#!/usr/bin/env python3
"""Annotate throughput (bp/s) against Prodigal (pyrodigal) on the same genome, in the same run.

    python benchmarks/annotate.py                        # tiny random model, CPU, phage genome
    python benchmarks/annotate.py --size base --device cuda --genome C.crescentus

    python benchmarks/annotate.py --model MODEL --genome E.coli --circular --before \
        --num_beams 3 --overlap 1024 --max_new_tokens 256 --min_orf_codons 210 --threads 1

``--size base`` builds a model with DNABERT-2-117M's encoder shape (768 x 12 layers) and a decoder
of ``--decoder_layers`` layers, with random weights: throughput does not depend on the weights,
except that an untrained model rarely says END and so decodes every window to ``max_new_tokens``
(the worst case; the figures say how many windows ran out). Prints one key=value line per
predictor and the ratio annotate/Prodigal (goal on one H100: >= 1).

``--before`` also times the reference decoding path (``generate_targets(reference=True)``:
the model's general cached ``decode`` step, the code annotate ran before the fast path) on the
same genome and model in the same run, and says whether the two GFF3 are identical. ``--bf16``
adds a row for the fast path with its per-window part in bfloat16 (annotate's ``--bf16`` on a
CPU) and says how its GFF3 differs from the float32 fast path's. ``--paths`` picks the rows
(e.g. ``--paths bf16`` alone). With a shared genome's name (or ``--gff``) each row gets its CDS
exact and stop F1 against the RefSeq annotation. The box is shared, so each row gives the
process CPU seconds (children included) and the load average beside the wall clock.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from baking.evaluate.load import load_features  # noqa: E402
from baking.evaluate.metrics import Feature, compare  # noqa: E402
from baking.evaluate.prodigal import run_prodigal  # noqa: E402
from baking.formats.fasta import read_fasta  # noqa: E402
from baking.target_format.grammar import target_vocabulary  # noqa: E402
from trainer.fixtures import SHARED_DNABERT2, SHARED_GENOME_PAIRS  # noqa: E402
from trainer.inference.annotate import (  # noqa: E402
    AnnotateOptions,
    annotate_sequences,
    load_model,
    min_orf_codons,
    resolve_grammar,
)
from trainer.inference.generate import generate_targets  # noqa: E402
from trainer.inference.snap import genetic_code  # noqa: E402
from trainer.model import Dna2GffConfig, Dna2GffModel  # noqa: E402
from trainer.tokens.tokenizer import add_annotation_tokens, load_tokenizer  # noqa: E402

GENOMES = {name: fna for name, (fna, _gff) in SHARED_GENOME_PAIRS.items()}
REFERENCE_GFF = {name: gff for name, (_fna, gff) in SHARED_GENOME_PAIRS.items()}
TYPES = ["CDS", "tRNA", "rRNA"]
SIZES = {
    "tiny": dict(hidden_size=32, num_encoder_layers=2, num_attention_heads=2, intermediate_size=64),
    "base": dict(
        hidden_size=768, num_encoder_layers=12, num_attention_heads=12, intermediate_size=3072
    ),
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--genome", default="phage", help=f"{', '.join(GENOMES)} or a FASTA path")
    p.add_argument("--max_bp", type=int, default=0, help="use only the first N bp (0 = all)")
    p.add_argument("--model", help="a model folder to time instead of a random --size model")
    p.add_argument("--size", choices=sorted(SIZES), default="tiny")
    p.add_argument("--decoder_layers", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--window_len", type=int, default=1000)
    p.add_argument("--overlap", type=int, default=None)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--max_new_tokens", type=int, default=64)
    p.add_argument("--num_beams", type=int, default=1)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    p.add_argument("--min_orf_codons", type=int, default=None, help="annotate's option")
    p.add_argument("--circular", action="store_true", help="every sequence is circular")
    p.add_argument(
        "--before",
        action="store_true",
        help="also time the reference decoding path (the code before the fast path)",
    )
    p.add_argument(
        "--bf16",
        action="store_true",
        help="also time the fast path with the encoder, pointer memory and cross K/V in bfloat16",
    )
    p.add_argument(
        "--paths",
        help="comma-separated rows to run, of before, split, after, bf16 (default: after, plus before "
        "with --before and bf16 with --bf16)",
    )
    p.add_argument("--gff", help="reference GFF3 for CDS F1 (default: the shared genome's)")
    p.add_argument(
        "--before_threads",
        type=int,
        default=0,
        help="torch CPU threads for the --before row (0 = --threads): e.g. 1 for the one-thread "
        "figure the fast path is compared with, --threads 2 for the fast path on both cores",
    )
    p.add_argument(
        "--before_batch_size",
        type=int,
        default=0,
        help="windows per batch for the --before row (0 = --batch_size): the reference path "
        "decodes every window of a batch to the batch's longest, so it is timed at the batch "
        "it ran with (32) while the fast path runs at annotate's default (64)",
    )
    p.add_argument("--tokenizer", default=str(SHARED_DNABERT2), help="base tokenizer")
    return p


def main() -> None:
    args = build_parser().parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    fasta = GENOMES.get(args.genome, Path(args.genome))
    seqs = list(read_fasta(fasta))
    if args.max_bp:
        seqs = [(sid, s[: args.max_bp]) for sid, s in seqs][:1]
    bp = sum(len(s) for _, s in seqs)

    if args.model:  # a real model folder: its own window and types
        model, tok = load_model(args.model, args.device)
        window_len, types = resolve_grammar(model, tok, AnnotateOptions())
        args.size = Path(args.model).name
    else:
        window_len, types = args.window_len, TYPES
        tok = load_tokenizer(args.tokenizer)
        add_annotation_tokens(tok, target_vocabulary(types))
        cfg = Dna2GffConfig(
            vocab_size=tok.get_vocab_size(True),
            num_decoder_layers=min(args.decoder_layers, SIZES[args.size]["num_encoder_layers"]),
            window_len=window_len,
            feature_types=types,
            pointer_context_bp=0,
            encoder_aux_weight=0.0,
            **SIZES[args.size],
        )
        torch.manual_seed(0)
        model = Dna2GffModel(cfg).to(args.device).eval()
    params = sum(p.numel() for p in model.parameters())
    opts = AnnotateOptions(
        batch_size=args.batch_size,
        num_beams=args.num_beams,
        max_new_tokens=args.max_new_tokens,
        overlap=args.overlap,
        min_orf_codons=args.min_orf_codons,
        circular=("all",) if args.circular else (),
        device=args.device,
        progress=False,
    )
    if args.device.startswith("cuda"):  # warm-up: kernels, allocator
        warm = [(seqs[0][0], seqs[0][1][:20_000])]
        annotate_sequences(model, tok, warm, opts, window_len, types)
        torch.cuda.synchronize()
    gff = args.gff or REFERENCE_GFF.get(args.genome)
    ref = _reference(gff, seqs) if gff else None
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    rows = []
    gffs = {}
    after_threads = torch.get_num_threads()
    for label, (generate, changes) in _paths(args, model, opts).items():  # the reference first
        before = label.startswith("before")
        torch.set_num_threads((args.before_threads or after_threads) if before else after_threads)
        load0 = os.getloadavg()[0]
        t0, c0 = time.perf_counter(), _cpu_seconds()
        row_opts = dataclasses.replace(opts, **changes)
        if before and args.before_batch_size:
            row_opts = dataclasses.replace(row_opts, batch_size=args.before_batch_size)
        feats, _, summary = annotate_sequences(
            model, tok, seqs, row_opts, window_len, types, generate=generate
        )
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds, cpu = time.perf_counter() - t0, _cpu_seconds() - c0
        gffs[label.split()[0]] = feats
        pred = [_feature(f) for f in feats if f.type == "CDS"]
        load = f"{load0:.1f}/{os.getloadavg()[0]:.1f}"
        label = f"{label}, {torch.get_num_threads()} thread(s), batch {row_opts.batch_size}"
        rows.append((label, seconds, cpu, _f1(ref, pred), load))
        print(
            f"annotate path={label.split()[0]} genome={args.genome} bp={bp} size={args.size} "
            f"params={params} device={device} threads={torch.get_num_threads()} "
            f"window_len={window_len} windows={summary.windows} "
            f"truncated={summary.truncated_windows} batch={row_opts.batch_size} "
            f"max_new_tokens={args.max_new_tokens} beams={args.num_beams} "
            f"seconds={seconds:.2f} cpu_seconds={cpu:.2f} bp_per_s={bp / seconds:.0f} "
            f"mbp_per_min={bp / seconds * 60 / 1e6:.3f} cds={len(pred)} load_start/end={load}",
            flush=True,
        )
    t0, c0 = time.perf_counter(), time.process_time()
    prod = run_prodigal(seqs)
    load = f"{os.getloadavg()[0]:.1f}"
    rows.append(
        (
            "pyrodigal, one core",
            prod.seconds,
            time.process_time() - c0,
            _f1(ref, prod.features),
            load,
        )
    )
    print(
        f"prodigal genome={args.genome} bp={bp} seconds={prod.seconds:.2f} "
        f"bp_per_s={prod.bp_per_s:.0f} mbp_per_min={prod.bp_per_s * 60 / 1e6:.3f}"
    )
    ours = bp / rows[-2][1]
    print(f"ratio annotate/prodigal={ours / prod.bp_per_s:.4f}")
    for x, y in [("before", "after"), ("split", "after"), ("after", "bf16")]:
        if x in gffs and y in gffs:
            _compare_gff3(x, gffs[x], y, gffs[y])
    print(_table(rows, bp))


def _paths(args: argparse.Namespace, model: Any, opts: AnnotateOptions) -> dict[str, Any]:
    """Row label -> (``generate``, option changes), in the order they run: the reference first
    (the slowest; the speed-ups are against it). ``generate`` None is annotate's own decoder
    (whole batches in one forked process per core); ``split`` is the same fast path called
    from outside, which splits each batch over the cores instead (the code before the pool)."""
    names = args.paths.split(",") if args.paths else ["after"]
    if not args.paths:
        names = ["before"] * args.before + names + ["bf16"] * args.bf16
    kw: dict[str, Any] = dict(
        orf_code=genetic_code(opts.transl_table) if opts.orf_constraint else None,
        min_orf_codons=min_orf_codons(opts, model.config),
    )
    rows = {
        "before": (
            "before (reference path)",
            functools.partial(generate_targets, reference=True, **kw),
            {},
        ),
        "split": (
            "split (fast path, each batch split over the cores)",
            functools.partial(generate_targets, **kw),
            {},
        ),
        "after": ("after (fast path)", None, {}),
        "bf16": ("bf16 (fast path, bfloat16 encoder)", None, {"bf16": True}),
    }
    unknown = set(names) - set(rows)
    if unknown or not names:
        raise SystemExit(f"--paths: no row to run in {args.paths!r} ({', '.join(rows)})")
    return {rows[n][0]: rows[n][1:] for n in rows if n in names}


def _compare_gff3(x: str, a: list[Any], y: str, b: list[Any]) -> None:
    """Whether two rows wrote the same GFF3; the lines that differ (first 5 each way)."""
    only_a, only_b = set(map(str, a)) - set(map(str, b)), set(map(str, b)) - set(map(str, a))
    print(f"{x}_vs_{y}: same_gff3={a == b} differing_lines={len(only_a) + len(only_b)}")
    for line in sorted(only_a)[:5]:
        print(f"  only {x}: {line}")
    for line in sorted(only_b)[:5]:
        print(f"  only {y}: {line}")


def _cpu_seconds() -> float:
    """CPU seconds of this process and of its finished children: on the CPU the decoding of a
    batch is split over forked processes (``decode_workers``), whose time ``process_time`` misses."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def _reference(gff: Any, seqs: list[tuple[str, str]]) -> list[Feature]:
    """The reference CDS inside the annotated sequences (all of a ``--max_bp`` slice's)."""
    lengths = {sid: len(s) for sid, s in seqs}
    feats, _ = load_features(gff)
    return [
        f for f in feats if f.type == "CDS" and f.seqid in lengths and f.end <= lengths[f.seqid]
    ]


def _feature(f: Any) -> Feature:
    return Feature(f.seqid, f.type, f.start, f.end, f.strand)


def _f1(ref: list[Feature] | None, pred: list[Feature]) -> tuple[float, float] | None:
    if ref is None:
        return None
    report = compare(ref, [f for f in pred if f.type == "CDS"], ["CDS"])[0]
    return report.exact.f1, report.stop.f1


def _table(rows: list[tuple[str, float, float, tuple[float, float] | None, str]], bp: int) -> str:
    """Markdown: wall and CPU seconds (children included), speed-up over the first (reference)
    row by wall and by CPU, vs pyrodigal, the box's 1-minute load average at the row's start/end."""
    prod_s = rows[-1][1]
    first, first_cpu = rows[0][1], rows[0][2]
    lines = [
        "| path | seconds | CPU seconds | load | kbp/s | speed-up (wall / CPU) | x pyrodigal "
        "| CDS exact F1 | CDS stop F1 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label, seconds, cpu, f1, load in rows:
        exact, stop = (f"{f1[0]:.3f}", f"{f1[1]:.3f}") if f1 else ("", "")
        lines.append(
            f"| {label} | {seconds:.1f} | {cpu:.1f} | {load} | {bp / seconds / 1e3:.1f} | "
            f"{first / seconds:.2f} / {first_cpu / max(cpu, 1e-9):.2f} | {prod_s / seconds:.4f} | "
            f"{exact} | {stop} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
