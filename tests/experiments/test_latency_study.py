"""Smoke and correctness tests for the latency study (experiments/latency) at tiny sizes."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

STUDY = Path(__file__).resolve().parents[2] / "experiments" / "latency"
sys.path.insert(0, str(STUDY))

import latency_study  # noqa: E402
import latency_training  # noqa: E402
import make_trace  # noqa: E402

from agentrl.envs.latency import Empirical, Uniform  # noqa: E402
from agentrl.rollout.presets import PAPER_FIG5_DURATION  # noqa: E402

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


def test_paired_scheduler_matches_order_statistics_in_launch_order() -> None:
    """With common random numbers both arms draw the same launch-keyed durations: SPO keeps the
    24 fastest of draws 0..47, GRPO the 3rd fastest of the maxima of draws 8j..8j+7."""
    res = latency_study.compare(
        FIG5, latency_study.paper_arms(), seeds=15, seed0=40, common_random_numbers=True
    )
    for i, seed in enumerate(range(40, 55)):
        direct = latency_study.order_statistics(
            FIG5, seed=seed, batch=24, group=8, overprovision=2.0, common_random_numbers=True
        )
        assert res["spo"]["first_assembly_s"][i] == pytest.approx(direct["spo"], rel=1e-9)
        assert res["grpo"]["first_assembly_s"][i] == pytest.approx(direct["grpo"], rel=1e-9)


def test_run_only_merges_into_existing_results(tmp_path: Path) -> None:
    run = _load_run()
    cfg = run.quick_config(yaml.safe_load((STUDY / "config.yaml").read_text()))
    jobs = run.build_jobs(cfg)
    assert all(j["common_random_numbers"] for j in jobs)
    only = run.run_all(cfg, 1, log=lambda *_: None, only=["reproduction/fig5_literal"])
    assert list(only) == ["reproduction/fig5_literal"]
    assert only["reproduction/fig5_literal"]["spo_barrier_idle_share"]["mean"] > 0


def test_expected_order_statistic_matches_the_uniform_closed_form() -> None:
    cdf = latency_study.mixture_cdf(Uniform(0.0, 1.0))
    for k, n in ((1, 1), (3, 6), (24, 48)):
        assert latency_study.expected_order_statistic(cdf, k, n, 1.0) == pytest.approx(k / (n + 1), rel=1e-6)


def test_expected_paper_times_agree_with_the_preset_fit() -> None:
    exp = latency_study.expected_paper_times(FIG5)
    assert exp["spo"] == pytest.approx(112.03, abs=0.01)  # the value presets.py states for its fit
    assert 130 < exp["grpo"] < 560


def test_config_fig5_is_the_preset_fit() -> None:
    cfg = yaml.safe_load((STUDY / "config.yaml").read_text())
    assert cfg["profiles"]["fig5"] == FIG5
    assert repr(latency_study.make_profile(FIG5).duration) == repr(PAPER_FIG5_DURATION)


def test_warmup_is_validated_and_only_trims_the_start() -> None:
    arms = latency_study.async_arms(24, 8, None, 4)[:1]
    with pytest.raises(ValueError, match="warmup"):
        latency_study.compare(FIG5, arms, seeds=1, batches=2, warmup=2)
    full = latency_study.compare(FIG5, arms, seeds=2, batches=8)["spo"]["time_per_batch"]
    steady = latency_study.compare(FIG5, arms, seeds=2, batches=8, warmup=4)["spo"]["time_per_batch"]
    # the first batches come from the start-up burst of (S+1)·B launches: faster than steady state
    assert all(s > f for s, f in zip(steady, full, strict=True))


def test_decile_means_and_mean_curve() -> None:
    assert latency_training.decile_means([float(i) for i in range(20)]) == [
        pytest.approx(2 * i + 0.5) for i in range(10)
    ]
    assert latency_training.decile_means([math.nan] * 10) == [pytest.approx(math.nan, nan_ok=True)] * 10
    pt = {"t": 1.0, "consumed": 2, "launched": 3, "mean_p": 0.5, "degenerate": math.nan, "near_zero_adv": 0.1}
    curve = latency_training.mean_curve([[pt] * 250, [dict(pt, mean_p=0.7)] * 250], points=100)
    assert curve["batch"][0] == 1 and curve["batch"][-1] == 250
    assert len(curve["mean_p"]) <= 101 and curve["mean_p"][0] == pytest.approx(0.6)
    assert len(curve["degenerate_full"]) == 250


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
    assert oc["expected_spo"] == pytest.approx(112.03, abs=0.01)
    assert {
        "sweep/straggler_p/0.0",
        "baselines/sync/learner0",
        "baselines/async/learner0",
        "agentic/multiturn_trace/paper",
        "check/realtime",
    } <= set(res)
    tr = [v for k, v in res.items() if k.startswith("training/")]
    assert tr and all(len(t["degenerate_by_decile"]) == 10 and "curve" in t for t in tr)
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


def test_bernoulli_kl_is_never_negative() -> None:
    p = np.random.default_rng(0).random(10_000)
    assert (latency_training._bern_kl(p, p.copy()) >= 0).all()
    assert latency_training._bern_kl(np.array([0.2]), np.array([0.6]))[0] > 0
