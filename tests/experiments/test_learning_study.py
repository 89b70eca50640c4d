"""Fast tests for the learning study's pure parts (experiments/learning): statistics, job grid,
run reading, report rendering and the simulated-time mapping. No training, except one slow smoke."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import shutil
import sys
import zlib
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import yaml

STUDY = Path(__file__).resolve().parents[2] / "experiments" / "learning"


def _load(name: str) -> ModuleType:
    """Import a study module under a unique name (experiments/latency also has a run.py)."""
    if str(STUDY) not in sys.path:
        sys.path.insert(0, str(STUDY))
    spec = importlib.util.spec_from_file_location(f"learning_{name}", STUDY / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up here
    spec.loader.exec_module(mod)
    return mod


report = _load("report")
study = _load("run")
trl_ref = _load("trl_reference")


# ---- statistics -------------------------------------------------------------------------------------


def test_t_quantile_matches_scipy() -> None:
    stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 3, 4.5, 7, 12.3, 29, 30, 31, 45.7, 100, 1000):
        assert report.t_quantile_975(df) == pytest.approx(stats.t.ppf(0.975, df), rel=2e-3)


def test_mean_ci_by_hand() -> None:
    ci = report.mean_ci([0.1, 0.2, 0.3])
    h = 4.3027 * 0.1 / math.sqrt(3)
    assert ci["n"] == 3 and ci["mean"] == pytest.approx(0.2)
    assert (ci["lo"], ci["hi"]) == pytest.approx((0.2 - h, 0.2 + h))
    one = report.mean_ci([0.5, float("nan"), None])
    assert one["n"] == 1 and one["mean"] == 0.5 and math.isnan(one["lo"])
    assert report.mean_ci([])["n"] == 0


def test_diff_ci_is_welch() -> None:
    stats = pytest.importorskip("scipy.stats")
    a, b = [0.5, 0.6, 0.7, 0.65], [0.3, 0.5, 0.35]
    ci = report.diff_ci(a, b)
    va, vb = np.var(a, ddof=1) / 4, np.var(b, ddof=1) / 3
    df = (va + vb) ** 2 / (va**2 / 3 + vb**2 / 2)
    h = stats.t.ppf(0.975, df) * math.sqrt(va + vb)
    assert ci["est"] == pytest.approx(np.mean(a) - np.mean(b))
    assert ci["df"] == pytest.approx(df)
    assert (ci["hi"] - ci["lo"]) / 2 == pytest.approx(h, rel=2e-3)
    assert (ci["hi"] + ci["lo"]) / 2 == pytest.approx(ci["est"])
    assert report.verdict(ci) == "win"
    assert report.verdict(report.diff_ci(b, a)) == "loss"
    assert report.verdict(report.diff_ci([0.1, 0.5], [0.2, 0.4])) == "tie"
    assert report.verdict(report.diff_ci([0.5], [0.1, 0.2])) == "n/a"  # one seed: no interval, no win


def test_average_of_differences_reduces_to_single_difference() -> None:
    a, b = [0.4, 0.5, 0.6], [0.2, 0.25, 0.4]
    one = report.diff_ci(a, b)
    two = report.lincomb_ci([(0.5, a), (-0.5, b), (0.5, a), (-0.5, b)])
    assert two["est"] == pytest.approx(one["est"])
    # Treating the same data as two independent environments halves the variance of the average.
    assert (two["hi"] - two["lo"]) < (one["hi"] - one["lo"])


def test_ratio_ci() -> None:
    r = report.ratio_ci([1.0, 1.2, 0.8], [2.0, 2.2, 1.8])
    assert r["est"] == pytest.approx(0.5) and r["lo"] < 0.5 < r["hi"]
    assert math.isnan(report.ratio_ci([1.0], [0.0])["est"])
    exact = report.ratio_ci([1.0, 1.0], [2.0, 2.0])
    assert exact["lo"] == exact["hi"] == 0.5


# ---- simulated time ------------------------------------------------------------------------------------


def test_samples_to_time_is_linear_with_offset() -> None:
    t = report.samples_to_time(np.array([0, 32, 64]), 32, 100.0, offset_s=50.0)
    assert t.tolist() == [50.0, 150.0, 250.0]


def test_simulated_group_barrier_is_slower_than_streaming() -> None:
    """Paper-fig5 profile, 2x over-provisioning: GRPO's group barrier costs more time per batch."""
    kw = {"preset": "paper-fig5", "overprovision": 2.0, "seeds": 20}
    spo = report.simulate_batch_time("stream", 24, 8, **kw)
    grpo = report.simulate_batch_time("group", 24, 8, **kw)
    assert spo["n"] == 20 and 79 < spo["mean"] < 138  # the 24th of 48 is a body draw
    assert grpo["mean"] > 1.5 * spo["mean"]
    again = report.simulate_batch_time("stream", 24, 8, **kw)
    assert again["mean"] == spo["mean"]  # seeded


# ---- the job grid --------------------------------------------------------------------------------------


