"""End-to-end simulated training in virtual time: the real scheduler, samplers, tracker and advantages.

Only the policy is a model. It is a *tabular-logit Bernoulli policy* with one shared term, stated
exactly so the reader can judge it:

    logit p_t(x) = logit p0(x) + g_t + u_t(x)

- `p0(x)` and a per-prompt slowness come from `SimulatedRunner`'s traits (Beta prior on p0, a
  Gaussian copula `hard_is_slow` that makes hard prompts slow).
- Each learner step takes the batch's real advantages `Ã_i` (SPO: `agentrl.algo.spo` with the
  real `ValueTracker` baseline; GRPO: `agentrl.algo.grpo`) and applies the exact policy gradient of
  this policy's log-likelihood, `∂ log P(r_i) / ∂ logit = r_i − p_i` (with `p_i` the success
  probability the trajectory was generated with):

      u(x) += lr_prompt · Σ_{i: x_i = x} Ã_i (r_i − p_i)        g += lr_shared · mean_i Ã_i (r_i − p_i)

  A degenerate GRPO group (all rewards equal) has Ã = 0 and teaches nothing, as in real GRPO.
- The learner takes `learner_step_s` virtual seconds per update, then bumps the policy version.

SPO's prompts come from the real `PrioritizedSampler` over the real `ValueTracker`, whose
divergence D(x) is the exact Bernoulli KL between the policy at the prompt's last visit and now;
GRPO's from the real `UniformSampler`. The tracker is initialised offline from `n0` samples of the
initial policy per prompt (the paper's recipe); those samples are counted separately.
"""

from __future__ import annotations

import asyncio
import math
import time
import warnings
from typing import Any

import numpy as np
from latency_study import make_arm, make_profile, summarize

from agentrl.algo import PrioritizedSampler, UniformSampler, ValueTracker
from agentrl.algo.advantage import grpo, spo
from agentrl.rollout.clock import run_virtual
from agentrl.rollout.scheduler import RolloutScheduler
from agentrl.rollout.simulated import RewardModel, SimulatedRunner


class LearningPolicy:
    """The tabular-logit policy above; `p(x)` is what the runner draws rewards from."""

    def __init__(
        self, runner: SimulatedRunner, prompt_ids: list[str], lr_prompt: float, lr_shared: float
    ) -> None:
        self.ids = prompt_ids
        self.index = {p: i for i, p in enumerate(prompt_ids)}
        p0 = np.array([runner.traits(p).p0 for p in prompt_ids])
        self.base = np.log(p0 / (1 - p0))
        self.slowness = np.array([runner.traits(p).slowness for p in prompt_ids])
        self.u = np.zeros(len(prompt_ids))
        self.g = 0.0
        self.lr_prompt = lr_prompt
        self.lr_shared = lr_shared

    def p(self, prompt_id: str) -> float:
        i = self.index[prompt_id]
        return 1.0 / (1.0 + math.exp(-(self.base[i] + self.g + self.u[i])))

    def p_all(self) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-(self.base + self.g + self.u)))

    def update(self, prompts: list[str], rewards: np.ndarray, p_gen: np.ndarray, adv: np.ndarray) -> None:
        step = adv * (rewards - p_gen)
        idx = np.fromiter((self.index[p] for p in prompts), dtype=np.int64, count=len(prompts))
        np.add.at(self.u, idx, self.lr_prompt * step)
        self.g += self.lr_shared * float(step.mean())


class LearningRunner(SimulatedRunner):
    """`SimulatedRunner` whose success probability is the learning policy's current `p(x)`.

    Durations and the uniform behind each reward keep the runner's keyed draws; only the threshold
    moves as the policy learns. The policy only changes between batches, so the probability read
    when an episode starts is the one of its policy version.
    """

    policy: LearningPolicy

    def p_success(self, prompt_id: str, policy_version: int) -> float:
        return self.policy.p(prompt_id)


