from __future__ import annotations

import os

import numpy as np
import pytest

from agentrl.checkpoint import latest_checkpoint, load_state, save_checkpoint
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
