"""The latency study's computations: every figure comes from the real `RolloutScheduler` in virtual time.

A *job* is a plain dict (picklable, so two worker processes can share the list) naming a kind and
its parameters; `jobs.run_job` turns it into plain JSON-able numbers. Nothing here writes files.

The one deliberate exception to "the simulator is the scheduler" is `order_statistics`, which
recomputes the paper setting's batch times directly from the sampled durations (no scheduler) to
check the scheduler against them.
"""

from __future__ import annotations

import asyncio
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from agentrl.envs.latency import Empirical, LatencyModel, from_spec
from agentrl.rollout.clock import run_virtual
from agentrl.rollout.presets import Arm
from agentrl.rollout.scheduler import RolloutScheduler, SchedulerConfig
from agentrl.rollout.simulated import EpisodeProfile, RewardModel, SeededPromptSampler, SimulatedRunner
from agentrl.simulate import run_arm

# ----------------------------------------------------------------------------- building blocks


def latency(spec: Any) -> LatencyModel:
    """A latency model from a config spec (dict with `kind`, or a number)."""
    m = from_spec(spec)
    if m is None:
        raise ValueError(f"latency spec {spec!r} gives no model")
    return m


def make_profile(spec: dict[str, Any]) -> EpisodeProfile:
    """`EpisodeProfile` from a config dict whose latency fields are `from_spec` specs."""
    kw = dict(spec)
    for key in ("duration", "generation", "tool"):
        if kw.get(key) is not None:
            kw[key] = latency(kw[key])
    for key in ("turns", "model_tokens", "env_tokens"):
        if key in kw:
            kw[key] = tuple(kw[key])
    return EpisodeProfile(**kw)


def make_arm(spec: dict[str, Any]) -> Arm:
    kw = dict(spec)
    name = kw.pop("name")
    desc = kw.pop("description", "")
    kw.setdefault("watchdog_s", None)
    return Arm(name, SchedulerConfig(**kw), desc)


def paper_arms(
    batch: int = 24, group: int = 8, overprovision: float = 2.0, slots: int | None = None
) -> list[dict[str, Any]]:
    """The paper's comparison: both methods sync, k x over-provisioned, first B (or B/G groups) kept."""
    common = {"batch_size": batch, "overprovision": overprovision, "max_concurrency": slots}
    return [
        {"name": "spo", "mode": "stream", **common},
        {"name": "grpo", "mode": "group", "group_size": group, **common},
    ]


def async_arms(batch: int, group: int, slots: int | None, staleness: int = 1) -> list[dict[str, Any]]:
    """Both methods asynchronous on `slots` generation slots, staleness bounded by admission control."""
    common = {"batch_size": batch, "max_concurrency": slots, "regime": "async", "max_staleness": staleness}
    return [
        {"name": "spo", "mode": "stream", **common},
        {"name": "grpo", "mode": "group", "group_size": group, **common},
    ]


# ----------------------------------------------------------------------------- statistics


def summarize(x: Any) -> dict[str, float]:
    a = np.asarray(x, dtype=float)
    a = a[np.isfinite(a)]
    if a.size == 0:
        return {"n": 0}
    p5, p50, p95 = np.percentile(a, [5, 50, 95])
    return {
        "n": int(a.size),
        "mean": float(a.mean()),
        "median": float(p50),
        "p5": float(p5),
        "p95": float(p95),
        "min": float(a.min()),
        "max": float(a.max()),
    }


def ratio_stats(base: Any, cand: Any, *, n_boot: int = 2000, seed: int = 0) -> dict[str, float]:
    """Speedup of `cand` over `base` from per-seed times per batch.

    Per seed: `base/cand` (median, mean, 5-95% of the per-seed distribution). Across seeds: the
    ratio of mean times per batch, which is the long-run throughput ratio, with a 95% bootstrap
    interval over seeds (paired resampling).
    """
    b = np.asarray(base, dtype=float)
    c = np.asarray(cand, dtype=float)
    per_seed = b / c
    out = {f"per_seed_{k}": v for k, v in summarize(per_seed).items()}
    rng = np.random.default_rng(seed)
    idx = rng.integers(len(b), size=(n_boot, len(b)))
    boot = b[idx].mean(axis=1) / c[idx].mean(axis=1)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    out.update(
        {"mean_ratio": float(b.mean() / c.mean()), "mean_ratio_lo": float(lo), "mean_ratio_hi": float(hi)}
    )
    return out


# ----------------------------------------------------------------------------- scheduler runs


