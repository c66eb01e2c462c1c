#!/usr/bin/env python3
"""The prepared GPU check: GPU tests, a DNABERT-2-sized training run, annotate next to pyrodigal.

One call on a lent CUDA machine gives every GPU figure the project reports, as one JSON file,
inside a fixed time budget (8 minutes by default; a machine is lent for 15). Each part runs in
its own process under its own time box, so one that fails or runs over is recorded (status,
seconds, the end of its output) and the next part still runs; the exit code is 0 only when every
part passed. ``--smoke`` runs the same parts with tiny shapes on the CPU (under a minute), which
is how CI knows the script works on a machine without a GPU.

Parts (``--only`` picks some):

- ``tests``: ``pytest -m gpu`` over the test files that mark GPU tests (they skip without CUDA);
- ``train``: ``benchmarks/train_throughput.py --trainer_only``: the DeepSpeed trainer (ZeRO-2,
  bf16) on a DNABERT-2-117M-shaped encoder (768 x 12 layers) with a 12-layer decoder whose MLPs
  are 8 experts (top-2), 512-token source windows; tokens/s, MFU (model FLOPs counted from the
  shapes by ``trainer.train.monitor.train_flops``, over the card's dense bf16 peak), peak memory;
- ``annotate``: ``benchmarks/annotate.py --size base`` on E. coli (or a synthetic genome of the
  same size) on the GPU, next to pyrodigal on one core (Mbp/min, ratio). A first run on a prefix
  of the genome says whether the whole genome fits the part's time box; if not, the prefix's
  figures are the result (the JSON says which).

    bash benchmarks/gpu_check.sh                   # on the GPU machine: figures in $OUT/gpu_check.json
    bash benchmarks/gpu_check.sh --smoke --out x.json   # CPU, tiny shapes (CI)

The shell wrapper picks the Python, installs carried wheels (``.whl/``) and sets ``PYTHONPATH``;
``docs/gpu-check.md`` says what the machine needs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from baking.common.errors import ConfigError, InputError  # noqa: E402
from baking.common.files import check_output, write_json  # noqa: E402

SCHEMA = 1
PARTS = ("tests", "train", "annotate")
#: Seconds each part may take on the GPU machine; with the set-up they stay under 8 minutes.
GPU_BUDGET = {"tests": 90.0, "train": 210.0, "annotate": 150.0}
SMOKE_BUDGET = {"tests": 60.0, "train": 90.0, "annotate": 90.0}
TAIL_CHARS = 2000
#: A part is not started with less time than this left in the whole budget.
MIN_PART_S = 5.0


# ------------------------------------------------------------------------------ running a part


@dataclass
class Command:
    """What one child process did: exit status, output, wall time, and whether it was cut off."""

    returncode: int | None
    stdout: str
    stderr: str
    seconds: float
    timed_out: bool


def run_command(
    cmd: Sequence[str], timeout: float, env: dict[str, str] | None = None, cwd: Path = ROOT
) -> Command:
    """Run ``cmd`` with a hard time limit; on expiry kill its whole process group.

    The group matters: the trainer's loader workers and DeepSpeed's helpers are children of the
    child, and a check that leaves them running would spend the next part's GPU and cores.
    """
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        list(cmd),
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=max(timeout, 0.1))
        timed_out = False
        _kill_group(proc.pid, (signal.SIGKILL,))  # whatever it left behind dies with it
    except subprocess.TimeoutExpired:
        _kill_group(proc.pid, (signal.SIGTERM, signal.SIGKILL))
        out, err = proc.communicate()
        timed_out = True
    return Command(proc.returncode, out, err, time.perf_counter() - t0, timed_out)


def _kill_group(pid: int, signals: Sequence[signal.Signals]) -> None:
    """Send each signal to the process group ``pid`` leads, a second apart, until it is gone."""
    for i, sig in enumerate(signals):
        if i:
            time.sleep(1.0)
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return


def tail(text: str, chars: int = TAIL_CHARS) -> str:
    return text[-chars:]


@dataclass
class Check:
    """The run's clock, its settings and the JSON it builds up part by part."""

    smoke: bool
    budget_s: float
    work: Path
    env: dict[str, str]
    python: str = sys.executable
    t0: float = field(default_factory=time.perf_counter)
    parts: dict[str, dict] = field(default_factory=dict)

    def left(self) -> float:
        return self.budget_s - (time.perf_counter() - self.t0)

    def run_part(self, name: str, budget: float, fn: Callable[[Check, float], dict]) -> dict:
        """Run one part with ``min(budget, time left)`` seconds; record its figures or its failure.

        ``fn(check, deadline)`` returns the part's figures with a ``status`` of ``pass`` or
        ``fail``; an exception is a failure of that part only.
        """
        box = min(budget, self.left())
        t0 = time.perf_counter()
        if box < MIN_PART_S:
            rec: dict[str, Any] = {"status": "skipped", "reason": "no time left in the budget"}
        else:
            try:
                rec = fn(self, time.perf_counter() + box)
            except Exception as exc:  # one part's failure must not stop the others
                rec = {"status": "fail", "error": f"{type(exc).__name__}: {exc}"}
        rec["seconds"] = round(time.perf_counter() - t0, 2)
        rec["budget_s"] = round(box, 1)
        self.parts[name] = rec
        print(f"gpu_check: {name} {rec['status']} in {rec['seconds']:.1f} s", file=sys.stderr)
        return rec

    def command(self, cmd: Sequence[str], deadline: float) -> Command:
        return run_command(cmd, deadline - time.perf_counter(), self.env)


