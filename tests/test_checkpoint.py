"""Checkpoint folders: complete marker, rotation, crash during save, RNG state round trip."""

from __future__ import annotations

import errno
import os
import random
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from baking.common.errors import InputError, OutputError
from trainer.train import checkpoint as ck


class FakeEngine:
    """Stands in for a DeepSpeed engine: writes/reads one file in ``save_dir/tag``."""

    def __init__(self, crash: bool = False) -> None:
        self.crash = crash
        self.loaded: str | None = None

    def save_checkpoint(self, save_dir: str, tag: str, save_latest: bool = True) -> None:
        folder = Path(save_dir) / tag
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "mp_rank_00_model_states.pt").write_bytes(b"weights")
        if self.crash:
            raise RuntimeError("disk full")

    def load_checkpoint(self, load_dir: str, tag: str, **kw) -> tuple[str | None, dict]:
        path = Path(load_dir) / tag / "mp_rank_00_model_states.pt"
        self.loaded = tag
        return (str(path) if path.is_file() else None), {}


def _save(root: Path, step: int, engine: FakeEngine | None = None, keep: int = 2) -> Path:
    state = ck.TrainerState(step=step, micro_batches=step * 2, tokens=step * 100)
    return ck.save_checkpoint(engine or FakeEngine(), root, state, rank=0, keep_last=keep)


def test_save_marks_complete_and_rotates(tmp_path):
    for step in (5, 10, 15):
        folder = _save(tmp_path, step)
        assert (folder / ck.COMPLETE).is_file() and (folder / "rng_rank0.safetensors").is_file()
    assert [s for s, _ in ck.list_checkpoints(tmp_path)] == [10, 15]
    assert ck.latest_checkpoint(tmp_path) == tmp_path / "step_15"


def test_crash_during_save_keeps_previous_latest(tmp_path):
    _save(tmp_path, 10)
    with pytest.raises(RuntimeError, match="disk full"):
        _save(tmp_path, 20, FakeEngine(crash=True))
    assert not (tmp_path / "step_20").exists()  # nothing half-written left as a checkpoint
    assert not ck.partial_dir(tmp_path, 20).exists()
    assert ck.latest_checkpoint(tmp_path) == tmp_path / "step_10"
    (tmp_path / "step_20").mkdir()  # a folder without the marker (an older trainer's crash)
    with pytest.raises(InputError, match="incomplete"):
        ck.load_checkpoint(FakeEngine(), tmp_path / "step_20", rank=0)
    _save(tmp_path, 20)  # the same step saved again replaces the half-written folder
    assert ck.latest_checkpoint(tmp_path) == tmp_path / "step_20"


class _FullDiskCheckpointEngine:
    """DeepSpeed's checkpoint engine on a full disk: the second file fails like ``torch.save``."""

    def __init__(self, fail_as: type[BaseException]) -> None:
        self.fail_as = fail_as
        self.calls = 0

    def save(self, state_dict: dict, path: str) -> None:
        self.calls += 1
        if self.calls == 2:
            Path(path).write_bytes(b"half")
            if self.fail_as is OSError:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576")
        Path(path).write_bytes(b"weights")


class _DeepSpeedLikeEngine(FakeEngine):
    """Writes three files through its checkpoint engine, as DeepSpeed's save does."""

    def __init__(self, fail_as: type[BaseException]) -> None:
        super().__init__()
        self.checkpoint_engine = _FullDiskCheckpointEngine(fail_as)

    def save_checkpoint(self, save_dir: str, tag: str, save_latest: bool = True) -> None:
        folder = Path(save_dir) / tag
        folder.mkdir(parents=True, exist_ok=True)
        for name in ("mp_rank_00_model_states.pt", "zero_pp_rank_0_optim_states.pt", "x.pt"):
            self.checkpoint_engine.save({}, str(folder / name))
        self.finished = True  # DeepSpeed's closing barrier is reached on every rank