def test_build_jobs_grid_budget_and_filters(tmp_path: Path) -> None:
    cfg = study.load_study_config(STUDY / "config.yaml")
    jobs = study.build_jobs(cfg, model="org/some-model", device="cuda")
    assert len(jobs) == len(cfg["arms"]) * len(cfg["envs"]) * len(cfg["seeds"])
    assert len({j.name for j in jobs}) == len(jobs)
    assert {j.model_tag for j in jobs} == {"org--some-model"}
    budgets = study.check_equal_budget(jobs)
    first = {study.env_short(j.env): study.resolve(j) for j in reversed(jobs)}
    assert budgets == {f"org--some-model/{e}": c.steps * c.rollout.batch_size for e, c in first.items()}
    assert len(budgets) == len(cfg["envs"])
    grpo = next(j for j in jobs if j.arm == "grpo")
    g = study.resolve(grpo)
    assert g.algo.name == "grpo" and g.rollout.batch_size % g.algo.group_size == 0
    assert g.model.device == "cuda" and g.eval.k > 1
    no_init = study.resolve(next(j for j in jobs if j.arm == "spo_no_offline_init"))
    assert no_init.algo.name == "spo" and no_init.algo.offline_init is False
    sel = study.select(jobs, ["spo/calculator"])
    assert {(j.arm, j.env) for j in sel} == {("spo", "agentrl/Calculator-v0")}
    sel = study.select(jobs, ["*/KBSearch-v0", "grpo"])
    assert {j.env for j in sel if j.arm != "grpo"} == {"agentrl/KBSearch-v0"}
    assert {j.env for j in sel if j.arm == "grpo"} == set(cfg["envs"])

    q = study.load_study_config(STUDY / "config.yaml", quick=True)
    assert q["quick"] and q["common"]["steps"] < cfg["common"]["steps"]
    assert "eval.every" in q["common"] and len(q["seeds"]) >= 2
    with_smol = study.build_jobs(q, model="m", smollm2=True)
    assert {j.model for j in with_smol} == {"m", "smollm2-135m"}


def test_unequal_budget_is_refused() -> None:
    cfg = study.load_study_config(STUDY / "config.yaml")
    cfg["arms"] = {"spo": {"algo.name": "spo"}, "grpo": {"algo.name": "grpo", "steps": 7}}
    with pytest.raises(SystemExit, match="unequal"):
        study.check_equal_budget(study.build_jobs(cfg, model="m"))


def test_env_models_apply_to_the_default_tiny_only() -> None:
    from agentrl.models import TINY_MODELS

    cfg = study.load_study_config(STUDY / "config.yaml")
    cfg["env_models"] = {"agentrl/KBSearch-v0": "tiny-x"}
    before = dict(TINY_MODELS)
    TINY_MODELS["tiny-x"] = dataclasses.replace(TINY_MODELS["tiny"], sft_steps=1)
    try:
        jobs = study.build_jobs(cfg)
        assert {j.model for j in jobs if j.env == "agentrl/KBSearch-v0"} == {"tiny-x"}
        assert {j.model for j in jobs if j.env != "agentrl/KBSearch-v0"} == {"tiny"}
        assert {j.env for j in jobs} == set(cfg["envs"]) and all(j.main for j in jobs)
        kb = next(j for j in jobs if j.env == "agentrl/KBSearch-v0")
        assert kb.model_tag == f"tiny-{TINY_MODELS['tiny-x'].key()}" != study.model_tag("tiny")
        assert study.resolve(kb).model.name == "tiny-x"
        # another model (a GPU user's) runs every env
        assert {j.model for j in study.build_jobs(cfg, model="org/m")} == {"org/m"}
        smol = [j for j in study.build_jobs(cfg, smollm2=True) if not j.main]
        assert smol and {j.model for j in smol} == {"smollm2-135m"}
    finally:
        TINY_MODELS.clear()
        TINY_MODELS.update(before)


def test_shipped_env_models_are_embedded_tiny_models() -> None:
    from agentrl.models import TINY_MODELS

    cfg = study.load_study_config(STUDY / "config.yaml")
    assert set(cfg["env_models"]) <= set(cfg["envs"])
    for name in cfg["env_models"].values():
        assert name in TINY_MODELS and len(TINY_MODELS[name].key()) == 12  # its base chain resolves


def test_model_tag() -> None:
    from agentrl.models import TINY_MODELS

    assert study.model_tag("tiny") == f"tiny-{TINY_MODELS['tiny'].key()}"
    # the study's published Calculator runs were made on the recipe `tiny` was then
    assert study.model_tag("tiny-random-init") == "tiny-0df3b676771f"
    assert study.model_tag("HuggingFaceTB/SmolLM2-135M") == "HuggingFaceTB--SmolLM2-135M"
    assert study.model_tag("/tmp/x/micro model") == "micro_model"


# ---- reading runs and rendering --------------------------------------------------------------------------


def _fake_run(
    root: Path,
    arm: str,
    env: str,
    seed: int,
    final: float,
    *,
    steps: int = 8,
    batch: int = 8,
    checkpoint_every: int = 2,
) -> None:
    """A run directory as run.py + Trainer leave it, with synthetic but plausible numbers."""
    rng = np.random.default_rng(zlib.crc32(f"{arm}|{env}|{seed}".encode()))
    d = root / "m" / f"{study.env_short(env)}-{arm}-s{seed}"
    d.mkdir(parents=True)
    (d / "job.json").write_text(json.dumps({"arm": arm, "env": env, "seed": seed, "model_tag": "m"}))
    algo = {"name": "grpo" if arm == "grpo" else ("no_baseline" if arm == "no_baseline" else "spo")}
    algo.update(group_size=4, offline_n0=2)
    (d / "config.yaml").write_text(
        yaml.safe_dump(
            {
                "steps": steps,
                "checkpoint_every": checkpoint_every,
                "rollout": {"batch_size": batch},
                "algo": algo,
                "eval": {"k": 4},
            }
        )
    )
    rows = [{"step": 0, "eval/success": 0.1}]
    for s in range(1, steps + 1):
        row = {
            "step": s,
            "reward_mean": float(rng.uniform(0, 1)),
            "adv/raw_variance": float(
                {"spo": 0.1, "grpo": 0.12, "no_baseline": 0.2}.get(arm, 0.15) + rng.uniform(0, 0.01)
            ),
            "adv/frac_near_zero_1e4": 0.0,
            "adv/frac_near_zero_0_02": float(rng.uniform(0, 0.1)),
            "time/step_s": 1.0,
        }
        if arm == "grpo":
            row["adv/frac_samples_in_degenerate_groups"] = 0.5 + 0.3 * s / steps
        if s == steps // 2:
            row["eval/success"] = (0.1 + final) / 2
        rows.append(row)
    rows.append({"step": steps, "eval/success": final})
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    def ev(x: float) -> dict[str, object]:
        return {
            "k": 4,
            "avg_at_k": x,
            "pass_at": {"1": x, "4": min(1, 2 * x)},
            "maj_at": {"1": x, "4": x + 0.01},
        }

    off = {"prompts": 4} if arm == "spo" else None
    (d / "summary.json").write_text(
        json.dumps(
            {
                "steps": steps,
                "seconds": 10.0,
                "eval_before": ev(0.1),
                "eval_after": ev(final),
                "offline_init": off,
            }
        )
    )