def command_failure(res: Command, what: str) -> dict:
    """The record of a child that timed out or failed: which, and the end of what it said."""
    if res.timed_out:
        status, error = "timeout", f"{what} ran past its time box ({res.seconds:.0f} s)"
    else:
        status, error = "fail", f"{what} exited {res.returncode}"
    return {
        "status": status,
        "error": error,
        "stderr_tail": tail(res.stderr),
        "stdout_tail": tail(res.stdout),
    }


# ------------------------------------------------------------------------------ environment


def environment(smoke: bool) -> dict:
    """What the machine has: Python, torch, CUDA, the GPU, and the packages the parts import."""
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "executable": sys.executable,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "smoke": smoke,
    }
    from importlib.metadata import PackageNotFoundError, version

    versions: dict[str, str | None] = {}
    for name in (
        "torch",
        "deepspeed",
        "tokenizers",
        "safetensors",
        "webdataset",
        "pyfastx",
        "pyrodigal",
        "numpy",
        "pytest",
    ):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    info["packages"] = versions
    info["missing"] = [k for k, v in versions.items() if v is None]
    try:
        import torch

        info["cuda_available"] = bool(torch.cuda.is_available()) and not smoke
        info["torch_cuda"] = torch.version.cuda
        if info["cuda_available"]:
            info["gpu"] = torch.cuda.get_device_name(0)
            info["gpu_count"] = torch.cuda.device_count()
            info["gpu_memory_gib"] = round(
                torch.cuda.get_device_properties(0).total_memory / 2**30, 1
            )
    except Exception as exc:
        info["cuda_available"] = False
        info["torch_error"] = f"{type(exc).__name__}: {exc}"
    return info


# ------------------------------------------------------------------------------ inputs


def shared_paths() -> tuple[Path, Path]:
    """E. coli's FASTA and the DNABERT-2 tokenizer folder where ``$DNA2GFF_SHARED`` puts them."""
    from trainer.fixtures import SHARED_DNABERT2, SHARED_GENOME_PAIRS

    return SHARED_GENOME_PAIRS["E.coli"][0], SHARED_DNABERT2


def choose_genome(args: argparse.Namespace, work: Path) -> tuple[Path, str]:
    """The genome to annotate and how it was chosen: ``--genome``, the shared one, or synthetic."""
    if args.genome:
        path = Path(args.genome)
        if not path.is_file():
            raise InputError(path, "genome FASTA not found")
        return path, "given"
    from trainer.fixtures import SHARED_GENOME_PAIRS

    shared = SHARED_GENOME_PAIRS["phage" if args.smoke else "E.coli"][0]
    if shared.is_file():
        return shared, "shared"
    from baking.synthetic import SyntheticConfig, generate_genome, write_genome

    bp = 30_000 if args.smoke else 4_600_000  # E. coli's size
    genome = generate_genome(SyntheticConfig(chromosome_length=bp, plasmid_lengths=()))
    fna, _ = write_genome(genome, work / "genome", "synthetic")
    return fna, "synthetic"


