"""What-if from a real run: replay a finished run's measured timings in the simulator.

`read_run(run_dir)` reads what the trainer records in a run directory:

- `config.yaml`: the run's `TrainConfig` (algorithm, batch and group size, slots, regime, staleness);
- `rollouts.jsonl`: one row per consumed trajectory, with `started_at`, `finished_at` and per-turn
  `gen_s` and `tool_s`;
- `metrics.jsonl`: one row per step, with `time/step_s`, `time/learner_s`, `time/sync_s` and the
  measured `rollout/trajectories_per_s`, `rollout/slot_utilisation`, `rollout/queue_wait_mean`.

`what_if(timings)` replays whole episodes (each trajectory's measured wall time, so the
correlation between turns, generation and tools within an episode is kept) and the learner's
time per step (learner update plus weight sync), first with the run's own settings, to check
the prediction against the measured throughput, then with one change at a time: the other
algorithm, twice the slots, twice the inference servers and another staleness bound.

Twice the inference servers is modelled as halving each episode's generation seconds. That is
the best case, right when the servers were saturated (generation time per turn proportional to
the load per server); a server that was latency-bound gains nothing.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agentrl.envs.latency import Empirical
from agentrl.rollout.presets import Arm, Preset
from agentrl.rollout.scheduler import SchedulerConfig
from agentrl.rollout.simulated import EpisodeProfile


@dataclass(frozen=True)
class RunTimings:
    """A finished run's measured timings."""

    run_dir: Path
    algo: str  # spo | grpo | no_baseline
    batch_size: int
    group_size: int
    max_concurrency: int
    regime: str
    max_staleness: int
    overprovision: float
    episode_s: tuple[float, ...]  # per consumed trajectory: finished_at - started_at
    gen_s: tuple[float, ...]  # per consumed trajectory: sum of its turns' generation seconds
    tool_s: tuple[float, ...]
    turns: tuple[int, ...]
    learner_s: tuple[float, ...]  # per step: learner update + weight sync
    step_s: tuple[float, ...]  # per step, measured
    trajectories_per_s: tuple[float, ...]  # per step, measured by the scheduler
    slot_utilisation: tuple[float, ...]
    queue_wait_mean: tuple[float, ...]
    trajectories_per_step: tuple[int, ...]

    def scheduler_config(self, **changes: Any) -> SchedulerConfig:
        kw: dict[str, Any] = {
            "mode": "group" if self.algo == "grpo" else "stream",
            "batch_size": self.batch_size,
            "group_size": self.group_size,
            "max_concurrency": self.max_concurrency,
            "regime": self.regime,
            "overprovision": self.overprovision if self.regime == "sync" else 1.0,
            "max_staleness": self.max_staleness if self.regime == "async" else None,
            "watchdog_s": None,
        }
        kw.update(changes)
        return SchedulerConfig(**kw)


def _num(row: dict[str, Any], key: str, where: str) -> float:
    if key not in row:
        raise ValueError(f"{where}: field {key!r} missing")
    v = row[key]
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise ValueError(f"{where}: field {key!r} is not a number: {v!r}")
    return float(v)


def _read_jsonl(path: Path) -> list[tuple[int, dict[str, Any]]]:
    rows = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            raise ValueError(f"{path}:{lineno}: not a JSON record") from None
        if not isinstance(rec, dict):
            raise ValueError(f"{path}:{lineno}: not a JSON object")
        rows.append((lineno, rec))
    return rows


