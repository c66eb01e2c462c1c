#!/usr/bin/env python3
"""Does the model learn? Train the small model on synthetic genomes on the CPU, then score it.

For every variant asked for (``--variants``), at the same budget and seed: bake once per variant
folder (same seed, same data), build the model with that variant's flags, train
(``--minutes`` of training-loop wall clock, or exactly ``--steps``), annotate the held-out genome
with the real ``annotate`` and score it with ``evaluate`` (CDS exact and stop F1, tRNA, rRNA).
Two control rows show what the model adds: the same constrained decoder driven by the *untrained*
model, and the no-model rule (every ORF of at least N codons, N chosen on the training genomes,
``trainer.inference.orf_rule``); Prodigal's row is the bar.

Variants (``docs/learning.md`` has the measured table):
- ``pointer``: the decoder points at bases; rows without the ORF constraint, with it, and with it
  but no post-hoc snapping/completion (the model's own skill);
- ``pointer_aux``: ``pointer`` plus the per-token encoder loss (coding frame, start/stop codons);
- ``pointer_base``: ``pointer_aux`` plus the per-base loss on the pointer keys (CDS begins/ends);
- ``pointer_base_weighted``: the same with the begin/end bases weighted 100 against the others.

The ORF layer's shortest whole CDS (``--min_orf_codons tune``, the default) is chosen per
evaluation from a few candidates by the trained model's CDS stop F1 on a *tuning* genome: one more
synthetic genome of the same species that is neither trained on nor scored. With ``--genome`` the
no-model rule's N (chosen on the training genome) is used instead: annotating a 4 Mbp genome once
per candidate would cost more than the training.

    python benchmarks/learn_synthetic.py                       # the default variant, 30 min
    python benchmarks/learn_synthetic.py --variants pointer,pointer_aux --steps 600
    python benchmarks/learn_synthetic.py --genome              # train C. crescentus, score E. coli
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import time
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from baking.target_format.pointers import MIN_ORF_CODONS_CANDIDATES  # noqa: E402
from launch._cli import setup_logging  # noqa: E402
from trainer.demo import (  # noqa: E402
    DemoConfig,
    Layout,
    Step,
    genome_pairs,
    launch_command,
    plan_steps,
    prepare_out,
    run_step,
    start_commands_file,
    synthetic_command,
    train_command,
)

log = logging.getLogger("learn_synthetic")


@dataclass(frozen=True)
class Variant:
    """A trained model (``init`` flags) and the annotate decodings scored on it."""

    init: tuple[str, ...]
    decodes: tuple[tuple[str, tuple[str, ...]], ...]
    """(row label, extra annotate flags); the first is the one followed over training."""


BASE_AUX_INIT = (
    "--encoder_aux_weight",
    "0.5",
    "--base_aux_weight",
    "0.5",
)
"""``pointer_aux`` plus the per-base loss: the init flags both per-base variants share."""

VARIANTS: dict[str, Variant] = {
    "pointer": Variant(
        ("--encoder_aux_weight", "0"),
        (
            ("pointer + ORF", ()),
            ("pointer, no ORF constraint", ("--no_orf_constraint",)),
            ("pointer + ORF, no snap", ("--no_snap",)),
        ),
    ),
    "pointer_aux": Variant(
        ("--encoder_aux_weight", "0.5"),
        (
            ("pointer + ORF + aux", ()),
            ("pointer + aux, no ORF constraint", ("--no_orf_constraint",)),
            ("pointer + ORF + aux, no snap", ("--no_snap",)),
        ),
    ),
    "pointer_base": Variant(
        BASE_AUX_INIT,
        (
            ("pointer + ORF + aux + base aux", ()),
            ("pointer + aux + base aux, no ORF", ("--no_orf_constraint",)),
            ("pointer + ORF + aux + base aux, no snap", ("--no_snap",)),
        ),
    ),
    "pointer_base_weighted": Variant(
        (*BASE_AUX_INIT, "--base_aux_class_weight", "100"),
        (
            ("pointer + ORF + aux + weighted base aux", ()),
            ("pointer + aux + weighted base aux, no ORF", ("--no_orf_constraint",)),
            ("pointer + ORF + aux + weighted base aux, no snap", ("--no_snap",)),
        ),
    ),
}
DEFAULT_VARIANT = "pointer_aux"
TYPES = "CDS,tRNA,rRNA"
TUNE_CODONS = MIN_ORF_CODONS_CANDIDATES
"""Candidates for the ORF layer's shortest whole CDS (plus the no-model rule's N), as tune_orf's."""
REAL_PAIR = "C.crescentus:E.coli"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--out", default="runs/learn_synthetic", help="output folder")
    p.add_argument(
        "--variants", default=DEFAULT_VARIANT, help=f"comma-separated, of {', '.join(VARIANTS)}"
    )
    p.add_argument(
        "--minutes",
        type=float,
        default=30.0,
        help="training wall-clock budget per variant (training loop only)",
    )
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help="train exactly this many steps per variant (overrides --minutes)",
    )
    p.add_argument("--chunks", type=int, default=3, help="evaluations spread over the budget")
    p.add_argument("--probe_steps", type=int, default=100, help="steps of the first chunk")
    p.add_argument("--no_controls", action="store_true", help="skip the control rows")
    p.add_argument(
        "--first_row_only",
        action="store_true",
        help="score only each variant's first decoding and the ORF rule (no untrained-model "
        "row): on a 4.6 Mbp genome one annotate takes ~25 CPU minutes",
    )
    d = p.add_argument_group("data")
    d.add_argument(
        "--genome",
        nargs="?",
        const=REAL_PAIR,
        default=None,
        metavar="TRAIN[+TRAIN...]:HELD",
        help="real genomes instead of synthetic ones: names of the shared table "
        f"({REAL_PAIR} when given alone) or FASTA,GFF3 path pairs",
    )
    d.add_argument(
        "--train_genomes",
        type=int,
        default=32,
        help="synthetic training genomes (32: with 16 the validation loss flattened by ~900 steps)",
    )
    d.add_argument("--genome_length", type=int, default=100_000)
    d.add_argument("--mean_protein_codons", type=int, default=280)
    d.add_argument("--seed", type=int, default=1, help="genomes, model init and data order")
    d.add_argument("--window", type=int, default=1536, help="bake/annotate window (bp)")
    d.add_argument("--stride", type=int, default=512, help="bake stride (bp)")
    d.add_argument("--overlap", type=int, default=1024, help="annotate window overlap (bp)")
    d.add_argument("--rc", default="both", choices=("none", "both", "random"))
    d.add_argument(
        "--min_orf_codons",
        default="tune",
        help="annotate's shortest whole CDS under the ORF constraint; tune: the best of "
        f"{', '.join(map(str, TUNE_CODONS))} and the rule's N on the tuning genome; auto: the "
        "ORF rule's N chosen on the training genomes; or a number",
    )
    d.add_argument(
        "--num_beams",
        type=int,
        default=3,
        help="annotate's beam width (3 measured better than greedy, 5 no better)",
    )
    m = p.add_argument_group("model")
    m.add_argument("--vocab_size", type=int, default=256, help="BPE vocabulary (DNABERT-2: 4096)")
    m.add_argument("--hidden_size", type=int, default=128)
    m.add_argument("--num_layers", type=int, default=3)
    m.add_argument("--num_heads", type=int, default=4)
    m.add_argument("--intermediate_size", type=int, default=256)
    m.add_argument("--moe", action="store_true", help="MoE decoder (4 experts, top-2)")
    t = p.add_argument_group("training")
    t.add_argument("--micro_batch_size", type=int, default=16)
    t.add_argument("--lr", type=float, default=2e-3, help="peak, after warmup")
    t.add_argument(
        "--min_lr_ratio",
        type=float,
        default=0.1,
        help="cosine decay to this fraction of --lr at the planned last step (1: constant)",
    )
    t.add_argument("--warmup_steps", type=int, default=100)
    t.add_argument("--max_src_tokens", type=int, default=1024)
    t.add_argument(
        "--bf16",
        action="store_true",
        help="bf16 (default fp32: faster for tiny matrices on this CPU)",
    )
    t.add_argument(
        "--num_workers",
        type=int,
        default=0,
        help="loader processes (0: tokenise in the trainer; a worker process only "
        "competes for 2 cores)",
    )
    t.add_argument(
        "--threads",
        type=int,
        default=1,
        help="OMP_NUM_THREADS for training and annotate (1: on a shared 2-core box a "
        "second thread mostly waits for the first; measured 3.1 vs 13.5 s per step)",
    )
    return p