def choose_tokenizer(work: Path) -> tuple[Path | None, str]:
    """The real DNABERT-2 tokenizer when present, else None (the benchmarks' small stand-in)."""
    _, dnabert2 = shared_paths()
    if (dnabert2 / "tokenizer.json").is_file():
        return dnabert2, "DNABERT-2-117M"
    return None, "fixture (small BPE; DNABERT-2's absent)"


# ------------------------------------------------------------------------------ part: tests


def gpu_test_files() -> list[Path]:
    """Test files that mark a test ``gpu`` (only they are collected: collecting all costs time)."""
    return sorted(p for p in (ROOT / "tests").glob("test_*.py") if "mark.gpu" in p.read_text())


def part_tests(check: Check, deadline: float) -> dict:
    files = gpu_test_files()
    if not files:
        return {"status": "fail", "error": "no test file marks a test gpu"}
    report = check.work / "gpu-tests.xml"
    cmd = [check.python, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider",
           f"--junitxml={report}", *map(str, files)]  # fmt: skip
    res = check.command(cmd, deadline)
    rec: dict[str, Any] = {"files": [p.name for p in files]}
    if res.timed_out or not report.exists():
        rec.update(command_failure(res, "pytest"))
        return rec
    rec.update(junit_counts(report))
    ok = rec["failed"] == 0 and rec["errors"] == 0 and rec["tests"] > 0
    if not check.smoke:  # on the GPU machine every GPU test must run, not skip
        ok = ok and rec["passed"] > 0 and rec["skipped"] == 0
    rec["status"] = "pass" if ok else "fail"
    if not ok:
        rec["stdout_tail"] = tail(res.stdout)
    return rec


def junit_counts(path: Path) -> dict:
    """Counts and the failing/skipped tests' names and reasons from a pytest JUnit XML report."""
    import xml.etree.ElementTree as ET

    root = ET.parse(path).getroot()
    cases = list(root.iter("testcase"))
    out: dict[str, Any] = {"tests": len(cases), "passed": 0, "failed": 0, "errors": 0, "skipped": 0}
    failures, skips = [], []
    for case in cases:
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        kinds = {child.tag: child for child in case}
        if "failure" in kinds or "error" in kinds:
            tag = "failure" if "failure" in kinds else "error"
            out["failed" if tag == "failure" else "errors"] += 1
            failures.append({"test": name, "message": (kinds[tag].get("message") or "")[:500]})
        elif "skipped" in kinds:
            out["skipped"] += 1
            skips.append({"test": name, "reason": (kinds["skipped"].get("message") or "")[:200]})
        else:
            out["passed"] += 1
    out["failures"] = failures
    out["skips"] = skips
    return out


# ------------------------------------------------------------------------------ part: train


def train_args(
    args: argparse.Namespace, tokenizer: Path | None, workdir: Path, js: Path
) -> list[str]:
    """``train_throughput.py`` flags: DNABERT-2-117M's shape on the GPU, tiny shapes in a smoke run."""
    if args.smoke:
        shape = ["--hidden", "32", "--layers", "2", "--heads", "2", "--experts", "4",
                 "--micro_batch", "4", "--window", "300", "--max_src_tokens", "96",
                 "--steps", str(args.train_steps or 6), "--warmup", "2", "--samples", "16",
                 "--workers", "1", "--threads", "1"]  # fmt: skip
    else:
        shape = ["--hidden", "768", "--layers", "12", "--heads", "12", "--experts", "8",
                 "--micro_batch", str(args.micro_batch), "--window", "2200",
                 "--max_src_tokens", "512", "--steps", str(args.train_steps or 300),
                 "--warmup", "20", "--samples", "4096", "--workers", "8"]  # fmt: skip
    extra = ["--tokenizer", str(tokenizer)] if tokenizer else []
    return [*shape, *extra, "--trainer_only", "--workdir", str(workdir), "--json", str(js)]


