"""Per-batch scheduler metrics and the pure computations behind them (no asyncio here).

The bias metric answers "whom does this schedule starve?": for every episode that ended, we keep
its latency (elapsed time when it was cut short, a lower bound that still ranks it above the
episodes that beat it) and whether it reached the learner. Acceptance by latency quartile and the
rank correlation between latency and acceptance show, for example, that straggler-dropping or
first-B-of-k·B schedules never train on slow prompts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


@dataclass(slots=True)
class Counts:
    """Where every launched episode is. `launched` equals the sum of all the other fields."""

    launched: int = 0
    running: int = 0
    buffered: int = 0  # finished and trainable, waiting for its group or batch
    consumed: int = 0
    failed: int = 0  # runner raised, or returned a non-trainable status other than timeout
    timed_out: int = 0
    dropped_stale: int = 0
    discarded: int = 0  # stragglers: cut at a group deadline, over-provisioning surplus, undersized groups
    cancelled: int = 0  # still running or buffered when the scheduler shut down

    def accounted(self) -> int:
        return (
            self.running
            + self.buffered
            + self.consumed
            + self.failed
            + self.timed_out
            + self.dropped_stale
            + self.discarded
            + self.cancelled
        )

    def balanced(self) -> bool:
        return self.launched == self.accounted()

    def copy(self) -> Counts:
        return Counts(**asdict(self))


@dataclass(slots=True)
class BiasMetric:
    """How an episode's latency relates to its chance of reaching the learner."""

    n: int = 0
    quartile_edges: list[float] = field(default_factory=list)  # latency quartile boundaries (s)
    acceptance_by_quartile: list[float] = field(default_factory=list)  # fastest quartile first
    rank_correlation: float | None = None  # Spearman(latency, reached); < 0: slow ones are starved


def latency_bias(latencies: Sequence[float] | np.ndarray, reached: Sequence[bool] | np.ndarray) -> BiasMetric:
    """Acceptance rate per latency quartile and Spearman correlation of latency with acceptance.

    `reached` is a flag per episode, or a rate in [0, 1] per prompt (see `prompt_bias`). Runs once
    per batch, so it avoids numpy's slow generic paths (quantile, unique) for small inputs.
    """
    n = len(latencies)
    if n == 0:
        return BiasMetric()
    lat = np.asarray(latencies, dtype=float)
    acc = np.asarray(reached, dtype=float)
    order = np.argsort(lat, kind="stable")
    xs = lat[order]
    h = (n - 1) * np.array([0.25, 0.5, 0.75])  # numpy's default "linear" quantile
    lo = np.floor(h).astype(int)
    hi = np.minimum(lo + 1, n - 1)
    edges = xs[lo] + (h - lo) * (xs[hi] - xs[lo])
    bins = np.searchsorted(edges, lat, side="right")
    per_q = np.bincount(bins, minlength=4)
    hits = np.bincount(bins, weights=acc, minlength=4)
    by_q = [float(hits[q] / per_q[q]) if per_q[q] else math.nan for q in range(4)]
    corr: float | None = None
    if n > 2 and acc.min() != acc.max() and xs[0] != xs[-1]:
        r_lat = _ranks_sorted(xs, order)
        r_acc = _ranks(acc)
        c = float(np.corrcoef(r_lat, r_acc)[0, 1])
        corr = c if math.isfinite(c) else None
    return BiasMetric(n, [float(e) for e in edges], by_q, corr)


def prompt_bias(
    latency_sum: Sequence[float], episodes: Sequence[int], sampled: Sequence[int], reached: Sequence[int]
) -> BiasMetric:
    """The same question per prompt: mean episode latency against the share of its sampled units
    that reached the learner. Prompts with no finished episode are left out."""
    ep = np.asarray(episodes, dtype=float)
    keep = (ep > 0) & (np.asarray(sampled) > 0)
    mean_lat = np.asarray(latency_sum, dtype=float)[keep] / ep[keep]
    rate = np.asarray(reached, dtype=float)[keep] / np.asarray(sampled, dtype=float)[keep]
    return latency_bias(mean_lat, np.minimum(rate, 1.0))


def _ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks (ties share their mean rank), as Spearman's correlation needs."""
    order = np.argsort(x, kind="stable")
    return _ranks_sorted(x[order], order)


def _ranks_sorted(xs: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Average ranks of the original array, given it sorted (`xs`) and the sorting permutation."""
    n = len(xs)
    new = np.empty(n, dtype=bool)
    new[0] = True
    np.not_equal(xs[1:], xs[:-1], out=new[1:])
    start = np.flatnonzero(new)
    end = np.append(start[1:], n)
    avg = (start + end - 1) / 2.0  # mean 0-based rank of each run of ties
    ranks = np.empty(n, dtype=float)
    ranks[order] = avg[np.cumsum(new) - 1]
    return ranks


@dataclass(slots=True)
class BatchMetrics:
    """What it cost to assemble one batch. Times are loop seconds (virtual or real)."""

    index: int
    policy_version: int
    emitted_at: float
    assembly_s: float  # from the learner asking (sync: the round starting) to the batch being ready
    window_s: float  # since the previous batch was emitted (or the scheduler started)
    n_trajectories: int
    n_groups: int
    trajectories_per_s: float  # n_trajectories / window_s
    tokens_per_s: float
    capacity: int  # slots in the denominator: max_concurrency, or peak in-flight when unlimited
    slot_utilisation: float  # busy slot-seconds / available slot-seconds over the window
    goodput_utilisation: float  # slot-seconds of the batch's own trajectories / available
    # idle slot-seconds / available while finished work waits at a barrier: a member for the rest of
    # its group, or (sync) a finished unit for the rest of its round's batch
    barrier_idle_share: float
    degenerate_fraction: float | None  # groups whose rewards are all equal (GRPO zero advantage)
    queue_wait_mean: float  # finish -> handed to the learner
    queue_wait_max: float
    launch_wait_mean: float  # prompt sampled -> episode started (waiting for a free slot)
    staleness: dict[int, int]  # learner version - trajectory version -> count
    reward_mean: float
    counts: Counts
    bias: BiasMetric

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["staleness"] = {str(k): v for k, v in self.staleness.items()}
        return d


def staleness_histogram(now_version: int, versions: Sequence[int]) -> dict[int, int]:
    hist: dict[int, int] = {}
    for v in versions:
        s = now_version - v
        hist[s] = hist.get(s, 0) + 1
    return dict(sorted(hist.items()))


def is_degenerate(rewards: Sequence[float]) -> bool:
    """A group whose rewards are all equal gives every member zero GRPO advantage."""
    return len(rewards) > 0 and max(rewards) == min(rewards)


__all__ = [
    "BatchMetrics",
    "BiasMetric",
    "Counts",
    "is_degenerate",
    "latency_bias",
    "prompt_bias",
    "staleness_histogram",
]