def _bern_kl(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-9, 1 - 1e-9)
    q = np.clip(q, 1e-9, 1 - 1e-9)
    kl = p * np.log(p / q) + (1 - p) * np.log((1 - p) / (1 - q))
    return np.maximum(kl, 0.0)  # >= 0 exactly; rounding can give -1e-17 for p == q, which the tracker rejects


async def train(job: dict[str, Any], arm_spec: dict[str, Any], seed: int) -> dict[str, Any]:
    prof = make_profile(job["profile"])
    rm = RewardModel(**job["rewards"])
    runner = LearningRunner(prof, rm, seed=seed)
    ids = [f"sim/train/{i:05d}" for i in range(job["n_prompts"])]
    pol = runner.policy = LearningPolicy(runner, ids, job["lr_prompt"], job["lr_shared"])
    arm = make_arm({k: v for k, v in arm_spec.items() if k != "algo"})
    algo = arm_spec["algo"]
    rng = np.random.default_rng([seed, 7])
    init_samples = 0
    if algo == "spo":
        tracker = ValueTracker()
        n0 = job["n0"]
        p = pol.p_all()
        init = rng.random((len(ids), n0)) < p[:, None]
        tracker.init_offline_batch(ids, [row.astype(float) for row in init])
        init_samples = n0 * len(ids)
        last_p = p.copy()
        sampler: Any = PrioritizedSampler(tracker, ids, seed=seed)
    else:
        sampler = UniformSampler(ids, seed=seed)

    target = job["target"]
    hard = pol.base <= np.quantile(pol.base, 0.25)  # hardest quartile by initial success
    slow = pol.slowness >= np.quantile(pol.slowness, 0.75)  # slowest quartile by latency multiplier
    curve: list[dict[str, float]] = []
    consumed = 0
    reached_target: dict[str, float] | None = None
    async with RolloutScheduler(sampler, runner, arm.config) as sched:
        loop = asyncio.get_running_loop()
        t_start = loop.time()
        async for batch in sched.batches(job["batches"]):
            trajs = batch.trajectories
            prompts = [t.prompt_id for t in trajs]
            r = np.array([t.reward for t in trajs])
            p_gen = np.array([t.info["p_success"] for t in trajs])
            if algo == "spo":
                rows = np.fromiter((pol.index[x] for x in prompts), dtype=np.int64, count=len(prompts))
                p_now = pol.p_all()[rows]
                d = _bern_kl(last_p[rows], p_now)
                base = tracker.update_batch(prompts, r, d)
                last_p[rows] = p_now
                res = spo(r, base, group_ids=prompts)
                near_zero = res.diagnostics.frac_near_zero_0_02
            else:
                res = grpo(r, [t.group_id for t in trajs])
                near_zero = res.diagnostics.frac_near_zero_0_02
            pol.update(prompts, r, p_gen, res.advantages)
            consumed += len(trajs)
            await asyncio.sleep(job["learner_step_s"])
            sched.set_policy_version(sched.policy_version + 1)
            m = batch.metrics
            mean_p = float(pol.p_all().mean())
            counts = m.counts
            point = {
                "batch": m.index,
                "t": loop.time() - t_start,
                "consumed": consumed,
                "launched": counts.launched,
                "mean_p": mean_p,
                "degenerate": m.degenerate_fraction if m.degenerate_fraction is not None else math.nan,
                "near_zero_adv": near_zero,
                "reward_mean": m.reward_mean,
            }
            curve.append(point)
            if reached_target is None and mean_p >= target:
                reached_target = {k: point[k] for k in ("batch", "t", "consumed", "launched")}
        stats = sched.prompt_stats()
        final_counts = sched.counts
        bias = batch.metrics.bias
    sampled = np.array([stats[p].sampled if p in stats else 0 for p in ids], dtype=float)
    reached = np.array([stats[p].reached if p in stats else 0 for p in ids], dtype=float)

    def reach_ratio(mask: np.ndarray) -> float:
        """Share of learner units from `mask` prompts over their share of sampled units (1 = unbiased)."""
        return float((reached[mask].sum() / reached.sum()) / (sampled[mask].sum() / sampled.sum()))

    t_total = curve[-1]["t"]
    return {
        "arm": arm_spec["name"],
        "seed": seed,
        "init_samples": init_samples,
        "trajectories_per_s": consumed / t_total,
        "launched_per_s": final_counts.launched / t_total,
        "consumed_per_launched": consumed / max(final_counts.launched, 1),
        "target": reached_target,
        "curve": curve,
        "reach_ratio_hard": reach_ratio(hard),
        "reach_ratio_slow": reach_ratio(slow),
        "reach_rate_hard": float(reached[hard].sum() / sampled[hard].sum()),
        "reach_rate_all": float(reached.sum() / sampled.sum()),
        "sampled_share_hard": float(sampled[hard].sum() / sampled.sum()),
        "latency_rank_corr": bias.rank_correlation,
        "final_mean_p": curve[-1]["mean_p"],
    }


