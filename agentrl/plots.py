"""PNG plots of runs, made from `metrics.jsonl` alone, so any finished or killed run can be plotted.

`plot_run` writes one run's panels; `plot_runs` overlays several runs on the same axes
(`agentrl plot runs/A runs/B`). Every run gets the common panels; an algorithm adds its own
(`Algorithm.panels`: SPO's tracker, GRPO's degenerate groups), and a panel whose metrics a run
never logged is skipped, so no GRPO run shows tracker plots.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from agentrl.runlog import read_metrics

Panel = tuple[str, str, tuple[str, ...]]  # (file name, y label, metric keys)

COMMON_PANELS: tuple[Panel, ...] = (
    ("reward.png", "reward / success", ("reward_mean", "eval/success")),
    ("kl.png", "KL(before ‖ after) per update", ("learner/kl",)),
    ("entropy.png", "entropy of sampled tokens", ("learner/entropy",)),
    ("loss.png", "PPO-clip loss", ("learner/loss",)),
    ("clip_frac.png", "clipped token share", ("learner/clip_frac",)),
    ("grad_norm.png", "grad norm (before clipping)", ("learner/grad_norm",)),
    ("length.png", "model tokens / turns per episode", ("tokens/model_mean", "episode/turns_mean")),
    ("failures.png", "share of episodes", ("episode/truncated_frac", "episode/tool_error_frac")),
    ("throughput.png", "trajectories/s", ("rollout/trajectories_per_s",)),
    ("step_time.png", "seconds", ("time/step_s", "time/learner_s", "time/sync_s")),
)


def _series(rows: Sequence[dict[str, Any]], key: str) -> tuple[np.ndarray, np.ndarray]:
    pts = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), int | float)]
    if not pts:
        return np.array([]), np.array([])
    x, y = zip(*pts, strict=True)
    return np.asarray(x, float), np.asarray(y, float)


def _wilson(p: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson interval of a success rate p over n samples."""
    if n <= 0:
        return p, p
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return c - h, c + h


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_runs(
    run_dirs: Sequence[str | Path],
    out: str | Path,
    panels: Sequence[Panel] = (),
    labels: Sequence[str] | None = None,
) -> list[Path]:
    """Overlay runs on the same axes, one PNG per panel that any run has data for; returns the paths."""
    plt = _pyplot()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    runs = [(Path(d), read_metrics(Path(d) / "metrics.jsonl")) for d in run_dirs]
    names = list(labels) if labels else [d.name for d, _ in runs]
    written: list[Path] = []
    styles = ("-", "--", ":", "-.")
    for fname, ylabel, keys in (*COMMON_PANELS, *panels):
        fig, ax = plt.subplots(figsize=(6.4, 4))
        drawn = False
        for i, ((_, rows), name) in enumerate(zip(runs, names, strict=True)):
            color = f"C{i % 10}"
            for j, key in enumerate(keys):
                x, y = _series(rows, key)
                if not len(x):
                    continue
                drawn = True
                label = key if len(runs) == 1 else f"{name}: {key}"
                if key == "eval/success":
                    n = [int(r.get("eval/n", 0) or 0) for r in rows if isinstance(r.get(key), int | float)]
                    lo, hi = zip(*(_wilson(p, k) for p, k in zip(y, n, strict=True)), strict=True)
                    ax.errorbar(
                        x,
                        y,
                        yerr=[y - np.array(lo), np.array(hi) - y],
                        marker="o",
                        capsize=3,
                        color=color,
                        ls=styles[j % 4],
                        label=label + " (95% CI)",
                    )
                else:
                    ax.plot(x, y, color=color, ls=styles[j % 4], label=label)
        if not drawn:
            plt.close(fig)
            continue
        ax.set(xlabel="step", ylabel=ylabel, title=fname.removesuffix(".png").replace("_", " "))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = out / fname
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def plot_run(
    run_dir: str | Path, panels: Sequence[Panel] = (), tracker_values: Sequence[float] | None = None
) -> list[Path]:
    """Write a run's plots into `run_dir/plots/` and return their paths. `tracker_values` (v̂ of the
    prompts the run visited) adds a histogram."""
    run_dir = Path(run_dir)
    out = run_dir / "plots"
    written = plot_runs([run_dir], out, panels)
    if tracker_values is not None and len(tracker_values):
        plt = _pyplot()
        fig, ax = plt.subplots(figsize=(6.4, 4))
        ax.hist(np.asarray(tracker_values), bins=20, range=(0, 1), color="tab:green")
        ax.set(xlabel="v̂(x)", ylabel="prompts", title="Tracker values of the visited prompts (end of run)")
        fig.tight_layout()
        path = out / "tracker_values.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written