def _fake_study(tmp_path: Path) -> dict[str, object]:
    cfg = study.load_study_config(STUDY / "config.yaml", quick=True)
    cfg.update(
        model="m", run_root=str(tmp_path / "runs"), envs=["agentrl/Calculator-v0", "agentrl/KBSearch-v0"]
    )
    cfg["seeds"] = [0, 1, 2]
    cfg["simulated_time"] = {"preset": "paper-fig5", "overprovision": 2.0, "seeds": 5}
    cfg["trl"] = {"enabled": True, "env": "agentrl/Calculator-v0", "seeds": [0]}
    for env in cfg["envs"]:
        for seed in (0, 1, 2):
            _fake_run(tmp_path / "runs", "spo", env, seed, 0.6 + 0.01 * seed)
            _fake_run(tmp_path / "runs", "grpo", env, seed, 0.3 + 0.02 * seed)
            _fake_run(tmp_path / "runs", "no_baseline", env, seed, 0.45 + 0.1 * seed)
            # spo_no_offline_init: missing on purpose (an unfinished study)
    return cfg


def test_read_runs_and_aggregate(tmp_path: Path) -> None:
    cfg = _fake_study(tmp_path)
    runs = report.read_runs(tmp_path / "runs")
    assert len(runs) == 18 and all(r.finished for r in runs)
    spo = next(r for r in runs if r.arm == "spo")
    assert spo.offline_samples == 8 and spo.batch_size == 8 and len(spo.train_rows()) == 8
    assert [int(r["step"]) for r in spo.eval_rows()] == [0, 4, 8]
    assert report.eval_metrics(spo.summary["eval_after"])["maj"] == pytest.approx(
        spo.summary["eval_after"]["maj_at"]["4"]
    )
    g = next(r for r in runs if r.arm == "grpo")
    assert report.run_mean(g, "adv/frac_samples_in_degenerate_groups", 0.75, 1.0) == pytest.approx(
        np.mean([0.5 + 0.3 * s / 8 for s in (7, 8)])
    )
    res = report.aggregate(runs, list(cfg["arms"]), cfg["envs"], cfg["simulated_time"])
    d = res["diffs"]["spo-grpo|avg"]
    assert d["per_env"]["agentrl/Calculator-v0"]["verdict"] == "win"
    assert d["average"]["est"] == pytest.approx(0.3 - 0.01)
    assert res["diffs"]["spo-no_baseline|avg"]["average"]["verdict"] in ("win", "tie")
    assert res["final"]["agentrl/Calculator-v0|spo_no_offline_init"]["avg"]["n"] == 0
    ratio = res["variance_ratio_vs_no_baseline"]["agentrl/Calculator-v0|spo"]
    assert 0.4 < ratio["est"] < 0.6
    st = res["simulated_time"]["arms"]
    assert st["grpo"]["s_per_batch"] > st["spo"]["s_per_batch"] > 0
    assert st["spo"]["offline_s"] > 0 and st["grpo"]["offline_s"] == 0


def test_write_report_end_to_end(tmp_path: Path) -> None:
    cfg = _fake_study(tmp_path)
    trl_dir = tmp_path / "runs" / "m" / "trl"
    trl_dir.mkdir(parents=True)
    (trl_dir / "seed0.json").write_text(
        json.dumps(
            {
                "status": "ok",
                "seed": 0,
                "trl_version": "x",
                "train_samples": 64,
                "group_size": 4,
                "eval_tasks": 4,
                "eval_k": 4,
                "before": {"avg": 0.1, "pass": 0.2, "maj": 0.1},
                "after": {"avg": 0.2, "pass": 0.3, "maj": 0.2},
                "train_seconds": 3.0,
                "total_seconds": 5.0,
            }
        )
    )
    (trl_dir / "seed1.json").write_text(
        json.dumps({"status": "error", "seed": 1, "error": "ImportError: no trl"})
    )
    out = tmp_path / "out"
    out.mkdir()
    (out / "README.md").write_text(f"intro\n{report.README_BEGIN}\nold\n{report.README_END}\ntail\n")
    jobs = study.build_jobs(cfg)
    payload = report.write_report(cfg, jobs, out, trl_dir=trl_dir)
    md = (out / "results.md").read_text()
    assert "18 of 24 runs finished" in md
    assert "spo_no_offline_init/Calculator-v0/s0" in md  # missing runs are named
    assert "SPO − GRPO" in md and "win" in md
    assert "TRL GRPO (single-turn, no tools)" in md and "ImportError: no trl" in md
    assert "Against the paper's claims" in md and "+3.4 pp" in md
    for name, _ in report.PLOTS:
        assert (out / name).is_file() and (out / name).stat().st_size > 1000
    readme = (out / "README.md").read_text()
    assert readme.startswith("intro\n") and readme.endswith("tail\n") and "old" not in readme
    assert "### Final held-out scores" in readme
    data = json.loads((out / "results.json").read_text())
    assert data["results"]["diffs"]["spo-grpo|maj"]["average"]["verdict"] == "win"
    assert payload["trl"]["errors"][0]["seed"] == 1
    # The report is a function of the run directories: a second pass gives the same markdown.
    report.write_report(cfg, jobs, out, trl_dir=trl_dir, update_readme_file=False)
    assert (out / "results.md").read_text() == md


