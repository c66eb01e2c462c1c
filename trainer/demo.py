"""The quickstart: the whole recipe end to end, as the commands a user would type.

Why subprocesses: the demo is the proof that the recipe's own scripts (``launch/*.py``) work
together — the same flags, files and launchers a user runs by hand — so it calls them, not the
library functions behind them. Every command goes to ``OUT/commands.sh`` (the recipe, replayable) and
its output to ``OUT/logs/NN_step.log``; each step's time is logged and summed at the end.

Default (no internet): synthetic genomes (``baking.synthetic``), a small BPE tokenizer trained on
them in DNABERT-2's format, and a tiny random checkpoint in DNABERT-2's layout stand in for the
NCBI downloads and the hub weights. ``--genome FNA GFF`` (repeatable) and ``--dnabert_path`` run the
same steps on real data: all genomes but the last are baked for training; the last is annotated and
scored (with only one genome it is used for both, and the scores say so).
"""

from __future__ import annotations

import functools
import logging
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from baking.common.errors import ConfigError, Dna2GffError, InputError
from baking.common.files import read_json, write_json, write_text
from trainer.distributed import free_port

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
LAUNCH = REPO / "launch"
TINY_WINDOW = 400  # bp per window for the tiny stand-in model (short inputs: fast CPU steps)
MARKER = "demo.json"  # written into OUT; only a folder carrying it (or empty) is ever replaced


class DemoError(Dna2GffError):
    """A demo step failed; the message names the step, its exit code and its log file."""


@dataclass
class DemoConfig:
    """Sizes are chosen so the default demo runs in a few minutes on 2 CPU cores."""

    out: str = "demo_out"
    genomes: tuple[tuple[str, str], ...] = ()
    """Real (FASTA, GFF3) pairs; empty = synthetic genomes."""
    dnabert_path: str | None = None
    """A DNABERT-2 folder or hub id; None = a tiny random checkpoint in DNABERT-2's layout."""
    seed: int = 1
    train_genomes: int = 4
    """Synthetic genomes baked for training (one more is generated and held out)."""
    genome_length: int = 40_000
    plasmid_length: int = 5_000
    vocab_size: int = 256
    """BPE vocabulary of the stand-in tokenizer (DNABERT-2's is 4096)."""
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    intermediate_size: int = 128
    num_experts: int = 4
    moe_top_k: int = 2
    window_len: int | None = None
    """Bake window (bp); None = 400 for the tiny stand-in model, the baker's default (sized for
    DNABERT-2's 512 tokens) with ``dnabert_path``."""
    val_fraction: float = 0.1
    """Validation block at the end of each training sequence (the baker's ``--val_fraction``)."""
    workers: int = 2
    launcher: str = "deepspeed"
    """deepspeed | torchrun | python (one process)."""
    nproc: int = 2
    ep_size: int = 2
    deepspeed_config: str = str(REPO / "ds_configs" / "zero2_bf16_moe.json")
    max_steps: int = 150
    micro_batch_size: int = 8
    lr: float = 1e-3
    use_moe: bool = True
    """The recipe's MoE decoder (``--use_moe``); False builds a dense decoder."""
    synthetic_args: tuple[str, ...] = ()
    """Extra flags passed to make_synthetic.py as they are."""
    bake_args: tuple[str, ...] = ()
    """Extra flags passed to bake_data.py as they are."""
    init_args: tuple[str, ...] = ()
    """Extra flags passed to init_model.py as they are (e.g. ``--pointer_context_bp 0``)."""
    train_args: tuple[str, ...] = ()
    """Extra flags passed to train.py as they are."""
    annotate_args: tuple[str, ...] = ()
    """Extra flags passed to annotate.py as they are."""
    baseline: bool = True
    """Score Prodigal (pyrodigal) on the same genome."""

    def __post_init__(self) -> None:
        for name in (
            "train_genomes",
            "genome_length",
            "vocab_size",
            "hidden_size",
            "num_layers",
            "num_heads",
            "intermediate_size",
            "num_experts",
            "moe_top_k",
            "workers",
            "nproc",
            "ep_size",
            "max_steps",
            "micro_batch_size",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name}={value!r}: must be a positive integer")
        if self.launcher not in ("deepspeed", "torchrun", "python"):
            raise ConfigError(f"launcher={self.launcher!r}: use deepspeed, torchrun or python")
        if self.launcher == "python" and self.nproc != 1:
            self.nproc = 1
        if self.nproc % self.ep_size or self.num_experts % self.ep_size:
            raise ConfigError(
                f"ep_size={self.ep_size}: must divide nproc={self.nproc} "
                f"and num_experts={self.num_experts}"
            )
        if self.moe_top_k > self.num_experts:
            raise ConfigError(f"moe_top_k={self.moe_top_k}: more than num_experts")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction={self.val_fraction!r}: must be within [0, 1)")
        if self.vocab_size < 16:
            raise ConfigError(f"vocab_size={self.vocab_size}: must be >= 16")
        if self.hidden_size % self.num_heads:
            raise ConfigError(f"hidden_size={self.hidden_size}: not a multiple of num_heads")
        for fna, gff in self.genomes:
            for p in (fna, gff):
                if not Path(p).is_file():
                    raise InputError(p, "no such file")


