"""Named simulation settings for `agentrl simulate`: a latency profile plus the scheduler arms to compare.

## `paper-fig5`: the fit, stated exactly

The paper's Figure 5 prints one draw: SPO launches 48 independent trajectories and its 24th
finishes at 112 s; GRPO launches 6 groups of 8 whose group times (slowest member) are
130, 133, 486, 495, 519, 553 s, so its 3rd group is ready at 486 s (486 / 112 = 4.35). It says
typical trajectories take 60-135 s, stragglers 400-555 s, and about one in eight straggles.

We model a trajectory's duration as `Mixture.straggler(Uniform(79, 138), Uniform(449, 560), p=1/8)`:

- `p = 1/8`, as printed.
- Body `Uniform(79, 138)`: the two parameters solve two equations exactly (before rounding to whole
  seconds): E[24th of 48 mixture draws] = 112 s (SPO's printed time; model: 112.03 s) and
  E[max of 8 body draws] = 131.5 s (mean of the two straggler-free groups, 130 and 133; model:
  131.44 s). A body of 60-135 s, as loosely quoted, would put SPO at 102 s.
- Tail `Uniform(449, 560)`: least squares on the expected sorted maxima of four groups that contain
  at least one straggler (number of stragglers ~ Binomial(8, 1/8) given >= 1) against the printed
  486, 495, 519, 553 s; model 479, 504, 525, 544 s.

Expected order statistics were computed by numerical integration (`E[X_(k:n)] = ∫ P(Bin(n, F(x)) < k) dx`).
`paper-fig5-literal` uses the loosely quoted ranges instead, `Uniform(60, 135)` and `Uniform(400, 555)`.
Both assume, like the paper, unlimited parallel slots and 2x over-provisioning for both methods.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from agentrl.envs.latency import LatencyModel, LogNormal, Mixture, Pareto, Uniform
from agentrl.rollout.scheduler import SchedulerConfig
from agentrl.rollout.simulated import EpisodeProfile, RewardModel

PAPER_FIG5_SPEEDUP = 4.35
PAPER_FIG5_TIMES = {"spo": 112.0, "grpo": 486.0}  # seconds to assemble the batch, as printed


@dataclass(frozen=True)
class Arm:
    """One scheduling strategy in a comparison."""

    name: str
    config: SchedulerConfig
    description: str = ""


@dataclass(frozen=True)
class Preset:
    """A study: a latency profile, the arms to run on it, and which ratio to report.

    The speedup is `time per batch of baseline / time per batch of candidate` per seed, where time
    per batch is the mean interval between batches after the first `warmup` ones (the assembly
    time when the learner takes no time, as in the paper). Every other arm's ratio to the candidate
    is reported too. With `common_random_numbers` (the default) every arm of a seed draws the same
    episode timings in launch order, so the ratios are paired. The learner takes `learner_step_s`
    per update, or one draw of `learner_step` (seeded by the seed, the same for every arm).
    """

    name: str
    description: str
    profile: EpisodeProfile
    arms: tuple[Arm, ...]
    baseline: str = "grpo"
    candidate: str = "spo"
    rewards: RewardModel = field(default_factory=RewardModel)
    n_prompts: int = 1000
    batches: int = 1  # per seed and arm
    learner_step_s: float = 0.0  # simulated learner time per update (virtual seconds)
    learner_step: LatencyModel | None = None  # a distribution instead; overrides learner_step_s
    warmup: int = 0  # batches left out of time per batch (e.g. the async start-up burst)
    common_random_numbers: bool = True
    reference_speedup: float | None = None
    reference_note: str = ""
    reference_time_per_batch: dict[str, float] = field(default_factory=dict)  # per arm, seconds

    def arm(self, name: str) -> Arm:
        for a in self.arms:
            if a.name == name:
                return a
        raise KeyError(f"preset {self.name!r} has no arm {name!r}; arms: {[a.name for a in self.arms]}")

    def with_overrides(self, **config_changes: object) -> Preset:
        """The same preset with the given SchedulerConfig fields changed in every arm."""
        if not config_changes:
            return self
        arms = tuple(replace(a, config=replace(a.config, **config_changes)) for a in self.arms)  # type: ignore[arg-type]
        return replace(self, arms=arms)


ARM_KINDS = ("spo", "grpo", "spo-sync", "grpo-sync", "spo-async", "grpo-async")


def make_arms(
    names: tuple[str, ...] | list[str] = ("spo", "grpo"),
    *,
    batch_size: int = 64,
    group_size: int = 8,
    max_concurrency: int | None = None,
    overprovision: float = 1.0,
    regime: str = "sync",
    max_staleness: int | None = 1,
) -> tuple[Arm, ...]:
    """Arms by name: `spo` streams trajectories, `grpo` waits for groups of `group_size`; a
    `-sync` or `-async` suffix overrides `regime`. Over-provisioning applies to sync arms, the
    staleness bound to async ones."""
    arms = []
    for name in names:
        algo, _, reg = name.partition("-")
        reg = reg or regime
        if algo not in ("spo", "grpo") or reg not in ("sync", "async"):
            raise ValueError(f"arms: unknown arm {name!r}; choose from {', '.join(ARM_KINDS)}")
        kw: dict[str, object] = {
            "batch_size": batch_size,
            "max_concurrency": max_concurrency,
            "watchdog_s": None,
        }
        if algo == "grpo":
            kw.update(mode="group", group_size=group_size)
        if reg == "sync":
            kw["overprovision"] = overprovision
        else:
            kw.update(regime="async", max_staleness=max_staleness)
        cfg = SchedulerConfig(**kw)  # type: ignore[arg-type]
        unit = f"groups of {group_size}" if algo == "grpo" else "stream"
        slots = "unlimited slots" if max_concurrency is None else f"{max_concurrency} slots"
        extra = f"{overprovision:g}x launched" if reg == "sync" else f"staleness <= {max_staleness}"
        arms.append(Arm(name, cfg, f"{unit}, {reg}, B={batch_size}, {slots}, {extra}"))
    if len({a.name for a in arms}) != len(arms):
        raise ValueError(f"arms: each arm may appear once, got {list(names)}")
    return tuple(arms)


PAPER_FIG5_DURATION = Mixture.straggler(Uniform(79.0, 138.0), Uniform(449.0, 560.0), 1 / 8)
PAPER_FIG5_LITERAL_DURATION = Mixture.straggler(Uniform(60.0, 135.0), Uniform(400.0, 555.0), 1 / 8)


def _paper_arms() -> tuple[Arm, ...]:
    return (
        Arm(
            "spo",
            SchedulerConfig(mode="stream", batch_size=24, overprovision=2.0, watchdog_s=None),
            "launch 48 independent trajectories, keep the first 24",
        ),
        Arm(
            "grpo",
            SchedulerConfig(mode="group", batch_size=24, group_size=8, overprovision=2.0, watchdog_s=None),
            "launch 6 groups of 8, keep the first 3 complete groups",
        ),
    )


def _baseline_arms() -> tuple[Arm, ...]:
    """The paper's two arms plus the fair baselines it leaves out."""
    grpo = {"mode": "group", "batch_size": 24, "group_size": 8, "overprovision": 2.0, "watchdog_s": None}
    return (
        *_paper_arms(),
        Arm(
            "grpo-drop",
            SchedulerConfig(**grpo, group_deadline=200.0, straggler_policy="drop"),  # type: ignore[arg-type]
            "GRPO, groups unfinished at 200 s are dropped and replaced",
        ),
        Arm(
            "grpo-partial",
            SchedulerConfig(**grpo, group_deadline=200.0, straggler_policy="partial", min_group_size=4),  # type: ignore[arg-type]
            "GRPO, at 200 s keep the finished members (>= 4) of each group",
        ),
        Arm(
            "spo-async",
            SchedulerConfig(mode="stream", batch_size=24, regime="async", max_staleness=1, watchdog_s=None),
            "SPO, asynchronous, staleness <= 1 by admission control",
        ),
    )


