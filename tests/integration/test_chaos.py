"""Chaos: `agentrl train` killed with SIGKILL 20 times at random moments (some inside checkpoint
writes), resumed with `--resume` after each, then left to finish. The run must end exactly as an
uninterrupted one would be recorded: every step once in metrics and rollouts, every checkpoint whole."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from agentrl.checkpoint import checkpoint_problem, load_state, step_folders
from agentrl.runlog import read_metrics
from tests.test_trainer import MICRO_OVERRIDES, make_micro_model

pytestmark = pytest.mark.integration

KILLS = 20
STEPS = 100  # more than twenty lives can reach, so the run is still going at every kill
MAX_STEPS_PER_LIFE = 3  # each life is killed by then at the latest, however fast the machine
SEED = 20240611


def _tmp_entries(ckpts: Path) -> list[str]:
    try:
        return [e.name for e in os.scandir(ckpts) if ".tmp-" in e.name]
    except FileNotFoundError:
        return []


def _pointer(ckpts: Path) -> str | None:
    try:
        return (ckpts / "latest").read_text()
    except FileNotFoundError:
        return None


def _train_rows(metrics: Path) -> int:
    try:
        return metrics.read_text().count('"reward_mean"')
    except FileNotFoundError:
        return 0


def _wait_for(proc: subprocess.Popen[bytes], cond: object, timeout: float, poll: float) -> bool:
    """Poll `cond()` until true (returns True) or the process exits / time runs out (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return True
        if proc.poll() is not None:
            return False
        time.sleep(poll)
    return False


@pytest.mark.timeout(900)
def test_twenty_random_kills_then_finish(tmp_path: Path) -> None:
    model = make_micro_model(tmp_path / "micro")
    runs = tmp_path / "runs"
    run, ckpts = runs / "chaos", runs / "chaos" / "checkpoints"
    overrides = [f"model.name={model}", f"run_root={runs}", "name=chaos", f"steps={STEPS}", *MICRO_OVERRIDES]
    env = {**os.environ, "AGENTRL_CACHE": str(tmp_path / "cache"), "PYTHONUNBUFFERED": "1"}
    rng = random.Random(SEED)
    logs = tmp_path / "logs"
    logs.mkdir()

    def launch(i: int) -> subprocess.Popen[bytes]:
        # The first launch starts the run; later ones resume it (a kill before config.yaml was
        # written leaves no run to resume, and a fresh start is what a user would do then).
        resume = ["--resume"] if i > 0 and (run / "config.yaml").is_file() else []
        with open(logs / f"life_{i:02d}.log", "wb") as out:
            return subprocess.Popen(
                [sys.executable, "-m", "agentrl.cli", "train", *resume, *overrides],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def tail(i: int) -> str:
        return (logs / f"life_{i:02d}.log").read_text(errors="replace")[-3000:]

    journal: list[str] = []
    for i in range(KILLS):
        # The first kill lands in the first checkpoint write; then a seeded mix of moments.
        kind = "tmp" if i == 0 else rng.choice(["tmp", "tmp", "after_step", "anytime"])
        delay = rng.uniform(0.0, 0.004) if kind == "tmp" else rng.uniform(0.0, 1.2)
        start_ptr, stale = _pointer(ckpts), set(_tmp_entries(ckpts))  # leftovers of the last kill
        proc = launch(i)
        try:
            if kind == "tmp":
                hit = _wait_for(proc, lambda s=stale: set(_tmp_entries(ckpts)) - s, 180, 0.001)
            elif kind == "after_step":
                hit = _wait_for(proc, lambda p=start_ptr: _pointer(ckpts) != p, 180, 0.01)
            else:
                delay = rng.uniform(0.5, 14.0)  # from startup and restore through several steps
                hit = True
            # Sleep out the delay, but never let one life run more than a few steps: on a fast
            # machine a fixed delay would carry the run to its end before twenty kills.
            if kind == "tmp":
                time.sleep(delay)  # milliseconds: the write is still under way
            else:
                rows0 = _train_rows(run / "metrics.jsonl")
                _wait_for(
                    proc,
                    lambda r=rows0: _train_rows(run / "metrics.jsonl") - r >= MAX_STEPS_PER_LIFE,
                    delay,
                    0.01,
                )
            seen = sorted(set(_tmp_entries(ckpts)) - stale)
            alive = proc.poll() is None
            if alive:
                os.killpg(proc.pid, signal.SIGKILL)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
        assert alive and hit, f"life {i} ({kind}) ended before its kill (rc {proc.returncode}):\n{tail(i)}"
        assert proc.returncode == -signal.SIGKILL
        broken = {p.name: checkpoint_problem(p) for p in step_folders(ckpts)}
        assert not any(broken.values()), f"after kill {i}: a step folder is not whole: {broken}"
        journal.append(f"kill {i:2d} {kind:10s} +{delay:.3f}s ckpt={_pointer(ckpts)} tmp={seen}")
    print("\n".join(journal))
    assert sum("tmp=['" in line for line in journal) >= 5, "too few kills landed inside checkpoint writes"

    proc = launch(KILLS)
    rc = proc.wait(timeout=600)
    assert rc == 0, tail(KILLS)

    # the final step count
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == STEPS
    assert _pointer(ckpts) == f"step_{STEPS:06d}"
    # every kept checkpoint loads, and nothing temporary is left
    kept = step_folders(ckpts)
    assert kept and len(kept) <= 3 and kept[0].name == f"step_{STEPS:06d}"
    for p in kept:
        assert checkpoint_problem(p) is None, p
        assert load_state(p)["step"] == int(p.name.split("_")[1])
    assert not _tmp_entries(ckpts)
    # no metric row lost or duplicated
    rows = read_metrics(run / "metrics.jsonl")
    train = [r for r in rows if "reward_mean" in r]
    assert [r["step"] for r in train] == list(range(1, STEPS + 1))
    assert [r["step"] for r in rows].count(0) == 1  # one "before" evaluation
    # each step's rollouts present once: as many rows as that step's batch, in step order
    rollout_steps = [json.loads(line)["step"] for line in (run / "rollouts.jsonl").read_text().splitlines()]
    assert rollout_steps == sorted(rollout_steps)
    assert Counter(rollout_steps) == {r["step"]: r["batch/size"] for r in train}
