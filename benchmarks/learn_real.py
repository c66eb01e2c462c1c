#!/usr/bin/env python3
"""Does the model annotate species it never saw? Train on real genomes, score held-out genera whole.

    python benchmarks/learn_real.py --out runs/learn_real            # the default: 60 train min
    python benchmarks/learn_real.py --out runs/short --minutes 12    # a short run
    python benchmarks/learn_real.py --out runs/learn_real --score_only runs/learn_real/run/export

The shared corpus (``benchmarks/shared_corpus.tsv``, 21 genomes) is split **by genus**: every genome
of a held-out genus is held out, every other genome is trained on. The split must have at least
four held-out genomes, all with curated annotation (never one of the RAST re-annotations, which are
Prodigal's own calls), spanning at least 25 GC points, and at least one held-out genome from a
phylum with no training genome; a split that breaks a rule is refused with one ``error:`` line.

Then, with the project's own commands (``launch/*.py``, as the recipe runs them): a stand-in
DNABERT-2 (random weights; its BPE tokenizer trained on a slice of every training genome, or the
real DNABERT-2 tokenizer with ``--tokenizer dnabert2``), ``bake_data --genomes`` of the training
genomes each under its own genetic code, ``train`` in chunks for ``--minutes`` (or ``--steps``),
each chunk followed by a cheap learning-curve point (``annotate`` on a fixed slice of every
held-out genome), and at the end ``annotate`` of every held-out genome *whole*, scored with
``evaluate`` next to Prodigal (pyrodigal, in ``evaluate --baseline``) and the no-model ORF rule
(every ORF >= N codons, N chosen on the training genomes). ``annotate`` is given each held-out
genome's FASTA, genetic code and circularity (from the corpus table's contig count), never its
annotation: the GFF3 files are read only by ``evaluate`` and the curve slicer.

The model row decodes with ``annotate --adapt`` (``--adapt on``, the default: the genome's own
statistics learned from the model's confident genes choose among every ORF together with the
windows; measured better, ``docs/learning.md``). Ablations at the same budget (``--ablations``):
``adapt`` scores the final model with the other ``--adapt`` setting; ``selection`` with the other
``--selection`` (votes vs genome) and no adaptation (under ``--adapt`` the selection only decides
a genome too small to adapt to); ``min_orf`` with the ORF layer's N set to the rule's N. Beside the
ORF rule, a second no-model control: ``orf_rule --self_trained``, the same statistics seeded from
long ORFs with no model at all (what the model adds to ``--adapt``).
Training-time levers (``--tokenizer``, model width) need a run each: compare two ``--out`` folders.

Writes ``OUT/table.md`` and ``OUT/results.json`` (atomically); ``OUT/logs/`` holds every command's
output and ``OUT/commands.sh`` the commands in order.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))  # run from a checkout
sys.path.insert(1, str(HERE))  # learn_synthetic's schedule and curve helpers

from baking.common.errors import ConfigError, InputError  # noqa: E402
from baking.common.files import read_json, write_json, write_text  # noqa: E402
from baking.formats.fasta import read_fasta  # noqa: E402
from baking.genome_list import read_list_rows  # noqa: E402
from launch._cli import run_cli, setup_logging  # noqa: E402

log = logging.getLogger("learn_real")

CORPUS = HERE / "shared_corpus.tsv"
CORPUS_COLUMNS = (
    "name",
    "fasta",
    "gff",
    "transl_table",
    "annotation",
    "genus",
    "phylum",
    "gc",
    "contigs",
)
DEFAULT_HELD_OUT = (
    "Carsonella_ruddii_HT",
    "Wolbachia_wRi",
    "Methanococcus_maripaludis_S2",
    "Treponema_pallidum_Nichols",
)
"""14.6-52.8% GC (38 points); Euryarchaeota has no training genome; 4.42 Mbp to annotate whole."""
MIN_HELD_OUT = 4
MIN_GC_SPAN = 25.0
TYPES = "CDS,tRNA,rRNA"
MARKER = "learn_real.json"
"""Written into OUT at the start: only a folder carrying it (or an empty one) is ever replaced."""


# ----------------------------------------------------------------------------- the split


@dataclass(frozen=True)
class CorpusGenome:
    """One line of the corpus table."""

    name: str
    fasta: Path
    gff: Path
    transl_table: int
    annotation: str
    genus: str
    phylum: str
    gc: float
    contigs: int


def read_corpus(path: str | Path = CORPUS) -> list[CorpusGenome]:
    """The corpus table (a headed ``bake_data --genomes`` list with its extra columns)."""
    rows = read_list_rows(path, CORPUS_COLUMNS, required=len(CORPUS_COLUMNS), plain_names=True)
    out = []
    for r in rows:
        try:
            gc, contigs = float(r.cells["gc"]), int(r.cells["contigs"])
        except ValueError:
            raise InputError(r.list_path, "gc and contigs must be numbers", r.lineno) from None
        out.append(
            CorpusGenome(
                r.name,
                r.path("fasta").resolve(),
                r.path("gff").resolve(),
                r.transl_table(11) or 11,
                r.cells["annotation"],
                r.cells["genus"],
                r.cells["phylum"],
                gc,
                contigs,
            )
        )
    return out


@dataclass(frozen=True)
class Split:
    """Training and held-out genomes, split by genus, and the properties the rules check."""

    train: tuple[CorpusGenome, ...]
    held: tuple[CorpusGenome, ...]

    @property
    def gc_span(self) -> float:
        gcs = [g.gc for g in self.held]
        return max(gcs) - min(gcs)

    @property
    def new_phyla(self) -> list[str]:
        """Held-out phyla that no training genome belongs to."""
        seen = {g.phylum for g in self.train}
        return sorted({g.phylum for g in self.held} - seen)

    def describe(self) -> list[str]:
        """The split and its checked properties, one line each (printed and put in the table)."""
        codes = sorted({g.transl_table for g in self.train})
        tr_gc = [g.gc for g in self.train]
        lines = [
            f"training: {len(self.train)} genomes, {len({g.genus for g in self.train})} genera, "
            f"{len({g.phylum for g in self.train})} phyla, GC {min(tr_gc):.1f}-{max(tr_gc):.1f}%, "
            f"codes {', '.join(map(str, codes))}, "
            f"{sum(g.annotation == 'rast' for g in self.train)} RAST-annotated, "
            f"{sum(g.contigs > 2 for g in self.train)} drafts (> 2 sequences): "
            + ", ".join(g.name for g in self.train),
            f"held out: {len(self.held)} genomes (>= {MIN_HELD_OUT}), all curated: "
            + ", ".join(f"{g.name} ({g.phylum}, {g.gc:.1f}% GC)" for g in self.held),
            f"held-out GC span: {self.gc_span:.1f} points (>= {MIN_GC_SPAN:.0f})",
            "held-out phyla absent from training: " + (", ".join(self.new_phyla) or "none"),
        ]
        return lines


def make_split(corpus: Sequence[CorpusGenome], held_names: Sequence[str]) -> Split:
    """Hold out every genome of the named genomes' genera; refuse a split that breaks a rule.

    Why by genus: two strains or species of one genus share most genes, so a held-out genome with
    a training relative would measure memory, not generalisation across species.
    """
    by_name = {g.name: g for g in corpus}
    unknown = [n for n in held_names if n not in by_name]
    if unknown:
        raise ConfigError(f"--held_out: not in the corpus: {', '.join(unknown)}")
    genera = {by_name[n].genus for n in held_names}
    held = tuple(g for g in corpus if g.genus in genera)
    train = tuple(g for g in corpus if g.genus not in genera)
    split = Split(train, held)
    rast = [g.name for g in held if g.annotation != "curated"]
    if rast:
        raise ConfigError(
            f"held-out split: {', '.join(rast)} not curated (a RAST re-annotation is Prodigal's "
            "own calls: never a held-out truth; its genus would be held out with the named genome)"
        )
    if len(held) < MIN_HELD_OUT:
        raise ConfigError(f"held-out split: {len(held)} genomes, at least {MIN_HELD_OUT} needed")
    if split.gc_span < MIN_GC_SPAN:
        raise ConfigError(
            f"held-out split: GC spans {split.gc_span:.1f} points, at least {MIN_GC_SPAN:.0f} needed"
        )
    if not split.new_phyla:
        raise ConfigError("held-out split: every held-out phylum also has a training genome")
    if not train:
        raise ConfigError("held-out split: no training genome left")
    return split


def restrict_training(split: Split, names: Sequence[str]) -> Split:
    """Train on some of the split's training genomes only (the held-out side is unchanged)."""
    by_name = {g.name: g for g in split.train}
    wrong = [n for n in names if n not in by_name]
    if wrong:
        raise ConfigError(f"--train: not on the training side of the split: {', '.join(wrong)}")
    return Split(tuple(by_name[n] for n in names), split.held)


