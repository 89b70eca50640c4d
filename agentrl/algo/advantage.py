"""Advantage estimators over a batch of per-trajectory rewards (spec §3).

- `spo`: `A = r − v̂₋(x)`, then one batch-global normalisation (no per-group statistics).
- `grpo`: `A = (r − mean_G) / (std_G + 1e-6)` within each group; std scaling can be switched off.
- `no_baseline`: `A = r`, batch-normalised (the ablation).
- `rloo`: `A_i = r_i − mean_{j≠i} r_j` within each group (leave-one-out), no std scaling.
- Dr. GRPO is `grpo(..., scale_std=False)`; its other half, a constant loss normaliser, is the
  learner's `constant` aggregation.

`centring="token"` is the SPO++ fix: the token-mean loss weights trajectory i by its token count
L_i, so the advantage is centred and scaled under that measure rather than per trajectory.
Every estimator also returns diagnostics computed on the raw (pre-normalisation) advantages.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

Centring = Literal["trajectory", "token"]
NEAR_ZERO = (1e-4, 0.02)


@dataclass(frozen=True, slots=True)
class AdvantageDiagnostics:
    """What the paper plots: degenerate groups, near-zero advantages, advantage variance.

    Group fields are None when the estimator was given no group ids.
    """

    n: int
    frac_degenerate_groups: float | None
    frac_samples_in_degenerate_groups: float | None
    frac_near_zero_1e4: float
    frac_near_zero_0_02: float
    raw_mean: float
    raw_variance: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class AdvantageResult:
    advantages: np.ndarray
    diagnostics: AdvantageDiagnostics


def _float_array(x: Sequence[float] | np.ndarray, name: str, n: int | None = None) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"{name} has length {arr.shape[0]}, expected {n}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite, got {arr[~np.isfinite(arr)][:5]}")
    return arr


def group_codes(group_ids: Sequence[Any] | np.ndarray) -> np.ndarray:
    """Map arbitrary hashable group ids (ints, prompt-id strings) to dense codes 0..G−1."""
    codes: dict[Any, int] = {}
    return np.asarray([codes.setdefault(g, len(codes)) for g in group_ids], dtype=np.int64)


def _degenerate(rewards: np.ndarray, codes: np.ndarray) -> tuple[float, float, np.ndarray]:
    """Groups whose rewards are all equal (or that have one member) carry no learning signal."""
    g = int(codes.max()) + 1 if codes.size else 0
    lo = np.full(g, np.inf)
    hi = np.full(g, -np.inf)
    np.minimum.at(lo, codes, rewards)
    np.maximum.at(hi, codes, rewards)
    deg_group = lo == hi
    deg_sample = deg_group[codes]
    frac_g = float(deg_group.mean()) if g else 0.0
    frac_s = float(deg_sample.mean()) if codes.size else 0.0
    return frac_g, frac_s, deg_sample


def _diagnostics(raw: np.ndarray, rewards: np.ndarray, group_ids: Any) -> AdvantageDiagnostics:
    n = raw.shape[0]
    frac_g = frac_s = None
    if group_ids is not None:
        codes = group_codes(group_ids)
        if codes.shape[0] != n:
            raise ValueError(f"group ids have length {codes.shape[0]}, expected {n}")
        frac_g, frac_s, _ = _degenerate(rewards, codes)
    absr = np.abs(raw)
    return AdvantageDiagnostics(
        n=n,
        frac_degenerate_groups=frac_g,
        frac_samples_in_degenerate_groups=frac_s,
        frac_near_zero_1e4=float(np.mean(absr < NEAR_ZERO[0])) if n else 0.0,
        frac_near_zero_0_02=float(np.mean(absr < NEAR_ZERO[1])) if n else 0.0,
        raw_mean=float(raw.mean()) if n else 0.0,
        raw_variance=float(raw.var()) if n else 0.0,
    )


def normalise(
    adv: np.ndarray,
    *,
    centring: Centring = "trajectory",
    token_counts: Sequence[int] | np.ndarray | None = None,
    eps: float = 1e-8,
    ddof: int = 0,
) -> np.ndarray:
    """`(A − mean) / (std + eps)` over the batch; `ddof=0` the population std, `ddof=1` the unbiased
    one (the reference recipe's; the two differ by a factor sqrt(n/(n−1)), 0.4 % at n = 128).

    With `centring="token"` the mean and std are weighted by each trajectory's token count, the
    measure a token-mean loss actually averages over (SPO++).
    """
    if adv.size == 0:
        return adv.copy()
    if ddof not in (0, 1):
        raise ValueError(f"ddof must be 0 or 1, got {ddof}")
    if centring == "trajectory":
        mean, std = adv.mean(), (adv.std(ddof=ddof) if adv.size > ddof else 0.0)
    elif centring == "token":
        if token_counts is None:
            raise ValueError("centring='token' needs token_counts (model tokens per trajectory)")
        w = _float_array(token_counts, "token_counts", adv.shape[0])
        if np.any(w < 0) or w.sum() <= 0:
            raise ValueError("token_counts must be >= 0 with a positive sum")
        w = w / w.sum()
        mean = float(np.dot(w, adv))
        var = float(np.dot(w, (adv - mean) ** 2))
        if ddof:  # reliability weights' unbiased variance: divide by 1 − Σw² instead of 1
            denom = 1.0 - float(np.dot(w, w))
            var = var / denom if denom > 0 else 0.0
        std = float(np.sqrt(var))
    else:
        raise ValueError(f"centring must be 'trajectory' or 'token', got {centring!r}")
    return (adv - mean) / (std + eps)


def spo(
    rewards: Sequence[float] | np.ndarray,
    baselines: Sequence[float] | np.ndarray,
    *,
    normalize: bool = True,
    centring: Centring = "trajectory",
    token_counts: Sequence[int] | np.ndarray | None = None,
    group_ids: Sequence[Any] | None = None,
    eps: float = 1e-8,
    ddof: int = 0,
) -> AdvantageResult:
    """SPO: `A = r − v̂₋` with `v̂₋` the tracker value before this reward's update, then batch-normalised.

    `group_ids` (for example prompt ids) are optional and only feed the degenerate-group diagnostics.
    """
    r = _float_array(rewards, "rewards")
    b = _float_array(baselines, "baselines", r.shape[0])
    raw = r - b
    adv = (
        normalise(raw, centring=centring, token_counts=token_counts, eps=eps, ddof=ddof)
        if normalize
        else raw.copy()
    )
    return AdvantageResult(adv, _diagnostics(raw, r, group_ids))


def no_baseline(
    rewards: Sequence[float] | np.ndarray,
    *,
    normalize: bool = True,
    centring: Centring = "trajectory",
    token_counts: Sequence[int] | np.ndarray | None = None,
    group_ids: Sequence[Any] | None = None,
    eps: float = 1e-8,
    ddof: int = 0,
) -> AdvantageResult:
    """Ablation: `A = r`, then batch-normalised (the normalisation's mean is the only baseline)."""
    r = _float_array(rewards, "rewards")
    adv = (
        normalise(r, centring=centring, token_counts=token_counts, eps=eps, ddof=ddof)
        if normalize
        else r.copy()
    )
    return AdvantageResult(adv, _diagnostics(r, r, group_ids))


def _grouped(
    rewards: Sequence[float] | np.ndarray, group_ids: Sequence[Any] | np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rewards, dense group codes, and each group's size and reward sum (indexed by code)."""
    r = _float_array(rewards, "rewards")
    codes = group_codes(group_ids)
    if codes.shape[0] != r.shape[0]:
        raise ValueError(f"group_ids has length {codes.shape[0]}, expected {r.shape[0]}")
    g = int(codes.max()) + 1 if codes.size else 0
    size = np.bincount(codes, minlength=g).astype(np.float64)
    return r, codes, size, np.bincount(codes, weights=r, minlength=g)


def grpo(
    rewards: Sequence[float] | np.ndarray,
    group_ids: Sequence[Any] | np.ndarray,
    *,
    scale_std: bool = True,
    eps: float = 1e-6,
    ddof: int = 1,
) -> AdvantageResult:
    """GRPO: `A = (r − mean_G) / (std_G + eps)`; degenerate groups (all rewards equal) get exactly 0.

    `ddof=1` (the unbiased std) matches the common GRPO implementations; a one-member group is
    degenerate. `scale_std=False` gives the Dr. GRPO variant `A = r − mean_G`.
    The diagnostics' raw advantages are `r − mean_G`, before std scaling.
    """
    r, codes, size, total = _grouped(rewards, group_ids)
    if r.size == 0:
        return AdvantageResult(r.copy(), _diagnostics(r, r, group_ids))
    g = size.shape[0]
    centred = r - (total / size)[codes]
    _, _, deg = _degenerate(r, codes)
    centred[deg] = 0.0  # exact zero, not float noise
    if scale_std:
        ss = np.bincount(codes, weights=centred**2, minlength=g)
        denom = np.maximum(size - ddof, 1.0)
        std = np.sqrt(ss / denom)
        adv = centred / (std[codes] + eps)
        adv[deg] = 0.0
    else:
        adv = centred.copy()
    return AdvantageResult(adv, _diagnostics(centred, r, group_ids))


def rloo(rewards: Sequence[float] | np.ndarray, group_ids: Sequence[Any] | np.ndarray) -> AdvantageResult:
    """RLOO (Kool et al., 2019; Ahmadian et al., 2024): `A_i = r_i − (Σ_{j≠i} r_j)/(G_i − 1)`.

    Equal to `G/(G−1) · (r_i − mean_G)`; no std scaling. A one-member or degenerate group gets
    exactly 0. The diagnostics' raw advantages are these leave-one-out advantages.
    """
    r, codes, size, total = _grouped(rewards, group_ids)
    if r.size == 0:
        return AdvantageResult(r.copy(), _diagnostics(r, r, group_ids))
    others = size[codes] - 1.0
    adv = np.where(others > 0, r - (total[codes] - r) / np.maximum(others, 1.0), 0.0)
    _, _, deg = _degenerate(r, codes)
    adv[deg] = 0.0
    return AdvantageResult(adv, _diagnostics(adv, r, group_ids))


ESTIMATORS = ("spo", "grpo", "no_baseline", "rloo")


def compute_advantages(
    estimator: str,
    rewards: Sequence[float] | np.ndarray,
    *,
    baselines: Sequence[float] | np.ndarray | None = None,
    group_ids: Sequence[Any] | None = None,
    **kwargs: Any,
) -> AdvantageResult:
    """Dispatch by name, as configuration files name the estimator."""
    if estimator == "spo":
        if baselines is None:
            raise ValueError("the spo estimator needs baselines (ValueTracker values before update)")
        return spo(rewards, baselines, group_ids=group_ids, **kwargs)
    if estimator == "grpo":
        if group_ids is None:
            raise ValueError("the grpo estimator needs group_ids")
        return grpo(rewards, group_ids, **kwargs)
    if estimator == "no_baseline":
        return no_baseline(rewards, group_ids=group_ids, **kwargs)
    if estimator == "rloo":
        if group_ids is None:
            raise ValueError("the rloo estimator needs group_ids")
        return rloo(rewards, group_ids)
    raise ValueError(f"unknown advantage estimator {estimator!r}; expected one of {ESTIMATORS}")


# Unambiguous names for re-export at package level (`agentrl.spo_advantages`, ...).
spo_advantages = spo
grpo_advantages = grpo
no_baseline_advantages = no_baseline
rloo_advantages = rloo
