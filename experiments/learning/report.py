"""Turn the learning study's run directories into `results.json`, `results.md`, PNG plots and the README.

Reads only what the trainer wrote (`job.json`, `config.yaml`, `metrics.jsonl`, `summary.json`) and the
TRL reference's JSON, so it can be rerun at any time on whatever has finished. The one computation
besides statistics is the latency simulation that maps each arm's samples to simulated wall time.

Intervals: a 95% Student-t interval across seeds for means; Welch–Satterthwaite for differences and
averages of differences (runs of different arms are independent, so no pairing is assumed); a
delta-method interval on the log scale for ratios. With fewer than 2 seeds there is no interval, and
the verdict is "n/a", never a win.
"""

from __future__ import annotations

import itertools
import json
import math
import platform
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from agentrl.runlog import read_metrics

ARM_LABELS = {
    "spo": "SPO",
    "grpo": "GRPO",
    "no_baseline": "no baseline",
    "spo_no_offline_init": "SPO, no offline init",
    "spo_recipe": "SPO (recipe preset)",
    "rloo": "RLOO",
    "drgrpo": "Dr. GRPO",
}
ARM_COLORS = {
    "spo": "tab:blue",
    "grpo": "tab:red",
    "no_baseline": "tab:gray",
    "spo_no_offline_init": "tab:cyan",
    "spo_recipe": "tab:purple",
    "rloo": "tab:orange",
    "drgrpo": "tab:brown",
}
_LABELS: dict[str, str] = dict(ARM_LABELS)  # ARM_LABELS plus the config's `arm_labels` (write_report)
README_BEGIN = "<!-- BEGIN GENERATED: experiments/learning/report.py rewrites this section -->"
README_END = "<!-- END GENERATED -->"
README_MARKERS = {
    1: (README_BEGIN, README_END),
    2: (
        "<!-- BEGIN GENERATED ROUND 2: experiments/learning/report.py rewrites this section -->",
        "<!-- END GENERATED ROUND 2 -->",
    ),
}


def _label(arm: str) -> str:
    return _LABELS.get(arm, arm)


def algo_mode(name: str | None) -> str:
    """ "group" or "stream", from the algorithm registry (unknown names: stream)."""
    from agentrl.algorithms import ALGORITHMS

    cls = ALGORITHMS.get(str(name))
    return cls.mode if cls is not None else "stream"


# Two-sided 95% Student-t quantiles t_{0.975, df} for df = 1..30 (standard tables).
_T975 = (
    12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,
    2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860,
    2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423,
)  # fmt: skip


# ---- statistics (pure) ---------------------------------------------------------------------------


def t_quantile_975(df: float) -> float:
    """t_{0.975, df}: exact table to df 30 (linear in 1/df between integers), Cornish–Fisher above.

    No scipy at runtime: the report must run in the bare training environment.
    """
    if not df > 0 or not math.isfinite(df):
        return 1.959964 if df == math.inf else math.nan
    if df >= 30:
        z = 1.959964
        v = df
        return (
            z
            + (z**3 + z) / (4 * v)
            + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * v**2)
            + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * v**3)
        )
    if df < 1:
        df = 1.0  # Welch df can fall below 1 only in degenerate cases; be conservative
    lo = math.floor(df)
    if lo == df:
        return _T975[lo - 1]
    hi = lo + 1
    t_lo, t_hi = _T975[lo - 1], (_T975[hi - 1] if hi <= 30 else t_quantile_975(30.0))
    w = (1 / lo - 1 / df) / (1 / lo - 1 / hi)  # t is close to linear in 1/df
    return t_lo + w * (t_hi - t_lo)


def _clean(values: Sequence[float]) -> np.ndarray:
    x = np.asarray([v for v in values if v is not None], dtype=float)
    return x[np.isfinite(x)]


def mean_ci(values: Sequence[float]) -> dict[str, float]:
    """Mean with a 95% t-interval across seeds; lo/hi are NaN with fewer than 2 values."""
    x = _clean(values)
    n = int(x.size)
    if n == 0:
        return {"n": 0, "mean": math.nan, "sd": math.nan, "lo": math.nan, "hi": math.nan}
    m = float(x.mean())
    if n < 2:
        return {"n": 1, "mean": m, "sd": math.nan, "lo": math.nan, "hi": math.nan}
    sd = float(x.std(ddof=1))
    h = t_quantile_975(n - 1) * sd / math.sqrt(n)
    return {"n": n, "mean": m, "sd": sd, "lo": m - h, "hi": m + h}


def lincomb_ci(terms: Sequence[tuple[float, Sequence[float]]]) -> dict[str, float]:
    """Σ c_i·mean(x_i) over independent samples, with a Welch–Satterthwaite 95% interval.

    Covers a difference of two arms (c = +1, −1) and the average over environments of per-environment
    differences (c = ±1/E). Needs at least 2 values in every sample for an interval.
    """
    est, var, dof_den = 0.0, 0.0, 0.0
    ok = True
    for c, vals in terms:
        x = _clean(vals)
        if x.size == 0:
            return {"est": math.nan, "lo": math.nan, "hi": math.nan, "df": math.nan}
        est += c * float(x.mean())
        if x.size < 2:
            ok = False
            continue
        v = c * c * float(x.var(ddof=1)) / x.size
        var += v
        dof_den += v * v / (x.size - 1)
    if not ok:
        return {"est": est, "lo": math.nan, "hi": math.nan, "df": math.nan}
    if var == 0.0:
        return {"est": est, "lo": est, "hi": est, "df": math.inf}
    df = var * var / dof_den
    h = t_quantile_975(df) * math.sqrt(var)
    return {"est": est, "lo": est - h, "hi": est + h, "df": df}