def read_run(run_dir: str | Path) -> RunTimings:
    """A run directory's timings; every problem is a one-line `ValueError` naming the file and row or field."""
    from agentrl.config import load_config
    from agentrl.runlog import read_metrics
    from agentrl.train_config import TrainConfig

    d = Path(run_dir)
    if not d.is_dir():
        raise ValueError(f"{d}: not a run directory")
    cfg_path = d / "config.yaml"
    if not cfg_path.is_file():
        raise ValueError(f"{cfg_path}: not found; --from-run needs the run's config")
    cfg = load_config(TrainConfig, cfg_path)
    ro = d / "rollouts.jsonl"
    if not ro.is_file():
        raise ValueError(f"{ro}: not found; the run recorded no per-trajectory timings")
    episode_s, gen_s, tool_s, turns = [], [], [], []
    per_step: dict[int, int] = {}
    for lineno, rec in _read_jsonl(ro):
        where = f"{ro}:{lineno}"
        t0, t1 = _num(rec, "started_at", where), _num(rec, "finished_at", where)
        if t1 < t0:
            raise ValueError(f"{where}: field 'finished_at' is before 'started_at'")
        ts = rec.get("turns")
        if not isinstance(ts, list) or not ts:
            raise ValueError(f"{where}: field 'turns' missing or empty")
        g = x = 0.0
        for i, t in enumerate(ts):
            if not isinstance(t, dict):
                raise ValueError(f"{where}: turns[{i}] is not an object")
            gi, xi = _num(t, "gen_s", f"{where}: turns[{i}]"), _num(t, "tool_s", f"{where}: turns[{i}]")
            if gi < 0 or xi < 0:
                raise ValueError(f"{where}: turns[{i}]: durations must be >= 0, got gen_s={gi}, tool_s={xi}")
            g, x = g + gi, x + xi
        episode_s.append(max(t1 - t0, g + x))
        gen_s.append(g)
        tool_s.append(x)
        turns.append(len(ts))
        step = int(_num(rec, "step", where))
        per_step[step] = per_step.get(step, 0) + 1
    if not episode_s:
        raise ValueError(f"{ro}: empty; the run recorded no per-trajectory timings")
    mp = d / "metrics.jsonl"
    if not mp.is_file():
        raise ValueError(f"{mp}: not found; --from-run needs the per-step timings")
    rows = [r for r in read_metrics(mp) if "time/step_s" in r]
    if not rows:
        raise ValueError(f"{mp}: no step timings (no row has 'time/step_s')")
    learner, step_s, tps, util, qw = [], [], [], [], []
    for i, r in enumerate(rows):
        where = f"{mp}: step row {i + 1}"
        step_s.append(_num(r, "time/step_s", where))
        learner.append(_num(r, "time/learner_s", where) + float(r.get("time/sync_s") or 0.0))
        for key, out in (
            ("rollout/trajectories_per_s", tps),
            ("rollout/slot_utilisation", util),
            ("rollout/queue_wait_mean", qw),
        ):
            if isinstance(r.get(key), int | float):
                out.append(float(r[key]))
    ro_cfg = cfg.rollout
    return RunTimings(
        run_dir=d,
        algo=cfg.algo.name,
        batch_size=ro_cfg.batch_size,
        group_size=cfg.algo.group_size,
        max_concurrency=ro_cfg.max_concurrency,
        regime=ro_cfg.regime,
        max_staleness=ro_cfg.max_staleness,
        overprovision=ro_cfg.overprovision,
        episode_s=tuple(episode_s),
        gen_s=tuple(gen_s),
        tool_s=tuple(tool_s),
        turns=tuple(turns),
        learner_s=tuple(learner),
        step_s=tuple(step_s),
        trajectories_per_s=tuple(tps),
        slot_utilisation=tuple(util),
        queue_wait_mean=tuple(qw),
        trajectories_per_step=tuple(per_step[k] for k in sorted(per_step)),
    )


def _profile(t: RunTimings, gen_scale: float = 1.0) -> EpisodeProfile:
    ep = np.asarray(t.episode_s) - (1.0 - gen_scale) * np.asarray(t.gen_s)
    return EpisodeProfile(duration=Empirical(tuple(np.maximum(ep, 0.0).tolist()), source=str(t.run_dir)))


def scenarios(t: RunTimings) -> list[tuple[str, SchedulerConfig, float]]:
    """(name, scheduler config, generation-time scale): the run as it was, then one change at a time."""
    other = "spo" if t.algo == "grpo" else "grpo"
    if other == "grpo" and t.batch_size % t.group_size:
        other_cfg = None
    else:
        other_cfg = t.scheduler_config(mode="group" if other == "grpo" else "stream")
    out: list[tuple[str, SchedulerConfig, float]] = [("as run", t.scheduler_config(), 1.0)]
    if other_cfg is not None:
        out.append((f"{other} instead of {t.algo}", other_cfg, 1.0))
    out.append(
        (
            f"2x slots ({2 * t.max_concurrency})",
            t.scheduler_config(max_concurrency=2 * t.max_concurrency),
            1.0,
        )
    )
    out.append(("2x inference servers (generation / 2)", t.scheduler_config(), 0.5))
    if t.regime == "async":
        s2 = 2 * t.max_staleness if t.max_staleness > 0 else 1
        out.append((f"staleness <= {s2} (was {t.max_staleness})", t.scheduler_config(max_staleness=s2), 1.0))
    else:
        out.append(
            (
                "async, staleness <= 1 (was sync)",
                t.scheduler_config(regime="async", max_staleness=1, overprovision=1.0),
                1.0,
            )
        )
    return out