def job_training(job: dict[str, Any]) -> dict[str, Any]:
    """One arm over several seeds of the end-to-end simulation."""
    t0 = time.perf_counter()
    runs = [
        run_virtual(train(job, job["arm"], s))
        for s in range(job.get("seed0", 0), job.get("seed0", 0) + job["seeds"])
    ]
    hit = [r["target"] for r in runs if r["target"] is not None]
    curve = mean_curve([r.pop("curve") for r in runs], job.get("curve_points", 100))
    out = {
        "arm": job["arm"]["name"],
        "algo": job["arm"]["algo"],
        "runs": runs,
        "reached_target": len(hit),
        "samples_to_target": summarize([h["consumed"] for h in hit]),
        "launched_to_target": summarize([h["launched"] for h in hit]),
        "hours_to_target": summarize([h["t"] / 3600 for h in hit]),
        "trajectories_per_s": summarize([r["trajectories_per_s"] for r in runs]),
        "reach_ratio_hard": summarize([r["reach_ratio_hard"] for r in runs]),
        "reach_ratio_slow": summarize([r["reach_ratio_slow"] for r in runs]),
        "final_mean_p": summarize([r["final_mean_p"] for r in runs]),
        "degenerate_by_decile": decile_means(curve["degenerate_full"]),
        "near_zero_adv_by_decile": decile_means(curve["near_zero_adv_full"]),
        "curve": {k: v for k, v in curve.items() if not k.endswith("_full")},
        "wall_s": time.perf_counter() - t0,
    }
    return out


def mean_curve(curves: list[list[dict[str, float]]], points: int) -> dict[str, list[float]]:
    """Seed-mean learning curve per learner step, thinned to about `points` steps for the JSON.

    The degenerate and near-zero-advantage fractions are kept at every step (`*_full`) for the
    decile table; they are noisy per batch, so only means over many batches and seeds are reported.
    """
    n = min(len(c) for c in curves)
    keys = ("t", "consumed", "launched", "mean_p", "degenerate", "near_zero_adv")
    full = {k: _nanmean(np.array([[c[i][k] for i in range(n)] for c in curves]), axis=0) for k in keys}
    step = max(1, -(-n // points))
    idx = list(range(0, n, step))
    if idx[-1] != n - 1:
        idx.append(n - 1)
    out: dict[str, list[float]] = {"batch": [i + 1 for i in idx]}
    out.update({k: [float(full[k][i]) for i in idx] for k in keys})
    out["degenerate_full"] = full["degenerate"].tolist()
    out["near_zero_adv_full"] = full["near_zero_adv"].tolist()
    return out


def decile_means(x: list[float]) -> list[float]:
    """Mean of a per-step series over each tenth of training (first tenth first)."""
    parts = np.array_split(np.asarray(x, dtype=float), 10)
    return [float(_nanmean(p)) for p in parts]


def _nanmean(x: np.ndarray, axis: int | None = None) -> Any:
    """`np.nanmean` without the warning for all-NaN slices (SPO batches have no groups: NaN)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(x, axis=axis)


__all__ = ["LearningPolicy", "LearningRunner", "decile_means", "job_training", "mean_curve", "train"]