#: One rank: ZeRO stage 0 (ZeRO-2's partitioning is pure overhead on one process). The schedule's
#: length is written per chunk (``ds_config``): the budget's last step is only known once a chunk's
#: step time is measured, and a resumed scheduler keeps its step count, not its length.
DS_CONFIG = {
    "train_batch_size": "auto",
    "train_micro_batch_size_per_gpu": "auto",
    "gradient_accumulation_steps": "auto",
    "gradient_clipping": "auto",
    "steps_per_print": 1000000,
    "bf16": {"enabled": "auto"},
    "zero_optimization": {"stage": 0},
    "optimizer": {
        "type": "AdamW",
        "params": {
            "lr": "auto",
            "betas": [0.9, 0.98],
            "eps": 1e-8,
            "weight_decay": "auto",
            "torch_adam": True,
        },
    },
    "scheduler": {
        "type": "WarmupCosineLR",
        "params": {
            "warmup_min_ratio": 0.0,
            "warmup_num_steps": "auto",
            "total_num_steps": "auto",
            "cos_min_ratio": "auto",
            "warmup_type": "linear",
        },
    },
}


def ds_config(a: argparse.Namespace, total_steps: int | None) -> dict:
    """The DeepSpeed config of one chunk: warmup, then cosine decay ending at ``total_steps``.

    ``None`` (the probe chunk, before any step time is known) keeps the peak rate after warmup;
    the probe ends where warmup does, so no step trains on a guessed length.
    """
    cfg = json.loads(json.dumps(DS_CONFIG))
    params = cfg["scheduler"]["params"]
    params["warmup_num_steps"] = a.warmup_steps
    params["total_num_steps"] = total_steps if total_steps else 10**9
    params["cos_min_ratio"] = a.min_lr_ratio
    return cfg


