"""Smoke and correctness tests for the latency study (experiments/latency) at tiny sizes."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

STUDY = Path(__file__).resolve().parents[2] / "experiments" / "latency"
sys.path.insert(0, str(STUDY))

import latency_study  # noqa: E402
import latency_training  # noqa: E402
import make_trace  # noqa: E402

from agentrl.envs.latency import Empirical  # noqa: E402

FIG5 = {
    "duration": {
        "kind": "straggler",
        "body": {"kind": "uniform", "low": 79.0, "high": 138.0},
        "tail": {"kind": "uniform", "low": 449.0, "high": 560.0},
        "p": 0.125,
    }
}


def _load_run():
    spec = importlib.util.spec_from_file_location("latency_run", STUDY / "run.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_scheduler_matches_order_statistics() -> None:
    arms = latency_study.compare(FIG5, latency_study.paper_arms(), seeds=6, seed0=3)
    for i, seed in enumerate(range(3, 9)):
        direct = latency_study.order_statistics(FIG5, seed=seed, batch=24, group=8, overprovision=2.0)
        assert arms["spo"]["first_assembly_s"][i] == pytest.approx(direct["spo"], rel=1e-12)
        assert arms["grpo"]["first_assembly_s"][i] == pytest.approx(direct["grpo"], rel=1e-12)


def test_ratio_stats_is_paired_and_bounded() -> None:
    base = np.array([2.0, 4.0, 6.0, 8.0])
    r = latency_study.ratio_stats(base, base / 2)
    assert r["mean_ratio"] == pytest.approx(2.0)
    assert r["mean_ratio_lo"] == pytest.approx(2.0) and r["mean_ratio_hi"] == pytest.approx(2.0)
    assert r["per_seed_median"] == pytest.approx(2.0)


def test_synthetic_trace_is_deterministic_and_loadable() -> None:
    assert make_trace.make_rows(n=50) == make_trace.make_rows(n=50)
    emp = Empirical.from_trace(make_trace.TRACE)
    assert len(emp.samples) == make_trace.N_CALLS
    assert min(emp.samples) >= 0
    assert make_trace.TRACE.read_text().startswith("# SYNTHETIC")


def test_degenerate_group_teaches_the_policy_nothing() -> None:
    from agentrl.algo.advantage import grpo
    from agentrl.rollout.simulated import EpisodeProfile, RewardModel

    runner = latency_training.LearningRunner(EpisodeProfile(duration=1.0), RewardModel(), seed=0)
    pol = latency_training.LearningPolicy(runner, ["a", "b"], lr_prompt=1.0, lr_shared=0.1)
    before = pol.p_all().copy()
    r = np.array([1.0, 1.0, 1.0, 1.0])
    adv = grpo(r, [0, 0, 0, 0]).advantages
    pol.update(["a"] * 4, r, np.full(4, 0.5), adv)
    np.testing.assert_allclose(pol.p_all(), before)
    r = np.array([1.0, 0.0, 1.0, 0.0])
    adv = grpo(r, [0, 0, 0, 0]).advantages
    pol.update(["a"] * 4, r, np.full(4, 0.5), adv)
    assert pol.p("a") > before[0]


def test_quick_run_writes_every_output(tmp_path: Path) -> None:
    run = _load_run()
    assert run.main(["--quick", "--workers", "1", "--out", str(tmp_path)]) == 0
    for name in ("results.json", "results.md", "speedup_hist.png", "sweeps.png", "training.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    res = json.loads((tmp_path / "results.json").read_text())["results"]
    oc = res["reproduction/fig5"]["order_check"]
    assert oc["max_rel_error_spo"] < 1e-9 and oc["max_rel_error_grpo"] < 1e-9
    assert {
        "sweep/straggler_p/0.0",
        "baselines/learner0",
        "agentic/multiturn_trace/paper",
        "check/realtime",
    } <= set(res)
    assert any(k.startswith("training/") for k in res)
    md = (tmp_path / "results.md").read_text()
    for heading in (
        "## 1. Reproduction",
        "## 2. Checks",
        "## 3. Sweeps",
        "## 4. Fair baselines",
        "## 5. End-to-end",
        "## 6. Agentic",
    ):
        assert heading in md
