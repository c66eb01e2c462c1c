"""The manifest as a typed record with a format version: an older bake is refused in one line that
names the version found and the command that bakes it again, and that command works."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
from bake_helpers import run_bake, small_genome

from baking.common.errors import InputError
from baking.shards.manifest import (
    MANIFEST_FORMAT_VERSION,
    ListedShard,
    Manifest,
    load_manifest,
)


def _baked(tmp_path: Path) -> tuple[Path, list[str]]:
    fna, gff = small_genome(tmp_path / "in")
    out = tmp_path / "out"
    args = [str(fna), str(gff), str(out), "--window", "1000", "--no_progress"]
    run = run_bake(*args)
    assert run.returncode == 0, run.stderr
    return out, args


def _set_format(out: Path, fmt: str) -> None:
    path = out / "manifest.json"
    data = json.loads(path.read_text())
    data["format"] = fmt
    path.write_text(json.dumps(data))


def test_a_bake_reads_back_as_typed_fields(tmp_path: Path) -> None:
    out, _ = _baked(tmp_path)
    m = load_manifest(out)
    raw = json.loads((out / "manifest.json").read_text())
    assert isinstance(m, Manifest) and m.format_version == MANIFEST_FORMAT_VERSION == 2
    assert raw["format"] == f"dna2gff-shards/{MANIFEST_FORMAT_VERSION}"
    train = m.split("train")
    assert train and all(isinstance(s, ListedShard) for s in train)
    assert [s.path for s in train] == [s["path"] for s in raw["splits"]["train"]["shards"]]
    assert sum(s.samples for s in train) == raw["splits"]["train"]["samples"]
    assert m.grammar.window_len == 1000
    assert list(m.grammar.feature_types or ()) == raw["grammar"]["feature_types"]
    assert m.to_json() == raw  # what is read is what was written, key for key


@pytest.mark.parametrize("version, why", [(1, "an older format"), (3, "a newer format")])
def test_another_format_version_is_refused_with_the_rebake_command(
    tmp_path: Path, version: int, why: str
) -> None:
    from trainer.data.loader import split_shards

    out, args = _baked(tmp_path)
    _set_format(out, f"dna2gff-shards/{version}")
    command = "python launch/bake_data.py " + shlex.join([*args, "--overwrite"])
    for read in (load_manifest, lambda d: split_shards(d, "train")):
        with pytest.raises(InputError) as exc:
            read(out)
        assert exc.value.path == str(out / "manifest.json")
        assert f"manifest format version {version} is {why}" in exc.value.reason
        assert f"reads version {MANIFEST_FORMAT_VERSION}" in exc.value.reason
        assert exc.value.reason.endswith(f"bake the data again with `{command}`")
    if version == 1:  # the command it names bakes the folder again, and the result reads
        again = run_bake(*shlex.split(command)[2:])
        assert again.returncode == 0, again.stderr
        assert load_manifest(out).format_version == MANIFEST_FORMAT_VERSION


def test_a_manifest_without_its_arguments_names_the_general_command(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text('{"format": "dna2gff-shards/1", "splits": {}}')
    with pytest.raises(
        InputError, match=r"version 1 .*`python launch/bake_data\.py .* --overwrite`"
    ):
        load_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text('{"format": "other/2", "splits": {}}')
    with pytest.raises(InputError, match="unknown manifest format 'other/2'"):
        load_manifest(tmp_path)


def test_train_refuses_an_old_bake_in_one_line(tmp_path: Path, capsys) -> None:
    from launch.train import main
    from trainer.fixtures import make_model, make_tokenizer

    out, _ = _baked(tmp_path)
    _set_format(out, "dna2gff-shards/1")
    model = make_model(tmp_path / "model", make_tokenizer(tmp_path / "tok"))
    code = main(["--model", str(model), "--data", str(out), "--output", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "Traceback" not in "\n".join(err)
    assert err[-1].startswith(f"error: {out / 'manifest.json'}: manifest format version 1 ")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "body, reason",
    [
        ({"splits": 3}, "'splits' must be a table of splits"),
        ({"grammar": {"window_len": "x"}}, "grammar: window_len must be a positive integer"),
        ({"genomes": []}, "'genomes' must be a table"),
        ({"sample_fields": 5, "splits": {"train": {"shards": [None]}}}, "bad shard entry"),
        ({"splits": {"train": 3}}, "split 'train' must list its shards"),
    ],
)
def test_a_damaged_manifest_is_one_located_error(tmp_path: Path, body: dict, reason: str) -> None:
    from baking.shards.manifest import FORMAT

    (tmp_path / "manifest.json").write_text(json.dumps({"format": FORMAT, **body}))
    with pytest.raises(InputError, match=reason) as exc:
        load_manifest(tmp_path).split("train")
    assert exc.value.path == str(tmp_path / "manifest.json")
