#!/usr/bin/env python3
"""``init_model``: build the encoder-decoder from DNABERT-2 and save it as a model folder.

The seed's command works as written (``--save_dir D --dnabert_path zhihan1996/DNABERT-2-117M
--use_moe --num_experts 8 --moe_top_k 2 --tie_weights``; a hub id needs network or the HF cache, a
local folder always works). ``--random_dnabert2 DIR`` first writes a random checkpoint in DNABERT-2's
own layout plus a DNABERT-2-format tokenizer, for tests and demos; with ``--save_dir`` too, the model
is then built from it through the real loading path. ``--data BAKED_DIR`` fits the model to a
bake: the annotation tokens its targets use, the window length, feature types and genetic codes
come from its ``manifest.json``, so bake -> init_model -> train needs no init_tk / append_tk /
resize_model between them (those commands keep working).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script (python3 launch/X.py): import from this checkout
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import logging
from collections.abc import Sequence

from baking.common.errors import ConfigError, InputError
from launch._cli import add_logging_args, check_outputs, run_cli, setup_logging
from trainer.model.build import build_from_dnabert2
from trainer.model.config import Dna2GffConfig
from trainer.model.dnabert2 import DNABERT2_HUB_ID, resolve_checkpoint
from trainer.tokens.tokenizer import TOKENIZER_NAME

#: What ``init_model`` builds unless told otherwise: the config's defaults, which are the
#: recommended model (measured in docs/learning.md), so the command and the library agree.
_default = Dna2GffConfig.default

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="init_model",
        description=__doc__,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    io = p.add_argument_group("Input / Output")
    io.add_argument(
        "--save_dir", help="model folder to write (config.json, model.safetensors, tokenizer)"
    )
    io.add_argument(
        "--data",
        metavar="BAKED_DIR",
        help="a bake_data output folder: add the annotation tokens its targets use to the "
        "tokenizer, grow the model to them and record the window length, feature types and "
        "genetic codes from its manifest.json (instead of init_tk / append_tk / resize_model)",
    )
    io.add_argument(
        "--dnabert_path",
        help=f"DNABERT-2 folder or hub id (default: --random_dnabert2 if given, else {DNABERT2_HUB_ID})",
    )
    dec = p.add_argument_group("Decoder")
    dec.add_argument(
        "--num_decoder_layers", type=int, help="decoder depth (default: encoder depth)"
    )
    dec.add_argument(
        "--tie_weights", action="store_true", help="output head shares the embedding matrix"
    )
    dec.add_argument(
        "--seed", type=int, default=0, help="seed of the random parts (cross-attention, routers)"
    )
    dec.add_argument(
        "--pointer_context_bp",
        type=int,
        default=_default("pointer_context_bp"),
        help="bases each side of a base its key sees directly (start-codon "
        "context such as the ribosome-binding site); 0 = none",
    )
    dec.add_argument(
        "--base_aux_weight",
        type=float,
        default=_default("base_aux_weight"),
        help="weight of the per-base loss on the pointer keys (CDS begins / ends here); 0 = none",
    )
    dec.add_argument(
        "--base_aux_class_weight",
        type=float,
        default=_default("base_aux_class_weight"),
        help="weight of the begin / end bases against the others in that "
        "per-base loss (1 = unweighted)",
    )
    dec.add_argument(
        "--encoder_aux_weight",
        type=float,
        default=_default("encoder_aux_weight"),
        help="weight of the per-token encoder loss (coding frame/strand, start/stop); 0 = none",
    )
    moe = p.add_argument_group("Mixture of experts (decoder MLPs)")
    moe.add_argument(
        "--use_moe", action="store_true", help="replace decoder MLPs by DeepSpeed MoE layers"
    )
    moe.add_argument(
        "--num_experts", type=int, default=_default("num_experts"), help="experts per MoE layer"
    )
    moe.add_argument(
        "--moe_top_k",
        type=int,
        default=_default("moe_top_k"),
        choices=[1, 2],
        help="experts per token",
    )
    moe.add_argument("--moe_layers", help="comma-separated decoder layer indices (default: all)")
    moe.add_argument(
        "--moe_capacity_factor",
        type=float,
        default=_default("moe_capacity_factor"),
        help="training capacity factor",
    )
    moe.add_argument(
        "--moe_aux_loss_coef",
        type=float,
        default=_default("moe_aux_loss_coef"),
        help="load-balancing loss weight",
    )
    rnd = p.add_argument_group("Random DNABERT-2 checkpoint (tests, demo)")
    rnd.add_argument(
        "--random_dnabert2", metavar="DIR", help="write a random DNABERT-2-layout checkpoint here"
    )
    rnd.add_argument("--hidden_size", type=int, default=64, help="hidden width")
    rnd.add_argument("--num_layers", type=int, default=2, help="encoder layers")
    rnd.add_argument("--num_heads", type=int, default=4, help="attention heads")
    rnd.add_argument("--intermediate_size", type=int, default=128, help="gated-MLP branch width")
    rnd.add_argument("--vocab_size", type=int, default=512, help="BPE size of a trained tokenizer")
    rnd.add_argument(
        "--tokenizer",
        help="use this DNABERT-2-format tokenizer (folder or JSON) instead of training one",
    )
    rnd.add_argument(
        "--tokenizer_fasta",
        nargs="+",
        metavar="FASTA",
        help="train the tokenizer on these genomes (default: 200 kbp of seeded random DNA)",
    )
    rnd.add_argument(
        "--weights_format",
        choices=["bin", "safetensors"],
        default="bin",
        help="pytorch_model.bin or model.safetensors",
    )
    rnd.add_argument(
        "--no_bert_prefix", action="store_true", help="keys as a bare BertModel (no 'bert.')"
    )
    lg = p.add_argument_group("Logging")
    add_logging_args(lg)
    return p


def write_random(args: argparse.Namespace) -> Path:
    """The ``--random_dnabert2`` step: tokenizer (given or trained) + random checkpoint."""
    from trainer.random_checkpoint import make_tiny_dnabert2  # only this step needs it

    return make_tiny_dnabert2(
        args.random_dnabert2,
        tokenizer=args.tokenizer,
        fasta=args.tokenizer_fasta or (),
        vocab_size=args.vocab_size,
        seed=args.seed,
        hidden_size=args.hidden_size,
        num_layers=args.num_layers,
        num_heads=args.num_heads,
        intermediate_size=args.intermediate_size,
        weights_format=args.weights_format,
        bert_prefix=not args.no_bert_prefix,
    )


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    made_from = [args.tokenizer, *(args.tokenizer_fasta or ())]
    check_outputs(files=[args.log_file], folders=[args.random_dnabert2], inputs=made_from)
    # --random_dnabert2 D --dnabert_path D is the usual pair: D is written, then read
    check_outputs(
        folders=[args.save_dir], inputs=[args.dnabert_path, args.random_dnabert2, args.data]
    )
    setup_logging(args.verbose, args.log_file)
    if not args.save_dir and not args.random_dnabert2:
        raise ConfigError("nothing to do: give --save_dir (and/or --random_dnabert2 DIR)")
    moe_layers = None
    if args.moe_layers:
        try:
            moe_layers = [int(x) for x in args.moe_layers.split(",") if x.strip()]
        except ValueError as exc:
            raise ConfigError(
                f"--moe_layers={args.moe_layers!r} is not a comma-separated list of ints"
            ) from exc
    manifest = None
    if args.data:
        if not args.save_dir:
            raise ConfigError("--data needs --save_dir (the model folder to fit to the data)")
        from baking.shards.manifest import load_manifest

        manifest = load_manifest(args.data)  # refused before anything is built or written
    if args.random_dnabert2:
        out = write_random(args)
        print(f"random DNABERT-2 checkpoint: {out}")
    if not args.save_dir:
        return 0
    source = args.dnabert_path or args.random_dnabert2 or DNABERT2_HUB_ID
    folder = resolve_checkpoint(source)
    model = build_from_dnabert2(
        source,
        num_decoder_layers=args.num_decoder_layers,
        use_moe=args.use_moe,
        num_experts=args.num_experts,
        moe_top_k=args.moe_top_k,
        moe_layers=moe_layers,
        tie_weights=args.tie_weights,
        seed=args.seed,
        moe_capacity_factor=args.moe_capacity_factor,
        moe_aux_loss_coef=args.moe_aux_loss_coef,
        encoder_aux_weight=args.encoder_aux_weight,
        pointer_context_bp=args.pointer_context_bp,
        base_aux_weight=args.base_aux_weight,
        base_aux_class_weight=args.base_aux_class_weight,
    )
    has_tokenizer = (folder / TOKENIZER_NAME).is_file()
    if manifest is not None:
        if not has_tokenizer:
            raise InputError(folder, f"no {TOKENIZER_NAME}: --data grows the source's tokenizer")
        from trainer.model.from_data import save_fitted_model

        added = save_fitted_model(model, folder, manifest, args.save_dir)
        print(f"fitted to {args.data}: {len(added)} annotation token(s) added")
    else:
        model.save_pretrained(args.save_dir, tokenizer_dir=folder if has_tokenizer else None)
    if not has_tokenizer:
        log.warning(
            "source=%s has no tokenizer.json; add one with init_tk --out %s", folder, args.save_dir
        )
    n = sum(p.numel() for p in model.parameters())
    print(f"model: {args.save_dir} ({n / 1e6:.2f} M parameters, vocab {model.config.vocab_size})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
