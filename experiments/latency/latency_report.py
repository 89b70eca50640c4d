"""Turn the study's results into `results.json`, `results.md` and PNG plots (I/O only, no simulation)."""

from __future__ import annotations

import json
import math
import platform
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from latency_study import describe_profile

SWEEPS = [
    ("straggler_p", "straggler probability p (fig5 body/tail)"),
    ("lognormal_sigma", "lognormal σ (median 100 s)"),
    ("pareto_alpha", "Pareto α (scale 60 s, cap 3600 s)"),
    ("group_size", "group size G (B = 48)"),
    ("batch_size", "batch size B (G = 8)"),
    ("overprovision", "over-provisioning factor k"),
]


def _f(x: float | None, nd: int = 2) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x:.{nd}f}"


def _ci(r: dict[str, float] | None) -> str:
    if r is None:
        return "–"
    return f"{_f(r['mean_ratio'])} [{_f(r['mean_ratio_lo'])}, {_f(r['mean_ratio_hi'])}]"


def _ratio_cell(r: dict[str, float]) -> str:
    return (
        f"{_f(r['mean_ratio'])} [{_f(r['mean_ratio_lo'])}, {_f(r['mean_ratio_hi'])}] | "
        f"{_f(r['per_seed_median'])} [{_f(r['per_seed_p5'])}, {_f(r['per_seed_p95'])}]"
    )


def sweep_rows(results: dict[str, Any], sweep: str) -> list[tuple[Any, dict[str, Any]]]:
    rows = [(v["job"]["x"], v) for k, v in results.items() if k.startswith(f"sweep/{sweep}/")]
    return sorted(rows, key=lambda r: float("inf") if r[0] is None else r[0])