# ----------------------------------------------------------------------------- inputs on disk


@dataclass(frozen=True)
class HeldGenome:
    """What ``annotate`` may know of a held-out genome: no annotation path at all."""

    name: str
    fasta: Path
    transl_table: int
    circular: tuple[str, ...]


def held_genome(g: CorpusGenome) -> HeldGenome:
    """A complete genome (one contig in the corpus table) is a circular chromosome; a draft's
    contigs are linear. Read from the table and the FASTA, never from the annotation."""
    circular = tuple(seqid for seqid, _ in read_fasta(g.fasta)) if g.contigs == 1 else ()
    return HeldGenome(g.name, g.fasta, g.transl_table, circular)


def annotate_list(genomes: Sequence[HeldGenome]) -> str:
    """``annotate --genomes``: name, FASTA, code (no ``gff`` column)."""
    head = "name\tfasta\ttransl_table\n"
    return head + "".join(f"{g.name}\t{g.fasta}\t{g.transl_table}\n" for g in genomes)


def bake_list(genomes: Sequence[CorpusGenome]) -> str:
    """``bake_data --genomes``: name, FASTA, GFF3, code."""
    head = "name\tfasta\tgff\ttransl_table\n"
    return head + "".join(f"{g.name}\t{g.fasta}\t{g.gff}\t{g.transl_table}\n" for g in genomes)


