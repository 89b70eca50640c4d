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


def test_sandbox_env_declares_traces_from_the_calibration(tmp_path: Path) -> None:
    run = load("run")
    metrics = [
        {"step": 1, "time/step_s": 5.0, "time/learner_s": 1.0, "rollout/assembly_s": 4.0},
        {"step": 2, "time/step_s": 4.0, "time/learner_s": 1.0, "rollout/assembly_s": 3.0},
    ]
    call = {"gen_s": 0.5, "tool_s": 1.5, "tool_calls": 1}
    answer = {"gen_s": 0.1, "tool_s": 0.001, "tool_calls": 0}
    rollouts = [
        {"step": 1, "started_at": 0.0, "finished_at": 2.2, "reward": 1.0, "turns": [call, answer]},
        {"step": 2, "started_at": 3.0, "finished_at": 3.2, "reward": 0.0, "turns": [answer]},
    ]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in metrics))
    (tmp_path / "rollouts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rollouts))
    m = run.measure(tmp_path)
    assert m["tool_calls_per_episode"] == pytest.approx(0.5)
    assert m["tool_call_turn_s"] == pytest.approx(1.5)
    assert m["tool_s_per_turn"] == pytest.approx((1.5 + 0.002) / 3)
    cal = run.calibration(tmp_path, traces=tmp_path)
    tool = (tmp_path / "tool_trace.csv").read_text().splitlines()
    assert tool[0] == "step,turn,tool_calls,tool_s" and len(tool) == 4  # every turn, answers included
    assert (tmp_path / "turns_trace.csv").read_text().split() == ["turns", "2", "1"]
    assert cal["turns"] == "1-2" and cal["tool_call_turn_s"]["n"] == 1
    # the calculator keeps its declared lognormal; the sandbox env declares the traces, no latency on top
    a = _args()
    a.env = "python_math"
    sim = run.simulate_args("spo-async", a=a, cal=cal)
    assert sim[sim.index("--tool-trace") + 1] == cal["tool_trace"] and "--tool" not in sim
    assert sim[sim.index("--turns-trace") + 1] == cal["turns_trace"]
    args = run.train_args("spo-sync", url="u", name="n", run_root=tmp_path, seed=0, a=a, model="m")
    assert "env.id=agentrl/PythonMath-v0" in args and args[args.index("--model") + 1] == "m"
    assert not any(x.startswith("env.latency=") for x in args)
    a.env = "calculator"
    calc = run.simulate_args("spo-sync", a=a, cal={"generation": "0.1", "learner": "1", "turns": "2-3"})
    assert calc[calc.index("--tool") + 1] == "lognormal:median=0.4,sigma=1.0"
    assert any(
        x.startswith("env.latency=")
        for x in run.train_args("spo-sync", url="u", name="n", run_root=tmp_path, seed=0, a=a)
    )


def test_misses_and_arm_rows() -> None:
    report = load("report")

    def rec(arm: str, rep: int, meas: float, fr: float, dc: float) -> dict[str, object]:
        return {
            "arm": arm,
            "repeat": rep,
            "measured": {
                "trajectories_per_s": meas,
                "time_per_step_s": 16 / meas,
                "server_idle_share": 0.5,
                "learner_idle_share": 0.5,
            },
            "from_run": {"pooled_trajectories_per_s": fr},
            "declared": {"pooled_trajectories_per_s": dc},
        }

    recs = [rec("spo-sync", 0, 1.0, 1.05, 1.3), rec("spo-sync", 1, 2.0, 1.7, 2.1)]
    assert report.misses(recs, "from_run") == ["spo-sync-r1 (-15.0%)"]
    assert report.misses(recs, "declared") == ["spo-sync-r0 (+30.0%)"]
    rows = report.arm_rows(recs)
    assert list(rows) == ["spo-sync"] and rows["spo-sync"]["n"] == 2
    assert rows["spo-sync"]["measured"][0] == pytest.approx(1.5)
    assert rows["spo-sync"]["err_declared"] == pytest.approx([0.3, 0.05])


def test_what_ifs_are_checked_against_the_arms_that_ran(tmp_path: Path) -> None:
    report = load("report")

    def rec(arm: str, rep: int, meas: float) -> dict[str, object]:
        return {
            "arm": arm,
            "repeat": rep,
            "measured": {
                "trajectories_per_s": meas,
                "time_per_step_s": 16 / meas,
                "server_idle_share": 0.5,
                "learner_idle_share": 0.5,
            },
            "from_run": {"pooled_trajectories_per_s": meas},
            "declared": {"pooled_trajectories_per_s": meas},
        }

    recs = [rec("spo-sync", 0, 2.0), rec("spo-async", 0, 3.0), rec("spo-async", 1, 3.0)]
    # the what-ifs come from the record, or else from the run's stored what-if JSON
    recs[0]["from_run"]["scenarios"] = {"async, staleness <= 1 (was sync)": 3.3}
    lines = report.cross_lines(report.arm_rows(recs), recs, tmp_path)
    assert any("'async, staleness <= 1 (was sync)'" in x and "+10.0%" in x for x in lines)
    del recs[0]["from_run"]["scenarios"]
    scen = [{"scenario": "async, staleness <= 1 (was sync)", "pooled_trajectories_per_s": 2.7}]
    (tmp_path / "spo-sync-r0-what-if.json").write_text(json.dumps({"scenarios": scen}))
    lines = report.cross_lines(report.arm_rows(recs), recs, tmp_path)
    assert any("-10.0%" in x for x in lines)
    assert report.cross_lines(report.arm_rows(recs[:1]), recs[:1], tmp_path) == []
    # a what-if off by more than 10% with slower async learners says so, with the measured seconds
    for r, x in zip(recs, (2.0, 4.0, 4.0), strict=True):
        r["measured"]["learner_side_s"] = x
    recs[0]["from_run"]["scenarios"] = {"async, staleness <= 1 (was sync)": 3.6}
    lines = report.cross_lines(report.arm_rows(recs), recs, tmp_path)
    assert any("replays their learner side (2.00 s" in x and "measured 4.00 s" in x for x in lines)


def test_slot_runs_check_the_slot_what_if(tmp_path: Path) -> None:
    report = load("report")

    def rec(rep: int, meas: float, **from_run: object) -> dict[str, object]:
        return {
            "arm": "spo-sync",
            "repeat": rep,
            "settings": {"slots": 16},
            "measured": {
                "trajectories_per_s": meas,
                "time_per_step_s": 16 / meas,
                "server_idle_share": 0.5,
                "learner_idle_share": 0.5,
                "gen_s_per_turn": 0.3,
                "learner_side_s": 3.0,
                "tool_s_per_turn": 0.5,
                "tool_wait_share": 0.4,
            },
            "from_run": {
                "pooled_trajectories_per_s": meas,
                "server": {"request_s": 0.01, "token_s": 0.002, "r2": 0.5},
                **from_run,
            },
            "declared": {"pooled_trajectories_per_s": meas},
        }

    (tmp_path / "slots16").mkdir()
    for i, m in enumerate((2.0, 2.2)):
        (tmp_path / "slots16" / f"spo-sync-r{i}.json").write_text(json.dumps(rec(i, m)))
    src = [
        rec(0, 1.9, scenarios={"2x slots (16)": 2.0}),  # recorded before tool_wait_s: replayed as measured
        rec(1, 2.0, scenarios={"2x slots (16)": 2.2}, tool_capacity=4, **{"blind: 2x slots (16)": 2.52}),
    ]
    b = {"results": tmp_path, "recs": src, "rows": report.arm_rows(src)}
    text = "\n".join(report.slots_lines(b))
    assert "measured 2.100 [" in text
    assert "| spo-sync-r0 | n/a (no `tool_wait_s`) | | 2.000 | -4.8% |" in text
    assert "| spo-sync-r1 | 2.200 | +4.8% | 2.520 | +20.0% |" in text
    assert "says 2.200 traj/s (+4.8% against the 16-slot runs)" in text and "says 2.520 (+20.0%)" in text
