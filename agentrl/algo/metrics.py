"""Evaluation metrics the paper reports: avg@k, unbiased pass@k, maj@k.

Pure functions over per-sample correctness flags and extracted answers, so evaluation code only
has to collect samples.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np


def pass_at_k(n: int | np.ndarray, c: int | np.ndarray, k: int) -> float | np.ndarray:
    """Unbiased pass@k `1 − C(n−c, k)/C(n, k)` from n samples with c correct (Chen et al., 2021).

    Computed as a stable product, so n in the thousands does not overflow. Vectorised over n, c.
    """
    n_arr = np.asarray(n, dtype=np.int64)
    c_arr = np.asarray(c, dtype=np.int64)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if np.any(c_arr < 0) or np.any(c_arr > n_arr):
        raise ValueError("need 0 <= c <= n")
    if np.any(n_arr < k):
        raise ValueError(f"need n >= k samples, got n={n_arr.min()} < k={k}")
    n_b, c_b = np.broadcast_arrays(n_arr, c_arr)
    out = np.empty(n_b.shape, dtype=np.float64)
    for idx in np.ndindex(n_b.shape):
        nn, cc = int(n_b[idx]), int(c_b[idx])
        if nn - cc < k:
            out[idx] = 1.0
        else:
            # C(n−c, k)/C(n, k) = Π_{i=n−c+1}^{n} (1 − k/i)
            out[idx] = 1.0 - float(np.prod(1.0 - k / np.arange(nn - cc + 1, nn + 1, dtype=np.float64)))
    return float(out) if out.ndim == 0 else out


def avg_at_k(correct: Sequence[float] | np.ndarray) -> float:
    """Mean correctness over the k samples of one problem (rewards in [0, 1] allowed)."""
    arr = np.asarray(correct, dtype=np.float64)
    if arr.size == 0:
        raise ValueError("avg@k needs at least one sample")
    return float(arr.mean())


def majority_vote(answers: Sequence[Hashable | None]) -> Hashable | None:
    """Most frequent non-None answer; ties go to the answer that appeared first (deterministic)."""
    counts: dict[Hashable, int] = {}
    first: dict[Hashable, int] = {}
    for i, a in enumerate(answers):
        if a is None:
            continue
        counts[a] = counts.get(a, 0) + 1
        first.setdefault(a, i)
    if not counts:
        return None
    return min(counts, key=lambda a: (-counts[a], first[a]))


def maj_at_k(
    answers: Sequence[Hashable | None], correct: Sequence[bool | float], k: int | None = None
) -> float:
    """1.0 if the majority-voted answer among the first k samples is correct, else 0.0.

    `correct[i]` says whether `answers[i]` is right; None answers (nothing extracted) do not vote.
    """
    if len(answers) != len(correct):
        raise ValueError(f"got {len(answers)} answers but {len(correct)} correctness flags")
    if k is not None:
        if k < 1 or k > len(answers):
            raise ValueError(f"k must be in [1, {len(answers)}], got {k}")
        answers, correct = answers[:k], correct[:k]
    winner = majority_vote(answers)
    if winner is None:
        return 0.0
    i = next(i for i, a in enumerate(answers) if a == winner)
    return float(bool(correct[i]))
