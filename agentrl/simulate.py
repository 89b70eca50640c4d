"""`agentrl simulate`: run the real rollout scheduler on simulated episodes in virtual time.

The simulator *is* the scheduler (`agentrl.rollout.scheduler`) driving `SimulatedRunner` on a
`VirtualTimeLoop`, so a thousand seeded repetitions of the paper's Figure 5 take seconds. Prints
the distribution of the baseline/candidate time-per-batch ratio next to the paper's figure.

Library use (latency studies): `await run_arm(...)` for one seeded run, `simulate(study, seeds)`
for a whole comparison; both return plain data that serialises to JSON. `build_study(settings)`
turns the `agentrl simulate` options (or a YAML/TOML study file's keys) into a `Preset`.

Common random numbers: by default every arm of a seed draws the same episode timings in launch
order (`SimulatedRunner(common_timing=True)`), and the same learner times, so the per-seed ratios
between arms are paired: they differ only through scheduling, not through luck of the draw.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agentrl.envs.latency import LatencyModel
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
    time_per_batch: float  # mean interval between batches after `warmup` (virtual seconds)
    assembly_s: list[float]
    window_s: list[float]
    trajectories_per_s: float
    tokens_per_s: float
    slot_utilisation: float
    goodput_utilisation: float
    barrier_idle_share: float
    wasted_share: float  # busy slot-seconds spent on episodes that never reached the learner
    degenerate_fraction: float | None
    queue_wait_mean: float
    staleness: dict[str, int]
    bias_rank_correlation: float | None
    counts: dict[str, int]
    metrics: list[BatchMetrics] = field(default_factory=list, repr=False)
    # as a trainer measures it: trajectories of batches 2+ and the seconds from the end of the first
    # learner step to the end of the last (what `time/step_s` sums over steps 2+)
    trainer_window: tuple[int, float] = (0, 0.0)


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
    learner_step: LatencyModel | None = None,
    common_timing: bool = False,
    warmup: int = 0,
    runner: Any = None,
) -> ArmRun:
    """Run `batches` batches of `arm` on a fresh scheduler; the simulated learner takes
    `learner_step_s` (or a draw of `learner_step`, from a generator keyed by the seed) per update
    and then reports the next policy version. Runs on the current loop (virtual or real).

    `common_timing`: episode timings keyed by launch index (common random numbers across arms).
    Figures are over the batches after the first `warmup`. `runner` replaces the `SimulatedRunner`
    (e.g. `agentrl.whatif.ReplayRunner`); its `on_update(version)`, if any, is called after each
    learner step."""
    import asyncio

    if not 0 <= warmup < batches:
        raise ValueError(f"warmup must be in [0, batches={batches}), got {warmup}")
    if runner is None:
        runner = SimulatedRunner(profile, rewards, seed=seed, common_timing=common_timing)
    on_update = getattr(runner, "on_update", None)
    learner_time = getattr(runner, "learner_time", None)  # a runner that replays its learner, too
    loop = asyncio.get_running_loop()
    ends: list[float] = []
    sampler = SeededPromptSampler(n_prompts, seed=seed)
    learner_rng = np.random.default_rng([seed, 0x1EA])
    all_ms: list[BatchMetrics] = []
    async with RolloutScheduler(sampler, runner, arm.config) as sched:
        async for batch in sched.batches(batches):
            all_ms.append(batch.metrics)
            if learner_time is not None:
                step = learner_time(len(all_ms) - 1)
            elif learner_step is not None:
                step = learner_step.sample(learner_rng)
            else:
                step = learner_step_s
            if step > 0:
                await asyncio.sleep(step)
            sched.set_policy_version(sched.policy_version + 1)
            if on_update is not None:
                on_update(sched.policy_version)
            ends.append(loop.time())
        counts = sched.counts
    sched.check_accounting()
    ms = all_ms[warmup:]
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

    busy = wmean("slot_utilisation")
    good = wmean("goodput_utilisation")
    return ArmRun(
        arm=arm.name,
        seed=seed,
        time_per_batch=total / len(ms),
        assembly_s=[m.assembly_s for m in all_ms],
        window_s=[m.window_s for m in all_ms],
        trajectories_per_s=n_traj / total if total > 0 else math.inf,
        tokens_per_s=tokens / total if total > 0 else math.inf,
        slot_utilisation=busy,
        goodput_utilisation=good,
        barrier_idle_share=wmean("barrier_idle_share"),
        wasted_share=max(0.0, 1.0 - good / busy) if busy > 0 else 0.0,
        degenerate_fraction=float(np.mean(degen)) if degen else None,
        queue_wait_mean=float(np.mean([m.queue_wait_mean for m in ms])),
        staleness=stale,
        bias_rank_correlation=ms[-1].bias.rank_correlation,
        counts=asdict(counts),
        metrics=all_ms if keep_metrics else [],
        trainer_window=(sum(m.n_trajectories for m in all_ms[1:]), ends[-1] - ends[0] if ends else 0.0),
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


def simulate(
    preset: Preset,
    seeds: int,
    *,
    seed0: int = 0,
    batches: int | None = None,
    warmup: int | None = None,
    runner_factory: Callable[[int], Any] | None = None,
) -> dict[str, Any]:
    """Run every arm of `preset` for seeds `seed0 .. seed0+seeds-1` in virtual time; return JSON-able results.

    Per arm: time per batch, trajectories/s, slot utilisation, wasted-work share, barrier idle
    (median, 5-95% and more). `ratios`: every arm's time per batch over the candidate's, per seed
    (paired when `preset.common_random_numbers`), summarised, plus the ratio of means.
    `runner_factory(seed)`, when given, makes each run's episode runner instead of a `SimulatedRunner`
    on `preset.profile` (the what-if replay of a real run)."""
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    nb = batches or preset.batches
    wu = preset.warmup if warmup is None else warmup
    if not 0 <= wu < nb:
        raise ValueError(f"warmup must be in [0, batches={nb}), got {wu}")

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
                        learner_step=preset.learner_step,
                        common_timing=preset.common_random_numbers,
                        warmup=wu,
                        runner=runner_factory(s) if runner_factory is not None else None,
                    )
                )
        return out

    wall = time.perf_counter()
    runs = run_virtual(main())
    wall = time.perf_counter() - wall
    arms: dict[str, Any] = {}
    for name, rs in runs.items():
        stale_n = sum(sum(r.staleness.values()) for r in rs)
        stale_sum = sum(int(k) * v for r in rs for k, v in r.staleness.items())
        arms[name] = {
            "description": preset.arm(name).description,
            "config": asdict(preset.arm(name).config),
            "time_per_batch": summarize([r.time_per_batch for r in rs]),
            "trajectories_per_s": summarize([r.trajectories_per_s for r in rs]),
            "tokens_per_s": summarize([r.tokens_per_s for r in rs]),
            "slot_utilisation": summarize([r.slot_utilisation for r in rs]),
            "goodput_utilisation": summarize([r.goodput_utilisation for r in rs]),
            "wasted_share": summarize([r.wasted_share for r in rs]),
            "barrier_idle_share": summarize([r.barrier_idle_share for r in rs]),
            "queue_wait_mean": summarize([r.queue_wait_mean for r in rs]),
            "staleness_mean": stale_sum / stale_n if stale_n else 0.0,
            "degenerate_fraction": summarize(
                [r.degenerate_fraction for r in rs if r.degenerate_fraction is not None]
            ),
            "bias_rank_correlation": summarize(
                [r.bias_rank_correlation for r in rs if r.bias_rank_correlation is not None]
            ),
            "per_seed_time_per_batch": [r.time_per_batch for r in rs],
            "trainer_trajectories_per_s": sum(r.trainer_window[0] for r in rs)
            / max(sum(r.trainer_window[1] for r in rs), 1e-12),
        }
    learner = repr(preset.learner_step) if preset.learner_step is not None else preset.learner_step_s
    result: dict[str, Any] = {
        "preset": preset.name,
        "description": preset.description,
        "profile": repr(preset.profile),
        "seeds": seeds,
        "seed0": seed0,
        "batches_per_seed": nb,
        "warmup": wu,
        "learner_step_s": learner,
        "common_random_numbers": preset.common_random_numbers,
        "arms": arms,
        "wall_s": wall,
    }
    cand = preset.candidate if preset.candidate in runs else preset.arms[0].name
    ratios: dict[str, Any] = {}
    for name in runs:
        if name == cand:
            continue
        b = np.array([r.time_per_batch for r in runs[name]])
        c = np.array([r.time_per_batch for r in runs[cand]])
        per_seed = np.where(c > 0, b / np.where(c > 0, c, 1.0), np.inf)
        ratios[f"{name}/{cand}"] = {
            "ratio": f"{name}/{cand} time per batch",
            "paired": preset.common_random_numbers,
            **summarize(per_seed),
            "ratio_of_means": float(b.mean() / c.mean()) if c.mean() > 0 else math.inf,
            "per_seed": per_seed.tolist(),
        }
    result["ratios"] = ratios
    key = f"{preset.baseline}/{cand}"
    if key in ratios:
        sp: dict[str, Any] = dict(ratios[key])
        if preset.reference_time_per_batch:
            sp["reference_time_per_batch"] = dict(preset.reference_time_per_batch)
        if preset.reference_speedup is not None:
            ref = preset.reference_speedup
            sp["reference"] = ref
            sp["reference_note"] = preset.reference_note
            sp["share_at_or_above_reference"] = float(np.mean(np.asarray(sp["per_seed"]) >= ref))
        result["speedup"] = sp
    return result


def format_report(res: dict[str, Any]) -> str:
    """The human-readable table of a `simulate` result."""
    lines = [f"study {res['preset']}: {res['description']}", f"  profile: {res['profile']}"]
    wu = res.get("warmup", 0)
    over = f" (figures over batches {wu + 1}-{res['batches_per_seed']})" if wu else ""
    crn = "common random numbers (paired)" if res.get("common_random_numbers") else "independent draws"
    lines.append(
        f"  {res['seeds']} seeds x {res['batches_per_seed']} batch(es) per arm{over}, learner "
        f"{res['learner_step_s']} s per step, virtual time, {crn}, {res['wall_s']:.1f} s wall"
    )
    hdr = (
        f"  {'arm':<15} {'time/batch s: median [5%, 95%]':<31} {'traj/s: median [5%, 95%]':<27}"
        f" {'slot util':>9} {'wasted':>6} {'barrier idle':>12} {'stale':>5} {'degenerate':>10}"
    )
    lines += ["", hdr]
    for name, a in res["arms"].items():
        t, r = a["time_per_batch"], a["trajectories_per_s"]
        deg = a["degenerate_fraction"].get("mean")
        lines.append(
            f"  {name:<15} {t['median']:9.1f} [{t['p5']:8.1f}, {t['p95']:8.1f}]   "
            f"{r['median']:7.3f} [{r['p5']:7.3f}, {r['p95']:7.3f}]  "
            f"{a['slot_utilisation']['mean']:9.3f} {a['wasted_share']['mean']:6.3f} "
            f"{a['barrier_idle_share']['mean']:12.3f} {a['staleness_mean']:5.2f} "
            f"{'-' if deg is None else f'{deg:10.3f}':>10}"
        )
    sp = res.get("speedup")
    if sp:
        for name, tt in sp.get("reference_time_per_batch", {}).items():
            if name in res["arms"]:
                lines.append(f"  paper {name:<9} {tt:8.1f}  (one illustrative draw)")
    if res.get("ratios"):
        kind = "paired per seed" if res.get("common_random_numbers") else "per seed, unpaired"
        cand = next(iter(res["ratios"])).split("/")[1]
        lines += ["", f"  time-per-batch ratios, arm / {cand} ({kind}; > 1: {cand} is faster):"]
        lines.append(
            f"    {'ratio':<24} {'median':>7} {'mean':>7} {'5%':>7} {'95%':>7} {'min':>7} {'max':>7} {'of means':>8}"
        )
        for key, q in res["ratios"].items():
            lines.append(
                f"    {key:<24} {q['median']:7.2f} {q['mean']:7.2f} {q['p5']:7.2f} {q['p95']:7.2f}"
                f" {q['min']:7.2f} {q['max']:7.2f} {q['ratio_of_means']:8.2f}"
            )
        if sp and "reference" in sp:
            lines.append(
                f"    {'paper':<10} {sp['reference']:7.2f}   ({sp['reference_note']}); "
                f"{100 * sp['share_at_or_above_reference']:.1f}% of seeds reach it"
            )
    return "\n".join(lines)


def plot_study(res: dict[str, Any], path: str | Path) -> Path:
    """One PNG per study: time per batch per arm (per-seed distribution) and the paired ratios."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    names = list(res["arms"])
    ratios = res.get("ratios", {})
    fig, axes = plt.subplots(1, 2 if ratios else 1, figsize=(11 if ratios else 6, 4), squeeze=False)
    ax = axes[0][0]
    data = [res["arms"][n]["per_seed_time_per_batch"] for n in names]
    ax.boxplot(data, whis=(5, 95), showfliers=False)
    ax.set_xticks(range(1, len(names) + 1), names)
    ax.set_ylabel("time per batch (virtual s), 5-95% whiskers")
    ax.set_title(f"{res['preset']}: {res['seeds']} seeds per arm")
    if ratios:
        ax = axes[0][1]
        for key, q in ratios.items():
            x = np.asarray(q["per_seed"], dtype=float)
            x = x[np.isfinite(x)]
            if x.size == 0:
                continue
            lo, hi = float(x.min()), float(x.max())
            rng = (lo, hi) if hi - lo > 1e-6 * max(1.0, abs(hi)) else (lo - 0.01, hi + 0.01)
            ax.hist(x, bins=40, range=rng, alpha=0.6, label=f"{key} (median {q['median']:.2f})")
        ax.axvline(1.0, color="k", lw=0.8)
        ax.set_xlabel(
            "time-per-batch ratio per seed" + (" (paired)" if res.get("common_random_numbers") else "")
        )
        ax.set_ylabel("seeds")
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- studies from settings