def _slot_arms(batch: int, group: int, slots: int) -> tuple[Arm, ...]:
    common = {"batch_size": batch, "max_concurrency": slots, "watchdog_s": None}
    return (
        Arm(
            "spo",
            SchedulerConfig(mode="stream", regime="async", max_staleness=1, **common),
            "stream, async, staleness <= 1",
        ),
        Arm(
            "grpo",
            SchedulerConfig(mode="group", group_size=group, regime="async", max_staleness=1, **common),
            "groups, async, staleness <= 1",
        ),
        Arm(
            "spo-unbounded",
            SchedulerConfig(mode="stream", regime="async", **common),
            "stream, async, no staleness bound (slots never idle)",
        ),
        Arm(
            "grpo-unbounded",
            SchedulerConfig(mode="group", group_size=group, regime="async", **common),
            "groups, async, no staleness bound (the barrier shows as staleness, not idle slots)",
        ),
        Arm("spo-sync", SchedulerConfig(mode="stream", **common), "stream, one round per batch"),
        Arm(
            "grpo-sync",
            SchedulerConfig(mode="group", group_size=group, **common),
            "groups, one round per batch",
        ),
    )


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            name="paper-fig5",
            description="Paper Fig. 5: B=24, G=8, 2x over-provisioning, unlimited slots, fitted straggler mixture",
            profile=EpisodeProfile(duration=PAPER_FIG5_DURATION, turns=(1, 1)),
            arms=_paper_arms(),
            reference_speedup=PAPER_FIG5_SPEEDUP,
            reference_note="486 s / 112 s, one illustrative draw",
            reference_time_per_batch=PAPER_FIG5_TIMES,
        ),
        Preset(
            name="paper-fig5-literal",
            description="Paper Fig. 5 with the quoted ranges: body U(60,135) s, stragglers U(400,555) s at 1/8",
            profile=EpisodeProfile(duration=PAPER_FIG5_LITERAL_DURATION, turns=(1, 1)),
            arms=_paper_arms(),
            reference_speedup=PAPER_FIG5_SPEEDUP,
            reference_note="486 s / 112 s, one illustrative draw",
            reference_time_per_batch=PAPER_FIG5_TIMES,
        ),
        Preset(
            name="paper-fig5-baselines",
            description="paper-fig5 plus GRPO with straggler dropping / partial groups and async SPO",
            profile=EpisodeProfile(duration=PAPER_FIG5_DURATION, turns=(1, 1)),
            arms=_baseline_arms(),
            batches=4,
            reference_speedup=PAPER_FIG5_SPEEDUP,
            reference_note="486 s / 112 s, one illustrative draw",
            reference_time_per_batch=PAPER_FIG5_TIMES,
        ),
        Preset(
            name="slots-heavy-tail",
            description=(
                "64 generation slots, lognormal(median 60 s, sigma 1) durations, B=64, G=8, 8 batches, "
                "30 s learner step; staleness <= 1 paced, unbounded, and sync"
            ),
            profile=EpisodeProfile(duration=LogNormal(60.0, 1.0), turns=(1, 1)),
            arms=_slot_arms(64, 8, 64),
            batches=8,
            learner_step_s=30.0,
        ),
        Preset(
            name="agentic-multiturn",
            description="10-40 tool calls per episode: lognormal generation (2 s) + tool calls with 5% slow (20-60 s) calls",
            profile=EpisodeProfile(
                turns=(10, 40),
                generation=LogNormal(2.0, 0.5),
                tool=Mixture.straggler(LogNormal(1.0, 0.7), Uniform(20.0, 60.0), 0.05),
                model_tokens=(32, 256),
                env_tokens=(16, 512),
            ),
            arms=_paper_arms(),
        ),
        Preset(
            name="pareto-tail",
            description="Pareto(scale 30 s, alpha 1.5, cap 3600 s) durations, paper arms (B=24, G=8, 2x)",
            profile=EpisodeProfile(duration=Pareto(30.0, 1.5, cap=3600.0), turns=(1, 1)),
            arms=_paper_arms(),
        ),
    )
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown preset {name!r}; available: {', '.join(PRESETS)}") from None


__all__ = [
    "ARM_KINDS",
    "PAPER_FIG5_DURATION",
    "PAPER_FIG5_SPEEDUP",
    "PAPER_FIG5_TIMES",
    "PRESETS",
    "Arm",
    "Preset",
    "get_preset",
    "make_arms",
]
