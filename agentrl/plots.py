"""PNG plots of a run, made from `metrics.jsonl` alone so any finished or killed run can be plotted."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from agentrl.runlog import read_metrics


def _series(rows: Sequence[dict[str, Any]], key: str) -> tuple[np.ndarray, np.ndarray]:
    pts = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), int | float)]
    if not pts:
        return np.array([]), np.array([])
    x, y = zip(*pts, strict=True)
    return np.asarray(x, float), np.asarray(y, float)


def plot_run(run_dir: str | Path, tracker_values: Sequence[float] | None = None) -> list[Path]:
    """Write the standard plots into `run_dir/plots/` and return their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    rows = read_metrics(run_dir / "metrics.jsonl")
    out = run_dir / "plots"
    out.mkdir(exist_ok=True)
    written: list[Path] = []

    def save(fig: Any, name: str) -> None:
        fig.tight_layout()
        path = out / name
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

    fig, ax = plt.subplots(figsize=(6.4, 4))
    for key, label in (("reward_mean", "train reward (batch mean)"), ("eval/success", "held-out success")):
        x, y = _series(rows, key)
        if len(x):
            ax.plot(x, y, marker="o" if key.startswith("eval") else None, label=label)
    ax.set(xlabel="step", ylabel="reward / success", title="Reward and held-out success", ylim=(-0.02, 1.02))
    ax.grid(alpha=0.3)
    ax.legend()
    save(fig, "reward.png")

    x_rho, rho = _series(rows, "tracker/rho_mean")
    x_n, n_eff = _series(rows, "tracker/n_eff_mean")
    if len(x_rho) or len(x_n):
        fig, ax1 = plt.subplots(figsize=(6.4, 4))
        ax1.plot(x_rho, rho, color="tab:blue", label="ρ (mean over batch)")
        ax1.set(xlabel="step", ylabel="ρ")
        ax2 = ax1.twinx()
        ax2.plot(x_n, n_eff, color="tab:orange", label="N_eff (mean over batch)")
        ax2.set_ylabel("N_eff")
        fig.legend(loc="lower right")
        ax1.set_title("Value tracker: forgetting factor and effective sample size")
        save(fig, "tracker_rho_neff.png")

    if tracker_values is not None and len(tracker_values):
        fig, ax = plt.subplots(figsize=(6.4, 4))
        ax.hist(np.asarray(tracker_values), bins=20, range=(0, 1), color="tab:green")
        ax.set(xlabel="v̂(x)", ylabel="prompts", title="Tracker value distribution (end of run)")
        save(fig, "tracker_values.png")

    x, y = _series(rows, "adv/frac_samples_in_degenerate_groups")
    if len(x) and np.any(y > 0):
        fig, ax = plt.subplots(figsize=(6.4, 4))
        ax.plot(x, y, color="tab:red")
        ax.set(xlabel="step", ylabel="fraction", title="GRPO: samples in degenerate groups", ylim=(0, 1.02))
        ax.grid(alpha=0.3)
        save(fig, "degenerate_groups.png")
    return written