@dataclass
class Step:
    """One command of the recipe (``argv``) or an in-process action (``action``)."""

    name: str
    argv: list[str] = field(default_factory=list)
    action: Callable[[], None] | None = None
    env: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass
class Layout:
    """Where everything goes under OUT (the names the docs and the final summary use)."""

    out: Path
    genomes: Path = field(init=False)
    logs: Path = field(init=False)
    base: Path = field(init=False)
    model: Path = field(init=False)
    genome_list: Path = field(init=False)
    baked: Path = field(init=False)
    new_tokens: Path = field(init=False)
    tokenizer: Path = field(init=False)
    run: Path = field(init=False)
    pred: Path = field(init=False)
    annotate_json: Path = field(init=False)
    eval_txt: Path = field(init=False)
    eval_json: Path = field(init=False)
    plot: Path = field(init=False)
    commands: Path = field(init=False)

    def __post_init__(self) -> None:
        o = self.out
        self.genomes, self.logs = o / "genomes", o / "logs"
        self.base = o / "dnabert2_tiny"
        self.model, self.genome_list, self.baked = (
            o / "model" / "init",
            o / "genomes.tsv",
            o / "baked",
        )
        self.new_tokens, self.tokenizer = o / "data" / "new_tokens.txt", o / "tokenizer"
        self.run, self.pred, self.annotate_json = o / "run", o / "pred.gff3", o / "annotate.json"
        self.eval_txt, self.eval_json, self.plot = o / "eval.txt", o / "eval.json", o / "eval.png"
        self.commands = o / "commands.sh"


def display_command(argv: Sequence[str]) -> str:
    """A command as a user would type it: ``python``, paths relative to the checkout."""
    bindir = str(Path(sys.executable).parent) + os.sep
    shown = ["python" if a == sys.executable else a.removeprefix(bindir) for a in argv]
    shown = [os.path.relpath(a, REPO) if a.startswith(str(REPO) + os.sep) else a for a in shown]
    return shlex.join(shown)


def launch_command(script: str, *args: object) -> list[str]:
    return [sys.executable, str(LAUNCH / script), *(str(a) for a in args)]


def genome_pairs(cfg: DemoConfig, lay: Layout) -> tuple[list[tuple[Path, Path]], tuple[Path, Path]]:
    """(training pairs, held-out pair): synthetic ``synthetic_<seed>`` files or the user's."""
    if cfg.genomes:
        pairs = [(Path(f), Path(g)) for f, g in cfg.genomes]
        return (pairs[:-1] or pairs), pairs[-1]
    seeds = range(cfg.seed, cfg.seed + cfg.train_genomes + 1)
    pairs = [
        (lay.genomes / f"synthetic_{s}.fna.gz", lay.genomes / f"synthetic_{s}.gff.gz")
        for s in seeds
    ]
    return pairs[:-1], pairs[-1]