def tokenizer_sample(
    genomes: Sequence[CorpusGenome], out: Path, bp: int, piece: int = 10_000
) -> Path:
    """The first ``bp`` bases of every training genome, in ``piece``-long records: the stand-in
    BPE is trained on every species equally, in short words (one chromosome-long word is slow)."""
    lines = []
    for g in genomes:
        left = bp
        for seqid, seq in read_fasta(g.fasta):
            take = seq[:left]
            for i in range(0, len(take), piece):
                lines.append(f">{g.name}_{seqid}_{i}\n{take[i : i + piece]}\n")
            left -= len(take)
            if left <= 0:
                break
    write_text(out, "".join(lines))
    return out


def write_slice(g: CorpusGenome, bp: int, folder: Path) -> tuple[Path, Path]:
    """The first ``bp`` bases of a held-out genome (whole records in order, the last one cut) and
    the reference features that lie inside them, for the learning curve: cheap, fixed, and the
    same at every checkpoint. Region lines are dropped (a slice is not circular)."""
    from baking.formats.gff3 import format_gff3_line, read_gff3

    kept: dict[str, int] = {}
    fasta = []
    left = bp
    for seqid, seq in read_fasta(g.fasta):
        take = seq[:left]
        kept[seqid] = len(take)
        fasta.append(f">{seqid}\n{take}\n")
        left -= len(take)
        if left <= 0:
            break
    doc = read_gff3(g.gff)
    inside = [
        f for f in doc.features if f.type != "region" and f.seqid in kept and f.end <= kept[f.seqid]
    ]
    ids = {f.attr("ID") for f in inside} - {None}
    inside = [f for f in inside if all(p in ids for p in (f.attr("Parent") or "").split(",") if p)]
    head = "##gff-version 3\n" + "".join(f"##sequence-region {s} 1 {n}\n" for s, n in kept.items())
    fna, gff = folder / f"{g.name}.fna", folder / f"{g.name}.gff3"
    write_text(fna, "".join(fasta))
    write_text(gff, head + "".join(format_gff3_line(f) + "\n" for f in inside))
    return fna, gff


# ----------------------------------------------------------------------------- the ORF rule


def rule_min_codons(train: Sequence[CorpusGenome]) -> int:
    """The no-model rule's N: best pooled CDS stop F1 over the training genomes, each scored
    under its own genetic code (``score_min_codons`` per code, counts summed)."""
    from baking.evaluate.metrics import Scores
    from trainer.inference.orf_rule import score_min_codons

    totals: dict[int, list[int]] = {}
    for code in sorted({g.transl_table for g in train}):
        pairs = [(g.fasta, g.gff) for g in train if g.transl_table == code]
        for n, (stop, _exact) in score_min_codons(pairs, transl_table=code).items():
            acc = totals.setdefault(n, [0, 0, 0, 0])
            for j, v in enumerate((stop.tp_ref, stop.n_ref, stop.tp_pred, stop.n_pred)):
                acc[j] += v
    return max(sorted(totals), key=lambda n: (Scores(*totals[n]).f1, -n))


# ----------------------------------------------------------------------------- arguments


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="learn_real",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--corpus", default=str(CORPUS), help="the genome table")
    p.add_argument(
        "--held_out",
        default=",".join(DEFAULT_HELD_OUT),
        help="comma-separated corpus names; their whole genera are held out",
    )
    p.add_argument("--check_split", action="store_true", help="print the split and stop")
    p.add_argument(
        "--train",
        default=None,
        help="comma-separated: train on these genomes of the split's training side only "
        "(smoke tests; default: all of it)",
    )
    p.add_argument(
        "--score_bp",
        type=int,
        default=None,
        help="score the first N bp of each held-out genome instead of the whole (smoke tests)",
    )
    p.add_argument(
        "--score_only",
        metavar="MODEL",
        default=None,
        help="skip baking and training: score this exported model folder (results into OUT)",
    )
    p.add_argument(
        "--table_only",
        action="store_true",
        help="rewrite OUT/table.md from OUT/results.json (no commands run)",
    )
    p.add_argument("--minutes", type=float, default=60.0, help="training-loop wall-clock budget")
    p.add_argument("--steps", type=int, default=None, help="train exactly this many steps")
    p.add_argument("--chunks", type=int, default=3, help="learning-curve points over the budget")
    p.add_argument("--probe_steps", type=int, default=100, help="steps of the first chunk")
    p.add_argument(
        "--ablations",
        default="adapt,selection,min_orf",
        help="comma-separated, of: adapt (the other --adapt), selection (the other --selection, "
        "no --adapt), min_orf (N = the rule's N); empty for none",
    )
    d = p.add_argument_group("data and decoding")
    d.add_argument("--window", type=int, default=1536, help="bake/annotate window (bp)")
    d.add_argument("--stride", type=int, default=1024, help="bake stride (bp)")
    d.add_argument("--rc", default="both", choices=("none", "both", "random"))
    d.add_argument("--overlap", type=int, default=1024, help="annotate window overlap (bp)")
    d.add_argument("--num_beams", type=int, default=3)
    d.add_argument(
        "--selection",
        default="votes",
        choices=("votes", "genome"),
        help="the model row's decoding (votes measured better in the 12-minute run: mean stop "
        "F1 0.817 vs 0.795, docs/learning.md); the other is the selection ablation",
    )
    d.add_argument(
        "--adapt",
        default="on",
        choices=("on", "off"),
        help="the model row with annotate --adapt (on: measured better on the 12-minute model, "
        "mean stop F1 0.817 -> 0.95, docs/learning.md); the other is the adapt ablation",
    )
    d.add_argument(
        "--min_orf_codons",
        default="60",
        help="annotate's shortest whole CDS (codons); 'rule': the ORF rule's N",
    )
    d.add_argument("--curve_bp", type=int, default=100_000, help="bases per held-out curve slice")
    d.add_argument("--annotate_batch", type=int, default=32)
    m = p.add_argument_group("model")
    m.add_argument(
        "--tokenizer",
        default="standin",
        choices=("standin", "dnabert2"),
        help="standin: a BPE of --vocab_size trained on the training genomes; dnabert2: the "
        "published DNABERT-2 tokenizer (4096 tokens, ../shared/data/dnabert2)",
    )
    m.add_argument("--vocab_size", type=int, default=256)
    m.add_argument("--tokenizer_bp", type=int, default=100_000, help="bases per training genome")
    m.add_argument("--hidden_size", type=int, default=128)
    m.add_argument("--num_layers", type=int, default=3)
    m.add_argument("--num_heads", type=int, default=4)
    m.add_argument("--intermediate_size", type=int, default=256)
    t = p.add_argument_group("training")
    t.add_argument("--seed", type=int, default=1)
    t.add_argument("--micro_batch_size", type=int, default=16)
    t.add_argument("--lr", type=float, default=2e-3)
    t.add_argument("--min_lr_ratio", type=float, default=0.1)
    t.add_argument("--warmup_steps", type=int, default=100)
    t.add_argument("--max_src_tokens", type=int, default=1024)
    t.add_argument(
        "--threads",
        type=int,
        default=1,
        help="OMP_NUM_THREADS per training rank and for annotate",
    )
    t.add_argument(
        "--nproc",
        type=int,
        default=1,
        help="training ranks (2: a 2-rank gloo run through torchrun, one thread each)",
    )
    t.add_argument("--workers", type=int, default=2, help="bake_data processes")
    return p