def test_empty_study_says_so(tmp_path: Path) -> None:
    cfg = study.load_study_config(STUDY / "config.yaml")
    cfg.update(run_root=str(tmp_path / "none"))
    out = tmp_path / "out"
    report.write_report(
        cfg, study.build_jobs(cfg), out, trl_dir=tmp_path / "none" / "trl", update_readme_file=False
    )
    md = (out / "results.md").read_text()
    assert "No finished runs yet" in md and "0 of 36 runs finished" in md


def test_readme_has_markers() -> None:
    text = (STUDY / "README.md").read_text()
    assert text.count(report.README_BEGIN) == 1 and text.count(report.README_END) == 1


# ---- the TRL reference's scoring (no TRL needed) ----------------------------------------------------------


def test_single_turn_scoring_uses_the_env_scorer() -> None:
    import gymnasium

    import agentrl.envs  # noqa: F401

    env = gymnasium.make("agentrl/Calculator-v0").unwrapped
    task = env.tasks("test")[0]
    assert trl_ref.score_completion(env, task, f"so <answer>{task.answer}</answer>")[0] == 1.0
    assert trl_ref.score_completion(env, task, f"<answer>{task.answer + 1}</answer>")[0] == 0.0
    assert trl_ref.score_completion(env, task, "no answer here") == (0.0, None)
    assert (
        trl_ref.completion_text([{"role": "assistant", "content": "<answer>3</answer>"}])
        == "<answer>3</answer>"
    )
    m = trl_ref.summarise_samples([[1.0, 0.0], [0.0, 0.0]], [["5", "6"], [None, "7"]], 2)
    assert m["avg"] == 0.25 and m["pass"] == 0.5 and m["maj"] == 0.5


# ---- one slow end-to-end smoke (trains) ----------------------------------------------------------------


@pytest.mark.slow
def test_quick_study_on_micro_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.test_trainer import make_micro_model

    monkeypatch.setenv("AGENTRL_CACHE", str(tmp_path / "cache"))
    micro = make_micro_model(tmp_path / "micro")
    cfg_path = tmp_path / "config.yaml"
    cfg = yaml.safe_load((STUDY / "config.yaml").read_text())
    cfg["quick"]["run_root"] = str(tmp_path / "runs")
    cfg["quick"]["seeds"] = [0, 1]
    cfg["envs"] = ["agentrl/Calculator-v0"]
    cfg_path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "out"
    args = ["--config", str(cfg_path), "--quick", "--model", str(micro), "--skip-trl", "--out", str(out)]
    assert study.main(args) == 0
    md = (out / "results.md").read_text()
    assert "8 of 8 runs finished" in md
    # Re-running skips finished runs and rebuilds the same report.
    assert study.main(args) == 0
    assert (out / "results.md").read_text() == md


def test_claims_show_the_whole_interval_of_a_difference(tmp_path: Path) -> None:
    """A difference can be negative: the paper-claims line must not clamp it to the [0, 1] of a score."""
    cfg = study.load_study_config(STUDY / "config.yaml", quick=True)
    cfg.update(model="m", run_root=str(tmp_path / "runs"), envs=["agentrl/Calculator-v0"], seeds=[0, 1, 2])
    cfg["simulated_time"] = {"preset": "paper-fig5", "overprovision": 2.0, "seeds": 2}
    cfg["trl"] = {"enabled": False}
    for seed, (a, b) in enumerate(((0.6, 0.62), (0.5, 0.52), (0.7, 0.55))):
        _fake_run(tmp_path / "runs", "spo", "agentrl/Calculator-v0", seed, a)
        _fake_run(tmp_path / "runs", "grpo", "agentrl/Calculator-v0", seed, b)
    out = tmp_path / "out"
    out.mkdir()
    payload = report.write_report(cfg, study.build_jobs(cfg), out, trl_dir=tmp_path / "none")
    avg = payload["results"]["diffs"]["spo-grpo|maj"]["average"]
    assert avg["lo"] < 0 < avg["hi"]
    claim = next(
        line for line in (out / "results.md").read_text().splitlines() if "average over 1 env" in line
    )
    headline = claim.split(" pp → ")[0]  # the average's interval, before the per-env figures
    assert headline.endswith(f"[{avg['lo'] * 100:.1f}, {avg['hi'] * 100:.1f}]")


# ---- round 2: its config block, the budget in samples and tokens, the new report parts ------------------


def test_round2_config_is_its_own_block() -> None:
    one = study.load_study_config(STUDY / "config.yaml")
    two = study.load_study_config(STUDY / "config.yaml", round_=2)
    assert one["round"] == 1 and two["round"] == 2 and "round2" not in one and "round2" not in two
    # round 2 replaces round 1's grid keys and shares the rest
    assert two["run_root"] != one["run_root"] and two["out"] == "round2"
    assert set(two["arms"]) == {"spo_recipe", "spo", "grpo", "rloo", "drgrpo", "no_baseline"}
    assert len(two["seeds"]) >= 5 and two["env_models"] == {}
    assert two["simulated_time"] == one["simulated_time"] and two["paper"] == one["paper"]
    assert "smollm2" not in two and two["quick"] is False
    with pytest.raises(SystemExit, match="round"):
        study.load_study_config(STUDY / "config.yaml", round_=3)
    with pytest.raises(SystemExit, match="no quick"):  # never a full grid under the smoke flag
        study.load_study_config(STUDY / "config.yaml", quick=True, round_=2)