def train_command(cfg: DemoConfig, lay: Layout) -> list[str]:
    """``train.py`` under the chosen launcher, with the demo's sizes."""
    script = str(LAUNCH / "train.py")
    if cfg.launcher == "deepspeed":
        ds = shutil.which("deepspeed", path=str(Path(sys.executable).parent)) or "deepspeed"
        head = [ds, "--num_gpus", str(cfg.nproc), "--master_port", str(free_port()), script]
    elif cfg.launcher == "torchrun":
        head = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            str(cfg.nproc),
            "--master_port",
            str(free_port()),
            script,
        ]
    else:
        head = [sys.executable, script]
    args = [
        "--model",
        lay.model,
        "--data",
        lay.baked,
        "--output",
        lay.run,
        "--deepspeed_config",
        cfg.deepspeed_config,
        "--ep_size",
        cfg.ep_size,
        "--max_steps",
        cfg.max_steps,
        "--micro_batch_size",
        cfg.micro_batch_size,
        "--lr",
        cfg.lr,
        "--seed",
        cfg.seed,
    ]
    if not _has_cuda():  # on a few cores a loader process per rank only competes with training
        args += ["--num_workers", 0]
    return head + [str(a) for a in args] + list(cfg.train_args)


def synthetic_command(cfg: DemoConfig, lay: Layout, count: int, seed: int) -> list[str]:
    """``make_synthetic.py``: ``count`` genomes of the demo's species from ``seed`` into
    ``lay.genomes`` (``synthetic_<seed>``, ``synthetic_<seed + 1>``, ...)."""
    return launch_command(
        "make_synthetic.py",
        lay.genomes,
        "--count",
        count,
        "--seed",
        seed,
        "--length",
        cfg.genome_length,
        "--plasmid",
        cfg.plasmid_length,
        *cfg.synthetic_args,
    )


def plan_steps(cfg: DemoConfig, lay: Layout) -> list[Step]:
    """The recipe as a list of steps, in order; nothing runs here."""
    train_pairs, (held_fna, held_gff) = genome_pairs(cfg, lay)
    steps: list[Step] = []
    if not cfg.genomes:
        steps.append(
            Step("make_synthetic", synthetic_command(cfg, lay, cfg.train_genomes + 1, cfg.seed))
        )
    base = cfg.dnabert_path
    if base is None:
        base = str(lay.base)
        # DNABERT-2's stand-in: a BPE tokenizer trained on the training genomes + random weights
        steps.append(
            Step(
                "random_dnabert2",
                launch_command(
                    "init_model.py",
                    "--random_dnabert2",
                    lay.base,
                    "--hidden_size",
                    cfg.hidden_size,
                    "--num_layers",
                    cfg.num_layers,
                    "--num_heads",
                    cfg.num_heads,
                    "--intermediate_size",
                    cfg.intermediate_size,
                    "--vocab_size",
                    cfg.vocab_size,
                    "--seed",
                    cfg.seed,
                    "--tokenizer_fasta",
                    *[f for f, _ in train_pairs],
                ),
            )
        )
    moe = ["--use_moe", "--num_experts", str(cfg.num_experts), "--moe_top_k", str(cfg.moe_top_k)]
    steps.append(
        Step(
            "init_model",
            launch_command(
                "init_model.py",
                "--save_dir",
                lay.model,
                "--dnabert_path",
                base,
                *(moe if cfg.use_moe else []),
                "--tie_weights",
                *cfg.init_args,
            ),
        )
    )
    bake = launch_command(
        "bake_data.py",
        "--genomes",
        lay.genome_list,
        lay.baked,
        "--workers",
        cfg.workers,
        "--extract_tokens",
        lay.new_tokens,
    )
    window = cfg.window_len or (None if cfg.dnabert_path else TINY_WINDOW)
    if window:
        bake += ["--window", str(window)]
    if cfg.val_fraction:
        bake += ["--val_fraction", str(cfg.val_fraction)]
    bake += list(cfg.bake_args)
    steps.append(Step("bake_data", bake, action=lambda: _genome_list(train_pairs, lay)))
    steps.append(
        Step(
            "init_tk",
            launch_command("init_tk.py", lay.new_tokens, "--base", base, "--out", lay.tokenizer),
        )
    )
    steps.append(
        Step(
            "append_tk",
            launch_command("append_tk.py", lay.new_tokens, lay.model / "tokenizer.json"),
        )
    )
    steps.append(
        Step(
            "resize_model",
            launch_command("resize_model.py", lay.model, lay.model / "tokenizer.json"),
        )
    )
    threads = max(1, (os.cpu_count() or 2) // cfg.nproc)
    env = {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(threads))}
    steps.append(Step("train", train_command(cfg, lay), env=env))
    circular = "all" if not cfg.genomes else ",".join(circular_seqids(held_gff))
    steps.append(
        Step(
            "annotate",
            launch_command(
                "annotate.py",
                "--model",
                lay.run / "export",
                "--fasta",
                held_fna,
                "--out",
                lay.pred,
                *(["--circular", circular] if circular else []),
                "--summary_json",
                lay.annotate_json,
                *cfg.annotate_args,
            ),
        )
    )
    baseline = ["--baseline", "prodigal", "--fasta", str(held_fna)] if cfg.baseline else []
    steps.append(
        Step(
            "evaluate",
            launch_command("evaluate.py", held_gff, lay.pred, "--plot", lay.plot, *baseline),
        )
    )
    steps.append(
        Step(
            "evaluate_json", launch_command("evaluate.py", held_gff, lay.pred, "--json", *baseline)
        )
    )
    return steps