def diff_ci(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """mean(a) − mean(b), Welch interval."""
    return lincomb_ci([(1.0, a), (-1.0, b)])


def ratio_ci(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """mean(a) / mean(b) with a delta-method interval on log(ratio) (both means must be positive)."""
    x, y = _clean(a), _clean(b)
    if x.size == 0 or y.size == 0 or x.mean() <= 0 or y.mean() <= 0:
        return {"est": math.nan, "lo": math.nan, "hi": math.nan}
    est = float(x.mean() / y.mean())
    if x.size < 2 or y.size < 2:
        return {"est": est, "lo": math.nan, "hi": math.nan}
    vx = float(x.var(ddof=1)) / (x.size * x.mean() ** 2)
    vy = float(y.var(ddof=1)) / (y.size * y.mean() ** 2)
    var = vx + vy
    if var == 0:
        return {"est": est, "lo": est, "hi": est}
    df = var * var / (vx * vx / (x.size - 1) + vy * vy / (y.size - 1)) if vx or vy else math.inf
    h = t_quantile_975(df) * math.sqrt(var)
    return {"est": est, "lo": est * math.exp(-h), "hi": est * math.exp(h)}


def verdict(ci: dict[str, float]) -> str:
    """win / loss if the 95% interval of (SPO − other) excludes 0, tie if it straddles it, n/a without one."""
    lo, hi = ci.get("lo", math.nan), ci.get("hi", math.nan)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "n/a"
    if lo > 0:
        return "win"
    if hi < 0:
        return "loss"
    return "tie"


# ---- reading runs ----------------------------------------------------------------------------------


@dataclass
class Run:
    """One finished (or partial) run as the report sees it."""

    path: Path
    arm: str
    env: str
    seed: int
    model_tag: str
    config: dict[str, Any]
    rows: list[dict[str, Any]]
    summary: dict[str, Any] | None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.summary is not None and self.summary.get("eval_after") is not None

    @property
    def batch_size(self) -> int:
        return int(self.config.get("rollout", {}).get("batch_size", 0))

    @property
    def offline_samples(self) -> int:
        """Samples spent by SPO's offline tracker initialisation (0 when it was not run)."""
        off = (self.summary or {}).get("offline_init") or {}
        n0 = int(self.config.get("algo", {}).get("offline_n0", 0))
        return int(off.get("prompts", 0)) * n0

    def train_rows(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if "reward_mean" in r]

    @property
    def algo(self) -> str:
        return str(self.config.get("algo", {}).get("name", self.arm))

    def tokens(self) -> dict[str, float]:
        """Generated (model) tokens: training, the offline pass (estimated), and their sum."""
        return generated_tokens(self.train_rows(), self.batch_size, self.offline_samples)

    def eval_rows(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if "eval/success" in r]


def read_run(run_dir: Path) -> Run | None:
    """A run directory written by run.py; None if it has no job.json (not part of the study)."""
    job_path = run_dir / "job.json"
    if not job_path.is_file():
        return None
    job = json.loads(job_path.read_text())
    cfg_path = run_dir / "config.yaml"
    config = yaml.safe_load(cfg_path.read_text()) if cfg_path.is_file() else {}
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else None
    return Run(
        path=run_dir,
        arm=job["arm"],
        env=job["env"],
        seed=int(job["seed"]),
        model_tag=job["model_tag"],
        config=config or {},
        rows=read_metrics(run_dir / "metrics.jsonl"),
        summary=summary,
    )


def read_runs(run_root: Path) -> list[Run]:
    """Every study run under `run_root/<model>/<name>/`, sorted for stable output."""
    if not run_root.is_dir():
        return []
    runs = [r for p in sorted(run_root.glob("*/*/job.json")) if (r := read_run(p.parent)) is not None]
    return sorted(runs, key=lambda r: (r.model_tag, r.env, r.arm, r.seed))


def eval_metrics(ev: dict[str, Any] | None) -> dict[str, float]:
    """avg@k, pass@k and maj@k (the largest k evaluated) from an EvalResult dict."""
    if not ev:
        return {}
    k = int(ev["k"])
    pa = {int(a): float(b) for a, b in (ev.get("pass_at") or {}).items()}
    ma = {int(a): float(b) for a, b in (ev.get("maj_at") or {}).items()}
    kk = max(pa) if pa else k
    return {"k": k, "avg": float(ev["avg_at_k"]), "pass": pa.get(kk, math.nan), "maj": ma.get(kk, math.nan)}


def run_mean(run: Run, key: str, lo_frac: float = 0.0, hi_frac: float = 1.0) -> float:
    """Mean of a per-step metric over the part [lo_frac, hi_frac] of training (by step)."""
    rows = run.train_rows()
    steps = int(run.config.get("steps", 0)) or max((int(r["step"]) for r in rows), default=0)
    vals = [
        float(r[key])
        for r in rows
        if key in r and lo_frac * steps < int(r["step"]) <= max(hi_frac * steps, 1) and _finite(r[key])
    ]
    return float(np.mean(vals)) if vals else math.nan


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def generated_tokens(
    rows: Sequence[dict[str, Any]], batch_size: int, offline_samples: int = 0
) -> dict[str, float]:
    """Model tokens a run generated: Σ over steps of mean tokens per trajectory × trajectories.

    Every trajectory of a batch counts (a GRPO sample in a degenerate group was generated, so it is
    spent). The offline pass does not log tokens; it is estimated as its samples × the first training
    step's mean (the same initial policy, the same sampling).
    """
    train = 0.0
    first = math.nan
    for r in rows:
        m = r.get("tokens/model_mean")
        if not _finite(m):
            continue
        n = r.get("batch/size", batch_size)
        train += float(m) * float(n if _finite(n) else batch_size)
        if not _finite(first):
            first = float(m)
    offline = offline_samples * first if offline_samples and _finite(first) else 0.0
    return {"train": train, "offline_est": offline, "total": train + offline}


def first_step_value(run: Run, key: str) -> float:
    """A per-step metric at the first training step (the starting state of the mechanisms)."""
    rows = [r for r in run.train_rows() if _finite(r.get(key))]
    return float(min(rows, key=lambda r: int(r["step"]))[key]) if rows else math.nan


def pilot_degenerate_share(pilot: dict[str, Any], prompts: int | None) -> dict[str, Any]:
    """The share of the pilot's k-sample groups (one per prompt, step 0) whose rewards are all equal.

    With k = G the pilot group is exactly a GRPO group of the initial policy. Uses the first `prompts`
    prompts (the training set); the interval is the t interval over prompts of the 0/1 indicator.
    """
    rows = list(pilot.get("prompts", []))[: prompts or None]
    flags = [1.0 if int(p["c"]) in (0, int(p["n"])) else 0.0 for p in rows]
    succ = [int(p["c"]) / int(p["n"]) for p in rows if int(p["n"])]
    return {
        **mean_ci(flags),
        "prompts": len(rows),
        "k": int(pilot.get("k", 0)),
        "all_fail": sum(1 for p in rows if int(p["c"]) == 0),
        "all_pass": sum(1 for p in rows if int(p["c"]) == int(p["n"])),
        "mean_success": float(np.mean(succ)) if succ else math.nan,
        "temperature": pilot.get("temperature"),
        "max_turns": pilot.get("max_turns"),
    }


def series(rows: Sequence[dict[str, Any]], key: str) -> tuple[np.ndarray, np.ndarray]:
    pts = [(int(r["step"]), float(r[key])) for r in rows if _finite(r.get(key))]
    if not pts:
        return np.array([], dtype=int), np.array([])
    s, v = zip(*pts, strict=True)
    return np.asarray(s), np.asarray(v)


# ---- simulated wall time ---------------------------------------------------------------------------


def samples_to_time(
    samples: np.ndarray | float, batch_size: int, s_per_batch: float, offset_s: float = 0.0
) -> Any:
    """Simulated seconds at which a run has trained on `samples` samples: offset + batches × s/batch.

    `samples` counts training samples only; `offset_s` is the time of anything run before step 1
    (SPO's offline tracker pass).
    """
    return offset_s + np.asarray(samples, dtype=float) / batch_size * s_per_batch


def simulate_batch_time(
    mode: str,
    batch_size: int,
    group_size: int,
    *,
    preset: str = "paper-fig5",
    overprovision: float = 1.0,
    seeds: int = 200,
    learner_step_s: float = 0.0,
) -> dict[str, float]:
    """Time per batch (virtual seconds) of one scheduler arm on a preset's latency profile.

    The real RolloutScheduler on a virtual clock (agentrl.simulate.run_arm), seeds 0..seeds−1.
    """
    from agentrl.rollout.clock import run_virtual
    from agentrl.rollout.presets import Arm, get_preset
    from agentrl.rollout.scheduler import SchedulerConfig
    from agentrl.simulate import run_arm

    p = get_preset(preset)
    arm = Arm(
        f"{mode}-{batch_size}",
        SchedulerConfig(
            mode=mode,
            batch_size=batch_size,
            group_size=group_size if mode == "group" else 8,
            overprovision=overprovision,
            watchdog_s=None,
        ),
    )

    async def main() -> list[float]:
        out = []
        for s in range(seeds):
            r = await run_arm(
                arm, p.profile, seed=s, batches=1, rewards=p.rewards, n_prompts=p.n_prompts,
                learner_step_s=learner_step_s,
            )  # fmt: skip
            out.append(r.time_per_batch + learner_step_s)
        return out

    times = run_virtual(main())
    return {**mean_ci(times), "seeds": seeds}


def arm_time_model(
    run: Run, sim: dict[str, Any], cache: dict[tuple[Any, ...], dict[str, float]]
) -> dict[str, float]:
    """(seconds per batch, offline seconds) for a run's arm under the configured simulation."""
    algo = run.config.get("algo", {})
    mode = algo_mode(algo.get("name"))
    g = int(algo.get("group_size", 8))
    common = {
        "preset": sim.get("preset", "paper-fig5"),
        "seeds": int(sim.get("seeds", 200)),
        "learner_step_s": float(sim.get("learner_step_s", 0.0)),
    }
    key = (mode, run.batch_size, g, float(sim.get("overprovision", 1.0)), tuple(common.values()))
    if key not in cache:
        cache[key] = simulate_batch_time(
            mode, run.batch_size, g, overprovision=float(sim.get("overprovision", 1.0)), **common
        )
    offline = 0.0
    if run.offline_samples:
        okey = ("offline", run.offline_samples, tuple(common.values()))
        if okey not in cache:
            cache[okey] = simulate_batch_time(
                "stream", run.offline_samples, 8, overprovision=1.0, **{**common, "learner_step_s": 0.0}
            )
        offline = cache[okey]["mean"]
    return {"s_per_batch": cache[key]["mean"], "offline_s": offline}


# ---- held-out curves -------------------------------------------------------------------------------


def checkpoint_samples(step: int, batch_size: int, offline: int = 0) -> int:
    """Samples a run had spent at a checkpoint: its offline pass's, then step × batch_size."""
    return int(offline) + int(step) * int(batch_size)


def curve_steps(steps: int, fractions: Sequence[float], checkpoint_every: int, every: int = 0) -> list[int]:
    """The intermediate checkpoint steps a run is evaluated at: round(f × steps) for each fraction (the
    table's points), and with `every`, each multiple of it (the plot's denser points).

    Each must be a step the run kept a checkpoint of (a multiple of `checkpoint_every`); the ends (step 0
    and the last step) are the run's own before and after evaluations, so they are not listed.
    """
    out: set[int] = set()
    for f in fractions:
        if not 0.0 < float(f) < 1.0:
            raise SystemExit(f"learning study: curves.step_fractions: {f} is not strictly between 0 and 1")
        s = round(float(f) * steps)
        if s <= 0 or s >= steps:
            continue
        if checkpoint_every <= 0 or s % checkpoint_every:
            raise SystemExit(
                f"learning study: curves.step_fractions: {f} × {steps} steps = step {s}, which is not a "
                f"multiple of checkpoint_every {checkpoint_every} (no checkpoint to evaluate)"
            )
        out.add(s)
    if every:
        if every < 0 or checkpoint_every <= 0 or every % checkpoint_every:
            raise SystemExit(
                f"learning study: curves.every: {every} is not a positive multiple of checkpoint_every "
                f"{checkpoint_every}"
            )
        out.update(range(every, steps, every))
    return sorted(out)


def run_key(run: Run) -> str:
    """A run's key in the curves cache (run.py's `cache_key` of its job)."""
    return f"{run.model_tag}/{run.path.name}"


def curve_points(
    run: Run, entries: dict[str, Any] | None, time_model: dict[str, float] | None = None
) -> list[dict[str, Any]]:
    """One finished run's held-out scores at each evaluated sample budget, in order.

    The start (0 samples) and the end are the run's own before/after evaluations; an SPO run's model is
    still the initial one when its offline pass ends, so the before score stands at that budget too. In
    between, the cached checkpoint evaluations. `time_s`: simulated seconds (offline s + steps × s/batch,
    `samples_to_time`), NaN without a time model.
    """
    bs, off = run.batch_size, run.offline_samples
    steps = int(run.config.get("steps", 0))

    def point(
        step: int, ev: dict[str, Any] | None, source: str, samples: int | None = None
    ) -> dict[str, Any]:
        t = math.nan
        if samples == 0:
            t = 0.0
        elif time_model:
            t = float(samples_to_time(step * bs, bs, time_model["s_per_batch"], time_model["offline_s"]))
        m = eval_metrics(ev)
        return {
            "step": step,
            "samples": checkpoint_samples(step, bs, off) if samples is None else samples,
            "time_s": t,
            **{k: m.get(k, math.nan) for k in ("avg", "pass", "maj")},
            "source": source,
        }

    summary = run.summary or {}
    pts = [point(0, summary.get("eval_before"), "before", samples=0)]
    if off:
        pts.append(point(0, summary.get("eval_before"), "before"))
    for key, e in sorted((entries or {}).items(), key=lambda kv: int(kv[0])):
        if 0 < int(key) < steps:
            pts.append(point(int(key), e.get("eval"), "checkpoint"))
    pts.append(point(steps, summary.get("eval_after"), "after"))
    return pts


def curve_table(per_arm: dict[str, list[list[dict[str, Any]]]]) -> dict[str, dict[int, dict[str, Any]]]:
    """Per arm and sample budget: mean [95% CI] over seeds of avg, pass and maj, the number of seeds,
    the step and the simulated time (mean over seeds; the same for every seed of an arm)."""
    out: dict[str, dict[int, dict[str, Any]]] = {}
    for arm, runs_pts in per_arm.items():
        by: dict[int, list[dict[str, Any]]] = {}
        for pts in runs_pts:
            for p in pts:
                by.setdefault(int(p["samples"]), []).append(p)
        out[arm] = {
            s: {
                "n": len(ps),
                "step": ps[0]["step"],
                "time_s": float(np.mean([p["time_s"] for p in ps])),
                **{m: mean_ci([p[m] for p in ps]) for m in ("avg", "pass", "maj")},
            }
            for s, ps in sorted(by.items())
        }
    return out


def aggregate_curves(
    cfg: dict[str, Any], runs: Sequence[Run], res: dict[str, Any], cache: dict[str, Any] | None
) -> dict[str, Any] | None:
    """The curves section's numbers: per-arm tables at every point and at the table's budgets, the
    coverage of the cache, and each reference arm minus GRPO at the budgets both have."""
    ccfg = cfg.get("curves") or {}
    if cache is None or not ccfg:
        return None
    fractions = [float(f) for f in ccfg.get("step_fractions", [])]
    every = int(ccfg.get("every", 0) or 0)
    st = (res.get("simulated_time") or {}).get("arms", {})
    done = [r for r in runs if r.finished]
    per_arm: dict[str, list[list[dict[str, Any]]]] = {}
    table_budgets: dict[str, set[int]] = {}
    want = have = want_table = have_table = complete = 0
    for r in done:
        ce = int(r.config.get("checkpoint_every", 0))
        steps = int(r.config.get("steps", 0))
        entries = cache.get(run_key(r), {})
        expected = curve_steps(steps, fractions, ce, every)
        table = curve_steps(steps, fractions, ce)
        got = {int(k) for k in entries}
        want, have = want + len(expected), have + len(got & set(expected))
        want_table, have_table = want_table + len(table), have_table + len(got & set(table))
        complete += set(table) <= got
        per_arm.setdefault(r.arm, []).append(curve_points(r, entries, st.get(r.arm)))
        tb = table_budgets.setdefault(r.arm, set())
        tb.update({0, r.offline_samples, checkpoint_samples(steps, r.batch_size, r.offline_samples)})
        tb.update(checkpoint_samples(s, r.batch_size, r.offline_samples) for s in table if s in got)
    order = list(cfg.get("arms") or [])
    per_arm = dict(
        sorted(per_arm.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order))
    )
    all_points = curve_table(per_arm)
    diffs: dict[str, Any] = {}
    for ref in res.get("refs", []):
        if ref not in per_arm or "grpo" not in per_arm:
            continue
        for s in sorted(table_budgets[ref] & table_budgets["grpo"] - {0}):
            a = [p for pts in per_arm[ref] for p in pts if p["samples"] == s]
            b = [p for pts in per_arm["grpo"] for p in pts if p["samples"] == s]
            for m in ("avg", "pass", "maj"):
                ci = diff_ci([p[m] for p in a], [p[m] for p in b])
                diffs.setdefault(f"{ref}-grpo|{m}", {})[s] = {**ci, "verdict": verdict(ci)}
    return {
        "settings": {"step_fractions": fractions, "every": every},
        "coverage": {
            "runs": len(done),
            "runs_complete": int(complete),
            "table_points": want_table,
            "table_points_cached": have_table,
            "points": want,
            "points_cached": have,
        },
        "points": all_points,
        "table_budgets": {a: sorted(b) for a, b in table_budgets.items()},
        "diffs_vs_grpo": diffs,
    }


# ---- aggregation -----------------------------------------------------------------------------------


def _group(runs: Sequence[Run]) -> dict[tuple[str, str], list[Run]]:
    out: dict[tuple[str, str], list[Run]] = {}
    for r in runs:
        out.setdefault((r.env, r.arm), []).append(r)
    return out


def aggregate(
    runs: Sequence[Run],
    arms: Sequence[str],
    envs: Sequence[str],
    sim: dict[str, Any] | None,
    refs: Sequence[str] = ("spo",),
) -> dict[str, Any]:
    """Every number the tables and verdicts need, for one model's finished runs.

    `refs`: the arms compared with every other arm (round 1: SPO; round 2: both SPO arms).
    """
    done = [r for r in runs if r.finished]
    groups = _group(done)
    res: dict[str, Any] = {
        "final": {},
        "before": {},
        "diffs": {},
        "diagnostics": {},
        "walltime": {},
        "budget": {},
        "group_arms": sorted({r.arm for r in done if algo_mode(r.algo) == "group"}),
        "refs": [a for a in refs if a in arms],
    }
    metrics = ("avg", "pass", "maj")
    for env in envs:
        for arm in arms:
            rs = groups.get((env, arm), [])
            fin = [eval_metrics(r.summary["eval_after"]) for r in rs]  # type: ignore[index]
            bef = [eval_metrics((r.summary or {}).get("eval_before")) for r in rs]
            key = f"{env}|{arm}"
            res["final"][key] = {
                "seeds": [r.seed for r in rs],
                "k": fin[0]["k"] if fin else None,
                **{m: mean_ci([f[m] for f in fin]) for m in metrics},
                "per_seed": {m: [f[m] for f in fin] for m in metrics},
            }
            res["before"][key] = {m: mean_ci([b.get(m, math.nan) for b in bef]) for m in metrics}
            d = {
                "frac_degenerate_samples": mean_ci(
                    [run_mean(r, "adv/frac_samples_in_degenerate_groups") for r in rs]
                ),
                "frac_degenerate_samples_first_quarter": mean_ci(
                    [run_mean(r, "adv/frac_samples_in_degenerate_groups", 0.0, 0.25) for r in rs]
                ),
                "frac_degenerate_samples_last_quarter": mean_ci(
                    [run_mean(r, "adv/frac_samples_in_degenerate_groups", 0.75, 1.0) for r in rs]
                ),
                "frac_degenerate_first_step": mean_ci(
                    [first_step_value(r, "adv/frac_samples_in_degenerate_groups") for r in rs]
                ),
                "frac_near_zero_1e4": mean_ci([run_mean(r, "adv/frac_near_zero_1e4") for r in rs]),
                "frac_near_zero_0_02": mean_ci([run_mean(r, "adv/frac_near_zero_0_02") for r in rs]),
                "raw_variance": mean_ci([run_mean(r, "adv/raw_variance") for r in rs]),
                "reward_mean": mean_ci([run_mean(r, "reward_mean") for r in rs]),
                "per_seed_raw_variance": [run_mean(r, "adv/raw_variance") for r in rs],
            }
            res["diagnostics"][key] = d
            res["walltime"][key] = {
                "real_total_s": mean_ci([float(r.summary["seconds"]) for r in rs]),  # type: ignore[index]
                "real_train_s": mean_ci([sum(x.get("time/step_s", 0.0) for x in r.train_rows()) for r in rs]),
                "offline_samples": max((r.offline_samples for r in rs), default=0),
                "train_samples": max((r.batch_size * len(r.train_rows()) for r in rs), default=0),
            }
            toks = [r.tokens() for r in rs]
            res["budget"][key] = {
                "samples": max(
                    (r.batch_size * len(r.train_rows()) + r.offline_samples for r in rs), default=0
                ),
                "train_samples": max((r.batch_size * len(r.train_rows()) for r in rs), default=0),
                "offline_samples": max((r.offline_samples for r in rs), default=0),
                "tokens": mean_ci([t["total"] for t in toks]),
                "train_tokens": mean_ci([t["train"] for t in toks]),
                "offline_tokens_est": mean_ci([t["offline_est"] for t in toks]),
                "per_seed_tokens": [t["total"] for t in toks],
            }
    for env in envs:
        g = res["budget"].get(f"{env}|grpo", {}).get("per_seed_tokens", [])
        for arm in arms:
            b = res["budget"].get(f"{env}|{arm}")
            if b is not None:
                b["tokens_vs_grpo"] = ratio_ci(b["per_seed_tokens"], g) if g else None
    # Each reference (SPO) arm against every other arm, per environment and averaged over environments.
    for ref in res["refs"]:
        for other in [a for a in arms if a != ref]:
            for m in metrics:
                per_env = {}
                terms: list[tuple[float, Sequence[float]]] = []
                envs_with_both = [
                    e for e in envs if res["final"][f"{e}|{ref}"]["per_seed"][m] and res["final"][f"{e}|{other}"]["per_seed"][m]
                ]  # fmt: skip
                for env in envs_with_both:
                    a = res["final"][f"{env}|{ref}"]["per_seed"][m]
                    b = res["final"][f"{env}|{other}"]["per_seed"][m]
                    ci = diff_ci(a, b)
                    per_env[env] = {**ci, "verdict": verdict(ci)}
                    terms += [(1 / len(envs_with_both), a), (-1 / len(envs_with_both), b)]
                avg = lincomb_ci(terms) if terms else {"est": math.nan, "lo": math.nan, "hi": math.nan}
                res["diffs"][f"{ref}-{other}|{m}"] = {
                    "per_env": per_env,
                    "average": {**avg, "verdict": verdict(avg), "envs": envs_with_both},
                }
    # Advantage variance relative to the raw reward (no-baseline arm), per environment.
    ratios: dict[str, Any] = {}
    for env in envs:
        nb = res["diagnostics"].get(f"{env}|no_baseline", {}).get("per_seed_raw_variance", [])
        for arm in arms:
            if arm == "no_baseline":
                continue
            a = res["diagnostics"].get(f"{env}|{arm}", {}).get("per_seed_raw_variance", [])
            ratios[f"{env}|{arm}"] = ratio_ci(a, nb)
    res["variance_ratio_vs_no_baseline"] = ratios
    # Simulated wall time per arm (seconds per batch, offline pass), from one representative run.
    if sim:
        cache: dict[tuple[Any, ...], dict[str, float]] = {}
        sim_res: dict[str, Any] = {}
        for arm in arms:
            rep = next((r for r in done if r.arm == arm), None)
            if rep is None:
                continue
            tm = arm_time_model(rep, sim, cache)
            no_op = arm_time_model(rep, {**sim, "overprovision": 1.0}, cache)
            sim_res[arm] = {
                **tm,
                "s_per_batch_k1": no_op["s_per_batch"],
                "batch_size": rep.batch_size,
                "s_per_sample": tm["s_per_batch"] / rep.batch_size,
            }
        res["simulated_time"] = {"settings": sim, "arms": sim_res}
    return res


def read_trl(trl_dir: Path) -> dict[str, Any]:
    """TRL reference results: finished seeds and any failure messages."""
    out: dict[str, Any] = {"runs": [], "errors": []}
    if not trl_dir.is_dir():
        return out
    for p in sorted(trl_dir.glob("seed*.json")):
        d = json.loads(p.read_text())
        (out["runs"] if d.get("status") == "ok" else out["errors"]).append(d)
    if out["runs"]:
        for m in ("avg", "pass", "maj"):
            out[f"after_{m}"] = mean_ci([r["after"][m] for r in out["runs"]])
            befores = [r["before"][m] for r in out["runs"] if r.get("before")]
            out[f"before_{m}"] = mean_ci(befores) if befores else None
        hist = [
            [h for h in r.get("history", []) if _finite(h.get("frac_reward_zero_std"))] for r in out["runs"]
        ]
        if all(hist):
            out["zero_std"] = mean_ci(
                [float(np.mean([h["frac_reward_zero_std"] for h in hs])) for hs in hist]
            )
            out["zero_std_first"] = mean_ci([float(hs[0]["frac_reward_zero_std"]) for hs in hist])
        out["train_s"] = mean_ci([r["train_seconds"] for r in out["runs"]])
        out["total_s"] = mean_ci([r["total_seconds"] for r in out["runs"]])
    return out


# ---- rendering -------------------------------------------------------------------------------------


def _f(x: float | None, nd: int = 3) -> str:
    return "–" if x is None or not _finite(x) else f"{x:.{nd}f}"


def _ci(
    c: dict[str, float] | None,
    nd: int = 3,
    scale: float = 1.0,
    sign: bool = False,
    bounds: tuple[float, float] | None = (0.0, math.inf),
) -> str:
    """`mean [lo, hi]`; the interval is truncated to the metric's range (`bounds`, unscaled)."""
    if not c:
        return "–"
    m = c.get("mean", c.get("est", math.nan))
    if not _finite(m):
        return "–"
    fmt = f"{{:+.{nd}f}}" if sign else f"{{:.{nd}f}}"
    s = fmt.format(m * scale)
    lo, hi = c.get("lo"), c.get("hi")
    if _finite(lo) and _finite(hi):
        if bounds is not None:
            lo, hi = max(lo, bounds[0]), min(hi, bounds[1])  # type: ignore[type-var]
        s += f" [{lo * scale:.{nd}f}, {hi * scale:.{nd}f}]"  # type: ignore[operator]
    return s


UNIT = (0.0, 1.0)  # scores and fractions


def _short(env: str) -> str:
    return env.split("/")[-1]


def render_markdown(
    cfg: dict[str, Any],
    res: dict[str, Any],
    runs: Sequence[Run],
    expected: Sequence[tuple[str, str, int]],
    trl: dict[str, Any],
    others: dict[str, dict[str, Any]],
    img_prefix: str = "",
) -> str:
    arms, envs = list(cfg["arms"]), list(cfg["envs"])
    done = {(r.env, r.arm, r.seed) for r in runs if r.finished}
    missing = [e for e in expected if e not in done]
    k = next((v["k"] for v in res["final"].values() if v.get("k")), None)
    ks = f"@{k}" if k else "@k"
    L: list[str] = []
    tags = {env: sorted({r.model_tag for r in runs if r.env == env}) for env in envs}
    if len({t for ts in tags.values() for t in ts}) > 1:
        shown = ", ".join(f"`{'`, `'.join(ts)}` on {_short(env)}" for env, ts in tags.items() if ts)
        L.append(f"Models: {shown}; {len(done)} of {len(expected)} runs finished")
    else:
        one = next((ts[0] for ts in tags.values() if ts), None)
        shown = f"`{cfg['model']}`" + (f" (`{one}`)" if one and one != cfg["model"] else "")
        L.append(f"Model {shown}, {len(done)} of {len(expected)} runs finished")
    two = cfg.get("round", 1) == 2
    budget = {
        r.batch_size * int(r.config.get("steps", 0)) + (r.offline_samples if two else 0)
        for r in runs
        if r.finished
    }
    if budget:
        what = "samples per run, the offline pass included" if two else "samples per run"
        L[-1] += f"; {'budget' if two else 'training budget'} {', '.join(map(str, sorted(budget)))} {what}"
    L[-1] += "." + (" **Quick smoke budget: these numbers mean nothing.**" if cfg.get("quick") else "")
    if missing:
        shown = ", ".join(f"{a}/{_short(e)}/s{s}" for e, a, s in missing[:12])
        L.append(f"Not finished yet: {shown}{' …' if len(missing) > 12 else ''}.")
    if not done:
        L.append("\nNo finished runs yet: run `.venv/bin/python experiments/learning/run.py`.")
        return "\n".join(L) + "\n"
    ev = next(r for r in runs if r.finished).config.get("eval", {})
    L.append(
        f"Held-out eval: first {ev.get('tasks')} test tasks × k = {ev.get('k')} samples at T = "
        f"{ev.get('temperature')}, top-p {ev.get('top_p')}. Intervals: 95% t across seeds "
        "(Welch for differences), truncated to each metric's range. Verdict: win/loss when the interval of "
        "SPO − other excludes 0, else tie."
    )

    L += [
        "",
        f"### Final held-out scores (mean [95% CI] over seeds; before training: avg{ks} of the initial model)",
        "",
    ]
    L.append(f"| env | arm | seeds | before avg{ks} | avg{ks} | pass{ks} | maj{ks} |")
    L.append("| --- | --- | --- | --- | --- | --- | --- |")
    for env in envs:
        for arm in arms:
            f = res["final"][f"{env}|{arm}"]
            b = res["before"][f"{env}|{arm}"]
            L.append(
                f"| {_short(env)} | {_label(arm)} | {len(f['seeds'])} | {_f(b['avg']['mean'])} | "
                f"{_ci(f['avg'], bounds=UNIT)} | {_ci(f['pass'], bounds=UNIT)} | {_ci(f['maj'], bounds=UNIT)} |"
            )

    trl_env = cfg.get("trl", {}).get("env", "")
    trl_multi = [r for r in trl["runs"] if str(r.get("mode", "")).startswith("multi-turn")]
    if trl_multi and trl_env in envs:
        L.append(
            f"| {_short(trl_env)} | TRL GRPO (multi-turn, tools; outside reference) | {len(trl_multi)} | – | "
            f"{_ci(trl['after_avg'], bounds=UNIT)} | {_ci(trl['after_pass'], bounds=UNIT)} | {_ci(trl['after_maj'], bounds=UNIT)} |"
        )
    refs = res.get("refs", ["spo"])
    L += ["", "### SPO minus each other arm (percentage points, Welch 95% CI, verdict)", ""]
    L.append(f"| comparison | env | avg{ks} | pass{ks} | maj{ks} |")
    L.append("| --- | --- | --- | --- | --- |")
    for ref in refs:
        for other in [a for a in arms if a != ref]:
            for env in [*envs, "average"] if len(envs) > 1 else envs:
                cells = []
                for m in ("avg", "pass", "maj"):
                    d = res["diffs"].get(f"{ref}-{other}|{m}", {})
                    c = d.get("average") if env == "average" else d.get("per_env", {}).get(env)
                    cells.append("–" if not c else f"{_ci(c, 1, 100, sign=True, bounds=None)} {c['verdict']}")
                label = "**average over envs**" if env == "average" else _short(env)
                L.append(f"| {_label(ref)} − {_label(other)} | {label} | {' | '.join(cells)} |")
        if trl_multi and trl_env in envs and res["final"].get(f"{trl_env}|{ref}", {}).get("seeds"):
            cells = []
            for m in ("avg", "pass", "maj"):
                c = diff_ci(
                    res["final"][f"{trl_env}|{ref}"]["per_seed"][m], [r["after"][m] for r in trl_multi]
                )
                cells.append(f"{_ci(c, 1, 100, sign=True, bounds=None)} {verdict(c)}")
            L.append(f"| {_label(ref)} − TRL GRPO (multi-turn) | {_short(trl_env)} | {' | '.join(cells)} |")

    if res.get("curves"):
        L += render_curves(res["curves"], res, trl_multi, ks)

    L += ["", "### Diagnostics (per-run mean over training, then mean [95% CI] over seeds)", ""]
    L.append(
        "| env | arm | degenerate-group samples: all / first ¼ / last ¼ | near-zero adv. <1e-4 | "
        "<0.02 | raw adv. variance | variance ÷ no-baseline |"
    )
    L.append("| --- | --- | --- | --- | --- | --- | --- |")
    for env in envs:
        for arm in arms:
            d = res["diagnostics"][f"{env}|{arm}"]
            deg = (
                f"{_ci(d['frac_degenerate_samples'], 2, bounds=UNIT)} / {_f(d['frac_degenerate_samples_first_quarter']['mean'], 2)}"
                f" / {_f(d['frac_degenerate_samples_last_quarter']['mean'], 2)}"
                if arm in res.get("group_arms", ["grpo"])
                else "–"
            )
            ratio = res["variance_ratio_vs_no_baseline"].get(f"{env}|{arm}")
            L.append(
                f"| {_short(env)} | {_label(arm)} | {deg} | {_ci(d['frac_near_zero_1e4'], 3, bounds=UNIT)} | "
                f"{_ci(d['frac_near_zero_0_02'], 3, bounds=UNIT)} | {_ci(d['raw_variance'], 4)} | "
                f"{_ci(ratio, 2)} |"
            )
    L.append(
        "\nRaw advantages are before normalisation: SPO `r − v̂₋`, GRPO `r − mean_G` (zero in degenerate "
        "groups: the effective GRPO advantage), no-baseline `r` (so its variance is the reward variance)."
    )

    if cfg.get("round", 1) == 2 and res.get("budget"):
        L += ["", "### Budget per run: samples and generated tokens (mean [95% CI] over seeds)", ""]
        L.append(
            "| env | arm | steps × batch | offline-pass samples | all samples | generated tokens, all | "
            "of which offline pass (est.) | tokens ÷ GRPO's |"
        )
        L.append("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for env in envs:
            for arm in arms:
                b = res["budget"].get(f"{env}|{arm}")
                if not b or not b["samples"]:
                    continue
                bs = next((r.batch_size for r in runs if r.arm == arm and r.env == env and r.finished), 0)
                steps = b["train_samples"] // bs if bs else 0
                L.append(
                    f"| {_short(env)} | {_label(arm)} | {steps} × {bs} | {b['offline_samples']} | {b['samples']} | "
                    f"{_ci(b['tokens'], 0)} | {_ci(b['offline_tokens_est'], 0)} | {_ci(b.get('tokens_vs_grpo'), 2)} |"
                )
        L.append(
            "\nEvery sampled trajectory counts, GRPO's in degenerate groups (zero advantage) included; the SPO "
            "arms spend part of the budget on the offline tracker pass and train fewer steps. Tokens are the "
            "model's generated tokens (`tokens/model_mean` × batch per step); the offline pass logs no tokens, "
            "so its share is estimated from the first training step's mean. The sample budgets are equal by "
            "construction (`run.py` refuses otherwise); the token budgets follow from what each policy writes, "
            "and the last column says how far they are from equal."
        )

    st = res.get("simulated_time")
    L += ["", "### Wall time", ""]
    L.append(
        "| env | arm | training samples | offline-init samples | real wall s (total, incl. evals) | real train s | "
        f"sim. s/batch (k = {st['settings'].get('overprovision') if st else '–'}) | sim. s/batch (k = 1) | sim. offline s |"
    )
    L.append("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for env in envs:
        for arm in arms:
            w = res["walltime"].get(f"{env}|{arm}")
            if not w or not w["train_samples"]:
                continue
            s = (st or {}).get("arms", {}).get(arm, {})
            L.append(
                f"| {_short(env)} | {_label(arm)} | {w['train_samples']} | {w['offline_samples']} | "
                f"{_f(w['real_total_s']['mean'], 0)} | {_f(w['real_train_s']['mean'], 0)} | "
                f"{_f(s.get('s_per_batch'), 1)} | {_f(s.get('s_per_batch_k1'), 1)} | {_f(s.get('offline_s'), 1)} |"
            )
    if st:
        L.append(
            f"\nReal times: mean over seeds on this machine. Simulated (per batch, the same for every env): preset "
            f"`{st['settings'].get('preset')}`, {st['settings'].get('seeds')} seeds of the real scheduler on a "
            "virtual clock, each arm's own batch shape; the offline pass is one batch that must finish entirely."
        )

    multi = any(str(r.get("mode", "")).startswith("multi-turn") for r in trl["runs"]) or (
        cfg.get("trl", {}).get("script") == "trl_multiturn.py"
    )
    kind = "multi-turn with tools" if multi else "single-turn"
    L += [
        "",
        f"### Outside reference: TRL `GRPOTrainer`, {kind} " + _short(cfg.get("trl", {}).get("env", "")),
        "",
    ]
    if trl["runs"]:
        r0 = trl["runs"][0]
        L.append(
            f"TRL {r0.get('trl_version')}, {len(trl['runs'])} seed(s), {r0['train_samples']} completions "
            f"(groups of {r0['group_size']}), same model; held-out: {r0['eval_tasks']} test tasks × k = {r0['eval_k']}."
        )
        L += ["", f"| | before avg{ks} | avg{ks} | pass{ks} | maj{ks} | train wall s | total wall s |"]
        L.append("| --- | --- | --- | --- | --- | --- | --- |")
        L.append(
            f"| TRL GRPO ({'multi-turn, tools' if multi else 'single-turn, no tools'}) | "
            f"{_ci(trl.get('before_avg'), bounds=UNIT)} | "
            f"{_ci(trl['after_avg'], bounds=UNIT)} | {_ci(trl['after_pass'], bounds=UNIT)} | "
            f"{_ci(trl['after_maj'], bounds=UNIT)} | {_ci(trl['train_s'], 0)} | {_ci(trl['total_s'], 0)} |"
        )
        env = cfg.get("trl", {}).get("env", "")
        for arm in [*refs, "grpo"]:
            if f"{env}|{arm}" in res["final"] and res["final"][f"{env}|{arm}"]["seeds"]:
                f, b, w = (
                    res["final"][f"{env}|{arm}"],
                    res["before"][f"{env}|{arm}"],
                    res["walltime"][f"{env}|{arm}"],
                )
                L.append(
                    f"| ours: {_label(arm)} (multi-turn, tools) | {_ci(b['avg'], bounds=UNIT)} | "
                    f"{_ci(f['avg'], bounds=UNIT)} | {_ci(f['pass'], bounds=UNIT)} | {_ci(f['maj'], bounds=UNIT)} | {_ci(w['real_train_s'], 0)} | {_ci(w['real_total_s'], 0)} |"
                )
        if multi:
            L.append(
                "\nTRL runs the episodes itself (`environment_factory`: the env's calculator as a tool method, "
                "TRL's own chat rendering, tool-call parsing and generation loop) on the same train prompts, "
                "turn budget, sample budget, learning rate and clip bounds; its held-out scores come from "
                "`agentrl.evaluate` on the trained weights, so they are measured exactly like the arms'. "
                "`before` is the arms' (the same initial model and evaluation)."
                + (
                    f" TRL's own count of groups with zero reward spread (`frac_reward_zero_std`), mean over "
                    f"training: {_ci(trl['zero_std'], 2, bounds=UNIT)}; first step {_ci(trl['zero_std_first'], 2, bounds=UNIT)}."
                    if trl.get("zero_std")
                    else ""
                )
            )
        else:
            L.append(
                "\nThe TRL task is a single-turn variant (no tool calls; the completion must contain "
                "`<answer>N</answer>`, scored by the environment's own scorer), so compare the change from "
                "`before`, not the absolute scores."
            )
    else:
        L.append("No TRL reference result.")
    for e in trl["errors"]:
        L.append(f"- TRL reference seed {e.get('seed')} failed: {e.get('error', 'unknown error')}")

    for tag, o in others.items():
        L += ["", f"### Other model: `{tag}`", ""]
        L.append(f"| env | arm | seeds | before avg{ks} | avg{ks} | maj{ks} |")
        L.append("| --- | --- | --- | --- | --- | --- |")
        for key, f in o["final"].items():
            if not f["seeds"]:
                continue
            env, arm = key.split("|")
            L.append(
                f"| {_short(env)} | {_label(arm)} | {len(f['seeds'])} | "
                f"{_f(o['before'][key]['avg']['mean'])} | {_ci(f['avg'], bounds=UNIT)} | {_ci(f['maj'], bounds=UNIT)} |"
            )

    L += ["", "### Against the paper's claims", ""]
    L += paper_comparison(cfg, res, ks)
    L += ["", "### Plots", ""]
    plots = list(PLOTS)
    if cfg.get("round", 1) == 2:
        plots.append(
            ("spo_sampling.png", "SPO: share of draws per prompt against its tracker value, over training")
        )
        if res.get("curves"):
            plots.insert(
                0, ("curves.png", "held-out avg@k, pass@k and maj@k against samples and simulated wall time")
            )
    for name, cap in plots:
        L.append(f"![{cap}]({img_prefix}{name})")
    return "\n".join(L) + "\n"


def render_curves(
    cur: dict[str, Any], res: dict[str, Any], trl_multi: Sequence[dict[str, Any]], ks: str
) -> list[str]:
    """The held-out curves subsection: one table per metric (mean [95% CI] over seeds at each sample
    budget), the simulated time of each point, and each reference arm minus GRPO at equal samples."""
    cov = cur["coverage"]
    pts, budgets = cur["points"], cur["table_budgets"]
    arms = [a for a in pts if a in budgets]
    cols = sorted({b for a in arms for b in budgets[a]})
    fr = ", ".join(f"{f:g}" for f in cur["settings"]["step_fractions"])
    L = [
        "",
        f"### Held-out curves: avg{ks}, pass{ks} and maj{ks} against samples (mean [95% CI] over seeds)",
        "",
    ]
    L.append(
        f"Each finished run's checkpoints at {fr} of its steps, evaluated by `run.py`'s curves phase with the "
        "run's own held-out evaluation (`Trainer.evaluate_checkpoint`: the tasks, k, sampling, turn budget and "
        "seed of its before/after evaluations), cached per (run, step) in `round2/curves.json`. Covered: "
        f"{cov['table_points_cached']} of {cov['table_points']} table points ({cov['runs_complete']} of "
        f"{cov['runs']} runs complete); for the plot, {cov['points_cached']} of {cov['points']} points "
        f"(every {cur['settings']['every'] or '–'} steps). Samples = offline-pass samples + step × batch. "
        "0 samples is the initial model (the before evaluation), and so is an SPO arm's point at the end "
        "of its offline pass (it trains nothing); the last column is the after evaluation."
        + (
            " TRL keeps no intermediate checkpoints: only its final point exists (its row, at the full budget)."
            if trl_multi
            else ""
        )
    )
    names = {"avg": f"avg{ks}", "pass": f"pass{ks}", "maj": f"maj{ks}"}
    last = max(cols) if cols else 0
    for m in ("avg", "pass", "maj"):
        L += ["", f"| {names[m]} | " + " | ".join(f"{c} samples" for c in cols) + " |"]
        L.append("| --- |" + " --- |" * len(cols))
        for arm in arms:
            cells = []
            for c in cols:
                p = pts[arm].get(c) if c in budgets[arm] else None
                cells.append("–" if not p else _ci(p[m], bounds=UNIT))
            L.append(f"| {_label(arm)} | " + " | ".join(cells) + " |")
        if trl_multi:
            after = mean_ci([r["after"][m] for r in trl_multi])
            L.append(
                "| TRL GRPO (multi-turn; final only) | "
                + " | ".join(_ci(after, bounds=UNIT) if c == last else "–" for c in cols)
                + " |"
            )
    L += [
        "",
        "Simulated wall time of each point (hours; offline s + steps × s/batch from the wall-time table):",
        "",
    ]
    L.append("| arm | " + " | ".join(f"{c} samples" for c in cols) + " |")
    L.append("| --- |" + " --- |" * len(cols))
    for arm in arms:
        cells = [
            _f(pts[arm][c]["time_s"] / 3600, 2) if c in budgets[arm] and c in pts[arm] else "–" for c in cols
        ]
        L.append(f"| {_label(arm)} | " + " | ".join(cells) + " |")
    if cur.get("diffs_vs_grpo"):
        L += ["", "Each SPO arm minus GRPO at equal samples (percentage points, Welch 95% CI, verdict):", ""]
        L.append(f"| comparison | samples | avg{ks} | pass{ks} | maj{ks} |")
        L.append("| --- | --- | --- | --- | --- |")
        for ref in res.get("refs", []):
            per_m = {m: cur["diffs_vs_grpo"].get(f"{ref}-grpo|{m}", {}) for m in ("avg", "pass", "maj")}
            for s in sorted(per_m["avg"]):
                cells = [
                    f"{_ci(per_m[m][s], 1, 100, sign=True, bounds=None)} {per_m[m][s]['verdict']}"
                    for m in ("avg", "pass", "maj")
                ]
                L.append(f"| {_label(ref)} − GRPO | {s} | " + " | ".join(cells) + " |")
        L.append(
            "\nEach interval is for its own cell, not corrected for the number of cells: with this many, "
            "an interval that just excludes 0 at one budget and not at the others can be chance."
        )
    return L


PLOTS = (
    ("curves_samples.png", "training reward and held-out avg@k against training samples"),
    ("curves_walltime.png", "the same against simulated wall time"),
    ("final_scores.png", "final held-out avg@k, pass@k, maj@k per arm with 95% CIs"),
    ("degenerate.png", "GRPO degenerate-group sample fraction over training"),
    ("near_zero.png", "SPO near-zero advantage fractions over training"),
    ("adv_variance.png", "raw advantage variance over training"),
)


def paper_comparison(cfg: dict[str, Any], res: dict[str, Any], ks: str) -> list[str]:
    """Sentences generated from the numbers: where SPO wins, ties or loses, next to the paper's claims."""
    paper = cfg.get("paper", {})
    out: list[str] = []
    gain = paper.get("maj_gain_pp")
    refs = res.get("refs", ["spo"]) or ["spo"]
    for ref in refs:
        d = res["diffs"].get(f"{ref}-grpo|maj", {})
        avg = d.get("average", {})
        if avg and _finite(avg.get("est")):
            per = ", ".join(
                f"{_short(e)} {c['verdict']} ({_ci(c, 1, 100, sign=True, bounds=None)})"
                for e, c in d["per_env"].items()
            )
            line = (
                f"- **maj{ks}, {_label(ref)} − GRPO, average over {len(avg['envs'])} env(s): "
                f"{_ci(avg, 1, 100, sign=True, bounds=None)} pp → {avg['verdict']}.** Per env: {per}. "
                f"Paper: +{gain} pp maj@32 on five math benchmarks (Qwen3-8B)."
            )
            if _finite(avg.get("lo")) and gain is not None:
                inside = avg["lo"] * 100 <= gain <= avg["hi"] * 100
                line += f" The paper's +{gain} pp is {'inside' if inside else 'outside'} our interval."
            out.append(line)
        else:
            out.append(f"- maj: {_label(ref)} − GRPO needs finished runs of both arms.")
        if cfg.get("round", 1) == 2:
            tally: dict[str, list[str]] = {"win": [], "tie": [], "loss": [], "n/a": []}
            for other in [a for a in cfg["arms"] if a != ref]:
                for m in ("avg", "pass", "maj"):
                    c = res["diffs"].get(f"{ref}-{other}|{m}", {}).get("average")
                    if c:
                        tally[c["verdict"]].append(f"{_label(other)} {m}{ks}")
            out.append(
                f"- **{_label(ref)} against every other arm** (avg/pass/maj{ks}, {sum(map(len, tally.values()))} "
                f"comparisons): wins {len(tally['win'])}"
                + (f" ({', '.join(tally['win'])})" if tally["win"] else "")
                + f", losses {len(tally['loss'])}"
                + (f" ({', '.join(tally['loss'])})" if tally["loss"] else "")
                + f", ties {len(tally['tie'])}."
            )
    if cfg.get("round", 1) == 2:
        parts = []
        for env in cfg["envs"]:
            for arm in cfg["arms"]:
                b = res.get("budget", {}).get(f"{env}|{arm}")
                d = res["diagnostics"].get(f"{env}|{arm}")
                if not b or not b["samples"] or not d:
                    continue
                if arm in res.get("group_arms", []):
                    deg = d["frac_degenerate_samples"]["mean"]
                    if not _finite(deg):
                        continue
                    useful = b["train_samples"] * (1 - deg)
                else:  # a stream arm's batch normalisation leaves no sample at exactly zero
                    useful = b["train_samples"]
                parts.append(
                    f"{_label(arm)} {useful:.0f} of {b['samples']} ({b['offline_samples']} in the offline pass)"
                )
        if parts:
            out.append(
                "- **Where the budget went: samples that carried a non-zero advantage into the update** (mean "
                "over seeds; a group arm's samples in degenerate groups carry exactly 0, a stream arm's batch "
                "normalisation gives every sample one): "
                + "; ".join(parts)
                + ". The group arms lose their degenerate groups; the SPO arms lose their offline pass (it "
                "trains nothing, it sets the tracker) and so take fewer updates (steps in the budget table)."
            )
    group_arms = [a for a in res.get("group_arms", ["grpo"]) if a in cfg["arms"]] or ["grpo"]
    lo_hi = paper.get("degenerate_range", [0.6, 0.8])
    lo_, hi_ = lo_hi

    def where(m: float) -> str:
        return "within" if lo_ <= m <= hi_ else ("below" if m < lo_ else "above")

    pilot = res.get("pilot")
    if pilot and _finite(pilot.get("mean")):
        out.append(
            f"- **Starting degenerate share** (pilot, the initial model at T = {pilot.get('temperature')}, one group "
            f"of k = {pilot['k']} on each of the {pilot['prompts']} train prompts, "
            f"{pilot.get('max_turns') or 'default (8)'}-turn budget): {_ci(pilot, 2, bounds=UNIT)} "
            f"({pilot['all_fail']} prompts all wrong, {pilot['all_pass']} all right; mean success "
            f"{_f(pilot['mean_success'], 3)}), {where(pilot['mean'])} the paper's {lo_:.0%}–{hi_:.0%}."
            + "".join(
                f" Also measured: the same prompts with a {t.get('max_turns') or 'default (8)'}-turn budget, "
                f"{_ci(t, 2, bounds=UNIT)} ({t['all_fail']} all wrong, {t['all_pass']} all right; mean success "
                f"{_f(t['mean_success'], 3)})."
                for t in res.get("pilot_tried", [])
            )
        )
    for arm in group_arms:
        degs = [
            (e, res["diagnostics"][f"{e}|{arm}"]) for e in cfg["envs"] if f"{e}|{arm}" in res["diagnostics"]
        ]
        degs = [(e, x) for e, x in degs if _finite(x["frac_degenerate_samples"]["mean"])]
        if not degs:
            continue

        def first(x: dict[str, Any]) -> str:
            if cfg.get("round", 1) == 2 and x.get("frac_degenerate_first_step"):
                return f"first step {_ci(x['frac_degenerate_first_step'], 2, bounds=UNIT)}; "
            return ""

        parts = ", ".join(
            f"{_short(e)} {first(x)}{_f(x['frac_degenerate_samples_first_quarter']['mean'], 2)} → "
            f"{_f(x['frac_degenerate_samples_last_quarter']['mean'], 2)} "
            f"(training mean {_ci(x['frac_degenerate_samples'], 2, bounds=UNIT)}, "
            f"{where(x['frac_degenerate_samples']['mean'])} the paper's range)"
            for e, x in degs
        )
        out.append(
            f"- **{_label(arm)} samples in degenerate groups** (first quarter → last quarter of training): {parts}. "
            f"Paper: about {lo_:.0%} rising to over {hi_:.0%}."
        )
    target = paper.get("variance_ratio", 0.5)
    for ref in refs:
        vr = [
            (e, res["variance_ratio_vs_no_baseline"][f"{e}|{ref}"])
            for e in cfg["envs"]
            if f"{e}|{ref}" in res["variance_ratio_vs_no_baseline"]
            and _finite(res["variance_ratio_vs_no_baseline"][f"{e}|{ref}"]["est"])
        ]
        if vr:
            parts = ", ".join(f"{_short(e)} {_ci(c, 2)}" for e, c in vr)
            out.append(
                f"- **Advantage variance, {_label(ref)} ÷ no-baseline (raw reward)**: {parts}. Paper: about {target} "
                "(the baseline roughly halves it). Below 1 means the tracker baseline reduces variance."
            )
    for ref in refs:
        nz = [
            (e, res["diagnostics"][f"{e}|{ref}"]) for e in cfg["envs"] if f"{e}|{ref}" in res["diagnostics"]
        ]
        nz = [(e, x) for e, x in nz if _finite(x["frac_near_zero_0_02"]["mean"])]
        if nz:
            parts = ", ".join(
                f"{_short(e)} {_f(x['frac_near_zero_1e4']['mean'], 3)} / {_f(x['frac_near_zero_0_02']['mean'], 3)}"
                for e, x in nz
            )
            out.append(
                f"- **{_label(ref)} near-zero advantages** (|r − v̂| < 1e-4 / < 0.02, fraction of samples): {parts}. "
                "GRPO wastes its degenerate groups entirely; SPO's near-zero share is the comparable waste."
            )
    return out


# ---- SPO's prioritised sampling ----------------------------------------------------------------------


def sampler_weight(values: np.ndarray, eps: float) -> np.ndarray:
    """SPO's sampling probabilities over prompts: (sqrt(v̂(1 − v̂)) + ε), normalised (γ = 0)."""
    w = np.sqrt(np.clip(values * (1.0 - values), 0.0, None)) + eps
    return w / w.sum()


def inclusion_probabilities(weights: np.ndarray, n: int, draws: int = 2000, seed: int = 0) -> np.ndarray:
    """P(prompt in a batch of n drawn without replacement with these weights), by simulation.

    The sampler's own scheme (Efraimidis–Spirakis: the n smallest E/w, E ~ Exp(1)), from a seeded
    generator. With replacement or n ≥ len(weights) it is n·w/Σw capped at 1.
    """
    w = np.asarray(weights, dtype=float)
    if n >= len(w):
        return np.ones_like(w)
    rng = np.random.default_rng(seed)
    keys = rng.exponential(size=(draws, len(w))) / w
    chosen = np.argpartition(keys, n - 1, axis=1)[:, :n]
    counts = np.bincount(chosen.ravel(), minlength=len(w))
    return counts / draws


def spo_sampling_points(run: Run) -> list[dict[str, Any]]:
    """Per prompt and checkpoint window: the tracker value at the window's start, the sampler's
    probability from it, and the share of the window's draws that went to the prompt.

    Tracker values come from the offline pass (step 0) and the checkpoints (`state.pt`, every
    `checkpoint_every` steps); draws from `rollouts.jsonl` (the steps after that state, up to the next).
    """
    import torch

    algo = run.config.get("algo", {})
    eps = float(algo.get("sampler_eps", 0.05))
    states: list[tuple[int, dict[str, float]]] = []
    off = (run.summary or {}).get("offline_init") or {}
    if off.get("path") and Path(off["path"]).is_file():
        c = float(algo.get("init_smoothing", 0.5))
        rewards = json.loads(Path(off["path"]).read_text())["rewards"]
        states.append((0, {p: (float(np.sum(v)) + c) / (len(v) + 2 * c) for p, v in rewards.items()}))
    for ck in sorted((run.path / "checkpoints").glob("step_*")):
        if not (ck / "state.pt").is_file():
            continue
        st = torch.load(ck / "state.pt", map_location="cpu", weights_only=False)
        tr = st["algorithm"]["tracker"]
        a, b = np.asarray(tr["alpha"], dtype=float), np.asarray(tr["beta"], dtype=float)
        states.append((int(st["step"]), dict(zip(tr["prompt_ids"], (a / (a + b)).tolist(), strict=True))))
    draws: dict[int, dict[str, int]] = {}
    path = run.path / "rollouts.jsonl"
    if path.is_file():
        for line in path.read_text().splitlines():
            r = json.loads(line)
            d = draws.setdefault(int(r["step"]), {})
            d[r["prompt_id"]] = d.get(r["prompt_id"], 0) + 1
    points: list[dict[str, Any]] = []
    if not states:
        return points
    for (s0, vals), (s1, _) in zip(states, [*states[1:], (max(draws, default=0), {})], strict=True):
        window = [draws.get(s, {}) for s in range(s0 + 1, s1 + 1)]
        total = sum(sum(w.values()) for w in window)
        if not total or not vals:
            continue
        pids = sorted(vals)
        probs = sampler_weight(np.array([vals[p] for p in pids]), eps)
        incl = inclusion_probabilities(probs, run.batch_size) if run.batch_size else probs
        per_step = run.batch_size or 1
        for p, v, q, inc in zip(pids, (vals[p] for p in pids), probs, incl, strict=True):
            n = sum(w.get(p, 0) for w in window)
            points.append(
                {
                    "step": s0,
                    "prompt": p,
                    "value": v,
                    "weight": float(q),
                    "expected_share": float(inc) / per_step,
                    "share": n / total,
                }
            )
    return points


# ---- plots -----------------------------------------------------------------------------------------


def _band(
    xs: list[np.ndarray], ys: list[np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mean and 95% t-band across seeds at the steps all seeds share."""
    common = sorted(set.intersection(*(set(x.tolist()) for x in xs))) if xs else []
    if not common:
        return (np.array([]),) * 4  # type: ignore[return-value]
    mat = np.array(
        [
            [dict(zip(x.tolist(), y.tolist(), strict=True))[s] for s in common]
            for x, y in zip(xs, ys, strict=True)
        ]
    )
    cis = [mean_ci(mat[:, j]) for j in range(mat.shape[1])]
    m = np.array([c["mean"] for c in cis])
    lo = np.array([c["lo"] if _finite(c["lo"]) else c["mean"] for c in cis])
    hi = np.array([c["hi"] if _finite(c["hi"]) else c["mean"] for c in cis])
    return np.asarray(common), m, lo, hi


def _smooth(y: np.ndarray, w: int) -> np.ndarray:
    if w <= 1 or y.size < w:
        return y
    k = np.ones(w) / w
    return np.convolve(np.pad(y, (w - 1, 0), mode="edge"), k, mode="valid")


def make_plots(
    cfg: dict[str, Any], runs: Sequence[Run], res: dict[str, Any], out: Path, smooth: int = 5
) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms, envs = list(cfg["arms"]), list(cfg["envs"])
    done = [r for r in runs if r.finished]
    groups = _group(done)
    st = (res.get("simulated_time") or {}).get("arms", {})
    written: list[Path] = []

    def save(fig: Any, name: str) -> None:
        fig.tight_layout()
        fig.savefig(out / name, dpi=100)
        plt.close(fig)
        written.append(out / name)

    for xkind, name in (("samples", "curves_samples.png"), ("time", "curves_walltime.png")):
        panels = [("reward_mean", "training reward"), ("eval/success", "held-out avg@k")]
        k_eval = next((int(r.config.get("eval", {}).get("k", 0)) for r in done), 0)
        if cfg.get("round", 1) == 2 and k_eval > 1:
            panels += [
                (f"eval/pass@{k_eval}", f"held-out pass@{k_eval}"),
                (f"eval/maj@{k_eval}", f"held-out maj@{k_eval}"),
            ]
        fig, axes = plt.subplots(
            len(envs), len(panels), figsize=(5.5 * len(panels), 3.2 * len(envs)), squeeze=False
        )
        for i, env in enumerate(envs):
            for j, (key, title) in enumerate(panels):
                ax = axes[i, j]
                for arm in arms:
                    rs = groups.get((env, arm), [])
                    if not rs or (xkind == "time" and arm not in st):
                        continue
                    src = [r.train_rows() if j == 0 else r.eval_rows() for r in rs]
                    xs, ys = zip(*(series(s, key) for s in src), strict=True)
                    steps, m, lo, hi = _band(list(xs), list(ys))
                    if not steps.size:
                        continue
                    if j == 0:
                        m, lo, hi = _smooth(m, smooth), _smooth(lo, smooth), _smooth(hi, smooth)
                    samples = steps * rs[0].batch_size
                    if xkind == "samples":
                        x = samples + rs[0].offline_samples
                    else:
                        x = (
                            samples_to_time(
                                samples, rs[0].batch_size, st[arm]["s_per_batch"], st[arm]["offline_s"]
                            )
                            / 3600
                        )
                    c = ARM_COLORS.get(arm)
                    ax.plot(x, m, color=c, marker="o" if j else None, ms=3, label=_label(arm))
                    ax.fill_between(x, lo, hi, color=c, alpha=0.15)
                xl = (
                    "samples (incl. SPO offline-init samples)"
                    if xkind == "samples"
                    else "simulated wall time (h)"
                )
                ax.set(title=f"{_short(env)}: {title}", xlabel=xl, ylim=(-0.02, 1.02))
                ax.grid(alpha=0.3)
                if i == 0 and j == 0:
                    ax.legend(fontsize=8)
        save(fig, name)

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    width = 0.8 / max(len(arms), 1)
    for ax, m in zip(axes, ("avg", "pass", "maj"), strict=True):
        for a_i, arm in enumerate(arms):
            cis = [res["final"][f"{e}|{arm}"][m] for e in envs]
            mean = np.array([c["mean"] for c in cis])
            err = np.array(
                [[c["mean"] - c["lo"], c["hi"] - c["mean"]] if _finite(c["lo"]) else [0, 0] for c in cis]
            ).T
            xpos = np.arange(len(envs)) + a_i * width
            ax.bar(
                xpos,
                mean,
                width,
                yerr=err,
                color=ARM_COLORS.get(arm),
                label=_label(arm),
                capsize=2,
            )
        ax.set_xticks(
            np.arange(len(envs)) + width * (len(arms) - 1) / 2, [_short(e) for e in envs], fontsize=8
        )
        ax.set(title=f"final {m}@k", ylim=(0, 1))
        ax.grid(alpha=0.3, axis="y")
    axes[0].legend(fontsize=7)
    save(fig, "final_scores.png")

    lo_hi = cfg.get("paper", {}).get("degenerate_range", [0.6, 0.8])
    for name, keys, arms_here, ylab in (
        (
            "degenerate.png",
            [("adv/frac_samples_in_degenerate_groups", "-")],
            [a for a in arms if a in res.get("group_arms", ["grpo"])] or ["grpo"],
            "fraction of samples",
        ),
        (
            "near_zero.png",
            [("adv/frac_near_zero_1e4", ":"), ("adv/frac_near_zero_0_02", "-")],
            [a for a in arms if a.startswith("spo")],
            "fraction of samples",
        ),
        ("adv_variance.png", [("adv/raw_variance", "-")], arms, "raw advantage variance"),
    ):
        fig, axes = plt.subplots(1, len(envs), figsize=(4.2 * len(envs), 3.4), squeeze=False)
        for i, env in enumerate(envs):
            ax = axes[0, i]
            if name == "degenerate.png":
                ax.axhspan(lo_hi[0], lo_hi[1], color="orange", alpha=0.15, label="paper: ~60% → 80%")
            for arm in arms_here:
                rs = groups.get((env, arm), [])
                for key, ls in keys:
                    if not rs:
                        continue
                    xs, ys = zip(*(series(r.train_rows(), key) for r in rs), strict=True)
                    steps, m, lo, hi = _band(list(xs), list(ys))
                    if not steps.size:
                        continue
                    x = steps * rs[0].batch_size
                    lab = _label(arm) + (f" {key.split('_')[-1]}" if len(keys) > 1 else "")
                    ax.plot(x, _smooth(m, smooth), ls=ls, color=ARM_COLORS.get(arm), label=lab)
                    ax.fill_between(
                        x, _smooth(lo, smooth), _smooth(hi, smooth), color=ARM_COLORS.get(arm), alpha=0.12
                    )
            ax.set(title=_short(env), xlabel="training samples", ylabel=ylab)
            ax.grid(alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
        save(fig, name)

    cur = res.get("curves")
    if cur and cur.get("points"):
        fig, axes = plt.subplots(2, 3, figsize=(15, 7.4), squeeze=False)
        trl_runs = [r for r in (res.get("trl_runs") or []) if str(r.get("mode", "")).startswith("multi-turn")]
        for j, (m, title) in enumerate((("avg", "avg"), ("pass", "pass"), ("maj", "maj"))):
            for i, xkind in enumerate(("samples", "time")):
                ax = axes[i, j]
                for arm in arms:
                    p = cur["points"].get(arm)
                    if not p:
                        continue
                    full = max(v["n"] for v in p.values())
                    xs = [s for s in sorted(p) if p[s]["n"] == full]  # points every seed has
                    x = np.array(
                        [s if xkind == "samples" else p[s]["time_s"] / 3600 for s in xs], dtype=float
                    )
                    ok = np.isfinite(x)
                    ci = [p[s][m] for s in xs]
                    mean = np.array([c["mean"] for c in ci])
                    lo = np.array([c["lo"] if _finite(c["lo"]) else c["mean"] for c in ci])
                    hi = np.array([c["hi"] if _finite(c["hi"]) else c["mean"] for c in ci])
                    c = ARM_COLORS.get(arm)
                    ax.plot(x[ok], mean[ok], color=c, marker="o", ms=3, label=_label(arm))
                    ax.fill_between(x[ok], lo[ok], hi[ok], color=c, alpha=0.07)
                if xkind == "samples" and trl_runs:
                    t = mean_ci([r["after"][m] for r in trl_runs])
                    err = [[t["mean"] - t["lo"]], [t["hi"] - t["mean"]]] if _finite(t["lo"]) else None
                    ax.errorbar(
                        [trl_runs[0].get("train_samples", 0)], [t["mean"]], yerr=err, color="black",
                        marker="s", ms=5, capsize=3, ls="none", label="TRL GRPO multi-turn (final only)",
                    )  # fmt: skip
                k = next((v.get("k") for v in res["final"].values() if v.get("k")), "k")
                xl = "samples (offline pass included)" if xkind == "samples" else "simulated wall time (h)"
                ax.set(title=f"held-out {title}@{k}", xlabel=xl)
                ax.grid(alpha=0.3)
                if i == 0 and j == 0:
                    ax.legend(fontsize=7)
        fig.suptitle(
            "Held-out scores at each evaluated checkpoint (mean and 95% band over seeds; points every seed has)",
            fontsize=10,
        )
        save(fig, "curves.png")

    spo_arms = [a for a in arms if any(r.arm == a and r.algo == "spo" for r in done)]
    if cfg.get("round", 1) == 2 and spo_arms:
        fig, axes = plt.subplots(1, len(spo_arms), figsize=(5.6 * len(spo_arms), 3.9), squeeze=False)
        edges = np.array([0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0])
        for ax, arm in zip(axes[0], spo_arms, strict=True):
            runs_here = [r for r in done if r.arm == arm]
            pts = [p for r in runs_here for p in spo_sampling_points(r)]
            if not pts:
                continue
            n_prompts = len({p["prompt"] for p in pts})
            last = max(p["step"] for p in pts)
            for part, (lo_s, hi_s), ls in (
                ("first half", (0, last / 2), "-"),
                ("second half", (last / 2 + 1e-9, last), "--"),
            ):
                sel = [p for p in pts if lo_s <= p["step"] <= hi_s]
                xs, obs, exp_ = [], [], []
                for a, b in itertools.pairwise(edges):
                    inb = [p for p in sel if a <= p["value"] < b or (b == 1.0 and p["value"] == 1.0)]
                    if not inb:
                        continue
                    xs.append((a + b) / 2)
                    obs.append(mean_ci([p["share"] * n_prompts for p in inb]))
                    exp_.append(float(np.mean([p["expected_share"] * n_prompts for p in inb])))
                m = np.array([o["mean"] for o in obs])
                err = np.array(
                    [[o["mean"] - o["lo"], o["hi"] - o["mean"]] if _finite(o["lo"]) else [0, 0] for o in obs]
                ).T
                c = "tab:blue" if part == "first half" else "tab:green"
                ax.errorbar(
                    xs, m, yerr=err, color=c, marker="o", ms=4, capsize=3, ls=ls, label=f"draws, {part}"
                )
                ax.plot(xs, exp_, color=c, ls=":", marker="x", label=f"sampler's expectation, {part}")
            ax.axhline(1.0, color="gray", ls=":", lw=1, label="uniform (GRPO)")
            ax.set(
                title=f"{_label(arm)} ({len(runs_here)} seeds)",
                xlabel="tracker value v̂ of the prompt (binned)",
                ylabel="share of draws × prompts",
            )
            ax.grid(alpha=0.3)
            ax.legend(fontsize=6)
        save(fig, "spo_sampling.png")
    return written


# ---- output ----------------------------------------------------------------------------------------


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, float | np.floating):
        return round(float(x), 6) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


def update_readme(readme: Path, body: str, begin: str = README_BEGIN, end: str = README_END) -> bool:
    """Replace the text between the README's generated-section markers; False if the markers are missing."""
    if not readme.is_file():
        return False
    text = readme.read_text()
    pat = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if not pat.search(text):
        return False
    readme.write_text(pat.sub(lambda _: f"{begin}\n\n{body}\n{end}", text))
    return True


def write_report(
    cfg: dict[str, Any],
    jobs: Sequence[Any],
    out: Path,
    *,
    trl_dir: Path,
    update_readme_file: bool = True,
    readme: Path | None = None,
    curves: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Read every run under cfg['run_root'] and write results.json, results.md, the PNGs and README section.

    `curves`: the curves cache's runs (run.py's `CurveCache.load()`): the held-out curves section and
    `curves.png` come from it and from the runs' own before/after evaluations; nothing is evaluated here.

    Round 2 (`cfg["round"] == 2`) writes its own README section (its own markers), so the first round's
    section stays as it is; `readme` defaults to `out/README.md`.
    """
    out.mkdir(parents=True, exist_ok=True)
    _LABELS.clear()
    _LABELS.update(ARM_LABELS)
    _LABELS.update(cfg.get("arm_labels") or {})
    runs = read_runs(Path(cfg["run_root"]))
    main_jobs = [j for j in jobs if getattr(j, "main", True)]
    expected = [(j.env, j.arm, j.seed) for j in main_jobs]
    # Main tables: only the runs of the configured grid, each env with its own model (a run left from
    # other seeds or another model is not mixed in).
    wanted = {(j.model_tag, j.env, j.arm, j.seed) for j in main_jobs}
    main_runs = [r for r in runs if (r.model_tag, r.env, r.arm, r.seed) in wanted]
    arms, envs = list(cfg["arms"]), list(cfg["envs"])
    res = aggregate(main_runs, arms, envs, cfg.get("simulated_time"), cfg.get("reference_arms", ["spo"]))
    if cfg.get("pilot") and (Path(__file__).resolve().parent / cfg["pilot"]).is_file():
        pilot = json.loads((Path(__file__).resolve().parent / cfg["pilot"]).read_text())
        res["pilot"] = pilot_degenerate_share(pilot, (cfg.get("common") or {}).get("env.train_prompts"))
        res["pilot_tried"] = [
            pilot_degenerate_share(
                json.loads((Path(__file__).resolve().parent / f).read_text()),
                (cfg.get("common") or {}).get("env.train_prompts"),
            )
            for f in cfg.get("pilot_tried") or []
            if (Path(__file__).resolve().parent / f).is_file()
        ]
    others: dict[str, dict[str, Any]] = {}
    rest = [r for r in runs if (r.model_tag, r.env, r.arm, r.seed) not in wanted]
    for tag in sorted({r.model_tag for r in rest}):
        rs = [r for r in rest if r.model_tag == tag]
        others[tag] = aggregate(rs, sorted({r.arm for r in rs}, key=arms.index), envs, None)
    trl = read_trl(trl_dir)
    cur = aggregate_curves(cfg, main_runs, res, curves)
    if cur is not None:
        res["curves"] = cur
    md = render_markdown(cfg, res, main_runs, expected, trl, others)
    (out / "results.md").write_text(f"# Learning study results\n\n{md}")
    if any(r.finished for r in main_runs):
        make_plots(cfg, main_runs, {**res, "trl_runs": trl["runs"]}, out)
    repo = Path(__file__).resolve().parents[2]

    def rel(x: Any) -> str:
        """A path relative to the repository when it lies inside it (no machine paths in results)."""
        p = Path(str(x))
        return str(p.relative_to(repo)) if p.is_absolute() and p.is_relative_to(repo) else str(x)

    payload = {
        "config": {k: (rel(v) if k == "run_root" else v) for k, v in cfg.items()},
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        "runs": [
            {
                "model": r.model_tag,
                "env": r.env,
                "arm": r.arm,
                "seed": r.seed,
                "finished": r.finished,
                "path": rel(r.path),
            }
            for r in runs
        ],
        "results": res,
        "other_models": others,
        "trl": trl,
    }
    (out / "results.json").write_text(json.dumps(_jsonable(payload), indent=1))
    if update_readme_file:
        begin, end = README_MARKERS[int(cfg.get("round", 1))]
        img = "" if readme is None or readme.parent == out else f"{out.relative_to(readme.parent)}/"
        body = md if not img else render_markdown(cfg, res, main_runs, expected, trl, others, img_prefix=img)
        update_readme(readme or out / "README.md", body, begin, end)
    return payload