def part_train(check: Check, deadline: float, args: argparse.Namespace) -> dict:
    tokenizer, tok_name = choose_tokenizer(check.work)
    workdir, js = check.work / "train", check.work / "train.json"
    cmd = [check.python, str(ROOT / "benchmarks" / "train_throughput.py"),
           *train_args(args, tokenizer, workdir, js)]  # fmt: skip
    res = check.command(cmd, deadline)
    rec: dict[str, Any] = {"tokenizer": tok_name}
    if res.returncode != 0 or not js.exists():
        rec.update(command_failure(res, "train_throughput.py"))
        rec["partial"] = partial_train_figures(workdir)
        return rec
    figures = json.loads(js.read_text())
    rec.update(figures)
    problems = train_problems(figures, gpu=not check.smoke)
    rec["status"] = "fail" if problems else "pass"
    if problems:
        rec["error"] = "; ".join(problems)
    return rec


def train_problems(fig: dict, gpu: bool) -> list[str]:
    """What is wrong with the training figures (empty: they are sane)."""
    bad = []
    if not fig.get("timed_steps"):
        bad.append("no timed steps")
    if not fig.get("tokens_per_s", 0) > 0:
        bad.append("tokens/s is not positive")
    for key in ("loss_first", "loss_last"):
        v = fig.get(key)
        if v is None or not math.isfinite(v):
            bad.append(f"{key} is not finite")
    if fig.get("skipped_steps"):
        bad.append(f"{fig['skipped_steps']} steps had a non-finite loss")
    if gpu:
        if fig.get("mfu") is None or not 0 < fig["mfu"] < 1:
            bad.append(f"MFU {fig.get('mfu')} is not in (0, 1) (unknown card?)")
        if not (fig.get("peak_memory_gib") or 0) > 0:
            bad.append("no peak memory")
    return bad


def partial_train_figures(workdir: Path) -> dict | None:
    """Rates from the steps a killed run logged (its metrics.jsonl), so a timeout still says something."""
    files = sorted(workdir.glob("run-*/metrics.jsonl"))
    if not files:
        return None
    rows = [json.loads(ln) for ln in files[-1].read_text().splitlines() if ln.strip()]
    if len(rows) < 2:
        return {"steps_done": len(rows)}
    timed = rows[1:]
    seconds = sum(r["seconds"] for r in timed)
    return {
        "steps_done": len(rows),
        "tokens_per_s": sum(r["tokens"] for r in timed) / seconds,
        "model_tflops_per_s": sum(r.get("flops", 0.0) for r in timed) / seconds / 1e12,
    }


# ------------------------------------------------------------------------------ part: annotate

_KV = re.compile(r"(\w[\w/]*)=(\S+)")


def parse_annotate_output(text: str) -> dict[str, dict[str, str]]:
    """``benchmarks/annotate.py``'s ``key=value`` lines, by their first word.

    Tolerant on purpose: it keeps the last line of each kind (``annotate``, ``prodigal``) that has
    a ``bp_per_s``, whatever else the benchmark prints around them.
    """
    found: dict[str, dict[str, str]] = {}
    for line in text.splitlines():
        words = line.split()
        if not words:
            continue
        pairs = dict(_KV.findall(line))
        if "bp_per_s" in pairs and words[0] in ("annotate", "prodigal"):
            found[words[0]] = pairs
    return found


def annotate_args(args: argparse.Namespace, genome: Path, tokenizer: Path | None,
                  max_bp: int) -> list[str]:  # fmt: skip
    """Flags ``benchmarks/annotate.py`` has had since its start (another change owns that file)."""
    if args.smoke:
        flags = ["--size", "tiny", "--device", "cpu", "--decoder_layers", "1",
                 "--batch_size", "16", "--max_new_tokens", "16", "--threads", "1"]  # fmt: skip
    else:
        flags = ["--size", "base", "--device", "cuda", "--decoder_layers", "2",
                 "--batch_size", str(args.annotate_batch), "--max_new_tokens", "64"]  # fmt: skip
    if tokenizer is not None:
        flags += ["--tokenizer", str(tokenizer)]
    if max_bp:
        flags += ["--max_bp", str(max_bp)]
    return ["--genome", str(genome), *flags]