def common_env() -> dict[str, str]:
    """Environment every command gets: DeepSpeed's CPU accelerator when there is no GPU."""
    if _has_cuda():
        return {}
    return {"DS_ACCELERATOR": os.environ.get("DS_ACCELERATOR", "cpu")}


def start_commands_file(lay: Layout, what: str) -> None:
    """``OUT/commands.sh``: a header with the shared environment; ``run_step`` appends commands."""
    exports = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in common_env().items())
    text = f"#!/usr/bin/env bash\n# {what}\nset -e\ncd {shlex.quote(str(REPO))}\n{exports}"
    write_text(lay.commands, text)


def circular_seqids(gff: str | Path) -> list[str]:
    """Sequences the annotation's ``region`` lines call circular (``Is_circular=true``).

    The FASTA cannot say it, and annotate must know it to find genes across the origin; it is
    assembly metadata, not the annotation being predicted.
    """
    from baking.formats.gff3 import iter_gff3

    return [
        f.seqid
        for f in iter_gff3(gff)
        if f.type == "region" and (f.attr("Is_circular") or "").lower() == "true"
    ]


def genome_name(fasta: Path) -> str:
    """``GCF_000005845.2_ASM584v2_genomic.fna.gz`` -> ``GCF_000005845.2_ASM584v2_genomic``."""
    name = fasta.name
    for suffix in (".gz", ".fna", ".fasta", ".fa", ".fas"):
        name = name.removesuffix(suffix)
    return name or fasta.name


def _genome_list(pairs: Sequence[tuple[Path, Path]], lay: Layout) -> None:
    """The baker's many-genome input: ``name<TAB>fasta<TAB>gff3`` a line, names made unique."""
    lines, seen = [], set()
    for i, (f, g) in enumerate(pairs):
        name = genome_name(f)
        if name in seen:
            name = f"{name}_{i + 1}"
        seen.add(name)
        lines.append(f"{name}\t{f.resolve()}\t{g.resolve()}\n")
    write_text(lay.genome_list, "".join(lines))


@functools.lru_cache(maxsize=1)
def _has_cuda() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:  # pragma: no cover - torch is a dependency
        return False


def prepare_out(out: Path, cfg: DemoConfig) -> None:
    """Start from a clean OUT, but only ever delete a folder an earlier demo made (or an empty one)."""
    if out.exists():
        if not out.is_dir():
            raise InputError(out, "exists and is not a folder")
        if any(out.iterdir()) and not (out / MARKER).is_file():
            raise InputError(out, f"exists, is not empty and has no {MARKER}: not a demo folder")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    write_json(out / MARKER, asdict(cfg), default=str)


