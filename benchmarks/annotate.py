#!/usr/bin/env python3
"""Annotate throughput (bp/s) against Prodigal (pyrodigal) on the same genome, in the same run.

    python benchmarks/annotate.py                        # tiny random model, CPU, phage genome
    python benchmarks/annotate.py --size base --device cuda --genome C.crescentus

``--size base`` builds a model with DNABERT-2-117M's encoder shape (768 x 12 layers) and a decoder
of ``--decoder_layers`` layers, with random weights: throughput does not depend on the weights,
except that an untrained model rarely says END and so decodes every window to ``max_new_tokens``
(the worst case; the figures say how many windows ran out). Prints one key=value line per
predictor and the ratio annotate/Prodigal (goal on one H100: >= 1).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from baking.evaluate.prodigal import run_prodigal  # noqa: E402
from baking.formats.fasta import read_fasta  # noqa: E402
from baking.target.grammar import target_vocabulary  # noqa: E402
from trainer.fixtures import SHARED_DNABERT2, SHARED_GENOME_PAIRS  # noqa: E402
from trainer.inference.annotate import (  # noqa: E402
    AnnotateOptions,
    annotate_sequences,
    load_model,
    resolve_grammar,
)
from trainer.model import Dna2GffConfig, Dna2GffModel  # noqa: E402
from trainer.tokens.tokenizer import add_annotation_tokens, load_tokenizer  # noqa: E402

GENOMES = {name: fna for name, (fna, _gff) in SHARED_GENOME_PAIRS.items()}
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
        add_annotation_tokens(tok, target_vocabulary(types, window_len))
        cfg = Dna2GffConfig(
            vocab_size=tok.get_vocab_size(True),
            num_decoder_layers=min(args.decoder_layers, SIZES[args.size]["num_encoder_layers"]),
            window_len=window_len,
            feature_types=types,
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
        device=args.device,
        progress=False,
    )
    if args.device.startswith("cuda"):  # warm-up: kernels, allocator
        warm = [(seqs[0][0], seqs[0][1][:20_000])]
        annotate_sequences(model, tok, warm, opts, window_len, types)
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    _, _, summary = annotate_sequences(model, tok, seqs, opts, window_len, types)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    prod = run_prodigal(seqs)
    ours = bp / seconds
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(
        f"annotate genome={args.genome} bp={bp} size={args.size} params={params} "
        f"device={device} threads={torch.get_num_threads()} window_len={window_len} "
        f"windows={summary.windows} truncated={summary.truncated_windows} "
        f"batch={args.batch_size} max_new_tokens={args.max_new_tokens} beams={args.num_beams} "
        f"seconds={seconds:.2f} bp_per_s={ours:.0f} mbp_per_min={ours * 60 / 1e6:.3f}"
    )
    print(
        f"prodigal genome={args.genome} bp={bp} seconds={prod.seconds:.2f} "
        f"bp_per_s={prod.bp_per_s:.0f} mbp_per_min={prod.bp_per_s * 60 / 1e6:.3f}"
    )
    print(f"ratio annotate/prodigal={ours / prod.bp_per_s:.4f}")


if __name__ == "__main__":
    main()