def _score(
    lay: Layout,
    held: tuple[Path, Path],
    tag: str,
    i: int,
    model: Path,
    flags: tuple[str, ...],
    a: argparse.Namespace,
    min_codons: int,
) -> dict:
    """annotate + evaluate --json on a genome (held-out or tuning); returns the parsed JSON."""
    pred = lay.out / f"pred_{tag}.gff3"
    report = lay.out / f"eval_{tag}.json"
    annotate = launch_command(
        "annotate.py",
        "--model",
        model,
        "--fasta",
        held[0],
        "--out",
        pred,
        "--circular",
        "all",
        "--no_progress",
        "--batch_size",
        "32",
        "--overlap",
        str(a.overlap),
        "--num_beams",
        str(a.num_beams),
        "--min_orf_codons",
        str(min_codons),
        *flags,
    )
    run_step(Step(f"annotate_{tag}", annotate, env={"OMP_NUM_THREADS": str(a.threads)}), i, lay)
    return _evaluate(lay, held, pred, report, f"evaluate_{tag}", i + 1)


def _evaluate(
    lay: Layout, held: tuple[Path, Path], pred: Path, report: Path, name: str, i: int
) -> dict:
    evaluate = launch_command(
        "evaluate.py",
        held[1],
        pred,
        "--json",
        "--types",
        TYPES,
        "--baseline",
        "prodigal",
        "--fasta",
        held[0],
    )
    run_step(Step(name, evaluate), i, lay, report)
    return json.loads(report.read_text())


def _slug(label: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in label).strip("_")


def _loop_seconds(log_path: Path) -> float | None:
    """Seconds between the trainer's ``train start`` and ``train done`` lines (no start-up)."""
    stamps = {}
    for line in log_path.read_text(errors="replace").splitlines():
        for key in ("train start", "train done"):
            if key in line and key not in stamps:
                with contextlib.suppress(ValueError):
                    stamps[key] = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
    if len(stamps) < 2:
        return None
    return (stamps["train done"] - stamps["train start"]).total_seconds()


