"""The quickstart demo: the recipe's commands in order, a safe output folder, and (slow) the real run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from baking.common.errors import ConfigError, InputError
from trainer.demo import (
    MARKER,
    DemoConfig,
    DemoSummary,
    Layout,
    display_command,
    genome_pairs,
    plan_steps,
    prepare_out,
)

REPO = Path(__file__).resolve().parents[1]
DEMO = str(REPO / "launch" / "demo.py")


def _flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_synthetic_plan_runs_the_recipe_in_order(tmp_path: Path) -> None:
    cfg = DemoConfig(out=str(tmp_path / "d"), train_genomes=3, seed=7)
    lay = Layout(tmp_path / "d")
    steps = plan_steps(cfg, lay)
    assert [s.name for s in steps] == [
        "make_synthetic",
        "random_dnabert2",
        "init_model",
        "bake_data",
        "init_tk",
        "append_tk",
        "resize_model",
        "train",
        "annotate",
        "evaluate",
        "evaluate_json",
    ]
    by = {s.name: s.argv for s in steps}
    init = by["init_model"]
    for flag in (
        "--save_dir",
        "--dnabert_path",
        "--use_moe",
        "--num_experts",
        "--moe_top_k",
        "--tie_weights",
    ):
        assert flag in init
    assert _flag(init, "--dnabert_path") == str(lay.base)
    assert _flag(by["bake_data"], "--workers") == "2" and "--extract_tokens" in by["bake_data"]
    train = by["train"]
    assert Path(train[0]).name == "deepspeed" and _flag(train, "--num_gpus") == "2"
    assert _flag(train, "--ep_size") == "2"
    assert _flag(train, "--deepspeed_config").endswith("ds_configs/zero2_bf16_moe.json")
    # the genome annotated and scored is generated but never baked
    held_fna, held_gff = genome_pairs(cfg, lay)[1]
    assert held_fna.name == "synthetic_10.fna.gz"
    assert _flag(by["annotate"], "--fasta") == str(held_fna)
    assert by["evaluate"][2:4] == [str(held_gff), str(lay.pred)]
    assert "prodigal" in by["evaluate"] and "--json" in by["evaluate_json"]
    assert _flag(by["annotate"], "--circular") == "all"  # synthetic replicons are all circular
    lay.out.mkdir()
    bake = next(s for s in steps if s.name == "bake_data")
    assert bake.action is not None
    bake.action()
    listed = lay.genome_list.read_text().splitlines()
    assert len(listed) == 3 and not any("synthetic_10" in line for line in listed)
    assert listed[0].split("\t")[0] == "synthetic_7" and len(listed[0].split("\t")) == 3
    assert _flag(by["bake_data"], "--window") == "400"
    assert _flag(by["make_synthetic"], "--count") == "4"


def test_real_genomes_and_dnabert2_skip_the_stand_ins(tmp_path: Path) -> None:
    pairs = []
    for name in ("a", "b"):
        (tmp_path / f"{name}.fna").write_text(">chr\nACGT\n")
        (tmp_path / f"{name}.gff").write_text(
            "##gff-version 3\n"
            "chr\tRefSeq\tregion\t1\t4\t.\t+\t.\tID=chr:1..4;Is_circular=true\n"
            "pl\tRefSeq\tregion\t1\t4\t.\t+\t.\tID=pl:1..4\n"
        )
        pairs.append((str(tmp_path / f"{name}.fna"), str(tmp_path / f"{name}.gff")))
    cfg = DemoConfig(
        out=str(tmp_path / "d"),
        genomes=tuple(pairs),
        dnabert_path="/models/dnabert2",
        launcher="torchrun",
    )
    steps = plan_steps(cfg, Layout(tmp_path / "d"))
    names = [s.name for s in steps]
    assert "make_synthetic" not in names and "random_dnabert2" not in names
    by = {s.name: s.argv for s in steps}
    assert _flag(by["init_model"], "--dnabert_path") == "/models/dnabert2"
    assert _flag(by["init_tk"], "--base") == "/models/dnabert2"
    assert _flag(by["annotate"], "--fasta") == pairs[1][0]
    assert "torch.distributed.run" in by["train"]
    assert _flag(by["annotate"], "--circular") == "chr"  # from the held-out GFF's region lines


def test_output_folder_is_only_replaced_when_a_demo_made_it(tmp_path: Path) -> None:
    cfg = DemoConfig(out=str(tmp_path / "x"))
    user = tmp_path / "x"
    user.mkdir()
    (user / "thesis.tex").write_text("precious")
    with pytest.raises(InputError, match="not a demo folder"):
        prepare_out(user, cfg)
    assert (user / "thesis.tex").read_text() == "precious"
    demo = tmp_path / "y"
    prepare_out(demo, cfg)
    (demo / "old.log").write_text("old")
    prepare_out(demo, cfg)
    assert sorted(p.name for p in demo.iterdir()) == [MARKER]


@pytest.mark.parametrize(
    "options,field",
    [
        ({"ep_size": 3}, "ep_size"),
        ({"moe_top_k": 5}, "moe_top_k"),
        ({"launcher": "slurm"}, "launcher"),
        ({"hidden_size": 30}, "hidden_size"),
        ({"max_steps": 0}, "max_steps"),
    ],
)
def test_bad_options_name_the_field(options: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        DemoConfig(**options)


def test_commands_are_shown_as_a_user_types_them() -> None:
    shown = display_command([sys.executable, str(REPO / "launch" / "bake_data.py"), "a b"])
    assert shown == "python launch/bake_data.py 'a b'"


def test_cli_rejects_missing_genome_and_foreign_folder(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, DEMO, "--out", str(tmp_path / "d"), "--genome", "/nope.fna", "/nope.gff"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and "error: /nope.fna: no such file" in r.stderr
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "data.txt").write_text("keep")
    r = subprocess.run(
        [sys.executable, DEMO, "--out", str(foreign)], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 2 and "not a demo folder" in r.stderr
    assert (foreign / "data.txt").read_text() == "keep"


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_demo_runs_end_to_end_on_two_cpu_ranks(tmp_path: Path) -> None:
    """The real thing at tiny sizes: every command exits 0, scores and TensorBoard logs exist."""
    out = tmp_path / "demo"
    r = subprocess.run(
        [
            sys.executable,
            DEMO,
            "--out",
            str(out),
            "--train_genomes",
            "2",
            "--genome_length",
            "20000",
            "--max_steps",
            "6",
            "--micro_batch_size",
            "4",
        ],
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert r.returncode == 0, r.stderr[-4000:]
    assert "tensorboard --logdir" in r.stdout
    record = json.loads((out / MARKER).read_text())["summary"]
    assert set(record["seconds"]) >= {"init_model", "bake_data", "train", "annotate", "evaluate"}
    assert list((out / "run" / "tensorboard").rglob("events.out.tfevents.*"))
    assert (out / "pred.gff3").read_text().startswith("##gff-version 3")
    assert "prodigal" in json.dumps(record["scores"]).lower()
    commands = (out / "commands.sh").read_text()
    assert "deepspeed --num_gpus 2" in commands and "launch/bake_data.py" in commands


def test_summary_says_whether_the_scored_genome_was_trained_on() -> None:
    common = dict(
        seconds={"train": 12.0},
        seconds_total=20.0,
        table="TABLE",
        scores={},
        held_out=("g.fna", "g.gff"),
        out="o",
        prediction="p",
        commands="c",
        tensorboard="tb",
    )
    held = DemoSummary(trained_on_scored=False, **common).report()  # type: ignore[arg-type]
    seen = DemoSummary(trained_on_scored=True, **common).report()  # type: ignore[arg-type]
    assert "never trained on" in held and "ALSO TRAINED ON" in seen
    assert "TABLE" in held and "tensorboard --logdir tb" in held and "train 12" in held