def _plot_histogram(rep: dict[str, Any], paper: float, path: Path) -> None:
    x = np.asarray(rep["per_seed_speedup"])
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.hist(x, bins=60, color="#4c72b0", alpha=0.85)
    s = rep["speedup"]
    ax.axvline(paper, color="crimson", lw=2, label=f"paper: {paper}")
    ax.axvline(s["median"], color="black", ls="--", label=f"median {s['median']:.2f}")
    ax.axvline(s["mean"], color="gray", ls=":", label=f"mean {s['mean']:.2f}")
    ax.axvspan(s["p5"], s["p95"], color="orange", alpha=0.12, label=f"5–95% [{s['p5']:.2f}, {s['p95']:.2f}]")
    ax.set_xlabel("GRPO / SPO batch-assembly time (per seed)")
    ax.set_ylabel("seeds")
    ax.set_title(f"paper-fig5 over {rep['seeds']} seeds (real scheduler, virtual time)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_sweeps(results: dict[str, Any], path: Path) -> None:
    fig, axes = plt.subplots(2, 4, figsize=(16, 7))
    panels = [*SWEEPS, ("slots", "generation slots (B = 24, learner 30 s)")]
    for ax, (sweep, label) in zip(axes.flat, panels, strict=False):
        rows = sweep_rows(results, sweep)
        if not rows:
            ax.set_visible(False)
            continue
        xs = np.arange(len(rows))
        keys = ["grpo/spo"] if sweep != "slots" else ["grpo-sync/spo-sync", "grpo-async/spo-async"]
        for j, key in enumerate(keys):
            m = np.array([r["ratios"][key]["mean_ratio"] for _, r in rows])
            p5 = np.array([r["ratios"][key]["per_seed_p5"] for _, r in rows])
            p95 = np.array([r["ratios"][key]["per_seed_p95"] for _, r in rows])
            med = np.array([r["ratios"][key]["per_seed_median"] for _, r in rows])
            off = (j - (len(keys) - 1) / 2) * 0.15
            ax.errorbar(
                xs + off,
                med,
                yerr=[med - p5, p95 - med],
                fmt="o",
                capsize=3,
                label=f"{key} per seed: median, 5–95%",
            )
            ax.plot(xs + off, m, "x", color="black" if j == 0 else "gray", label=f"{key} ratio of means")
        ax.axhline(1.0, color="gray", lw=0.8)
        ax.set_xticks(xs, [str(x) for x, _ in rows])
        ax.set_xlabel(label)
        ax.set_ylabel("speedup of SPO over GRPO")
        if sweep in ("straggler_p", "slots"):
            ax.legend(fontsize=6)
    axes.flat[-1].set_visible(False)
    fig.suptitle(
        "SPO/GRPO batch-time ratio (>1: SPO faster); points: per-seed median with 5–95% bars, x: ratio of means"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_training(results: dict[str, Any], target: float, path: Path) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    for _key, res in sorted((k, v) for k, v in results.items() if k.startswith("training/")):
        name = res["arm"]
        c = res["curve"]
        t = np.array(c["t"]) / 3600
        n = np.array(c["consumed"])
        mp_ = np.array(c["mean_p"])
        axes[0].plot(n, mp_, label=name)
        axes[1].plot(t, mp_, label=name)
        key, what, ls = (
            ("degenerate_by_decile", "degenerate groups", "-")
            if res["algo"] == "grpo"
            else ("near_zero_adv_by_decile", "|A| < 0.02", ":")
        )
        axes[2].plot(np.arange(5, 100, 10), res[key], ls=ls, marker="o", ms=3, label=f"{name}: {what}")
    for ax in axes[:2]:
        ax.axhline(target, color="gray", ls="--", lw=0.8)
        ax.set_ylabel("pool-mean success probability")
    axes[0].set_xlabel("trajectories trained on")
    axes[1].set_xlabel("virtual hours")
    axes[2].set_xlabel("% of training (mean over each tenth of the learner steps)")
    axes[2].set_ylabel("fraction")
    axes[1].legend(fontsize=8)
    axes[2].legend(fontsize=7)
    fig.suptitle(
        "end-to-end simulated training (mean over seeds): learning curves and degenerate-group fraction"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _training_keys(results: dict[str, Any]) -> list[str]:
    """Training arms in a fixed order (GRPO first), whatever order the workers finished in."""
    keys = [k for k in results if k.startswith("training/")]
    return sorted(keys, key=lambda k: (results[k].get("algo") != "grpo", len(k), k))


def render_markdown(cfg: dict[str, Any], results: dict[str, Any], wall: float, quick: bool) -> str:
    L: list[str] = []
    P = cfg["profiles"]
    rep = results["reproduction/fig5"]
    lit = results["reproduction/fig5_literal"]
    paper = cfg["reproduction"]["paper_speedup"]
    L += [
        "# Latency study results" + (" (QUICK smoke run: tiny sizes, not for reading)" if quick else ""),
        "",
        f"Generated by `experiments/latency/run.py` in {wall:.0f} s wall on {platform.machine()} "
        f"({cfg.get('workers', 1)} worker processes). Every number comes from the real `RolloutScheduler` "
        "on the virtual-time loop, except the order-statistics column, which is computed directly from "
        "the sampled durations to check it.",
        "",
        "Speedups are GRPO time per batch / SPO time per batch (>1: SPO assembles batches faster). "
        "`ratio of means [95% CI]` is the long-run throughput ratio with a paired bootstrap interval over seeds; "
        "`per seed median [5%, 95%]` is the distribution of the single-seed ratio.",
        "",
        "## 1. Reproduction of the paper's 4.35x (paper-fig5)",
        "",
        "Latency model, exactly: "
        + f"`{describe_profile(P['fig5'])}`"
        + ", i.e. each trajectory's duration is, independently, Uniform(79, 138) s with probability 7/8 and "
        "Uniform(449, 560) s with probability 1/8 (the straggler mixture fitted to the paper's printed draw; "
        "the fit is derived in `agentrl/rollout/presets.py`). "
        "B = 24, G = 8, 2x over-provisioning for both methods, unlimited slots, sync, one batch per seed.",
        "",
        "| setting | seeds | SPO time s median [5,95] | GRPO time s median [5,95] | speedup median | mean | 5–95% | share of seeds ≥ 4.35 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in (("fitted mixture", rep), ("quoted ranges U(60,135)/U(400,555)", lit)):
        s, a, b = r["speedup"], r["spo_time"], r["grpo_time"]
        L.append(
            f"| {name} | {r['seeds']} | {a['median']:.1f} [{a['p5']:.1f}, {a['p95']:.1f}] | "
            f"{b['median']:.1f} [{b['p5']:.1f}, {b['p95']:.1f}] | {s['median']:.2f} | {s['mean']:.2f} | "
            f"[{s['p5']:.2f}, {s['p95']:.2f}] | {100 * r['share_at_or_above_paper']:.1f}% |"
        )
    L += [
        "",
        f"Paper: {paper} (one draw). The distribution is bimodal: GRPO escapes the stragglers only when at least 3 of "
        f"its 6 groups have no straggler, probability P(Bin(6, (7/8)^8) ≥ 3) = {rep['p_grpo_escapes_stragglers']:.3f}; "
        f"observed share of seeds with GRPO under 300 s: {rep['share_grpo_below_300s']:.3f}. "
        f"Ratio of mean batch times (long-run throughput ratio): {rep['speedup_ratio_of_means']['mean_ratio']:.2f} "
        f"[{rep['speedup_ratio_of_means']['mean_ratio_lo']:.2f}, {rep['speedup_ratio_of_means']['mean_ratio_hi']:.2f}].",
        "",
        "![speedup histogram](speedup_hist.png)",
        "",
        "## 2. Checks",
        "",
    ]
    oc = rep.get("order_check", {})
    if oc:
        L.append(
            f"- Scheduler vs order statistics, seed by seed: SPO's batch time is the 24th smallest of its 48 sampled "
            f"durations and GRPO's the 3rd smallest of its 6 group maxima, recomputed from the same keyed draws "
            f"without the scheduler. {oc['seeds']} seeds: max relative error SPO {oc['max_rel_error_spo']:.1e}, "
            f"GRPO {oc['max_rel_error_grpo']:.1e} (floating-point noise of the virtual clock)."
        )
        if "expected_spo" in oc:
            L.append(
                "- Scheduler vs order statistics, in distribution: E[X(k:n)] = ∫ P(Bin(n, F(x)) < k) dx by numerical "
                f"integration of the exact mixture CDF (F^8 for a group maximum). SPO: expected {oc['expected_spo']:.2f} s, "
                f"simulated mean {oc['sim_mean_spo']:.2f} s (z = {oc['z_spo']:+.2f}); GRPO: expected "
                f"{oc['expected_grpo']:.2f} s, simulated mean {oc['sim_mean_grpo']:.2f} s (z = {oc['z_grpo']:+.2f}); "
                "z is the difference in standard errors of the simulated mean."
            )
    rt = results.get("check/realtime")
    if rt:
        parts = ", ".join(f"{k} {100 * v:.2f}%" for k, v in rt["rel_diff"].items())
        L.append(
            f"- Real asyncio loop vs virtual loop (fig5 scaled 1/{cfg['realtime']['scale']:g}, "
            f"{cfg['realtime']['batches']} batches per arm, {rt['real_wall_s']:.1f} s real): relative differences {parts}; "
            f"max {100 * rt['max_rel_diff']:.2f}% (criterion: within 5%)."
        )
    L += ["", "## 3. Sweeps (paper setting unless stated; SPO/GRPO speedup)", ""]
    for sweep, label in SWEEPS:
        rows = sweep_rows(results, sweep)
        if not rows:
            continue
        L += [
            f"### {label}",
            "",
            "| value | ratio of means [95% CI] | per seed median [5%, 95%] | GRPO barrier-idle share | GRPO slot util | SPO slot util |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for x, r in rows:
            g, s = r["arms"]["grpo"], r["arms"]["spo"]
            L.append(
                f"| {x} | {_ratio_cell(r['ratios']['grpo/spo'])} | {_f(g['barrier_idle_share'].get('mean'))} | "
                f"{_f(g['slot_utilisation'].get('mean'))} | {_f(s['slot_utilisation'].get('mean'))} |"
            )
        L.append("")
    rows = sweep_rows(results, "slots")
    if rows:
        sl = cfg["sweeps"]["slots"]
        L += [
            f"### finite generation slots (B = 24, G = 8; sync arms 2x over-provisioned; async arms staleness ≤ {sl['staleness']} by admission; "
            f"learner step {sl['learner_step_s']:g} s; {sl['batches']} batches x {sl['seeds']} seeds, time per batch "
            f"over batches {sl.get('warmup', 0) + 1}–{sl['batches']})",
            "",
            "| slots | sync: GRPO/SPO | async: GRPO/SPO | SPO sync / SPO async | GRPO sync / SPO async | slot util spo-sync / grpo-sync / spo-async / grpo-async |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for x, r in rows:
            R = r["ratios"]
            u = "/".join(
                _f(r["arms"][a]["slot_utilisation"].get("mean"))
                for a in ("spo-sync", "grpo-sync", "spo-async", "grpo-async")
            )
            L.append(
                f"| {x} | {_f(R['grpo-sync/spo-sync']['mean_ratio'])} [{_f(R['grpo-sync/spo-sync']['mean_ratio_lo'])}, {_f(R['grpo-sync/spo-sync']['mean_ratio_hi'])}] | "
                f"{_f(R['grpo-async/spo-async']['mean_ratio'])} [{_f(R['grpo-async/spo-async']['mean_ratio_lo'])}, {_f(R['grpo-async/spo-async']['mean_ratio_hi'])}] | "
                f"{_f(R['spo-sync/spo-async']['mean_ratio'])} | {_f(R['grpo-sync/spo-async']['mean_ratio'])} | {u} |"
            )
        L.append("")
    L += ["![sweeps](sweeps.png)", "", "## 4. Fair baselines (fig5 profile, B = 24, G = 8)", ""]
    L += [
        "Sync arms: 2x over-provisioned rounds (GRPO variants: at the deadline, `drop` discards unfinished groups and "
        "launches fresh ones, `partial` keeps groups with at least 4 finished members). Async arms: no rounds; "
        "unlimited slots, new work admitted only while every open unit can still land within S policy versions "
        "(admission pacing: slow prompts are never dropped); their time per batch is the steady state, after a "
        "warm-up of the first batches, which come from the start-up burst of (S+1)·B launches and would "
        "flatter them. The drop-stale arm keeps 48 slots busy and drops work that is over-stale at batch time "
        "(`admission: none`).",
        "",
    ]
    for key in sorted((k for k in results if k.startswith("baselines/")), key=lambda k: ("/async/" in k, k)):
        r = results[key]
        j = r["job"]
        steady = f", time per batch over batches {j['warmup'] + 1}–{j['batches']}" if j.get("warmup") else ""
        L += [
            f"### {key.split('/')[1]} arms, learner step {j['learner_step_s']:g} s "
            f"({j['batches']} batches x {j['seeds']} seeds{steady})",
            "",
            "| arm | time/batch s mean | speedup over GRPO (ratio of means [95% CI]) | SPO's speedup over it | consumed/launched | degenerate groups | latency–acceptance rank corr |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for name, a in r["arms"].items():
            R = r["ratios"]
            vs_grpo = R.get(f"grpo/{name}")
            spo_over = R.get(f"{name}/spo")
            L.append(
                f"| {name} | {a['time_per_batch_summary']['mean']:.1f} | {_ci(vs_grpo)} | {_ci(spo_over)} | "
                f"{a['consumed_per_launched']:.2f} | {_f(a['degenerate_fraction'].get('mean'))} | "
                f"{_f(a['bias_rank_correlation'].get('mean'))} |"
            )
        L.append("")
    L += [
        "Rank correlation: Spearman between an ended episode's latency and whether it reached the learner "
        "(over the last 4096 ended episodes; negative = slow episodes are cut; – = every episode reached the learner).",
        "",
        "## 5. End-to-end simulated training (virtual time)",
        "",
    ]
    tr = cfg["training"]
    L += [
        f"Pool of {tr['n_prompts']} prompts, p0 ~ Beta({tr['rewards']['alpha']}, {tr['rewards']['beta']}), "
        f"per-prompt latency multiplier exp({tr['prompt_slowness_sigma']}·z) correlated with hardness (copula ρ = {tr['rewards']['hard_is_slow']}), "
        f"fig5 durations, B = {tr['batch_size']}, G = {tr['group_size']}, learner step {tr['learner_step_s']:g} s, "
        f"{tr['batches']} steps x {tr['seeds']} seeds. Policy: tabular logits with exact policy-gradient steps on the "
        f"real advantages (lr_prompt {tr['lr_prompt']}, lr_shared {tr['lr_shared']}; `latency_training.py`). "
        f"Target: pool-mean success ≥ {tr['target']}. SPO's tracker is initialised offline with n0 = {tr['n0']} samples per prompt "
        f"({tr['n0'] * tr['n_prompts']} samples, shown separately).",
        "",
        "| arm | reached target | trajectories to target (median) | launched to target | virtual hours to target | trajectories/s | final mean p | hard-prompt reach ratio | slow-prompt reach ratio |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for key in _training_keys(results):
        r = results[key]
        init = r["runs"][0]["init_samples"]
        st = r["samples_to_target"]
        L.append(
            f"| {r['arm']} | {r['reached_target']}/{len(r['runs'])} | {_f(st.get('median'), 0)}{f' (+{init} init)' if init else ''} | "
            f"{_f(r['launched_to_target'].get('median'), 0)} | {_f(r['hours_to_target'].get('median'), 1)} | "
            f"{_f(r['trajectories_per_s'].get('median'), 3)} | {_f(r['final_mean_p'].get('median'), 3)} | "
            f"{_f(r['reach_ratio_hard'].get('median'))} | {_f(r['reach_ratio_slow'].get('median'))} |"
        )
    L += [
        "",
        "Reach ratio: (share of learner units from the hardest quartile of prompts, by initial success) / (their share of "
        "sampled units); likewise for the slowest quartile by latency multiplier. 1.00 = the schedule delivers them as often "
        "as it samples them; below 1 = it starves them.",
        "",
    ]
    deg_rows = []
    for key in _training_keys(results):
        r = results[key]
        grp = r["algo"] == "grpo"
        parts = r["degenerate_by_decile" if grp else "near_zero_adv_by_decile"]
        what = "degenerate groups" if grp else "share with abs(A) < 0.02"
        deg_rows.append(f"| {r['arm']} | {what} | " + " | ".join(_f(x) for x in parts) + " |")
    L += [
        f"Degenerate-group fraction over training (GRPO: groups whose {tr['group_size']} rewards are all equal), and, "
        "for SPO, the share of trajectories with a near-zero advantage; mean over each tenth of the learner steps "
        f"and over {tr['seeds']} seeds:",
        "",
        "| arm | metric | " + " | ".join(f"{10 * i}–{10 * i + 10}%" for i in range(10)) + " |",
        "| --- | --- | " + " | ".join("---" for _ in range(10)) + " |",
        *deg_rows,
        "",
        "![training](training.png)",
        "",
        "## 6. Agentic profiles",
        "",
    ]
    for name in ("multiturn_mixture", "multiturn_trace"):
        if f"agentic/{name}/paper" not in results:
            continue
        r = results[f"agentic/{name}/paper"]
        s = results[f"agentic/{name}/slots"]
        L += [
            f"### {name}",
            "",
            f"Profile: `{describe_profile(P[name])}`"
            + (
                " (tool latencies resampled from the shipped **synthetic** trace `traces/tool_calls_synthetic.csv`)"
                if "trace" in name
                else ""
            ),
            "",
        ]
        g, sp = r["arms"]["grpo"], r["arms"]["spo"]
        L += [
            "| comparison | ratio of means [95% CI] | per seed median [5%, 95%] |",
            "| --- | --- | --- |",
            f"| paper setting (B=24, G=8, 2x, unlimited slots), GRPO/SPO | {_ratio_cell(r['ratios']['grpo/spo'])} |",
        ]
        for k in ("grpo-sync/spo-sync", "grpo-async/spo-async", "grpo-sync/spo-async"):
            a = cfg["agentic"]["slots"]
            L.append(
                f"| {a['slots']} slots, B={a['batch']}, learner {a['learner_step_s']:g} s, async staleness ≤ {a['staleness']}: "
                f"{k} | {_ratio_cell(s['ratios'][k])} |"
            )
        L += [
            "",
            f"Mean SPO time per batch {sp['time_per_batch_summary']['mean']:.1f} s, GRPO {g['time_per_batch_summary']['mean']:.1f} s (paper setting).",
            "",
        ]
    return "\n".join(L) + "\n"


def _rounded(x: Any, digits: int = 5) -> Any:
    """Floats to `digits` significant digits, so results.json stays small and diffs stay readable."""
    if isinstance(x, float):
        return float(f"{x:.{digits}g}") if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _rounded(v, digits) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_rounded(v, digits) for v in x]
    return x


def write_outputs(
    out: Path,
    cfg: dict[str, Any],
    raw_cfg: dict[str, Any],
    results: dict[str, Any],
    *,
    wall: float,
    quick: bool,
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    payload = {"config": raw_cfg, "quick": quick, "wall_s": wall, "results": _rounded(results)}
    (out / "results.json").write_text(json.dumps(payload, indent=1, default=str))
    (out / "results.md").write_text(render_markdown(cfg, results, wall, quick))
    _plot_histogram(
        results["reproduction/fig5"], cfg["reproduction"]["paper_speedup"], out / "speedup_hist.png"
    )
    _plot_sweeps(results, out / "sweeps.png")
    _plot_training(results, cfg["training"]["target"], out / "training.png")


__all__ = ["render_markdown", "write_outputs"]