STUDY_DEFAULTS: dict[str, Any] = {
    "name": "study",
    "description": "",
    "tool": None,
    "tool_trace": None,
    "column": None,
    "generation": None,
    "generation_trace": None,
    "generation_column": None,
    "duration": None,
    "duration_trace": None,
    "duration_column": None,
    "turns": 1,
    "turns_trace": None,
    "turns_column": None,
    "batch_size": 64,
    "group_size": 8,
    "max_concurrency": None,
    "overprovision": 1.0,
    "regime": "sync",
    "max_staleness": 1,
    "learner_s": 0.0,
    "seeds": 100,
    "seed0": 0,
    "batches": None,  # default: 4 (sync), 12 (any async arm)
    "warmup": None,  # default: 1 (sync), 4 (any async arm)
    "arms": ["spo", "grpo"],
    "n_prompts": 1000,
    "common_random_numbers": True,
}


def parse_model_spec(text: Any, where: str) -> LatencyModel | None:
    """A latency model from a CLI or study-file value: a number (constant seconds), a mapping, a
    YAML/JSON flow mapping (`{kind: lognormal, median: 2, sigma: 0.5}`) or the compact
    `kind:key=value,key=value` (`lognormal:median=2,sigma=0.5`)."""
    from agentrl.envs.latency import from_spec

    spec: Any = text
    if isinstance(text, str):
        t = text.strip()
        if t.startswith("{"):
            import yaml

            try:
                spec = yaml.safe_load(t)
            except yaml.YAMLError:
                raise ValueError(f"{where}: cannot parse {text!r} as a mapping") from None
        elif ":" in t:
            kind, _, rest = t.partition(":")
            spec = {"kind": kind.strip()}
            for part in filter(None, (p.strip() for p in rest.split(","))):
                k, eq, v = part.partition("=")
                if not eq:
                    raise ValueError(f"{where}: expected key=value in {text!r}, got {part!r}")
                try:
                    spec[k.strip()] = float(v)
                except ValueError:
                    raise ValueError(f"{where}: {k.strip()}={v!r} is not a number") from None
        else:
            try:
                spec = float(t)
            except ValueError:
                raise ValueError(
                    f"{where}: {text!r} is not a latency model (a number, kind:key=value,..., or {{kind: ...}})"
                ) from None
    try:
        return from_spec(spec)
    except (TypeError, ValueError, KeyError) as e:
        raise ValueError(f"{where}: {e.args[0] if e.args else e}") from None


