"""`kill -9` during `agentrl train`, then `--resume`: state matches the last checkpoint exactly."""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agentrl.checkpoint import latest_checkpoint, load_state
from agentrl.runlog import read_metrics
from agentrl.trainer import Trainer
from tests.test_trainer import MICRO_OVERRIDES, _assert_same, make_micro_model, micro_config

pytestmark = pytest.mark.integration


def test_kill_dash_nine_then_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = make_micro_model(tmp_path / "micro")
    runs = tmp_path / "runs"
    overrides = [
        f"model.name={model}",
        f"run_root={runs}",
        "name=killme",
        "steps=200",
        *MICRO_OVERRIDES,
    ]
    env = {**os.environ, "AGENTRL_CACHE": str(tmp_path / "cache"), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "agentrl.cli", "train", *overrides],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    ckpts = runs / "killme" / "checkpoints"
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            latest = latest_checkpoint(ckpts) if (ckpts / "latest").exists() else None
            if latest is not None and load_state(latest)["step"] >= 3:
                break
            assert proc.poll() is None, "training exited before it could be killed"
            time.sleep(0.2)
        else:
            pytest.fail("no checkpoint at step >= 3 within 300 s")
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    last = latest_checkpoint(ckpts)
    assert last is not None
    state = load_state(last)  # the last good checkpoint loads, whatever the kill interrupted
    k = state["step"]

    resumed = Trainer(micro_config(model, runs, steps=k + 2, name="killme"), resume=True)
    seen: dict[str, object] = {}
    original = resumed._train_step

    async def spy(batch):  # type: ignore[no-untyped-def]
        if not seen:
            algo = resumed.algorithm
            seen.update(
                step=resumed.step,
                tracker=copy.deepcopy(algo.tracker.state_dict()),  # type: ignore[attr-defined]
                optimizer=copy.deepcopy(resumed.learner.optimizer.state_dict()),
                divergence=copy.deepcopy(algo.divergence.state_dict()),  # type: ignore[attr-defined]
                prompts=[t.prompt_id for t in batch.trajectories],
            )
        return await original(batch)

    resumed._train_step = spy  # type: ignore[method-assign]
    monkeypatch.setenv("AGENTRL_CACHE", str(tmp_path / "cache"))  # restored after the test
    result = resumed.run()
    assert seen["step"] == k and result.steps == k + 2
    _assert_same(seen["tracker"], state["algorithm"]["tracker"])
    _assert_same(seen["optimizer"], state["learner"]["optimizer"])
    _assert_same(seen["divergence"], state["algorithm"]["divergence"])
    steps = [r["step"] for r in read_metrics(runs / "killme" / "metrics.jsonl") if "reward_mean" in r]
    assert steps == list(range(1, k + 3))  # nothing lost, nothing counted twice