def compare(
    profile: dict[str, Any],
    arms: list[dict[str, Any]],
    *,
    seeds: int,
    seed0: int = 0,
    batches: int = 1,
    learner_step_s: float = 0.0,
    n_prompts: int = 1000,
    rewards: dict[str, Any] | None = None,
    warmup: int = 0,
    common_random_numbers: bool = False,
) -> dict[str, Any]:
    """Run every arm for every seed on the real scheduler in virtual time; per-seed figures per arm.

    With `common_random_numbers` every arm of a seed draws the same episode timings in launch order,
    so per-seed ratios between arms are paired; without, each arm draws its own.

    `time_per_batch` is the mean interval between batches after the first `warmup` batches. Sync
    rounds are independent, so warm-up changes nothing for them; an async arm starts by launching
    (S + 1) batches' worth of work at once, and its first batches are the fastest of that burst, so
    only its steady state is a fair throughput figure.
    """
    if not 0 <= warmup < batches:
        raise ValueError(f"warmup must be in [0, batches={batches}), got {warmup}")
    prof = make_profile(profile)
    arm_objs = [make_arm(a) for a in arms]
    rm = RewardModel(**(rewards or {}))

    async def main() -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {a.name: [] for a in arm_objs}
        for s in range(seed0, seed0 + seeds):
            for arm in arm_objs:
                out[arm.name].append(
                    await run_arm(
                        arm,
                        prof,
                        seed=s,
                        batches=batches,
                        rewards=rm,
                        n_prompts=n_prompts,
                        learner_step_s=learner_step_s,
                        common_timing=common_random_numbers,
                    )
                )
        return out

    runs = run_virtual(main())
    res: dict[str, Any] = {}
    for name, rs in runs.items():
        counts: dict[str, int] = {}
        for r in rs:
            for k, v in r.counts.items():
                counts[k] = counts.get(k, 0) + v
        res[name] = {
            "time_per_batch": [float(np.mean(r.window_s[warmup:])) for r in rs],
            "first_assembly_s": [r.assembly_s[0] for r in rs],
            "trajectories_per_s": summarize([r.trajectories_per_s for r in rs]),
            "slot_utilisation": summarize([r.slot_utilisation for r in rs]),
            "goodput_utilisation": summarize([r.goodput_utilisation for r in rs]),
            "barrier_idle_share": summarize([r.barrier_idle_share for r in rs]),
            "degenerate_fraction": summarize(
                [r.degenerate_fraction for r in rs if r.degenerate_fraction is not None]
            ),
            "bias_rank_correlation": summarize(
                [r.bias_rank_correlation for r in rs if r.bias_rank_correlation is not None]
            ),
            "counts": counts,
            "consumed_per_launched": counts.get("consumed", 0) / max(counts.get("launched", 0), 1),
        }
    return res


def job_compare(job: dict[str, Any]) -> dict[str, Any]:
    """A sweep point / comparison: arms on one profile, ratios of each candidate against its baseline."""
    t0 = time.perf_counter()
    arms = compare(
        job["profile"],
        job["arms"],
        seeds=job["seeds"],
        seed0=job.get("seed0", 0),
        batches=job.get("batches", 1),
        learner_step_s=job.get("learner_step_s", 0.0),
        n_prompts=job.get("n_prompts", 1000),
        rewards=job.get("rewards"),
        warmup=job.get("warmup", 0),
        common_random_numbers=job.get("common_random_numbers", False),
    )
    ratios = {}
    for base, cand in job.get("ratios", [("grpo", "spo")]):
        ratios[f"{base}/{cand}"] = ratio_stats(arms[base]["time_per_batch"], arms[cand]["time_per_batch"])
    out = {"arms": arms, "ratios": ratios, "wall_s": time.perf_counter() - t0}
    if not job.get("keep_per_seed", False):
        for a in arms.values():
            a["time_per_batch_summary"] = summarize(a.pop("time_per_batch"))
            a.pop("first_assembly_s")
    return out


# ----------------------------------------------------------------------------- order statistics check


def order_statistics(
    profile: dict[str, Any],
    *,
    seed: int,
    batch: int,
    group: int,
    overprovision: float,
    n_prompts: int = 1000,
    common_random_numbers: bool = False,
) -> dict[str, float]:
    """The paper setting's batch times straight from the sampled durations, no scheduler involved.

    Mirrors `run_arm`'s seeding (a fresh `SimulatedRunner` and `SeededPromptSampler` per arm, one
    sampler call per round) and the runner's keyed draws: SPO's batch is the B-th smallest of
    ceil(k·B) durations; GRPO's is the (B/G)-th smallest of ceil(k·B/G) group maxima. With common
    random numbers both arms use the launch-keyed draws 0, 1, ...: GRPO's group j is draws
    jG .. jG+G-1 (a unit's members are launched together).
    """
    prof = make_profile(profile)
    n = math.ceil(overprovision * batch - 1e-9)
    units = batch // group
    n_groups = math.ceil(overprovision * units - 1e-9)
    if common_random_numbers:
        runner = SimulatedRunner(prof, seed=seed, common_timing=True)
        d_all = [runner.draw("-", 0, 0, launch=i).duration for i in range(max(n, n_groups * group))]
        spo = float(np.sort(d_all[:n])[batch - 1])
        g = np.sort([max(d_all[j * group : (j + 1) * group]) for j in range(n_groups)])
        return {"spo": spo, "grpo": float(g[units - 1])}
    runner = SimulatedRunner(prof, seed=seed)
    prompts = SeededPromptSampler(n_prompts, seed=seed).sample(n)
    d = np.sort([runner.draw(p, 0, 0).duration for p in prompts])
    spo = float(d[batch - 1])
    runner = SimulatedRunner(prof, seed=seed)
    prompts = SeededPromptSampler(n_prompts, seed=seed).sample(n_groups)
    g = np.sort([max(runner.draw(p, 0, k).duration for k in range(group)) for p in prompts])
    grpo = float(g[units - 1])
    return {"spo": spo, "grpo": grpo}