def run_step(step: Step, index: int, lay: Layout, stdout_file: Path | None = None) -> None:
    """Run one step, its output into ``logs/NN_name.log``; a failure raises ``DemoError``."""
    log_path = lay.logs / f"{index:02d}_{step.name}.log"
    t0 = time.perf_counter()
    if step.action is not None:
        step.action()
    if step.argv:
        line = display_command(step.argv)
        if step.env:
            line = " ".join(f"{k}={shlex.quote(v)}" for k, v in step.env.items()) + " " + line
        with lay.commands.open("a") as fh:
            fh.write(line + "\n")
        log.info("step=%s command=%s", step.name, line)
        env = {**os.environ, **common_env(), **step.env, "PYTHONUNBUFFERED": "1"}
        with log_path.open("w") as log_fh:
            out_fh = stdout_file.open("w") if stdout_file else log_fh
            try:
                proc = subprocess.run(step.argv, stdout=out_fh, stderr=log_fh, env=env, cwd=REPO)
            finally:
                if stdout_file:
                    out_fh.close()
        if proc.returncode != 0:
            tail = log_path.read_text(errors="replace").splitlines()[-25:]
            sys.stderr.write("\n".join(tail) + "\n")
            raise DemoError(
                f"step {step.name} failed (exit {proc.returncode}); log: {log_path}; "
                f"command: {line}"
            )
    step.seconds = time.perf_counter() - t0
    log.info("step=%s done seconds=%.1f", step.name, step.seconds)


@dataclass
class DemoSummary:
    """What the demo reached: step times, where things are, and the scores."""

    seconds: dict[str, float]
    seconds_total: float
    table: str
    """evaluate's table (model and Prodigal rows)."""
    scores: object
    """evaluate's ``--json`` output."""
    held_out: tuple[str, str]
    trained_on_scored: bool
    """True with a single ``--genome``: the scored genome was also trained on."""
    out: str
    prediction: str
    commands: str
    tensorboard: str

    def report(self) -> str:
        times = ", ".join(f"{k} {v:.0f}" for k, v in self.seconds.items())
        return "\n".join(
            [
                f"scored genome: {self.held_out[0]}"
                + (
                    " (ALSO TRAINED ON: give two --genome pairs to hold one out)"
                    if self.trained_on_scored
                    else " (held out: never trained on)"
                ),
                self.table.rstrip(),
                "",
                f"step seconds: {times}",
                f"total: {self.seconds_total:.0f} s",
                f"prediction:  {self.prediction}",
                f"commands:    {self.commands}  (the recipe as run; replayable)",
                f"TensorBoard: tensorboard --logdir {self.tensorboard}",
            ]
        )


def run_demo(cfg: DemoConfig) -> DemoSummary:
    """Run every step in order; the summary is also written to ``OUT/demo.json``."""
    lay = Layout(Path(cfg.out).resolve())
    prepare_out(lay.out, cfg)
    lay.logs.mkdir()
    start_commands_file(lay, "The commands the demo ran, in order (bash commands.sh replays them).")
    steps = plan_steps(cfg, lay)
    t0 = time.perf_counter()
    for i, step in enumerate(steps, 1):
        log.info("step %d/%d: %s", i, len(steps), step.name)
        capture = {"evaluate": lay.eval_txt, "evaluate_json": lay.eval_json}.get(step.name)
        run_step(step, i, lay, capture)
    held = genome_pairs(cfg, lay)[1]
    summary = DemoSummary(
        seconds={s.name: round(s.seconds, 1) for s in steps},
        seconds_total=round(time.perf_counter() - t0, 1),
        table=lay.eval_txt.read_text(),
        scores=read_json(lay.eval_json, "evaluate --json output"),
        held_out=(str(held[0]), str(held[1])),
        trained_on_scored=len(cfg.genomes) == 1,
        out=str(lay.out),
        prediction=str(lay.pred),
        commands=str(lay.commands),
        tensorboard=str(lay.run / "tensorboard"),
    )
    record = {"config": asdict(cfg), "summary": asdict(summary)}
    write_json(lay.out / MARKER, record, default=str)
    return summary