def _turns(value: Any, where: str) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        return (value, value)
    if isinstance(value, list | tuple) and len(value) == 2:
        lo, hi = value
    elif isinstance(value, str):
        lo, sep, hi = value.strip().partition("-")
        hi = hi if sep else lo
    else:
        raise ValueError(f"{where}: expected a number or a range a-b, got {value!r}")
    try:
        a, b = int(lo), int(hi)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: expected a number or a range a-b, got {value!r}") from None
    if not 1 <= a <= b:
        raise ValueError(f"{where}: need 1 <= a <= b, got {value!r}")
    return (a, b)


def load_study_file(path: str | Path) -> dict[str, Any]:
    """A YAML or TOML study file's settings (keys as the CLI's options, `-` or `_`); trace paths in it
    are relative to the file."""
    from agentrl.config import ConfigError, load_file

    path = Path(path)
    raw = load_file(path)
    out: dict[str, Any] = {}
    for k, v in raw.items():
        key = str(k).replace("-", "_")
        if key not in STUDY_DEFAULTS:
            import difflib

            close = difflib.get_close_matches(key, list(STUDY_DEFAULTS), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{path}: {k}: unknown study setting{hint}")
        if key.endswith("_trace") and v is not None:
            v = str((path.parent / str(v)).resolve()) if not Path(str(v)).is_absolute() else str(v)
        out[key] = v
    out.setdefault("name", path.stem)
    return out


def build_study(settings: dict[str, Any], *, where: str = "simulate") -> tuple[Preset, dict[str, Any]]:
    """A `Preset` from `agentrl simulate` settings (see `STUDY_DEFAULTS`); also returns the resolved
    settings (seeds, batches, warmup, ...). Errors are one line naming the setting."""
    from agentrl.envs.latency import Empirical, load_trace
    from agentrl.rollout.presets import make_arms
    from agentrl.rollout.simulated import EpisodeProfile

    unknown = set(settings) - set(STUDY_DEFAULTS)
    if unknown:
        raise ValueError(f"{where}: unknown study setting(s) {sorted(unknown)}")
    st = {**STUDY_DEFAULTS, **{k: v for k, v in settings.items() if v is not None}}

    def model(kind: str, column_key: str) -> LatencyModel | None:
        trace = st.get(f"{kind}_trace")
        if trace is not None:
            if st.get(kind) is not None:
                raise ValueError(f"{where}: give {kind} or {kind}_trace, not both")
            return Empirical.from_trace(trace, st.get(column_key))
        return parse_model_spec(st[kind], f"{where}: {kind}") if st.get(kind) is not None else None

    tool = model("tool", "column")
    gen = model("generation", "generation_column")
    dur = model("duration", "duration_column")
    if dur is None and tool is None and gen is None:
        raise ValueError(
            f"{where}: no latency given; set --tool/--tool-trace, --generation/--generation-trace or --duration"
        )
    if dur is not None and (tool is not None or gen is not None):
        raise ValueError(
            f"{where}: duration is per episode; do not combine it with tool or generation latency"
        )
    turn_counts = None
    if st.get("turns_trace") is not None:
        raw = load_trace(st["turns_trace"], st.get("turns_column"))
        bad = [x for x in raw if x != int(x) or x < 1]
        if bad:
            raise ValueError(
                f"{st['turns_trace']}: turns per episode must be whole numbers >= 1, got {bad[0]!r}"
            )
        turn_counts = tuple(int(x) for x in raw)
        turns = (min(turn_counts), max(turn_counts))
    else:
        turns = _turns(st["turns"], f"{where}: turns")
    profile = EpisodeProfile(duration=dur, generation=gen, tool=tool, turns=turns, turn_counts=turn_counts)

    arms_v = st["arms"]
    names = [a.strip() for a in arms_v.split(",")] if isinstance(arms_v, str) else [str(a) for a in arms_v]
    for key in ("batch_size", "group_size", "seeds"):
        if int(st[key]) < 1:
            raise ValueError(f"{where}: {key} must be >= 1, got {st[key]}")
    if st["regime"] not in ("sync", "async"):
        raise ValueError(f"{where}: regime must be sync or async, got {st['regime']!r}")
    B, G = int(st["batch_size"]), int(st["group_size"])
    if any(n.startswith("grpo") for n in names) and B % G:
        raise ValueError(f"{where}: batch_size ({B}) must be a multiple of group_size ({G}) for grpo arms")
    try:
        arms = make_arms(
            names,
            batch_size=B,
            group_size=G,
            max_concurrency=None if st["max_concurrency"] in (None, 0) else int(st["max_concurrency"]),
            overprovision=float(st["overprovision"]),
            regime=st["regime"],
            max_staleness=None if st["max_staleness"] is None else int(st["max_staleness"]),
        )
    except ValueError as e:
        raise ValueError(f"{where}: {e.args[0]}") from None
    any_async = any(a.config.regime == "async" for a in arms)
    batches = int(st["batches"]) if st["batches"] is not None else (12 if any_async else 4)
    warmup = int(st["warmup"]) if st["warmup"] is not None else min(4 if any_async else 1, batches - 1)
    learner = st["learner_s"]
    learner_model = None
    learner_s = 0.0
    if isinstance(learner, int | float) and not isinstance(learner, bool):
        learner_s = float(learner)
        if learner_s < 0:
            raise ValueError(f"{where}: learner_s must be >= 0, got {learner}")
    else:
        learner_model = parse_model_spec(learner, f"{where}: learner_s")
    spo = next((a.name for a in arms if a.name.startswith("spo")), arms[0].name)
    grpo = next((a.name for a in arms if a.name != spo), spo)
    preset = Preset(
        name=str(st["name"]),
        description=str(st["description"]) or " vs ".join(f"{a.name} ({a.description})" for a in arms),
        profile=profile,
        arms=arms,
        baseline=grpo,
        candidate=spo,
        n_prompts=int(st["n_prompts"]),
        batches=batches,
        learner_step_s=learner_s,
        learner_step=learner_model,
        warmup=warmup,
        common_random_numbers=bool(st["common_random_numbers"]),
    )
    st.update(batches=batches, warmup=warmup)
    return preset, st


simulate_study = simulate  # the name `agentrl` exports (`agentrl.simulate` is this module)

__all__ = [
    "STUDY_DEFAULTS",
    "ArmRun",
    "build_study",
    "format_report",
    "load_study_file",
    "parse_model_spec",
    "plot_study",
    "run_arm",
    "simulate",
    "simulate_study",
    "summarize",
]