def mixture_cdf(model: LatencyModel) -> Any:
    """Exact CDF of a `Uniform` or a `Mixture` of them (the paper-fig5 models), vectorised."""
    from agentrl.envs.latency import Mixture, Uniform

    if isinstance(model, Uniform):
        lo, hi = model.low, model.high
        return lambda x: np.clip((np.asarray(x, dtype=float) - lo) / (hi - lo), 0.0, 1.0)
    if isinstance(model, Mixture):
        parts = [(w, mixture_cdf(c)) for c, w in zip(model.components, model.weights, strict=True)]
        total = sum(w for w, _ in parts)
        return lambda x: sum(w * f(x) for w, f in parts) / total
    raise TypeError(f"mixture_cdf handles Uniform and Mixture of them, not {type(model).__name__}")


def expected_order_statistic(cdf: Any, k: int, n: int, upper: float) -> float:
    """E[X_(k:n)] for n iid draws on [0, upper]: ∫ P(fewer than k draws are <= x) dx = ∫ P(Bin(n, F(x)) < k) dx."""
    from scipy import integrate, stats

    val, _ = integrate.quad(lambda x: stats.binom.cdf(k - 1, n, cdf(x)), 0.0, upper, limit=400)
    return float(val)


def expected_paper_times(
    profile: dict[str, Any], *, batch: int = 24, group: int = 8, overprovision: float = 2.0
) -> dict[str, float]:
    """Expected SPO and GRPO batch times in the paper setting, by numerical integration (no sampling).

    SPO: the B-th smallest of ceil(k·B) durations. GRPO: the (B/G)-th smallest of ceil(k·B/G)
    group maxima, whose CDF is F(x)^G.
    """
    model = make_profile(profile).duration
    if model is None:
        raise ValueError("expected_paper_times needs a single-duration profile")
    F = mixture_cdf(model)
    upper = max(c.high for c in getattr(model, "components", (model,)))
    n = math.ceil(overprovision * batch - 1e-9)
    units = batch // group
    n_groups = math.ceil(overprovision * units - 1e-9)
    return {
        "spo": expected_order_statistic(F, batch, n, upper),
        "grpo": expected_order_statistic(lambda x: F(x) ** group, units, n_groups, upper),
    }