def annotate_once(check: Check, deadline: float, argv: list[str]) -> tuple[dict, Command]:
    cmd = [check.python, str(ROOT / "benchmarks" / "annotate.py"), *argv]
    res = check.command(cmd, deadline)
    if res.returncode != 0 or res.timed_out:
        return {}, res
    return parse_annotate_output(res.stdout), res


def part_annotate(check: Check, deadline: float, args: argparse.Namespace) -> dict:
    genome, how = choose_genome(args, check.work)
    tokenizer, tok_name = choose_tokenizer(check.work)
    if tokenizer is None:  # annotate.py needs a base tokenizer folder: make the small one
        from trainer.fixtures import make_tokenizer

        tokenizer = make_tokenizer(check.work / "tokenizer")
    genome_bp = genome_length(genome)
    rec: dict[str, Any] = {
        "genome": str(genome),
        "genome_source": how,
        "genome_bp": genome_bp,
        "tokenizer": tok_name,
    }
    probe_bp = 10_000 if args.smoke else args.probe_bp
    got, res = annotate_once(check, deadline, annotate_args(args, genome, tokenizer, probe_bp))
    if "annotate" not in got or "prodigal" not in got:
        rec.update(command_failure(res, "annotate.py (probe)"))
        if res.returncode == 0:
            rec["error"] = "annotate.py printed no annotate/prodigal bp_per_s line"
        return rec
    done = int(got["annotate"]["bp"])
    scope = "genome" if done >= genome_bp else "prefix"
    if scope == "prefix":  # the whole genome when the probe's rate says it fits the time box
        # start-up and model build are paid once; annotate and pyrodigal scale with the bases
        scaled = float(got["annotate"]["seconds"]) + float(got["prodigal"]["seconds"])
        estimate = res.seconds + scaled * (genome_bp / max(done, 1) - 1)
        rec["probe"] = figures(got) | {"seconds_total": round(res.seconds, 1)}
        rec["whole_genome_estimate_s"] = round(estimate, 1)
        if estimate < 0.9 * (deadline - time.perf_counter()):
            full, res = annotate_once(check, deadline, annotate_args(args, genome, tokenizer, 0))
            if "annotate" in full and "prodigal" in full:
                got, scope = full, "genome"
            else:
                rec["whole_genome_error"] = command_failure(res, "annotate.py")
    rec["scope"] = scope
    rec.update(figures(got))
    ok = rec["mbp_per_min"] > 0 and rec["prodigal_mbp_per_min"] > 0 and rec["bp"] > 0
    rec["status"] = "pass" if ok else "fail"
    return rec


def figures(got: dict[str, dict[str, str]]) -> dict:
    """Mbp/min of both, the ratio, and what was run (window counts, device, shape)."""
    ours, prod = got.get("annotate", {}), got.get("prodigal", {})
    out: dict[str, Any] = {}
    if ours:
        out.update(
            bp=int(ours["bp"]),
            device=ours.get("device"),
            size=ours.get("size"),
            params=int(ours["params"]) if "params" in ours else None,
            windows=int(ours["windows"]) if "windows" in ours else None,
            truncated_windows=int(ours["truncated"]) if "truncated" in ours else None,
            seconds_annotate=float(ours["seconds"]),
            mbp_per_min=float(ours["bp_per_s"]) * 60 / 1e6,
        )
    if prod:
        out.update(
            prodigal_seconds=float(prod["seconds"]),
            prodigal_mbp_per_min=float(prod["bp_per_s"]) * 60 / 1e6,
            prodigal_threads=1,
        )
    if ours and prod and float(prod["bp_per_s"]) > 0:
        out["ratio_annotate_prodigal"] = float(ours["bp_per_s"]) / float(prod["bp_per_s"])
    return out