def _rule_min_codons(a: argparse.Namespace, train_pairs: list[tuple[Path, Path]]) -> int:
    """The no-model rule's N on the training genomes (best pooled stop F1 of "every ORF >= N
    codons"), or the number given; the starting point of ``tune``."""
    if a.min_orf_codons not in ("auto", "tune"):
        return int(a.min_orf_codons)
    from trainer.inference.orf_rule import choose_min_codons

    return choose_min_codons(train_pairs)


@dataclass
class Scorer:
    """Scores a model on the held-out genome with the ORF layer's N chosen as ``--min_orf_codons``
    says: given, the rule's N, or tuned on the tuning genome (the trained model's best CDS stop
    F1, then exact F1; ties go to the larger N, the rule's prior)."""

    lay: Layout
    held: tuple[Path, Path]
    tune_pair: tuple[Path, Path] | None
    rule_n: int
    a: argparse.Namespace
    idx: int
    tuned: list[dict]

    def __call__(self, tag: str, model: Path, flags: tuple[str, ...], tune: bool = True) -> dict:
        """``tune=False``: the N last tuned (the same model's other decodings share it)."""
        n = self.tuned[-1]["chosen"] if self.tuned else self.rule_n
        if tune and self.tune_pair is not None:
            n = self.tune(tag, model, flags)
        scores = _score(self.lay, self.held, tag, self.idx, model, flags, self.a, n)
        self.idx += 2
        scores["min_orf_codons"] = n
        if tune and not flags:  # the export's own decoding: its scores go into its model card
            from trainer.model.card import record_scores

            exact, stop = _cds(scores, "dna2gff")
            held = self.held[0].name
            record_scores(
                model,
                {
                    f"CDS exact F1 on {held} (learn_synthetic)": round(exact, 4),
                    f"CDS stop F1 on {held} (learn_synthetic)": round(stop, 4),
                },
            )
        return scores

    def tune(self, tag: str, model: Path, flags: tuple[str, ...]) -> int:
        """``tune_orf``'s choice, from the real annotate + evaluate commands; recorded in the
        model folder's ``generation_config.json`` with the decoding it was scored under (beams,
        overlap), so the exported model annotates as the table says by default."""
        from trainer.inference.tune_orf import TuneRow, choose
        from trainer.model.generation import record_decoding

        assert self.tune_pair is not None
        tried, rows = {}, []
        for n in sorted({*TUNE_CODONS, self.rule_n}):
            scores = _score(
                self.lay, self.tune_pair, f"tune_{tag}_n{n}", self.idx, model, flags, self.a, n
            )
            self.idx += 2
            exact, stop = _cds(scores, "dna2gff")
            tried[n] = (round(stop, 3), round(exact, 3), n)
            rows.append(TuneRow(n, exact, stop, 0, 0, 0.0))
        best = choose(rows)
        record_decoding(
            model, min_orf_codons=best, num_beams=self.a.num_beams, overlap=self.a.overlap
        )
        self.tuned.append(
            {"tag": tag, "chosen": best, "tried": {str(k): v for k, v in tried.items()}}
        )
        log.info("tune tag=%s min_orf_codons=%d tried=%s", tag, best, tried)
        return best


def _tuning_genome(cfg: DemoConfig, lay: Layout) -> tuple[Path, Path]:
    """One more genome of the synthetic species (seed after the held-out one), for ``tune``."""
    seed = cfg.seed + cfg.train_genomes + 1
    run_step(Step("make_tuning_genome", synthetic_command(cfg, lay, 1, seed)), 0, lay)
    return lay.genomes / f"synthetic_{seed}.fna.gz", lay.genomes / f"synthetic_{seed}.gff.gz"


def real_genomes(spec: str) -> tuple[tuple[str, str], ...]:
    """``TRAIN[+TRAIN...]:HELD`` of shared-table names or ``FASTA,GFF3`` pairs -> (fna, gff)s."""
    from trainer.fixtures import SHARED_GENOME_PAIRS

    train, sep, held = spec.partition(":")
    if not sep or not train or not held:
        raise SystemExit(f"error: --genome {spec!r}: expected TRAIN[+TRAIN...]:HELD")
    pairs = []
    for item in [*train.split("+"), held]:
        if item in SHARED_GENOME_PAIRS:
            fna, gff = SHARED_GENOME_PAIRS[item]
        elif item.count(",") == 1:
            fna, gff = (Path(x) for x in item.split(","))
        else:
            known = ", ".join(SHARED_GENOME_PAIRS)
            raise SystemExit(f"error: --genome {item!r}: not a FASTA,GFF3 pair nor one of {known}")
        for path in (fna, gff):
            if not path.is_file():
                raise SystemExit(f"error: --genome {item}: {path}: no such file")
        pairs.append((str(fna), str(gff)))
    return tuple(pairs)


