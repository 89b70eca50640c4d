"""Smoke test of the real-time throughput experiment's pure helpers (the runs themselves need a server)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

HERE = Path(__file__).resolve().parents[2] / "experiments" / "throughput"


def load(name: str) -> ModuleType:
    sys.path.insert(0, str(HERE))
    try:
        spec = importlib.util.spec_from_file_location(f"throughput_{name}", HERE / f"{name}.py")
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    finally:
        sys.path.remove(str(HERE))


def test_union_length_and_measure(tmp_path: Path) -> None:
    run = load("run")
    assert run.union_length([(0.0, 2.0), (1.0, 3.0), (5.0, 6.0)], 0.0, 10.0) == pytest.approx(4.0)
    assert run.union_length([(0.0, 2.0)], 1.0, 10.0) == pytest.approx(1.0)
    metrics = [
        {"step": 1, "time/step_s": 5.0, "time/learner_s": 1.0, "time/sync_s": 0.0, "rollout/assembly_s": 4.0},
        {"step": 2, "time/step_s": 4.0, "time/learner_s": 1.0, "time/sync_s": 0.0, "rollout/assembly_s": 3.0},
    ]
    turn = {"gen_s": 1.0, "tool_s": 1.0}
    rollouts = [
        {"step": 1, "started_at": 0.0, "finished_at": 2.0, "turns": [{**turn, "gen_at": 0.0}]},
        {"step": 2, "started_at": 3.0, "finished_at": 5.0, "turns": [{**turn, "gen_at": 3.0}]},
        {"step": 2, "started_at": 3.0, "finished_at": 5.0, "turns": [turn]},
    ]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in metrics))
    (tmp_path / "rollouts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rollouts))
    m = run.measure(tmp_path)
    assert m["trajectories_per_s"] == pytest.approx(2 / 4.0) and m["time_per_step_s"] == 4.0
    assert m["learner_idle_share"] == pytest.approx(0.75)
    assert m["server_idle_share"] == pytest.approx(2 / 3)  # window 2..5, generating 3..4
    assert run.train_args("grpo-sync", url="u", name="n", run_root=tmp_path, seed=0, a=_args())[:3] == [
        "train",
        "--backend",
        "openai",
    ]


def _args() -> object:
    import argparse

    return argparse.Namespace(
        steps=4, batch_size=8, group_size=4, slots=8, max_turns=3, max_new_tokens=16, sim_seeds=5
    )


def test_intervals() -> None:
    report = load("report")
    m, lo, hi = report.t_interval([1.0, 2.0, 3.0])
    assert m == 2.0 and lo < 2.0 < hi
    r, lo, hi = report.ratio_interval([2.0, 2.2, 1.8], [1.0, 1.1, 0.9])
    assert r == pytest.approx(2.0) and lo <= r <= hi
    assert np.isnan(report.t_interval([1.0])[1])