def what_if(t: RunTimings, *, seeds: int = 30, batches: int | None = None, seed0: int = 0) -> dict[str, Any]:
    """Re-predict the run's own throughput, then the what-ifs; JSON-able."""
    from agentrl.simulate import simulate

    nb = batches or max(4, min(12, len(t.step_s)))
    warm = min(4 if t.regime == "async" else 1, nb - 1)
    learner = Empirical(t.learner_s, source="learner + sync per step")
    steady = slice(1, None) if len(t.step_s) > 1 else slice(None)
    step_s = np.asarray(t.step_s)[steady]
    n_traj = (
        np.asarray(t.trajectories_per_step[: len(t.step_s)], dtype=float)[steady]
        if t.trajectories_per_step
        else None
    )
    measured: dict[str, Any] = {
        "steps": len(t.step_s),
        "time_per_step_s": float(step_s.mean()),
        "trajectories_per_s": float(n_traj.sum() / step_s[: len(n_traj)].sum())
        if n_traj is not None and len(n_traj)
        else t.batch_size / float(step_s.mean()),
        "scheduler_trajectories_per_s": float(np.mean(t.trajectories_per_s))
        if t.trajectories_per_s
        else None,
        "slot_utilisation": float(np.mean(t.slot_utilisation)) if t.slot_utilisation else None,
        "episode_s": {
            "mean": float(np.mean(t.episode_s)),
            "p50": float(np.median(t.episode_s)),
            "p95": float(np.percentile(t.episode_s, 95)),
        },
        "generation_share": float(np.sum(t.gen_s) / max(np.sum(t.episode_s), 1e-12)),
        "learner_s_mean": float(np.mean(t.learner_s)),
    }
    rows = []
    base_tpb = None
    for name, cfg, gscale in scenarios(t):
        preset = Preset(
            name=f"{t.run_dir.name}: {name}",
            description=name,
            profile=_profile(t, gscale),
            arms=(Arm("arm", cfg, name),),
            baseline="arm",
            candidate="arm",
            batches=nb,
            learner_step=learner,
            warmup=warm,
        )
        res = simulate(preset, seeds, seed0=seed0)
        a = res["arms"]["arm"]
        tpb = a["time_per_batch"]
        if base_tpb is None:
            base_tpb = tpb["median"]
        rows.append(
            {
                "scenario": name,
                "config": a["config"],
                "time_per_step_s": tpb,
                "trajectories_per_s": a["trajectories_per_s"],
                "slot_utilisation": a["slot_utilisation"]["mean"],
                "wasted_share": a["wasted_share"]["mean"],
                "speedup_vs_as_run": base_tpb / tpb["median"] if tpb["median"] > 0 else math.inf,
            }
        )
    pred = rows[0]["trajectories_per_s"]["median"]
    return {
        "run": str(t.run_dir),
        "settings": {
            "algo": t.algo,
            "batch_size": t.batch_size,
            "group_size": t.group_size,
            "max_concurrency": t.max_concurrency,
            "regime": t.regime,
            "max_staleness": t.max_staleness,
            "overprovision": t.overprovision,
        },
        "trajectories_replayed": len(t.episode_s),
        "seeds": seeds,
        "batches": nb,
        "warmup": warm,
        "measured": measured,
        "prediction_error": pred / measured["trajectories_per_s"] - 1.0,
        "scenarios": rows,
    }


def format_what_if(res: dict[str, Any]) -> str:
    m, s = res["measured"], res["settings"]
    lines = [
        f"what-if from {res['run']}: {s['algo']}, B={s['batch_size']}"
        + (f", G={s['group_size']}" if s["algo"] == "grpo" else "")
        + f", {s['max_concurrency']} slots, {s['regime']}"
        + (
            f", staleness <= {s['max_staleness']}"
            if s["regime"] == "async"
            else f", {s['overprovision']:g}x launched"
        ),
        f"  replayed {res['trajectories_replayed']} measured trajectories (mean {m['episode_s']['mean']:.2f} s, "
        f"p95 {m['episode_s']['p95']:.2f} s, {100 * m['generation_share']:.0f}% generation) and "
        f"{m['steps']} learner steps (mean {m['learner_s_mean']:.2f} s incl. weight sync)",
        f"  {res['seeds']} seeds x {res['batches']} batches per scenario (figures over batches {res['warmup'] + 1}-{res['batches']})",
        "",
        f"  {'scenario':<40} {'time/step s: median [5%, 95%]':<31} {'traj/s':>8} {'slot util':>9} {'wasted':>6} {'speedup':>7}",
        f"  {'measured (steps 2+)':<40} {m['time_per_step_s']:9.2f}{'':<22} {m['trajectories_per_s']:8.3f} "
        f"{'' if m['slot_utilisation'] is None else format(m['slot_utilisation'], '9.3f'):>9}",
    ]
    for r in res["scenarios"]:
        t = r["time_per_step_s"]
        lines.append(
            f"  {r['scenario']:<40} {t['median']:9.2f} [{t['p5']:8.2f}, {t['p95']:8.2f}]  "
            f"{r['trajectories_per_s']['median']:8.3f} {r['slot_utilisation']:9.3f} {r['wasted_share']:6.3f} "
            f"{r['speedup_vs_as_run']:7.2f}"
        )
    lines += [
        "",
        f"  the run's own throughput, predicted {res['scenarios'][0]['trajectories_per_s']['median']:.3f} traj/s "
        f"against {m['trajectories_per_s']:.3f} measured: error {100 * res['prediction_error']:+.1f}%",
        "  2x inference servers halves each episode's generation seconds: the best case (saturated servers).",
    ]
    return "\n".join(lines)


__all__ = ["RunTimings", "format_what_if", "read_run", "scenarios", "what_if"]
