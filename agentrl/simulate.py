"""`agentrl simulate`: run the real rollout scheduler on simulated episodes in virtual time.

The simulator *is* the scheduler (`agentrl.rollout.scheduler`) driving `SimulatedRunner` on a
`VirtualTimeLoop`, so a thousand seeded repetitions of the paper's Figure 5 take seconds. Prints
the distribution of the baseline/candidate time-per-batch ratio next to the paper's figure.

Library use (latency studies): `await run_arm(...)` for one seeded run, `simulate(preset, seeds)`
for a whole comparison; both return plain data that serialises to JSON.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from agentrl.rollout.clock import run_virtual
from agentrl.rollout.metrics import BatchMetrics
from agentrl.rollout.presets import Arm, Preset
from agentrl.rollout.scheduler import RolloutScheduler
from agentrl.rollout.simulated import EpisodeProfile, RewardModel, SeededPromptSampler, SimulatedRunner


@dataclass
class ArmRun:
    """One seeded run of one arm: per-batch figures and the final accounting."""

    arm: str
    seed: int
    time_per_batch: float  # mean interval between batches (virtual seconds)
    assembly_s: list[float]
    window_s: list[float]
    trajectories_per_s: float
    tokens_per_s: float
    slot_utilisation: float
    goodput_utilisation: float
    barrier_idle_share: float
    degenerate_fraction: float | None
    queue_wait_mean: float
    staleness: dict[str, int]
    bias_rank_correlation: float | None
    counts: dict[str, int]
    metrics: list[BatchMetrics] = field(default_factory=list, repr=False)


async def run_arm(
    arm: Arm,
    profile: EpisodeProfile,
    *,
    seed: int,
    batches: int = 1,
    rewards: RewardModel | None = None,
    n_prompts: int = 1000,
    learner_step_s: float = 0.0,
    keep_metrics: bool = False,
) -> ArmRun:
    """Run `batches` batches of `arm` on a fresh scheduler; the simulated learner takes
    `learner_step_s` per update and then reports the next policy version. Runs on the current loop
    (virtual or real)."""
    import asyncio

    runner = SimulatedRunner(profile, rewards, seed=seed)
    sampler = SeededPromptSampler(n_prompts, seed=seed)
    ms: list[BatchMetrics] = []
    async with RolloutScheduler(sampler, runner, arm.config) as sched:
        async for batch in sched.batches(batches):
            ms.append(batch.metrics)
            if learner_step_s > 0:
                await asyncio.sleep(learner_step_s)
            sched.set_policy_version(sched.policy_version + 1)
        counts = sched.counts
    sched.check_accounting()
    total = sum(m.window_s for m in ms)
    n_traj = sum(m.n_trajectories for m in ms)
    tokens = sum(m.tokens_per_s * m.window_s for m in ms if math.isfinite(m.tokens_per_s))
    stale: dict[str, int] = {}
    for m in ms:
        for k, v in m.staleness.items():
            stale[str(k)] = stale.get(str(k), 0) + v
    degen = [m.degenerate_fraction for m in ms if m.degenerate_fraction is not None]

    def wmean(attr: str) -> float:  # time-weighted over windows
        return sum(getattr(m, attr) * m.window_s for m in ms) / total if total > 0 else math.nan

    return ArmRun(
        arm=arm.name,
        seed=seed,
        time_per_batch=total / len(ms),
        assembly_s=[m.assembly_s for m in ms],
        window_s=[m.window_s for m in ms],
        trajectories_per_s=n_traj / total if total > 0 else math.inf,
        tokens_per_s=tokens / total if total > 0 else math.inf,
        slot_utilisation=wmean("slot_utilisation"),
        goodput_utilisation=wmean("goodput_utilisation"),
        barrier_idle_share=wmean("barrier_idle_share"),
        degenerate_fraction=float(np.mean(degen)) if degen else None,
        queue_wait_mean=float(np.mean([m.queue_wait_mean for m in ms])),
        staleness=stale,
        bias_rank_correlation=ms[-1].bias.rank_correlation,
        counts=asdict(counts),
        metrics=ms if keep_metrics else [],
    )


def summarize(values: list[float] | np.ndarray) -> dict[str, float]:
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return {"n": 0}
    p5, p25, p50, p75, p95 = np.percentile(x, [5, 25, 50, 75, 95])
    return {
        "n": int(x.size),
        "mean": float(x.mean()),
        "median": float(p50),
        "p5": float(p5),
        "p25": float(p25),
        "p75": float(p75),
        "p95": float(p95),
        "min": float(x.min()),
        "max": float(x.max()),
    }


def simulate(preset: Preset, seeds: int, *, seed0: int = 0, batches: int | None = None) -> dict[str, Any]:
    """Run every arm of `preset` for seeds `seed0 .. seed0+seeds-1` in virtual time; return JSON-able results."""
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    nb = batches or preset.batches

    async def main() -> dict[str, list[ArmRun]]:
        out: dict[str, list[ArmRun]] = {a.name: [] for a in preset.arms}
        for s in range(seed0, seed0 + seeds):
            for arm in preset.arms:
                out[arm.name].append(
                    await run_arm(
                        arm,
                        preset.profile,
                        seed=s,
                        batches=nb,
                        rewards=preset.rewards,
                        n_prompts=preset.n_prompts,
                        learner_step_s=preset.learner_step_s,
                    )
                )
        return out

    wall = time.perf_counter()
    runs = run_virtual(main())
    wall = time.perf_counter() - wall
    arms: dict[str, Any] = {}
    for name, rs in runs.items():
        arms[name] = {
            "description": preset.arm(name).description,
            "config": asdict(preset.arm(name).config),
            "time_per_batch": summarize([r.time_per_batch for r in rs]),
            "trajectories_per_s": summarize([r.trajectories_per_s for r in rs]),
            "tokens_per_s": summarize([r.tokens_per_s for r in rs]),
            "slot_utilisation": summarize([r.slot_utilisation for r in rs]),
            "goodput_utilisation": summarize([r.goodput_utilisation for r in rs]),
            "barrier_idle_share": summarize([r.barrier_idle_share for r in rs]),
            "degenerate_fraction": summarize(
                [r.degenerate_fraction for r in rs if r.degenerate_fraction is not None]
            ),
            "bias_rank_correlation": summarize(
                [r.bias_rank_correlation for r in rs if r.bias_rank_correlation is not None]
            ),
            "per_seed_time_per_batch": [r.time_per_batch for r in rs],
        }
    result: dict[str, Any] = {
        "preset": preset.name,
        "description": preset.description,
        "profile": repr(preset.profile),
        "seeds": seeds,
        "seed0": seed0,
        "batches_per_seed": nb,
        "learner_step_s": preset.learner_step_s,
        "arms": arms,
        "wall_s": wall,
    }
    if preset.baseline in runs and preset.candidate in runs:
        ratio = [
            b.time_per_batch / c.time_per_batch if c.time_per_batch > 0 else math.inf
            for b, c in zip(runs[preset.baseline], runs[preset.candidate], strict=True)
        ]
        sp: dict[str, Any] = {
            "ratio": f"{preset.baseline}/{preset.candidate} time per batch",
            **summarize(ratio),
            "per_seed": ratio,
        }
        if preset.reference_time_per_batch:
            sp["reference_time_per_batch"] = dict(preset.reference_time_per_batch)
        if preset.reference_speedup is not None:
            ref = preset.reference_speedup
            sp["reference"] = ref
            sp["reference_note"] = preset.reference_note
            sp["share_at_or_above_reference"] = float(np.mean(np.asarray(ratio) >= ref))
        result["speedup"] = sp
    return result


def format_report(res: dict[str, Any]) -> str:
    lines = [f"preset {res['preset']}: {res['description']}", f"  profile: {res['profile']}"]
    lines.append(
        f"  {res['seeds']} seeds x {res['batches_per_seed']} batch(es) per arm, virtual time, {res['wall_s']:.1f} s wall"
    )
    hdr = f"  {'arm':<15} {'time/batch s: median [5%, 95%]':<34} {'traj/s':>8} {'slot util':>9} {'barrier idle':>12} {'degenerate':>10}"
    lines += ["", hdr]
    for name, a in res["arms"].items():
        t = a["time_per_batch"]
        deg = a["degenerate_fraction"].get("mean")
        lines.append(
            f"  {name:<15} {t['median']:8.1f} [{t['p5']:8.1f}, {t['p95']:8.1f}]        "
            f"{a['trajectories_per_s']['median']:8.3f} {a['slot_utilisation']['mean']:9.3f} "
            f"{a['barrier_idle_share']['mean']:12.3f} {'-' if deg is None else f'{deg:10.3f}':>10}"
        )
    sp = res.get("speedup")
    if sp:
        ref_t = sp.get("reference_time_per_batch", {})
        for name, t in ref_t.items():
            if name in res["arms"]:
                lines.append(f"  paper {name:<9} {t:8.1f}  (one illustrative draw)")
        lines += ["", f"  speedup ({sp['ratio']}) over {sp['n']} seeds:"]
        lines.append(f"    {'':<10} {'median':>7} {'mean':>7} {'5%':>7} {'95%':>7} {'min':>7} {'max':>7}")
        lines.append(
            f"    {'simulated':<10} {sp['median']:7.2f} {sp['mean']:7.2f} {sp['p5']:7.2f} {sp['p95']:7.2f}"
            f" {sp['min']:7.2f} {sp['max']:7.2f}"
        )
        if "reference" in sp:
            lines.append(
                f"    {'paper':<10} {sp['reference']:7.2f}   ({sp['reference_note']}); "
                f"{100 * sp['share_at_or_above_reference']:.1f}% of seeds reach it"
            )
    return "\n".join(lines)


__all__ = ["ArmRun", "format_report", "run_arm", "simulate", "summarize"]