# ----------------------------------------------------------------------------- the run


@dataclass
class Run:
    """Where things are and what the run measured (``results.json`` is ``asdict`` of it)."""

    out: Path
    args: dict
    split: list[str]
    train: list[str]
    held: list[str]
    rule_n: int | None = None
    min_orf_codons: int | None = None
    steps: int = 0
    train_minutes: float = 0.0
    seconds: dict[str, float] = field(default_factory=dict)
    curve: list[dict] = field(default_factory=list)
    loss_curve: list[dict] = field(default_factory=list)
    final: dict[str, dict] = field(default_factory=dict)
    """config label -> genome -> evaluate JSON (plus annotate seconds)."""
    rule: dict[str, dict] = field(default_factory=dict)
    self_trained: dict[str, dict] = field(default_factory=dict)
    """genome -> evaluate JSON of ``orf_rule --self_trained`` (the statistics alone, no model)."""
    model: str = ""


def _prepare_out(out: Path, score_only: bool) -> None:
    """A fresh OUT for a training run (only a folder this benchmark made, or an empty one, is
    replaced); ``--score_only`` keeps what is there and writes next to it."""
    if out.exists() and not out.is_dir():
        raise InputError(out, "exists and is not a folder")
    if not score_only and out.exists() and any(out.iterdir()):
        if not (out / MARKER).is_file():
            raise InputError(
                out, f"exists, is not empty and has no {MARKER}: not a learn_real folder"
            )
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def main(argv: Sequence[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    setup_logging(False)
    if a.nproc not in (1, 2):
        raise ConfigError(f"--nproc {a.nproc}: 1 or 2 (the box has 2 cores)")
    split = make_split(read_corpus(a.corpus), [n for n in a.held_out.split(",") if n])
    if a.train:
        split = restrict_training(split, [n for n in a.train.split(",") if n])
    for line in split.describe():
        print(line, flush=True)
    if a.check_split:
        return 0
    out = Path(a.out).resolve()
    if a.table_only:
        saved = read_json(out / "results.json")
        try:
            run = Run(**{**saved, "out": out})
        except TypeError:  # another file, or a results.json of an older layout
            raise InputError(out / "results.json", "not a learn_real results.json") from None
        write_text(out / "table.md", format_table(run) + "\n")
        print(format_table(run))
        return 0
    _prepare_out(out, a.score_only is not None)
    run = Run(
        out,
        {k: v for k, v in vars(a).items()},
        split.describe(),
        [g.name for g in split.train],
        [g.name for g in split.held],
    )
    if a.score_only is None:
        write_json(out / MARKER, run.args)
    model = Path(a.score_only).resolve() if a.score_only else out / "run" / "export"
    if a.score_only:
        if not (model / "config.json").is_file():
            raise InputError(model, "not a model folder (no config.json)")
        _carry_training(run, out / "results.json", model)
    if run.rule_n is None:
        t0 = time.perf_counter()
        run.rule_n = rule_min_codons(split.train)
        run.seconds["rule_n"] = round(time.perf_counter() - t0, 1)
        log.info(
            "rule n=%d chosen on %d training genomes seconds=%.0f",
            run.rule_n,
            len(split.train),
            run.seconds["rule_n"],
        )
    run.min_orf_codons = run.rule_n if a.min_orf_codons == "rule" else int(a.min_orf_codons)
    pipe = Pipeline(a, run, split)
    if a.score_only is None:
        model = pipe.train()
    run.model = str(model)
    pipe.score_final(model)
    if a.score_only is None:  # the model row's decoding travels with the model it trained
        from trainer.model.generation import record_decoding

        record_decoding(
            model,
            num_beams=a.num_beams,
            overlap=a.overlap,
            min_orf_codons=run.min_orf_codons,
            selection=a.selection,
            adapt=a.adapt == "on",
        )
    table = format_table(run)
    write_text(out / "table.md", table + "\n")
    write_json(out / "results.json", asdict(run), default=str)
    print(table)
    return 0


def _carry_training(run: Run, previous: Path, model: Path) -> None:
    """Re-scoring the model a run of this folder trained keeps that run's training figures
    (steps, minutes, curves), so the new table is whole; another model's are not taken."""
    if not previous.is_file():
        return
    try:
        old = json.loads(previous.read_text())
    except (OSError, ValueError):
        return
    if Path(old.get("out", "")) / "run" / "export" != model:
        return
    keys = ["steps", "train_minutes", "curve", "loss_curve"]
    if old.get("train") == run.train:  # the same training genomes: the same rule N
        keys.append("rule_n")
    for key in keys:
        setattr(run, key, old.get(key, getattr(run, key)))
    if not run.loss_curve and (model.parent / "metrics.jsonl").is_file():
        from learn_synthetic import learning_curve  # a run stopped during its final scoring

        run.loss_curve = learning_curve(model.parent)


class Pipeline:
    """The commands of one run, in order, through ``trainer.demo``'s step runner (each command's
    output in ``OUT/logs/NN_name.log``, the command line in ``OUT/commands.sh``)."""

    def __init__(self, a: argparse.Namespace, run: Run, split: Split) -> None:
        from trainer.demo import Layout, start_commands_file

        self.a, self.run, self.split = a, run, split
        self.lay = Layout(run.out)
        self.lay.logs.mkdir(exist_ok=True)
        self.idx = len(list(self.lay.logs.iterdir())) + 1
        if not self.lay.commands.is_file():
            start_commands_file(self.lay, "The commands learn_real ran, in order.")
        self.held = [held_genome(g) for g in split.held]
        self.env = {"OMP_NUM_THREADS": str(a.threads)}

    def step(self, name: str, argv: list[str], stdout: Path | None = None) -> float:
        from trainer.demo import Step, run_step

        s = Step(name, argv, env=self.env)
        run_step(s, self.idx, self.lay, stdout)
        self.idx += 1
        self.run.seconds[name] = round(s.seconds, 1)
        return s.seconds

    # -- setup and training

    def setup(self) -> None:
        """Stand-in encoder and tokenizer, the model, the bake, the tokenizer's new tokens."""
        from trainer.demo import launch_command

        a, lay, out = self.a, self.lay, self.run.out
        write_text(out / "train_genomes.tsv", bake_list(self.split.train))
        if a.tokenizer == "dnabert2":
            from trainer.fixtures import SHARED_DNABERT2

            tok = ["--tokenizer", str(SHARED_DNABERT2)]
        else:
            sample = tokenizer_sample(
                self.split.train, out / "tokenizer_sample.fna", a.tokenizer_bp
            )
            tok = ["--vocab_size", str(a.vocab_size), "--tokenizer_fasta", str(sample)]
        sizes = ["--hidden_size", a.hidden_size, "--num_layers", a.num_layers]
        sizes += ["--num_heads", a.num_heads, "--intermediate_size", a.intermediate_size]
        self.step(
            "random_dnabert2",
            launch_command(
                "init_model.py", "--random_dnabert2", lay.base, *sizes, "--seed", a.seed, *tok
            ),
        )
        self.step(
            "init_model",
            launch_command(
                "init_model.py",
                "--save_dir",
                lay.model,
                "--dnabert_path",
                lay.base,
                "--tie_weights",
            ),
        )
        t = self.step(
            "bake_data",
            launch_command(
                "bake_data.py",
                "--genomes",
                out / "train_genomes.tsv",
                lay.baked,
                "--workers",
                a.workers,
                "--extract_tokens",
                lay.new_tokens,
                "--window",
                a.window,
                "--stride",
                a.stride,
                "--rc",
                a.rc,
                "--types",
                TYPES,
                "--val_fraction",
                "0.1",
            ),
        )
        mbp = sum(_fasta_bp(g.fasta) for g in self.split.train) / 1e6
        log.info("bake %.1f Mbp in %.0f s (%.2f Mbp/s)", mbp, t, mbp / max(t, 1e-9))
        self.step(
            "append_tk",
            launch_command("append_tk.py", lay.new_tokens, lay.model / "tokenizer.json"),
        )
        self.step(
            "resize_model",
            launch_command("resize_model.py", lay.model, lay.model / "tokenizer.json"),
        )

    def train(self) -> Path:
        """Train in chunks (the schedule planned from the measured step time, as learn_synthetic
        does); after each chunk a learning-curve point on the held-out slices. Returns the export."""
        from learn_synthetic import _loop_seconds, ds_config, learning_curve

        from trainer.demo import DemoConfig, train_command

        a, lay, run = self.a, self.lay, self.run
        self.setup()
        slices = self.slices(a.curve_bp, "curve")
        cfg = DemoConfig(
            out=str(run.out),
            seed=a.seed,
            launcher="torchrun" if a.nproc > 1 else "python",
            nproc=a.nproc,
            ep_size=1,
            use_moe=False,
            micro_batch_size=a.micro_batch_size,
            lr=a.lr,
            max_steps=a.probe_steps,
            deepspeed_config=str(run.out / "ds_config.json"),
        )
        total, budget = a.steps, a.minutes * 60.0
        first = min(a.probe_steps, total) if total else a.probe_steps
        done, target, planned, trained = 0, first, total, 0.0
        while True:
            write_json(run.out / "ds_config.json", ds_config(a, planned))
            argv = train_command(cfg, lay)
            argv[argv.index("--max_steps") + 1] = str(target)
            argv += ["--warmup_steps", str(a.warmup_steps), "--eval_every", "200"]
            argv += ["--decode_every", "0", "--save_every", "0", "--keep_last", "1"]
            argv += ["--log_every", "10", "--num_workers", "0", "--no_bf16"]
            argv += ["--max_src_tokens", str(a.max_src_tokens)]
            if done:
                argv.append("--resume")
            idx = self.idx
            wall = self.step(f"train_to_{target}", argv)
            loop = _loop_seconds(lay.logs / f"{idx:02d}_train_to_{target}.log") or wall
            trained += loop
            per_step = loop / max(1, target - done)
            done = target
            run.steps, run.train_minutes = done, trained / 60
            log.info(
                "trained steps=%d train_minutes=%.1f s_per_step=%.2f steps_per_min=%.1f",
                done,
                trained / 60,
                per_step,
                60 / per_step,
            )
            run.curve.append(self.curve_point(lay.run / "export", slices, done, trained / 60))
            run.loss_curve = learning_curve(lay.run)
            write_json(run.out / "results.json", asdict(run), default=str)
            if total:
                if done >= total:
                    break
                target = min(total, done + max(1, (total - first) // max(1, a.chunks - 1)))
                continue
            left = budget - trained
            if left < 20 * per_step:
                break
            chunks_left = max(1, a.chunks - len(run.curve))
            target = done + max(1, int(left / chunks_left / (1.1 * per_step)))
            planned = done + max(1, int(left / (1.1 * per_step)))
        return lay.run / "export"

    # -- scoring

    def slices(self, bp: int, name: str) -> list[tuple[HeldGenome, Path]]:
        """A fixed slice of every held-out genome: FASTA for annotate (code kept, linear), GFF3
        for evaluate."""
        folder = self.run.out / name
        folder.mkdir(exist_ok=True)
        out = []
        for g in self.split.held:
            fna, gff = write_slice(g, bp, folder)
            out.append((HeldGenome(g.name, fna, g.transl_table, ()), gff))
        return out

    def annotate(
        self, model: Path, genomes: Sequence[HeldGenome], tag: str, extra: Sequence[str] = ()
    ) -> tuple[Path, float]:
        """``annotate --genomes`` (name, FASTA, code: no annotation) into ``OUT/pred_TAG/``."""
        from trainer.demo import launch_command

        a = self.a
        listing = self.run.out / f"annotate_{tag}.tsv"
        write_text(listing, annotate_list(genomes))
        outdir = self.run.out / f"pred_{tag}"
        if outdir.exists():
            shutil.rmtree(outdir)
        circular = ",".join(s for g in genomes for s in g.circular)
        argv = launch_command(
            "annotate.py",
            "--model",
            model,
            "--genomes",
            listing,
            "--outdir",
            outdir,
            "--no_progress",
            "--batch_size",
            a.annotate_batch,
            "--overlap",
            a.overlap,
            "--num_beams",
            a.num_beams,
            "--selection",
            a.selection,
            "--min_orf_codons",
            self.run.min_orf_codons,
            "--no-adapt",  # the learning curve's decoding; the final rows say otherwise
            *(["--circular", circular] if circular else []),
            *extra,
        )
        seconds = self.step(f"annotate_{tag}", argv)
        bp = sum(_fasta_bp(g.fasta) for g in genomes)
        log.info(
            "annotate %s: %.2f Mbp in %.0f s (%.1f kbp/s)",
            tag,
            bp / 1e6,
            seconds,
            bp / 1e3 / max(seconds, 1e-9),
        )
        return outdir, seconds

    def evaluate(
        self, ref: Path, pred: Path, tag: str, fasta: Path | None = None, code: int = 11
    ) -> dict:
        """``evaluate --json``; with ``fasta`` also Prodigal on it (``--baseline``)."""
        from trainer.demo import launch_command

        types = ",".join(t for t in TYPES.split(",") if _has_type(ref, t) or _has_type(pred, t))
        argv = launch_command("evaluate.py", ref, pred, "--json", "--types", types)
        if fasta is not None:
            argv += ["--baseline", "prodigal", "--fasta", str(fasta), "--transl_table", str(code)]
        report = self.run.out / "eval" / f"{tag}.json"
        report.parent.mkdir(exist_ok=True)
        self.step(f"evaluate_{tag}", argv, stdout=report)
        return json.loads(report.read_text())

    def curve_point(
        self, model: Path, slices: list[tuple[HeldGenome, Path]], steps: int, minutes: float
    ) -> dict:
        pred, seconds = self.annotate(model, [g for g, _ in slices], f"curve_{steps}")
        scores = {
            g.name: self.evaluate(gff, pred / f"{g.name}.gff3", f"curve_{steps}_{g.name}")
            for g, gff in slices
        }
        point = {
            "steps": steps,
            "train_minutes": round(minutes, 2),
            "annotate_seconds": round(seconds, 1),
        }
        point["genomes"] = {
            n: dict(zip(("exact", "stop"), _cds(s, "dna2gff"))) for n, s in scores.items()
        }
        point["mean_exact"] = statistics.mean(v["exact"] for v in point["genomes"].values())
        point["mean_stop"] = statistics.mean(v["stop"] for v in point["genomes"].values())
        log.info(
            "curve steps=%d slice mean exact=%.3f stop=%.3f",
            steps,
            point["mean_exact"],
            point["mean_stop"],
        )
        return point

    def score_final(self, model: Path) -> None:
        """Every held-out genome whole: the model (its default decoding, Prodigal beside it), the
        ablations, and the ORF rule."""
        from trainer.inference.orf_rule import annotate_orf_rule
        from trainer.inference.self_trained import annotate_self_trained

        a, run = self.a, self.run
        # explicit both ways: a model folder may record ``adapt`` as its default
        on = a.adapt == "on"
        adapt = ["--adapt" if on else "--no-adapt"]
        main_label = f"model (--selection {a.selection}{', --adapt' if on else ''})"
        configs: list[tuple[str, list[str]]] = [(main_label, adapt)]
        wanted = [x for x in a.ablations.split(",") if x]
        for x in wanted:
            if x == "adapt":
                label = "ablation: no --adapt" if on else "ablation: --adapt"
                configs.append((label, ["--no-adapt" if on else "--adapt"]))
            elif x == "selection":
                other = "votes" if a.selection == "genome" else "genome"
                configs.append(
                    (f"ablation: --selection {other}", ["--selection", other, "--no-adapt"])
                )
            elif x == "min_orf":
                configs.append(
                    (
                        f"ablation: ORF layer N = rule's {run.rule_n}",
                        ["--min_orf_codons", str(run.rule_n), *adapt],
                    )
                )
            else:
                raise ConfigError(f"--ablations: unknown {x!r} (known: adapt, selection, min_orf)")
        if a.score_bp:  # smoke tests: a slice of each held-out genome
            targets = self.slices(a.score_bp, "score_slices")
        else:
            targets = [(h, g.gff) for h, g in zip(self.held, self.split.held)]
        genomes = [h for h, _ in targets]
        for i, (label, extra) in enumerate(configs):
            tag = "final" if i == 0 else f"ablation{i}"
            pred, seconds = self.annotate(model, genomes, tag, extra)
            rows = {}
            for h, ref in targets:
                # Prodigal beside the main decoding only (the same figures for every decoding)
                base = (h.fasta, h.transl_table) if i == 0 else (None, 11)
                rows[h.name] = self.evaluate(ref, pred / f"{h.name}.gff3", f"{tag}_{h.name}", *base)
            run.final[label] = {"genomes": rows, "annotate_seconds": round(seconds, 1)}
            write_json(run.out / "results.json", asdict(run), default=str)
        folder = run.out / "pred_orf_rule"
        folder.mkdir(exist_ok=True)
        assert run.rule_n is not None
        t0 = time.perf_counter()
        for h, ref in targets:
            pred = folder / f"{h.name}.gff3"
            annotate_orf_rule(
                h.fasta, pred, run.rule_n, transl_table=h.transl_table, circular=h.circular
            )
            run.rule[h.name] = self.evaluate(ref, pred, f"orf_rule_{h.name}")
        run.seconds["orf_rule"] = round(time.perf_counter() - t0, 1)
        folder = run.out / "pred_self_trained"
        folder.mkdir(exist_ok=True)
        t0 = time.perf_counter()
        for h, ref in targets:  # the FASTA only, as annotate
            pred = folder / f"{h.name}.gff3"
            annotate_self_trained(h.fasta, pred, transl_table=h.transl_table, circular=h.circular)
            run.self_trained[h.name] = self.evaluate(ref, pred, f"self_trained_{h.name}")
        run.seconds["self_trained"] = round(time.perf_counter() - t0, 1)


def _fasta_bp(path: Path) -> int:
    return sum(len(s) for _, s in read_fasta(path))


def _has_type(gff: Path, ftype: str) -> bool:
    from baking.formats.gff3 import iter_gff3

    return any(f.type == ftype for f in iter_gff3(gff))


def _cds(scores: dict, who: str, ftype: str = "CDS") -> tuple[float, float]:
    """(exact F1, stop F1) of ``who`` ("dna2gff" or "prodigal") for ``ftype`` in evaluate's JSON."""
    row = (scores.get(who) or {}).get(ftype)
    return (row["exact"]["f1"], row["stop"]["f1"]) if row else (0.0, 0.0)


# ----------------------------------------------------------------------------- the table


def _counts(scores: dict, who: str) -> tuple[int, int, int, int, int]:
    """(reference CDS, predicted, stop-matched reference, stop-matched predicted, exact)."""
    row = (scores.get(who) or {}).get("CDS")
    if not row:
        return (0, 0, 0, 0, 0)
    stop, exact = row["stop"], row["exact"]
    return (stop["n_ref"], stop["n_pred"], stop["tp_ref"], stop["tp_pred"], exact["tp_ref"])


def _errors(scores: dict, who: str) -> str:
    """Missed genes (no predicted stop), false genes (a stop no reference CDS has) and wrong
    starts (stop right, start wrong), as counts."""
    n_ref, n_pred, tp_ref, tp_pred, exact = _counts(scores, who)
    return f"{n_pred}, {n_ref - tp_ref}, {n_pred - tp_pred}, {tp_ref - exact}"


def format_table(run: Run) -> str:
    """Markdown: the split, per-genome rows and the mean, ablations, the learning curve."""
    lines = [f"# learn_real: {run.steps} steps, {run.train_minutes:.1f} train minutes", ""]
    lines += [f"- {s}" for s in run.split]
    lines += [
        f"- ORF rule N (chosen on the training genomes): {run.rule_n}; annotate's ORF layer N: "
        f"{run.min_orf_codons}",
        "",
    ]
    if not run.final:
        return "\n".join(lines)
    main_label = next(iter(run.final))
    main = run.final[main_label]["genomes"]
    names = list(main)
    lines += [
        "| held-out genome | model exact / stop | ORF rule exact / stop | stop over rule "
        "| Prodigal exact / stop | model tRNA exact | model rRNA exact |",
        "|---|---|---|---|---|---|---|",
    ]
    cols: dict[str, list[float]] = {}

    def add(key: str, v: float) -> float:
        cols.setdefault(key, []).append(v)
        return v

    for n in names:
        me, ms = _cds(main[n], "dna2gff")
        re_, rs = _cds(run.rule.get(n, {}), "dna2gff")
        pe, ps = _cds(main[n], "prodigal")
        t = _cds(main[n], "dna2gff", "tRNA")[0]
        r = _cds(main[n], "dna2gff", "rRNA")[0]
        for k, v in (("me", me), ("ms", ms), ("re", re_), ("rs", rs), ("pe", pe), ("ps", ps)):
            add(k, v)
        add("d", ms - rs)
        add("t", t)
        add("r", r)
        lines.append(
            f"| {n} | {me:.3f} / {ms:.3f} | {re_:.3f} / {rs:.3f} | {ms - rs:+.3f} | "
            f"{pe:.3f} / {ps:.3f} | {t:.3f} | {r:.3f} |"
        )
    m = {k: statistics.mean(v) for k, v in cols.items()}
    lines.append(
        f"| **mean** | **{m['me']:.3f} / {m['ms']:.3f}** | {m['re']:.3f} / {m['rs']:.3f} | "
        f"{m['d']:+.3f} (min {min(cols['d']):+.3f}) | {m['pe']:.3f} / {m['ps']:.3f} | "
        f"{m['t']:.3f} | {m['r']:.3f} |"
    )
    lines += [
        "",
        "| errors (CDS) | reference | model: predicted, missed, false, wrong start "
        "| Prodigal: predicted, missed, false, wrong start |",
        "|---|---|---|---|",
    ]
    for n in names:
        lines.append(
            f"| {n} | {_counts(main[n], 'dna2gff')[0]} | {_errors(main[n], 'dna2gff')} "
            f"| {_errors(main[n], 'prodigal')} |"
        )
    lines += [
        "",
        "| decoding of the final model | mean exact / stop | per genome stop | annotate s |",
        "|---|---|---|---|",
    ]
    for label, res in run.final.items():
        g = res["genomes"]
        ex = [_cds(g[n], "dna2gff")[0] for n in names]
        st = [_cds(g[n], "dna2gff")[1] for n in names]
        lines.append(
            f"| {label} | {statistics.mean(ex):.3f} / {statistics.mean(st):.3f} | "
            + ", ".join(f"{s:.3f}" for s in st)
            + f" | {res['annotate_seconds']:.0f} |"
        )
    for label, res in (
        ("no model: ORF rule", run.rule),
        ("no model: the genome's statistics alone (orf_rule --self_trained)", run.self_trained),
    ):
        if set(names) <= set(res):
            ex = [_cds(res[n], "dna2gff")[0] for n in names]
            st = [_cds(res[n], "dna2gff")[1] for n in names]
            lines.append(
                f"| {label} | {statistics.mean(ex):.3f} / {statistics.mean(st):.3f} | "
                + ", ".join(f"{v:.3f}" for v in st)
                + " | |"
            )
    if run.curve:
        lines += [
            "",
            "| steps | train min | held-out slices: mean exact / stop | per genome exact / stop |",
            "|---|---|---|---|",
        ]
        for p in run.curve:
            per = ", ".join(f"{v['exact']:.2f}/{v['stop']:.2f}" for v in p["genomes"].values())
            lines.append(
                f"| {p['steps']} | {p['train_minutes']:.1f} | {p['mean_exact']:.3f} / "
                f"{p['mean_stop']:.3f} | {per} |"
            )
    if run.loss_curve:
        lines += ["", "| steps | " + " | ".join(str(c["step"]) for c in run.loss_curve) + " |"]
        lines.append("|---|" + "---|" * len(run.loss_curve))
        lines.append(
            "| train loss | " + " | ".join(f"{c['train_loss']:.3f}" for c in run.loss_curve) + " |"
        )
        lines.append(
            "| val loss | "
            + " | ".join(
                "" if c.get("val/loss") is None else f"{c['val/loss']:.3f}" for c in run.loss_curve
            )
            + " |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(run_cli(main))