def run_variant(name: str, a: argparse.Namespace, root: Path) -> dict:
    """Bake, build, train (in chunks) and score one variant in ``root/name``."""
    variant = VARIANTS[name]
    cfg = DemoConfig(
        out=str(root / name),
        genomes=real_genomes(a.genome) if a.genome else (),
        seed=a.seed,
        train_genomes=a.train_genomes,
        genome_length=a.genome_length,
        vocab_size=a.vocab_size,
        hidden_size=a.hidden_size,
        num_layers=a.num_layers,
        num_heads=a.num_heads,
        intermediate_size=a.intermediate_size,
        use_moe=a.moe,
        window_len=a.window,
        launcher="python",
        nproc=1,
        ep_size=1,
        synthetic_args=("--mean_protein_codons", str(a.mean_protein_codons)),
        bake_args=("--stride", str(a.stride), "--rc", a.rc, "--types", TYPES),
        init_args=variant.init,
        micro_batch_size=a.micro_batch_size,
        lr=a.lr,
        max_steps=a.probe_steps,
    )
    lay = Layout(Path(cfg.out).resolve())
    prepare_out(lay.out, cfg)
    ds_path = lay.out / "ds_config.json"
    cfg = replace(cfg, deepspeed_config=str(ds_path))
    lay.logs.mkdir()
    start_commands_file(lay, f"The commands learn_synthetic ran for variant {name}, in order.")
    steps = plan_steps(cfg, lay)
    setup = [s for s in steps if s.name not in ("train", "annotate", "evaluate", "evaluate_json")]
    t0 = time.perf_counter()
    for i, step in enumerate(setup, 1):
        run_step(step, i, lay)
    log.info("variant=%s setup done seconds=%.0f", name, time.perf_counter() - t0)
    train_pairs, held = genome_pairs(cfg, lay)
    rule_n = _rule_min_codons(a, train_pairs)
    tune_pair = None
    if a.min_orf_codons == "tune" and not cfg.genomes:
        tune_pair = _tuning_genome(cfg, lay)
    score = Scorer(lay, held, tune_pair, rule_n, a, len(setup) + 1, [])
    budget = a.minutes * 60.0
    total = a.steps
    rows: list[dict] = []
    trained = 0.0  # seconds inside the training loops (start-up excluded)
    first = min(a.probe_steps, total) if total else a.probe_steps
    steps_done, target = 0, first
    planned: int | None = total  # the schedule's last step; known after the probe chunk
    export = lay.run / "export"
    while True:
        ds_path.write_text(json.dumps(ds_config(a, planned), indent=2) + "\n")
        argv = train_command(cfg, lay)
        argv[argv.index("--max_steps") + 1] = str(target)
        argv += [
            "--warmup_steps",
            str(a.warmup_steps),
            "--eval_every",
            "200",
            "--decode_every",
            "0",
            "--save_every",
            "0",
            "--keep_last",
            "1",
            "--log_every",
            "10",
            "--num_workers",
            str(a.num_workers),
            "--max_src_tokens",
            str(a.max_src_tokens),
        ]
        if not a.bf16:
            argv.append("--no_bf16")
        if steps_done:
            argv.append("--resume")
        step = Step(f"train_to_{target}", argv, env={"OMP_NUM_THREADS": str(a.threads)})
        run_step(step, score.idx, lay)
        loop = _loop_seconds(lay.logs / f"{score.idx:02d}_{step.name}.log") or step.seconds
        score.idx += 1
        trained += loop
        per_step = loop / max(1, target - steps_done)
        steps_done = target
        label, flags = variant.decodes[0]
        scores = score(f"step{target}", export, flags)
        rows.append(
            {
                "steps": target,
                "train_minutes": trained / 60,
                "seconds_per_step": per_step,
                "label": label,
                "scores": scores,
            }
        )
        exact, stop = _cds(scores, "dna2gff")
        log.info(
            "variant=%s steps=%d train_minutes=%.1f s_per_step=%.3f exact_f1=%.3f stop_f1=%.3f",
            name,
            target,
            trained / 60,
            per_step,
            exact,
            stop,
        )
        if total:
            if steps_done >= total:
                break
            target = min(total, steps_done + max(1, (total - first) // max(1, a.chunks - 1)))
            continue
        left = budget - trained
        if left < 20 * per_step:
            break
        # a chunk's step time is measured while annotate may share the CPU, so the planned
        # chunks can end early: what is left of the budget then goes into one more chunk
        chunks_left = max(1, a.chunks - len(rows))
        # 10% margin: a step measured while annotate shared the CPU can be faster than the next
        # chunk's, and the budget is a limit (a run planned without it trained 31.4 of 30 min)
        target = steps_done + max(1, int(left / chunks_left / (1.1 * per_step)))
        planned = steps_done + max(1, int(left / (1.1 * per_step)))
    final = {}
    for label, flags in variant.decodes:
        if label == variant.decodes[0][0]:
            final[label] = rows[-1]["scores"]
            continue
        if a.first_row_only:
            break
        final[label] = score(_slug(label), export, flags, tune=False)
    return {
        "variant": name,
        "rows": rows,
        "final": final,
        "steps": steps_done,
        "train_minutes": trained / 60,
        "layout": str(lay.out),
        "idx": score.idx,
        "rule_min_orf_codons": rule_n,
        "tuned": score.tuned,
        "genomes": [str(p) for pair in (*train_pairs, held) for p in pair],
        "tuning_genome": [str(p) for p in tune_pair] if tune_pair else None,
        "curve": learning_curve(lay.run),
    }


def run_controls(a: argparse.Namespace, first: dict, pointer_variant: str | None) -> dict:
    """The untrained model under the same constrained decoder, and the no-model ORF rule."""
    from trainer.inference.orf_rule import annotate_orf_rule, choose_min_codons

    lay = Layout(Path(first["layout"]))
    genomes = real_genomes(a.genome) if a.genome else ()
    cfg = DemoConfig(seed=a.seed, train_genomes=a.train_genomes, genomes=genomes)
    train_pairs, held = genome_pairs(cfg, lay)
    idx = first["idx"]
    out: dict = {}
    if pointer_variant is not None and not a.first_row_only:
        plan = Layout(Path(a.out).resolve() / pointer_variant)
        flags = ("--window_len", str(a.window), "--types", TYPES)
        # the trained model's N: what the untrained model is compared with
        n = first["rows"][-1]["scores"]["min_orf_codons"]
        untrained = _score(lay, held, "untrained", idx, plan.model, flags, a, n)
        untrained["min_orf_codons"] = n
        out["untrained model + ORF"] = untrained
        idx += 2
    t0 = time.perf_counter()
    n = choose_min_codons(train_pairs)
    pred = lay.out / "pred_orf_rule.gff3"
    annotate_orf_rule(held[0], pred, n, circular=("all",))
    log.info("orf_rule n=%d seconds=%.1f", n, time.perf_counter() - t0)
    scores = _evaluate(lay, held, pred, lay.out / "eval_orf_rule.json", "evaluate_orf_rule", idx)
    out[f"ORF rule (>= {n} codons)"] = scores
    return out


def main() -> int:
    a = build_parser().parse_args()
    setup_logging(False)
    names = [v for v in a.variants.split(",") if v]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown or not names:
        sys.stderr.write(f"error: --variants: unknown {unknown} (known: {', '.join(VARIANTS)})\n")
        return 2
    root = Path(a.out).resolve()
    root.mkdir(parents=True, exist_ok=True)
    results = [run_variant(n, a, root) for n in names]
    pointer = next((n for n in names if n.startswith("pointer")), None)
    controls = {} if a.no_controls else run_controls(a, results[0], pointer)
    table = format_table(results, controls)
    print(table)
    (root / "learn_synthetic.txt").write_text(table + "\n")
    (root / "learn_synthetic.json").write_text(
        json.dumps({"results": results, "controls": controls, "args": vars(a)}, indent=2) + "\n"
    )
    return 0


def _cds(scores: dict, who: str, ftype: str = "CDS") -> tuple[float, float]:
    """(exact F1, stop F1) of ``who`` ("dna2gff" or "prodigal") for ``ftype`` in evaluate's JSON."""
    row = (scores.get(who) or {}).get(ftype)
    return (row["exact"]["f1"], row["stop"]["f1"]) if row else (0.0, 0.0)


def learning_curve(run: Path, bins: int = 10) -> list[dict]:
    """Mean train loss per bin of steps (``metrics.jsonl``) with the last validation scalars
    (TensorBoard: ``val/loss``, ``val/exact_features``) reached by the end of each bin."""
    steps = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    if not steps:
        return []
    val: dict[str, list[tuple[int, float]]] = {}
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        acc = EventAccumulator(str(run / "tensorboard"))
        acc.Reload()
        for tag in ("val/loss", "val/exact_features"):
            if tag in acc.Tags()["scalars"]:
                val[tag] = [(e.step, e.value) for e in acc.Scalars(tag)]
    except ImportError:  # pragma: no cover - tensorboard is a dependency
        pass
    size = max(1, len(steps) // bins)
    out = []
    for i in range(0, len(steps), size):
        chunk = steps[i : i + size]
        last = chunk[-1]["step"]
        row = {"step": last, "train_loss": sum(c["loss"] for c in chunk) / len(chunk)}
        for tag, points in val.items():
            seen = [v for s, v in points if s <= last]
            row[tag] = seen[-1] if seen else None
        out.append(row)
    return out


def format_table(results: list[dict], controls: dict) -> str:
    """The learning curves and the held-out table (CDS exact/stop F1, tRNA and rRNA exact F1)."""
    lines = []
    for r in results:
        lines.append(f"variant {r['variant']}: learning curve")
        lines.append(f"{'step':>8} {'train loss':>10} {'val loss':>9}")
        for c in r["curve"]:
            vl = c.get("val/loss")
            lines.append(
                f"{c['step']:>8} {c['train_loss']:>10.3f} {'' if vl is None else f'{vl:.3f}':>9}"
            )
        lines.append(f"{'steps':>8} {'train min':>9} {'CDS exact F1':>12} {'stop F1':>8}")
        for row in r["rows"]:
            exact, stop = _cds(row["scores"], "dna2gff")
            lines.append(
                f"{row['steps']:>8} {row['train_minutes']:>9.1f} {exact:>12.3f} {stop:>8.3f}"
            )
        lines.append("")
    head = (
        f"{'held-out genome':<36} {'steps':>6} {'min':>5} {'CDS exact':>9} {'CDS stop':>8} "
        f"{'tRNA exact':>10} {'rRNA exact':>10}"
    )
    lines += [head, "-" * len(head)]

    def row(label: str, scores: dict, steps: str, minutes: str, who: str = "dna2gff") -> str:
        exact, stop = _cds(scores, who)
        t = _cds(scores, who, "tRNA")[0] if who == "dna2gff" else float("nan")
        rr = _cds(scores, who, "rRNA")[0] if who == "dna2gff" else float("nan")
        return (
            f"{label:<36} {steps:>6} {minutes:>5} {exact:>9.3f} {stop:>8.3f} {t:>10.3f} {rr:>10.3f}"
        )

    for r in results:
        for label, scores in r["final"].items():
            lines.append(row(label, scores, str(r["steps"]), f"{r['train_minutes']:.1f}"))
    for label, scores in controls.items():
        lines.append(row(label, scores, "0", "0"))
    chosen = sorted(
        {r["final"][k].get("min_orf_codons") for r in results for k in r["final"]} - {None}
    )
    how = "tuned on the tuning genome" if results[0].get("tuned") else "the ORF rule's N"
    lines.append(
        f"(ORF layer: a whole CDS spans >= N codons, N = {', '.join(map(str, chosen))}: {how}; "
        f"the rule's N on the training genomes: {results[0].get('rule_min_orf_codons')})"
    )
    last = results[-1]["rows"][-1]["scores"]
    lines.append(row("Prodigal", last, "", "", "prodigal"))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