def test_round2_budget_counts_the_offline_pass() -> None:
    cfg = study.load_study_config(STUDY / "config.yaml", round_=2)
    jobs = study.build_jobs(cfg)
    assert len(jobs) == 6 * len(cfg["seeds"])
    budget = int(cfg["budget_samples"])
    assert study.check_equal_budget(jobs, count_offline=True) == {f"{jobs[0].model_tag}/calculator": budget}
    by_arm = {j.arm: study.resolve(j) for j in jobs}
    recipe, spo, grpo = by_arm["spo_recipe"], by_arm["spo"], by_arm["grpo"]
    # the preset is applied under the study's overrides
    assert recipe.algo.divergence == "replay" and recipe.algo.adv_std_ddof == 1
    assert spo.algo.divergence == "odometer" and recipe.env.train_prompts == 32
    b = grpo.rollout.batch_size
    off = min(recipe.algo.offline_prompts or 10**9, recipe.env.train_prompts) * recipe.algo.offline_n0
    assert study.offline_samples(recipe) == off and study.offline_samples(grpo) == 0
    assert recipe.steps * b + off == grpo.steps * b == budget and recipe.steps < grpo.steps
    # the prompt set is larger than a batch: prioritised sampling (without replacement) can act
    assert recipe.env.train_prompts > recipe.rollout.batch_size
    # counting training samples only, the SPO arms would be short by their offline pass
    with pytest.raises(SystemExit, match="unequal"):
        study.check_equal_budget(jobs, count_offline=False)


def test_offline_samples_and_steps_for_budget() -> None:
    from agentrl.config import load_config
    from agentrl.train_config import TrainConfig

    def cfg(*ov: str) -> object:
        return load_config(TrainConfig, None, list(ov))

    assert (
        study.offline_samples(cfg("algo.offline_prompts=64", "env.train_prompts=10", "algo.offline_n0=4"))
        == 40
    )
    assert (
        study.offline_samples(cfg("algo.offline_prompts=5", "env.train_prompts=10", "algo.offline_n0=4"))
        == 20
    )
    assert study.offline_samples(cfg("algo.offline_init=false")) == 0
    assert study.offline_samples(cfg("algo.name=rloo")) == 0
    ov = {"algo.name": "spo", "env.train_prompts": 8, "algo.offline_n0": 2, "rollout.batch_size": 4}
    assert study.steps_for_budget(40, None, ov) == (40 - 16) // 4
    assert study.steps_for_budget(40, None, {**ov, "algo.name": "grpo"}) == 10
    with pytest.raises(SystemExit, match="multiple"):
        study.steps_for_budget(42, None, ov)
    with pytest.raises(SystemExit, match="multiple"):
        study.steps_for_budget(16, None, ov)  # nothing left to train on


def test_generated_tokens_count_every_sample() -> None:
    rows = [
        {"step": 1, "reward_mean": 0.0, "tokens/model_mean": 10.0, "batch/size": 8},
        {"step": 2, "reward_mean": 0.5, "tokens/model_mean": 20.0},  # no batch/size: the config's
        {"step": 3, "reward_mean": 0.5},  # no token count logged: skipped
    ]
    t = report.generated_tokens(rows, 8)
    assert t == {"train": 240.0, "offline_est": 0.0, "total": 240.0}
    t = report.generated_tokens(rows, 8, offline_samples=16)
    assert t["offline_est"] == 160.0 and t["total"] == 400.0  # the first step's mean × offline samples
    assert report.generated_tokens([], 8, 16)["total"] == 0.0


def test_pilot_degenerate_share() -> None:
    pilot = {
        "k": 8,
        "temperature": 1.0,
        "prompts": [{"n": 8, "c": c} for c in (0, 8, 3, 0, 5, 0)],
    }
    p = report.pilot_degenerate_share(pilot, 4)
    assert p["prompts"] == 4 and p["mean"] == pytest.approx(0.75)
    assert p["all_fail"] == 2 and p["all_pass"] == 1 and p["lo"] < 0.75 < p["hi"]
    assert report.pilot_degenerate_share(pilot, None)["mean"] == pytest.approx(4 / 6)


