from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from agentrl.checkpoint import (
    NoIntactCheckpoint,
    checkpoint_problem,
    clean_stale,
    latest_checkpoint,
    latest_intact_checkpoint,
    load_state,
    save_checkpoint,
    step_folders,
)
from agentrl.runlog import RunLog, read_metrics


def test_save_load_round_trip_and_latest(tmp_path) -> None:
    rng = np.random.default_rng(3)
    assert latest_checkpoint(tmp_path) is None
    for step in (1, 2, 3, 4):
        save_checkpoint(tmp_path, step, {"step": step, "rng": rng.bit_generator.state}, keep=2)
    latest = latest_checkpoint(tmp_path)
    assert latest is not None and latest.name == "step_000004"
    assert load_state(latest)["rng"] == rng.bit_generator.state
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "step_000003", "step_000004"]


def test_crash_mid_write_keeps_last_good(tmp_path) -> None:
    save_checkpoint(tmp_path, 1, {"step": 1})

    def dies(d):
        (d / "model.safetensors").write_bytes(b"partial")
        raise KeyboardInterrupt  # stands in for a kill between files

    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, 2, {"step": 2}, write_model=dies)
    latest = latest_checkpoint(tmp_path)
    assert latest is not None and load_state(latest)["step"] == 1
    save_checkpoint(tmp_path, 2, {"step": 2})  # the next save clears the debris
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_latest_pointing_at_missing_dir_is_a_clear_error(tmp_path) -> None:
    (tmp_path / "latest").write_text("step_000009")
    with pytest.raises(FileNotFoundError, match=r"state\.pt is missing"):
        latest_checkpoint(tmp_path)


def test_runlog_truncates_on_resume_and_tolerates_torn_line(tmp_path) -> None:
    with RunLog(tmp_path, tensorboard=False) as log:
        for s in range(5):
            log.log(s, {"reward": s / 10})
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 5, "rew')  # a writer killed mid-line
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [0, 1, 2, 3, 4]
    with RunLog(tmp_path, tensorboard=False) as log:
        log.truncate_after(2)
        log.log(3, {"reward": 1.0})
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [0, 1, 2, 3]


def test_runlog_writes_tensorboard_events(tmp_path) -> None:
    with RunLog(tmp_path) as log:
        log.log(0, {"reward": 0.5, "note": "text is skipped", "nan": float("nan")})
    assert any(name.startswith("events") for name in os.listdir(tmp_path / "tb"))


# ---- resume falls back past broken checkpoints ----------------------------------------------------


def _fake_checkpoints(root: Path, steps: int = 4) -> None:
    """Checkpoints shaped like the trainer's: state.pt plus a config.json and model.safetensors."""
    from safetensors.torch import save_file

    def write_model(d: Path) -> None:
        (d / "config.json").write_text("{}")
        save_file({"w": torch.arange(64, dtype=torch.float32)}, str(d / "model.safetensors"))

    for step in range(1, steps + 1):
        save_checkpoint(root, step, {"step": step, "opt": torch.ones(256)}, write_model, keep=3)


def _intact(root: Path) -> tuple[Path | None, list[str]]:
    said: list[str] = []
    return latest_intact_checkpoint(root, said.append), said


def test_intact_latest_is_used_silently(tmp_path: Path) -> None:
    _fake_checkpoints(tmp_path)
    found, said = _intact(tmp_path)
    assert found is not None and found.name == "step_000004" and said == []
    assert latest_intact_checkpoint(tmp_path / "nothing-here") is None


def test_truncated_state_falls_back(tmp_path: Path) -> None:
    _fake_checkpoints(tmp_path)
    state = tmp_path / "step_000004" / "state.pt"
    state.write_bytes(state.read_bytes()[:100])
    found, said = _intact(tmp_path)
    assert found is not None and found.name == "step_000003" and load_state(found)["step"] == 3
    assert len(said) == 1 and "\n" not in said[0]
    assert re.match(
        r"checkpoint step_000004 is unreadable \(state\.pt: .+\); resuming from step_000003$", said[0]
    )


def test_garbage_safetensors_falls_back(tmp_path: Path) -> None:
    _fake_checkpoints(tmp_path)
    weights = tmp_path / "step_000004" / "model.safetensors"
    weights.write_bytes(os.urandom(weights.stat().st_size))
    found, said = _intact(tmp_path)
    assert found is not None and found.name == "step_000003"
    assert said[0].startswith("checkpoint step_000004 is unreadable (model.safetensors: ")


def test_truncated_safetensors_and_missing_weights_fall_back(tmp_path: Path) -> None:
    _fake_checkpoints(tmp_path)
    weights = tmp_path / "step_000004" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    (tmp_path / "step_000003" / "model.safetensors").unlink()
    found, said = _intact(tmp_path)
    assert found is not None and found.name == "step_000002"
    assert "step_000004 is unreadable (model.safetensors:" in said[0]
    assert "step_000003 is unreadable (model weights are missing)" in said[0]


def test_pointer_to_a_missing_step_falls_back(tmp_path: Path) -> None:
    _fake_checkpoints(tmp_path)
    (tmp_path / "latest").write_text("step_000009")
    found, said = _intact(tmp_path)
    assert found is not None and found.name == "step_000004"
    assert said == [
        "latest names step_000009, but step_000009/state.pt is missing; resuming from step_000004"
    ]


def test_garbage_pointer_falls_back(tmp_path: Path) -> None:
    _fake_checkpoints(tmp_path)
    (tmp_path / "latest").write_bytes(b"\x00\xffnot a step\n")
    found, said = _intact(tmp_path)
    assert found is not None and found.name == "step_000004"
    assert said[0].startswith("latest names no checkpoint (") and said[0].endswith(
        "resuming from step_000004"
    )
    (tmp_path / "latest").unlink()  # a writer killed between the rename and the pointer update
    found, said = _intact(tmp_path)
    assert (
        found is not None
        and found.name == "step_000004"
        and said == ["latest is missing; resuming from step_000004"]
    )


def test_no_intact_checkpoint_is_one_clear_error(tmp_path: Path) -> None:
    _fake_checkpoints(tmp_path, steps=2)
    for step in (1, 2):
        (tmp_path / f"step_{step:06d}" / "state.pt").write_bytes(b"")
    with pytest.raises(
        NoIntactCheckpoint, match=rf"^no intact checkpoint in {re.escape(str(tmp_path))}: "
    ) as e:
        latest_intact_checkpoint(tmp_path)
    assert "\n" not in str(e.value) and "step_000002" in str(e.value) and "step_000001" in str(e.value)


def test_folders_newer_than_the_pointer_are_ignored(tmp_path: Path) -> None:
    _fake_checkpoints(tmp_path, steps=3)
    (tmp_path / "latest").write_text("step_000002")
    found, said = _intact(tmp_path)
    assert found is not None and found.name == "step_000002" and said == []


def test_removing_a_step_folder_never_leaves_half_of_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_checkpoints(tmp_path, steps=3)

    def killed(path: object, *a: object, **k: object) -> None:
        raise KeyboardInterrupt  # stands in for a kill while the old folder is being deleted

    monkeypatch.setattr("agentrl.checkpoint.shutil.rmtree", killed)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, 4, {"step": 4}, keep=3)  # prunes step_000001
    monkeypatch.undo()
    assert [p.name for p in step_folders(tmp_path)] == ["step_000004", "step_000003", "step_000002"]
    assert all(checkpoint_problem(p) is None for p in step_folders(tmp_path))
    assert clean_stale(tmp_path) == [f"step_000001.tmp-del-{os.getpid()}"]