def job_reproduction(job: dict[str, Any]) -> dict[str, Any]:
    """paper-fig5 over many seeds: speedup distribution, plus the order-statistics cross-check."""
    t0 = time.perf_counter()
    crn = job.get("common_random_numbers", False)
    arms = compare(
        job["profile"], paper_arms(), seeds=job["seeds"], seed0=job.get("seed0", 0), common_random_numbers=crn
    )
    spo_t = np.asarray(arms["spo"]["first_assembly_s"])
    grpo_t = np.asarray(arms["grpo"]["first_assembly_s"])
    speed = grpo_t / spo_t
    out: dict[str, Any] = {
        "seeds": job["seeds"],
        "spo_time": summarize(spo_t),
        "grpo_time": summarize(grpo_t),
        "speedup": summarize(speed),
        "speedup_ratio_of_means": ratio_stats(grpo_t, spo_t),
        "share_at_or_above_paper": float(np.mean(speed >= job["paper"])),
        "per_seed_speedup": speed.tolist(),
        "grpo_slot_utilisation": arms["grpo"]["slot_utilisation"],
        "spo_slot_utilisation": arms["spo"]["slot_utilisation"],
        "grpo_barrier_idle_share": arms["grpo"]["barrier_idle_share"],
        "spo_barrier_idle_share": arms["spo"]["barrier_idle_share"],
        "common_random_numbers": crn,
    }
    if job.get("order_check", True):
        errs_spo, errs_grpo = [], []
        for i, s in enumerate(range(job.get("seed0", 0), job.get("seed0", 0) + job["seeds"])):
            os_ = order_statistics(
                job["profile"], seed=s, batch=24, group=8, overprovision=2.0, common_random_numbers=crn
            )
            errs_spo.append(abs(spo_t[i] - os_["spo"]) / os_["spo"])
            errs_grpo.append(abs(grpo_t[i] - os_["grpo"]) / os_["grpo"])
        exp = expected_paper_times(job["profile"])
        out["order_check"] = {
            "seeds": job["seeds"],
            "max_rel_error_spo": float(max(errs_spo)),
            "max_rel_error_grpo": float(max(errs_grpo)),
            # distribution level: simulated mean vs the integral, in standard errors of the mean
            "expected_spo": exp["spo"],
            "expected_grpo": exp["grpo"],
            "sim_mean_spo": float(spo_t.mean()),
            "sim_mean_grpo": float(grpo_t.mean()),
            "z_spo": float((spo_t.mean() - exp["spo"]) / (spo_t.std(ddof=1) / math.sqrt(spo_t.size))),
            "z_grpo": float((grpo_t.mean() - exp["grpo"]) / (grpo_t.std(ddof=1) / math.sqrt(grpo_t.size))),
        }
    # The GRPO batch waits for a straggler unless >= 3 of the 6 groups have none: P = P(Bin(6, q) >= 3),
    # q = (1 - p)^8. An exact probability that explains the bimodal speedup.
    p = job.get("straggler_p")
    if p is not None:
        q = (1 - p) ** 8
        out["p_grpo_escapes_stragglers"] = float(
            sum(math.comb(6, j) * q**j * (1 - q) ** (6 - j) for j in range(3, 7))
        )
        out["share_grpo_below_300s"] = float(np.mean(grpo_t < 300))
    out["wall_s"] = time.perf_counter() - t0
    return out


# ----------------------------------------------------------------------------- virtual vs real time


def job_realtime(job: dict[str, Any]) -> dict[str, Any]:
    """The same small configuration on the real asyncio loop and on the virtual loop."""
    prof = make_profile(job["profile"])
    arms = [make_arm(a) for a in paper_arms()]

    async def one(arm: Arm) -> dict[str, float]:
        runner = SimulatedRunner(prof, seed=job["seed"])
        sampler = SeededPromptSampler(1000, seed=job["seed"])
        ms = []
        async with RolloutScheduler(sampler, runner, arm.config) as sched:
            async for b in sched.batches(job["batches"]):
                ms.append(b.metrics)
                sched.set_policy_version(sched.policy_version + 1)
        total = sum(m.window_s for m in ms)
        return {
            "time_to_batch": float(np.mean([m.assembly_s for m in ms])),
            "trajectories_per_s": sum(m.n_trajectories for m in ms) / total,
        }

    async def all_arms() -> dict[str, dict[str, float]]:
        return {a.name: await one(a) for a in arms}

    t0 = time.perf_counter()
    real = asyncio.run(all_arms())
    real_wall = time.perf_counter() - t0
    virt = run_virtual(all_arms())
    rel = {
        f"{a}.{k}": abs(real[a][k] - virt[a][k]) / virt[a][k]
        for a in virt
        for k in ("time_to_batch", "trajectories_per_s")
    }
    return {
        "real": real,
        "virtual": virt,
        "rel_diff": rel,
        "max_rel_diff": max(rel.values()),
        "real_wall_s": real_wall,
    }


def describe_model(m: Any) -> str:
    """A latency model's exact repr, except that an empirical trace is summarised, not listed."""
    if isinstance(m, Empirical):
        x = np.asarray(m.samples)
        q = np.percentile(x, [50, 90, 99])
        return (
            f"Empirical({x.size} samples from {Path(m.source).name}: mean {x.mean():.3g} s, "
            f"p50 {q[0]:.3g} s, p90 {q[1]:.3g} s, p99 {q[2]:.3g} s, max {x.max():.3g} s)"
        )
    return repr(m)


def describe_profile(spec: dict[str, Any]) -> str:
    """The profile exactly as the simulator sees it (the built models, not the config text)."""
    p = make_profile(spec)
    parts = [
        f"{k}={describe_model(getattr(p, k))}"
        for k in ("duration", "generation", "tool")
        if getattr(p, k) is not None
    ]
    if p.duration is None or p.turns != (1, 1):
        parts.append(f"turns={p.turns} (uniform, inclusive)")
    if p.prompt_slowness_sigma:
        parts.append(f"prompt_slowness_sigma={p.prompt_slowness_sigma}")
    return ", ".join(parts)


__all__ = [
    "async_arms",
    "compare",
    "describe_model",
    "describe_profile",
    "expected_order_statistic",
    "expected_paper_times",
    "make_arm",
    "make_profile",
    "mixture_cdf",
    "order_statistics",
    "paper_arms",
    "ratio_stats",
    "summarize",
]