def test_sampler_weight_and_sampling_points(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    w = report.sampler_weight(np.array([0.0, 0.5, 1.0]), 0.05)
    assert w.sum() == pytest.approx(1.0) and w[1] > w[0] == pytest.approx(w[2])
    d = tmp_path / "m" / "calculator-spo-s0"
    (d / "checkpoints" / "step_000002").mkdir(parents=True)
    off = tmp_path / "offline.json"
    off.write_text(json.dumps({"rewards": {"a": [0.0, 0.0], "b": [1.0, 0.0]}}))
    state = {
        "step": 2,
        "algorithm": {"tracker": {"prompt_ids": ["a", "b"], "alpha": [1.0, 3.0], "beta": [3.0, 1.0]}},
    }
    torch.save(state, d / "checkpoints" / "step_000002" / "state.pt")
    draws = ["b", "b", "a", "b", "a", "a", "a", "b"]  # steps 1-2: 3 b, 1 a; steps 3-4: 3 a, 1 b
    (d / "rollouts.jsonl").write_text(
        "".join(json.dumps({"step": 1 + i // 2, "prompt_id": p}) + "\n" for i, p in enumerate(draws))
    )
    run = report.Run(
        path=d,
        arm="spo",
        env="e",
        seed=0,
        model_tag="m",
        config={"algo": {"name": "spo", "sampler_eps": 0.05, "init_smoothing": 0.5}},
        rows=[],
        summary={"offline_init": {"path": str(off), "prompts": 2}},
    )
    pts = {(p["step"], p["prompt"]): p for p in report.spo_sampling_points(run)}
    assert pts[(0, "a")]["value"] == pytest.approx(0.5 / 3) and pts[(0, "b")]["value"] == pytest.approx(0.5)
    assert pts[(0, "b")]["share"] == 0.75 and pts[(2, "a")]["share"] == 0.75
    assert pts[(2, "b")]["value"] == pytest.approx(0.75)
    assert pts[(0, "a")]["weight"] + pts[(0, "b")]["weight"] == pytest.approx(1.0)
    # batch 0 (not in the config): the sampler's expectation is its probability per draw
    assert pts[(0, "b")]["expected_share"] == pytest.approx(pts[(0, "b")]["weight"])
    inc = report.inclusion_probabilities(np.array([0.1, 0.1, 0.8]), 1, draws=4000)
    assert inc == pytest.approx([0.1, 0.1, 0.8], abs=0.03)
    inc = report.inclusion_probabilities(np.array([0.05, 0.05, 0.9]), 2, draws=4000)
    assert inc.sum() == pytest.approx(2.0) and inc[2] > 0.98  # without replacement: at most once
    assert report.inclusion_probabilities(np.array([0.2, 0.8]), 2).tolist() == [1.0, 1.0]


def test_round2_report_has_its_own_readme_section(tmp_path: Path) -> None:
    cfg = _fake_study(tmp_path)
    cfg.update(
        round=2, reference_arms=["spo"], arm_labels={"spo": "SPO (test)"}, envs=["agentrl/Calculator-v0"]
    )
    cfg["arms"] = {
        "spo": {"algo.name": "spo"},
        "grpo": {"algo.name": "grpo"},
        "no_baseline": {"algo.name": "no_baseline"},
    }
    cfg["pilot"] = None
    out = tmp_path / "out"
    out.mkdir()
    b2, e2 = report.README_MARKERS[2]
    readme = tmp_path / "README.md"
    readme.write_text(f"{report.README_BEGIN}\nround one\n{report.README_END}\n{b2}\nold\n{e2}\n")
    trl_dir = tmp_path / "trl"
    trl_dir.mkdir()
    for seed in (0, 1):
        res = {
            "status": "ok",
            "mode": "multi-turn tools (environment_factory)",
            "seed": seed,
            "trl_version": "x",
            "train_samples": 64,
            "group_size": 4,
            "eval_tasks": 4,
            "eval_k": 4,
            "before": None,
            "after": {"avg": 0.2 + 0.01 * seed, "pass": 0.3, "maj": 0.2},
            "train_seconds": 3.0,
            "total_seconds": 5.0,
            "history": [{"step": 1, "frac_reward_zero_std": 0.75}, {"step": 2, "frac_reward_zero_std": 0.5}],
        }
        (trl_dir / f"seed{seed}.json").write_text(json.dumps(res))
    report.write_report(cfg, study.build_jobs(cfg), out, trl_dir=trl_dir, readme=readme)
    text = readme.read_text()
    assert "TRL GRPO (multi-turn, tools; outside reference) | 2 |" in text
    assert "SPO (test) − TRL GRPO (multi-turn) | Calculator-v0 | +" in text
    assert "first step 0.75" in text and "multi-turn with tools" in text
    assert "round one" in text and "old" not in text  # round 1's section is left alone
    assert "SPO (test) − GRPO" in text and "(out/spo_sampling.png)" in text
    assert "### Budget per run" in text and "tokens ÷ GRPO's" in text
    assert "GRPO samples in degenerate groups" in text
    data = json.loads((out / "results.json").read_text())["results"]
    assert (
        data["group_arms"] == ["grpo"] and data["budget"]["agentrl/Calculator-v0|spo"]["offline_samples"] == 8
    )


def test_run_job_skips_a_run_another_process_holds(tmp_path: Path) -> None:
    import fcntl

    job = study.Job("spo", "agentrl/Calculator-v0", 0, "m", "m", str(tmp_path), "calculator-spo-s0")
    with open(tmp_path / ".calculator-spo-s0.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert study.run_job(job) == "busy"
    (tmp_path / "calculator-spo-s0" / "summary.json").write_text("{}")
    assert study.run_job(job) == "done"


def test_trl_multiturn_template_renders_tool_calls() -> None:
    trl_mt = _load("trl_multiturn")
    from transformers import AutoTokenizer

    from agentrl.models import model_path

    tok = AutoTokenizer.from_pretrained(model_path("tiny"))
    tok.chat_template = trl_mt.tool_calling_template(tok.chat_template)

    msgs = [
        {"role": "user", "content": "U"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"type": "function", "function": {"name": "calculator", "arguments": {"expression": "3 * 4"}}}
            ],
        },
        {"role": "tool", "name": "calculator", "content": "12"},
    ]
    text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert '<tool_call>{"name": "calculator", "arguments": {"expression": "3 * 4"}}</tool_call>' in text
    assert "<tool_response>\n12\n</tool_response>" in text
    with pytest.raises(ValueError, match="template"):
        trl_mt.tool_calling_template("{{ messages }}")
    env_cls = trl_mt.make_environment_class(None)
    assert env_cls().calculator("6 * 7") == "42" and env_cls().calculator("1/0").startswith("error")


# ---- held-out curves --------------------------------------------------------------------------------


def test_curve_steps_and_sample_budgets() -> None:
    # round 2: group arms 32 steps × 16, SPO arms 16 steps × 16 after a 256-sample offline pass
    assert report.curve_steps(32, [0.25, 0.5, 0.75], 2) == [8, 16, 24]
    assert report.curve_steps(16, [0.25, 0.5, 0.75], 2) == [4, 8, 12]
    assert [report.checkpoint_samples(s, 16) for s in (8, 16, 24)] == [128, 256, 384]
    assert [report.checkpoint_samples(s, 16, 256) for s in (4, 8, 12)] == [320, 384, 448]
    assert report.curve_steps(16, [0.5], 2, every=4) == [4, 8, 12]
    assert report.curve_steps(8, [0.5], 2, every=2) == [2, 4, 6]
    with pytest.raises(SystemExit, match="checkpoint_every 2"):
        report.curve_steps(10, [0.5], 2)  # step 5 has no checkpoint
    with pytest.raises(SystemExit, match="between 0 and 1"):
        report.curve_steps(10, [1.0], 2)
    with pytest.raises(SystemExit, match=r"curves\.every"):
        report.curve_steps(10, [], 2, every=3)


def _fake_checkpoints(run_dir: Path, steps: Sequence[int]) -> None:
    for s in steps:
        ck = run_dir / "checkpoints" / f"step_{s:06d}"
        ck.mkdir(parents=True)
        (ck / "state.pt").write_bytes(b"state")
        (ck / "model.safetensors").write_bytes(bytes([s]))


def _fake_eval(x: float) -> dict[str, object]:
    return {"k": 4, "avg_at_k": x, "pass_at": {"1": x, "4": min(1.0, 2 * x)}, "maj_at": {"1": x, "4": x}}


def test_curves_phase_resumes_from_its_cache(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    _fake_run(root, "grpo", "agentrl/Calculator-v0", 0, 0.3, steps=8, batch=8)
    run_dir = root / "m" / "calculator-grpo-s0"
    _fake_checkpoints(run_dir, (2, 4, 6, 8))
    job = study.Job("grpo", "agentrl/Calculator-v0", 0, "m", "m", str(root / "m"), "calculator-grpo-s0")
    (root / "m" / "calculator-grpo-s1").mkdir()  # an unfinished run has no points
    unfinished = dataclasses.replace(job, seed=1, name="calculator-grpo-s1")
    cache = study.CurveCache(tmp_path / "out" / "curves.json")
    calls: list[int] = []

    def evaluate(j: object, step: int, ckpt: Path, stop_at: int = 0) -> dict[str, object]:
        calls.append(step)
        if stop_at and len(calls) == stop_at:
            raise KeyboardInterrupt  # the phase is killed mid-way
        return {
            "step": step,
            "samples": step * 8,
            "weights": study.weights_fingerprint(ckpt),
            "eval": _fake_eval(step / 100),
        }

    # the table's point (half the steps) comes first, then the plot's denser ones
    assert [s for _, s, _ in study.curve_tasks([job, unfinished], [0.5], every=2)] == [4, 2, 6]
    with pytest.raises(KeyboardInterrupt):
        study.run_curves(
            [job], [0.5], cache, 2, log=lambda _: None, evaluate=lambda *a: evaluate(*a, stop_at=3)
        )
    assert sorted(cache.load()["m/calculator-grpo-s0"]) == ["2", "4"]
    calls.clear()
    counts = study.run_curves([job], [0.5], cache, 2, log=lambda _: None, evaluate=evaluate)
    assert calls == [6] and counts == {"points": 3, "cached": 2, "evaluated": 1, "busy": 0}
    calls.clear()
    assert study.run_curves([job], [0.5], cache, 2, log=lambda _: None, evaluate=evaluate)["cached"] == 3
    assert calls == []  # a rerun (or --report-only) evaluates nothing
    (run_dir / "checkpoints" / "step_000004" / "model.safetensors").write_bytes(b"retrained")
    study.run_curves([job], [0.5], cache, 2, log=lambda _: None, evaluate=evaluate)
    assert calls == [4]  # other weights under the same step: evaluated again
    # another process holding a point: skipped as busy, the rest done
    other = study.CurveCache(tmp_path / "other" / "curves.json")
    with other.claim("m/calculator-grpo-s0", 2) as mine:
        assert mine
        counts = study.run_curves([job], [0.5], other, 2, log=lambda _: None, evaluate=evaluate)
    assert counts["busy"] == 1 and counts["evaluated"] == 2
    text = (tmp_path / "out" / "curves.json").read_text()
    assert json.loads(text)["runs"] == cache.load() and len(text.splitlines()) == 3 + 5 + 1
    shutil.rmtree(run_dir / "checkpoints" / "step_000006")
    with pytest.raises(SystemExit, match="step_000006 is missing"):
        study.curve_tasks([job], [0.75])


def _curve_study(tmp_path: Path) -> tuple[dict[str, object], list[object], dict[str, object]]:
    """SPO (8 offline samples, 8 steps × 8) and GRPO (9 steps × 8): both 72 samples; 3 seeds each."""
    root = tmp_path / "runs"
    cache: dict[str, object] = {}
    for seed in (0, 1, 2):
        _fake_run(root, "spo", "agentrl/Calculator-v0", seed, 0.5 + 0.01 * seed, steps=8, batch=8)
        _fake_run(root, "grpo", "agentrl/Calculator-v0", seed, 0.3 + 0.02 * seed, steps=9, batch=8)
        cache[f"m/calculator-spo-s{seed}"] = {str(s): {"eval": _fake_eval(0.1 + s / 20)} for s in (2, 4, 6)}
        if seed < 2:  # GRPO seed 2's points are not evaluated yet
            cache[f"m/calculator-grpo-s{seed}"] = {
                str(s): {"eval": _fake_eval(0.1 + s / 40 + seed / 100)} for s in (2, 4, 6, 8)
            }
    cfg = {
        "curves": {"step_fractions": [0.5], "every": 2},
        "arms": {"spo": {}, "grpo": {}},
        "envs": ["agentrl/Calculator-v0"],
    }
    return cfg, report.read_runs(root), cache


def test_curve_points_and_tables(tmp_path: Path) -> None:
    cfg, runs, cache = _curve_study(tmp_path)
    spo = next(r for r in runs if r.arm == "spo" and r.seed == 0)
    tm = {"s_per_batch": 10.0, "offline_s": 5.0}
    pts = report.curve_points(spo, cache["m/calculator-spo-s0"], tm)
    assert [p["samples"] for p in pts] == [0, 8, 24, 40, 56, 72]
    assert [p["time_s"] for p in pts] == [0.0, 5.0, 25.0, 45.0, 65.0, 85.0]
    assert [p["source"] for p in pts] == [
        "before",
        "before",
        "checkpoint",
        "checkpoint",
        "checkpoint",
        "after",
    ]
    assert pts[1]["avg"] == pts[0]["avg"] == 0.1 and pts[3]["avg"] == pytest.approx(0.3)
    assert pts[-1]["avg"] == 0.5 and pts[-1]["pass"] == 1.0

    res = {
        "refs": ["spo"],
        "simulated_time": {"arms": {"spo": tm, "grpo": {"s_per_batch": 20.0, "offline_s": 0.0}}},
    }
    cur = report.aggregate_curves(cfg, runs, res, cache)
    assert cur is not None
    assert cur["coverage"] == {
        "runs": 6,
        "runs_complete": 5,
        "table_points": 6,
        "table_points_cached": 5,
        "points": 3 * 3 + 3 * 4,
        "points_cached": 3 * 3 + 2 * 4,
    }
    assert cur["table_budgets"] == {"spo": [0, 8, 40, 72], "grpo": [0, 32, 72]}
    g = cur["points"]["grpo"]
    assert g[32]["n"] == 2 and g[72]["n"] == 3 and g[32]["time_s"] == 80.0
    assert g[32]["avg"]["mean"] == pytest.approx(np.mean([0.2, 0.21]))
    assert cur["points"]["spo"][40]["avg"]["mean"] == pytest.approx(0.3)
    assert cur["points"]["spo"][40]["avg"]["lo"] == pytest.approx(0.3)  # no spread across seeds
    d = cur["diffs_vs_grpo"]["spo-grpo|avg"]
    assert list(d) == [72]  # the budgets both arms have in their tables (0 is the same model)
    assert d[72]["est"] == pytest.approx(np.mean([0.5, 0.51, 0.52]) - np.mean([0.3, 0.32, 0.34]))
    assert d[72]["verdict"] == "win"
    text = "\n".join(report.render_curves(cur, res, [], "@4"))
    assert "| avg@4 | 0 samples | 8 samples | 32 samples | 40 samples | 72 samples |" in text
    spo_label = report._label("spo")  # labels are the last report's (a config may rename arms)
    assert f"| {spo_label} | 0.100 [0.100, 0.100] | 0.100 [0.100, 0.100] | – | 0.300 [0.300, 0.300] |" in text
    assert "5 of 6 table points (5 of 6 runs complete)" in text and "17 of 21 points" in text
    assert f"| {spo_label} − GRPO | 72 | +" in text and "TRL" not in text
    assert report.aggregate_curves(cfg, runs, res, None) is None


def test_round2_report_has_curves(tmp_path: Path) -> None:
    cfg = _fake_study(tmp_path)
    cfg.update(round=2, reference_arms=["spo"], envs=["agentrl/Calculator-v0"], pilot=None)
    cfg["arms"] = {a: {"algo.name": a} for a in ("spo", "grpo", "no_baseline")}
    cfg["curves"] = {"step_fractions": [0.5], "every": 0}
    cache = {
        f"m/calculator-{a}-s{s}": {"4": {"eval": _fake_eval(0.2)}} for a in ("spo", "grpo") for s in (0, 1)
    }
    out = tmp_path / "out"
    readme = tmp_path / "README.md"
    b2, e2 = report.README_MARKERS[2]
    readme.write_text(f"{b2}\nold\n{e2}\n")
    report.write_report(
        cfg, study.build_jobs(cfg), out, trl_dir=tmp_path / "trl", readme=readme, curves=cache
    )
    text = readme.read_text()
    assert "### Held-out curves" in text and "(out/curves.png)" in text and (out / "curves.png").is_file()
    assert "4 of 9 table points (4 of 9 runs complete)" in text
    data = json.loads((out / "results.json").read_text())["results"]["curves"]
    assert data["table_budgets"]["spo"] == [0, 8, 40, 72] and data["points"]["grpo"]["32"]["n"] == 2


def test_a_report_is_not_overwritten_from_fewer_runs_than_it_was_built_from(tmp_path: Path) -> None:
    jobs = [
        study.Job("grpo", "agentrl/Calculator-v0", s, "tiny", "tiny-x", str(tmp_path / "runs"), f"g-s{s}")
        for s in range(2)
    ]
    out = tmp_path / "report"
    out.mkdir()
    study.guard_report(out, jobs, str(tmp_path / "runs"))  # no report yet: nothing to protect
    (out / "results.json").write_text(json.dumps({"runs": [{"finished": True}, {"finished": True}]}))
    with pytest.raises(
        SystemExit, match=r"built from 2 finished runs, but only 0 are under .*not overwriting"
    ):
        study.guard_report(out, jobs, str(tmp_path / "runs"))
    for j in jobs:
        j.run_dir.mkdir(parents=True)
        (j.run_dir / "summary.json").write_text("{}")
    study.guard_report(out, jobs, str(tmp_path / "runs"))  # the runs are back: the report may be rebuilt
