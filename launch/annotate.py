#!/usr/bin/env python3
"""``annotate --model MODEL_DIR --fasta GENOME.fna[.gz] --out PRED.gff3``: DNA in, GFF3 out.

Windows with overlap over every sequence, grammar-constrained generation (greedy or beam), features
stitched across windows and merged, CDS snapped onto valid ORFs (joint start/stop), written
atomically as GFF3. Many genomes: ``--fasta A.fna B.fna ... --outdir DIR`` or ``--genomes
LIST.tsv --outdir DIR`` (``name<TAB>fasta[<TAB>transl_table]``); the model loads once. Under
``torchrun --nproc_per_node N`` the ranks share the genomes and the windows of each genome; the
output is the one process's, byte for byte.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script (python3 launch/X.py): import from this checkout
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import contextlib
import io
import os
from collections.abc import Sequence

from baking.common.errors import ConfigError
from baking.common.files import write_json
from baking.target_format.pointers import MIN_ORF_CODONS
from launch._cli import add_logging_args, check_outputs, run_cli, setup_logging

#: Options a model folder may set as its defaults (``trainer.model.generation``: the decoding
#: settings it was tuned and scored with); a flag given on the command line wins.
MODEL_DEFAULT = "(default: the model's generation_config.json, else "
DECODING_FLAGS = ("num_beams", "overlap", "min_votes", "min_orf_codons", "selection", "adapt")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="annotate", description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    io = p.add_argument_group("Input / Output")
    io.add_argument(
        "--model",
        required=True,
        help="model folder (config.json, model.safetensors, tokenizer.json) or a Hugging Face hub "
        "id (owner/name: data files only are fetched, never code; HF_HUB_OFFLINE=1 reads the cache)",
    )
    io.add_argument(
        "--fasta", nargs="+", help="genome FASTA(s) (plain or .gz); several need --outdir"
    )
    io.add_argument(
        "--genomes",
        help="genome list, name<TAB>fasta[<TAB>transl_table] a line (relative paths from the "
        "list's folder); needs --outdir",
    )
    io.add_argument("--out", help="output GFF3 (.gz for gzip), one genome")
    io.add_argument(
        "--outdir", help="output folder: NAME.gff3 (and .faa, .ffn) per genome and summary.tsv"
    )
    io.add_argument(
        "--faa",
        nargs="?",
        const=True,
        help="proteins of the CDS (FASTA, Prodigal's -a): a path with --out, a switch with --outdir",
    )
    io.add_argument(
        "--ffn",
        nargs="?",
        const=True,
        help="gene sequences (FASTA, Prodigal's -d): a path with --out, a switch with --outdir",
    )
    io.add_argument(
        "--on_error",
        choices=("stop", "skip"),
        default="stop",
        help="a genome with bad input: stop the run, or skip it and finish the others (exit 2 "
        "at the end either way)",
    )
    io.add_argument("--summary_json", help="also write the run's figures as JSON here")
    dec = p.add_argument_group("Decoding")
    dec.add_argument(
        "--batch_size", type=int, default=64, help="windows per forward pass (GPU: 256+)"
    )
    dec.add_argument(
        "--num_beams",
        type=int,
        default=None,
        help=f"1 = greedy {MODEL_DEFAULT}1)",
    )
    dec.add_argument("--max_new_tokens", type=int, default=256, help="target tokens per window")
    dec.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    dec.add_argument(
        "--bf16",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="bfloat16 (default: on for CUDA, as autocast); on a CPU a pointer model runs its "
        "encoder, pointer memory and cross K/V in bfloat16 (E. coli: 2x faster, same CDS F1), "
        "where the CPU has AMX/AVX512-BF16; not bit-identical (docs/annotate-evaluate.md)",
    )
    win = p.add_argument_group("Windows")
    win.add_argument(
        "--overlap",
        type=int,
        default=None,
        help=f"bases shared by neighbouring windows {MODEL_DEFAULT}window_len // 2)",
    )
    win.add_argument(
        "--window_len", type=int, default=None, help="only if the model config lacks window_len"
    )
    win.add_argument(
        "--types",
        default=None,
        help="comma-separated feature types to write (default: all the model knows); a model "
        "whose config lacks them decodes these",
    )
    win.add_argument(
        "--circular", default="", help="comma-separated circular sequence ids, or 'all'"
    )
    sn = p.add_argument_group("ORF snapping (CDS)")
    sn.add_argument(
        "--no_snap", action="store_true", help="keep CDS ends as predicted (no completion either)"
    )
    sn.add_argument(
        "--no_complete",
        action="store_true",
        help="drop a CDS whose one end no window closed instead of completing it into an ORF",
    )
    sn.add_argument("--snap_window", type=int, default=30, help="bases searched around each end")
    sn.add_argument(
        "--no_orf_constraint",
        action="store_true",
        help="let the decoder write any CDS, not only valid ORFs of the window",
    )
    sn.add_argument(
        "--min_votes",
        type=float,
        default=None,
        help="share of the windows holding a whole CDS that must predict it (0 = off) "
        f"{MODEL_DEFAULT}0.5)",
    )
    sn.add_argument(
        "--selection",
        choices=("votes", "genome"),
        default=None,
        help="votes: --min_votes then one start per stop; genome: score every candidate CDS from "
        "the windows and choose one consistent set per sequence under overlap rules "
        f"(docs/annotate-evaluate.md) {MODEL_DEFAULT}votes)",
    )
    sn.add_argument(
        "--adapt",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="learn this genome's own coding and start statistics from the model's confident "
        "genes (the FASTA only, never an annotation) and choose CDS among every ORF with them "
        f"and the windows together (docs/annotate-evaluate.md) {MODEL_DEFAULT}off)",
    )
    sn.add_argument(
        "--min_orf_codons",
        type=int,
        default=None,
        help="with the ORF constraint: shortest whole CDS, codons incl. start/stop "
        f"{MODEL_DEFAULT}{MIN_ORF_CODONS})",
    )
    sn.add_argument(
        "--transl_table",
        type=int,
        default=11,
        help="NCBI genetic code (1, 4, 11, 25); a --genomes list's third column wins",
    )
    lg = p.add_argument_group("Logging")
    add_logging_args(lg)
    lg.add_argument("--no_progress", action="store_true", help="no progress bar")
    return p


def _plan(args: argparse.Namespace) -> tuple[list, list, Path | None]:
    """Genome jobs and their outputs from the arguments, refusing combinations that make no sense."""
    from baking.genome_list import (
        SUMMARY_TSV,
        GenomeOutputs,
        jobs_from_fastas,
        outputs_in,
        read_genome_list,
    )

    if bool(args.fasta) == bool(args.genomes):
        raise ConfigError("give either --fasta FILE(S) or --genomes LIST.tsv")
    if bool(args.out) == bool(args.outdir):
        raise ConfigError("give either --out FILE (one genome) or --outdir DIR")
    if args.out == "-":
        raise ConfigError(
            "--out -: annotate does not write to standard output; name a file (--out pred.gff3)"
        )
    jobs = read_genome_list(args.genomes) if args.genomes else jobs_from_fastas(args.fasta)
    if args.out:
        if args.genomes or len(jobs) > 1:
            raise ConfigError("--out names one file; several genomes need --outdir DIR")
        for name in ("faa", "ffn"):
            if getattr(args, name) is True:
                raise ConfigError(f"--{name} takes a path with --out (e.g. --{name} genes.{name})")
        return jobs, [GenomeOutputs(Path(args.out), _path(args.faa), _path(args.ffn))], None
    for name in ("faa", "ffn"):
        if getattr(args, name) not in (None, True):
            raise ConfigError(
                f"--{name} is a switch with --outdir (it writes NAME.{name} beside NAME.gff3)"
            )
    outdir = Path(args.outdir)
    return jobs, outputs_in(outdir, jobs, bool(args.faa), bool(args.ffn)), outdir / SUMMARY_TSV


def _hub_id(name: str) -> bool:
    """``--model owner/name`` with no such local path: a hub id, fetched after the output checks
    (``trainer.model.hub.looks_like_hub_id``'s rule, without importing torch before them)."""
    return (
        not Path(name).exists()
        and name.count("/") == 1
        and not name.startswith((".", "/", "~"))
        and "\\" not in name
    )


def _path(value: str | bool | None) -> Path | None:
    return Path(value) if isinstance(value, str) else None


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    model, hub = Path(args.model), _hub_id(args.model)
    jobs, outputs, summary_tsv = _plan(args)
    check_outputs(
        files=[
            *(p for o in outputs for p in o.paths()),
            summary_tsv,
            args.summary_json,
            args.log_file,
        ],
        folders=[args.outdir],
        inputs=[
            *(j.fasta for j in jobs),
            args.genomes,
            *(
                []
                if hub
                else [model / "config.json", model / "model.safetensors", model / "tokenizer.json"]
            ),
        ],
    )
    setup_logging(args.verbose, args.log_file)
    if hub:  # into the HF cache (data files only); torch is imported from here on anyway
        from trainer.model.folder import resolve_model_folder

        model = resolve_model_folder(args.model)
    # torch only now: a wrong output is reported in a fraction of a second, not after its import
    from trainer.inference.annotate import AnnotateOptions, with_decoding
    from trainer.inference.annotate_many import annotate_genomes, summary_json
    from trainer.model.generation import load_decoding

    given = [name for name in DECODING_FLAGS if getattr(args, name) is not None]
    options = AnnotateOptions(
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        overlap=args.overlap,
        window_len=args.window_len,
        feature_types=tuple(t for t in args.types.split(",") if t) if args.types else None,
        snap=not args.no_snap,
        complete_orfs=not (args.no_snap or args.no_complete),
        snap_window=args.snap_window,
        orf_constraint=not args.no_orf_constraint,
        min_orf_codons=args.min_orf_codons,
        transl_table=args.transl_table,
        circular=tuple(c for c in args.circular.split(",") if c),
        device=args.device,
        bf16=args.bf16,
        progress=not args.no_progress,
        **{
            k: getattr(args, k)
            for k in ("num_beams", "min_votes", "selection", "adapt")
            if k in given
        },
    )
    options = with_decoding(options, load_decoding(model), given)
    results = annotate_genomes(
        str(model),
        jobs,
        outputs,
        options,
        on_error=args.on_error,
        summary_tsv=summary_tsv,
        check_circular=args.out is not None,
    )
    if args.summary_json and _launched_rank() == 0:
        if args.out:
            summary = results[0].summary
            write_json(args.summary_json, summary.as_dict() if summary else {})
        else:
            write_json(args.summary_json, summary_json(results))
    return 0


def _launched_rank() -> int:
    """This process's rank in a launcher's world of several (``torchrun``), else 0; a ``RANK``
    left in the environment by something else does not count without a ``WORLD_SIZE`` > 1."""
    if int(os.environ.get("WORLD_SIZE", "1") or 1) <= 1:
        return 0
    return int(os.environ.get("RANK", "0") or 0)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``dna2gff-annotate`` and ``launch/annotate.py``.

    Under ``torchrun`` every rank reads the same inputs and meets the same bad one, so only rank
    0 says so: the other ranks' stderr is held back and dropped when they end with that same
    ``error:`` (exit 2), shown otherwise (a crash of their own)."""
    if _launched_rank() == 0:
        return run_cli(_main, argv)
    held = io.StringIO()
    code = 1
    try:
        with contextlib.redirect_stderr(held):
            code = run_cli(_main, argv)
    finally:
        if code != 2:
            sys.stderr.write(held.getvalue())
    return code


if __name__ == "__main__":
    raise SystemExit(main())