@pytest.mark.parametrize("fail_as", [OSError, RuntimeError])
def test_full_disk_during_save_is_one_error_and_leaves_nothing(tmp_path, monkeypatch, fail_as):
    _save(tmp_path, 10)
    if fail_as is RuntimeError:  # torch.save's words: the OS's reason comes from a probe write
        monkeypatch.setattr(ck, "_probe_write", lambda folder: "no space left on device")
    engine = _DeepSpeedLikeEngine(fail_as)
    with pytest.raises(OutputError) as err:
        _save(tmp_path, 20, engine)
    assert engine.finished and engine.checkpoint_engine.calls == 2  # later writes skipped
    assert "save" not in vars(engine.checkpoint_engine)  # ... and was removed again
    assert str(err.value) == (
        f"{tmp_path / 'step_20'}: checkpoint not saved: zero_pp_rank_0_optim_states.pt: no space "
        "left on device; the partial folder was removed, --resume continues from step_10"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_10"]
    assert ck.choose_checkpoint(tmp_path, rank=0, world=1) == tmp_path / "step_10"
    state = ck.load_checkpoint(FakeEngine(), tmp_path / "step_10", rank=0)
    assert state.step == 10


def test_partial_folder_of_a_killed_save_is_removed_by_the_next_save(tmp_path):
    ck.partial_dir(tmp_path, 7).mkdir(parents=True)  # SIGKILL during a save
    (ck.partial_dir(tmp_path, 7) / "mp_rank_00_model_states.pt").write_bytes(b"x")
    assert ck.latest_checkpoint(tmp_path) is None
    _save(tmp_path, 8)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_8"]


def test_probe_write_names_the_os_reason(tmp_path):
    assert ck._probe_write(tmp_path) is None
    assert ck._probe_write(tmp_path / "missing") == "no such file or directory"


def test_rotation_removes_stale_incomplete_folders(tmp_path):
    (tmp_path / "step_3").mkdir()  # left by a crash long ago
    _save(tmp_path, 5)
    assert not (tmp_path / "step_3").exists()
    (tmp_path / "not_a_checkpoint").mkdir()
    _save(tmp_path, 6)
    assert (tmp_path / "not_a_checkpoint").is_dir()


def test_load_restores_state_and_rng(tmp_path):
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    _save(tmp_path, 7)
    expected = (random.random(), np.random.rand(), torch.rand(3))
    random.seed(99)
    np.random.seed(99)
    torch.manual_seed(99)
    engine = FakeEngine()
    state = ck.load_checkpoint(engine, ck.latest_checkpoint(tmp_path), rank=0)
    assert engine.loaded == "step_7"
    assert (state.step, state.micro_batches, state.tokens) == (7, 14, 700)
    got = (random.random(), np.random.rand(), torch.rand(3))
    assert got[0] == expected[0] and got[1] == expected[1] and torch.equal(got[2], expected[2])


def test_missing_deepspeed_files_is_an_error(tmp_path):
    folder = _save(tmp_path, 4)
    (folder / "mp_rank_00_model_states.pt").unlink()
    with pytest.raises(InputError, match="could not load"):
        ck.load_checkpoint(FakeEngine(), folder, rank=0)


def test_trainer_state_ignores_unknown_keys():
    s = ck.TrainerState.from_dict({"step": 3, "future_field": 1})
    assert s.step == 3


class _Payload:
    """A pickle that, when unpickled, runs a shell command (creates ``marker``)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_pickle_payload_in_rng_files_runs_nothing(tmp_path):
    folder = _save(tmp_path / "ck", 7)
    marker = tmp_path / "pwned"
    torch.save({"python": _Payload(marker)}, folder / "rng_rank0.pt")  # an old-style RNG file
    state = ck.load_checkpoint(FakeEngine(), folder, rank=0)
    assert state.step == 7 and not marker.exists()
    (folder / "rng_rank0.safetensors").write_bytes(
        __import__("pickle").dumps(_Payload(marker))
    )  # and a payload where our own RNG file should be: refused, not run
    with pytest.raises(InputError, match=r"rng_rank0\.safetensors: unreadable RNG state"):
        ck.load_checkpoint(FakeEngine(), folder, rank=0)
    assert not marker.exists()


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_corrupt_file_falls_back_to_the_newest_intact_checkpoint(tmp_path, caplog):
    for step in (5, 10, 15):
        _save(tmp_path, step, keep=3)
    record = __import__("json").loads((tmp_path / "step_15" / ck.COMPLETE).read_text())
    assert set(record["files"]) == {
        "mp_rank_00_model_states.pt",
        "rng_rank0.safetensors",
        "trainer_state.json",
    }
    assert ck.choose_checkpoint(tmp_path, rank=0, world=1) == tmp_path / "step_15"
    _flip_byte(tmp_path / "step_15" / "mp_rank_00_model_states.pt")  # same size, other bytes
    (tmp_path / "step_10" / "rng_rank0.safetensors").write_bytes(b"short")
    with caplog.at_level("WARNING"):
        assert ck.choose_checkpoint(tmp_path, rank=0, world=1) == tmp_path / "step_5"
    assert (
        "checkpoint step_15: mp_rank_00_model_states.pt: checksum mismatch, falling back to step_5"
    ) in caplog.text
    assert "checkpoint step_10: rng_rank0.safetensors: size mismatch" in caplog.text
    (tmp_path / "step_5" / "trainer_state.json").unlink()
    with pytest.raises(
        InputError,
        match=r"no intact checkpoint to resume: step_15: .*; step_10: "
        r".*; step_5: trainer_state.json: missing",
    ):
        ck.choose_checkpoint(tmp_path, rank=0, world=1)


def test_marker_without_record_is_accepted_unverified(tmp_path, caplog):
    folder = _save(tmp_path, 3)
    (folder / ck.COMPLETE).write_text("ok\n")  # written by an older trainer
    with caplog.at_level("WARNING"):
        assert ck.choose_checkpoint(tmp_path, rank=0, world=1) == folder
    assert "has no file record" in caplog.text


def test_load_keeps_this_runs_clipping_and_weight_decay(tmp_path):
    """DeepSpeed's ZeRO load puts back the saved ``clip_grad`` and groups; the run's own win."""

    class Zero:
        def __init__(self) -> None:
            self.clip_grad = 0.5
            self.optimizer = types.SimpleNamespace(
                param_groups=[{"weight_decay": 0.05}, {"weight_decay": 0.0}]
            )

    class Loading(FakeEngine):
        def load_checkpoint(self, load_dir: str, tag: str, **kw) -> tuple[str | None, dict]:
            self.optimizer.clip_grad = 1.0  # what the checkpoint had
            self.optimizer.optimizer.param_groups = [
                {"weight_decay": 0.01},
                {"weight_decay": 0.0},
            ]
            return super().load_checkpoint(load_dir, tag, **kw)

    engine = Loading()
    engine.optimizer = Zero()
    _save(tmp_path, 3)
    ck.load_checkpoint(engine, tmp_path / "step_3", rank=0)
    assert engine.optimizer.clip_grad == 0.5
    assert [g["weight_decay"] for g in engine.optimizer.optimizer.param_groups] == [0.05, 0.0]


def test_full_disk_while_writing_our_own_files_is_the_same_error(tmp_path, monkeypatch):
    """The atomic writer reports ENOSPC as an ``OutputError``: caught like DeepSpeed's failures."""
    _save(tmp_path, 10)

    def full(path, data, inputs=()):
        raise OutputError(path, "no space left on device")

    monkeypatch.setattr(ck, "write_bytes", full)
    with pytest.raises(
        OutputError, match=r"step_20: checkpoint not saved: rng_rank0\.safetensors: "
    ):
        _save(tmp_path, 20)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_10"]


@pytest.mark.parametrize(
    "content, reason",
    [
        ("[1, 2]", "trainer state is not a JSON object"),
        ('{"step": "7"}', "trainer state field 'step' is malformed: '7'"),
        ('{"step": 7, "world_size": -2}', "trainer state field 'world_size' is malformed: -2"),
        ('{"step": 7, "record": [1]}', "trainer state field 'record' is malformed: [1]"),
    ],
)
def test_hostile_trainer_state_is_one_input_error(tmp_path, content, reason):
    (tmp_path / ck.STATE_FILE).write_text(content)
    with pytest.raises(InputError) as err:
        ck.read_state(tmp_path)
    assert err.value.reason == reason


def test_malformed_resume_record_is_refused_naming_the_state_file(tmp_path):
    from trainer.train import resume_check as rc

    current = rc.make_record(model={"config": {}}, data={}, target={}, settings={})
    with pytest.raises(InputError, match="malformed resume record") as err:
        rc.check_identity(
            {"model": 5}, current, checkpoint=tmp_path / "step_3", model_path="m", manifest_path="d"
        )
    assert err.value.path == str(tmp_path / "step_3" / "trainer_state.json")