def genome_length(path: Path) -> int:
    from baking.formats.fasta import read_fasta

    return sum(len(s) for _, s in read_fasta(path))


# ------------------------------------------------------------------------------ main


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--smoke", action="store_true", help="CPU, tiny shapes, short (CI)")
    p.add_argument("--out", help="the JSON (default: $OUT/gpu_check.json when $OUT is set)")
    p.add_argument("--only", default=",".join(PARTS), help="comma-separated parts to run")
    p.add_argument(
        "--budget_s", type=float, default=None, help="whole run (default 480; smoke 240)"
    )
    p.add_argument(
        "--genome", help="FASTA to annotate (default: E. coli from ../shared, else synthetic)"
    )
    p.add_argument(
        "--train_steps", type=int, default=0, help="timed training steps (default 300; smoke 6)"
    )
    p.add_argument("--micro_batch", type=int, default=32, help="training windows per step (GPU)")
    p.add_argument(
        "--annotate_batch", type=int, default=256, help="annotate windows per batch (GPU)"
    )
    p.add_argument(
        "--probe_bp", type=int, default=300_000, help="bp of the first annotate run (GPU)"
    )
    for part in PARTS:
        p.add_argument(f"--{part}_s", type=float, default=None, help=f"time box of part {part}")
    return p


def output_path(args: argparse.Namespace) -> Path:
    if args.out:
        return Path(args.out)
    if os.environ.get("OUT"):
        return Path(os.environ["OUT"]) / "gpu_check.json"
    raise ConfigError("no output: pass --out PATH (or set $OUT)")


def child_env(smoke: bool) -> dict[str, str]:
    """The parts' environment: the repo on the path, DeepSpeed told which accelerator to use."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["TOKENIZERS_PARALLELISM"] = "false"
    env["PYTHONUNBUFFERED"] = "1"
    env["DS_ACCELERATOR"] = "cpu" if smoke else "cuda"
    if smoke:  # the smoke run is the CPU path, also on a machine that has a GPU
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = check_output(output_path(args))
    only = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = [p for p in only if p not in PARTS]
    if unknown:
        raise ConfigError(
            f"--only: unknown part(s) {', '.join(unknown)} (known: {', '.join(PARTS)})"
        )
    if args.genome and not Path(args.genome).is_file():
        raise InputError(Path(args.genome), "genome FASTA not found")
    budgets = dict(SMOKE_BUDGET if args.smoke else GPU_BUDGET)
    for part in PARTS:
        if getattr(args, f"{part}_s") is not None:
            budgets[part] = getattr(args, f"{part}_s")
    total = args.budget_s or (240.0 if args.smoke else 480.0)
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    env_info = environment(args.smoke)
    work = Path(tempfile.mkdtemp(prefix="dna2gff-gpu-check-"))
    check = Check(smoke=args.smoke, budget_s=total, work=work, env=child_env(args.smoke))
    try:
        if not args.smoke and not env_info.get("cuda_available"):
            for part in only:
                check.parts[part] = {
                    "status": "skipped",
                    "reason": "no CUDA GPU (use --smoke on a CPU)",
                }
        else:
            steps: dict[str, Callable[[Check, float], dict]] = {
                "tests": part_tests,
                "train": lambda c, d: part_train(c, d, args),
                "annotate": lambda c, d: part_annotate(c, d, args),
            }
            for part in only:
                check.run_part(part, budgets[part], steps[part])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    passed = bool(only) and all(check.parts[p]["status"] == "pass" for p in only)
    result = {
        "schema": SCHEMA,
        "smoke": args.smoke,
        "started": started,
        "seconds": round(time.perf_counter() - check.t0, 2),
        "budget_s": total,
        "passed": passed,
        "environment": env_info,
        "parts": check.parts,
    }
    write_json(out, result)
    print(json.dumps({p: check.parts[p]["status"] for p in only}))
    print(f"gpu_check: {'all parts passed' if passed else 'FAILED'}; figures in {out}")
    return 0 if passed else 1


def cli() -> int:
    from launch._cli import run_cli

    return run_cli(main)


if __name__ == "__main__":
    sys.exit(cli())
