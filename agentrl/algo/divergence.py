"""Estimators of D(x), the divergence between the policy acting now and the one that last acted on x.

- `odometer` (default): the learner measures each update's mean per-token KL on its own batch;
  `KLOdometer` sums them per policy version, and `D(x) = |reading(v_now) − reading(v_last_visit)|`.
  No extra forward pass; the tracker stores one float per prompt.
- `replay` (the reference recipe): keep the last response per prompt and re-score it under the
  current policy; `D(x)` is the mean absolute per-token log-prob change. One extra forward pass per
  sample and one stored response per prompt. The scorer is injected, so this stays testable.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from agentrl.algo.value_tracker import ValueTracker
from agentrl.types import Trajectory

ScoreFn = Callable[[Sequence[Trajectory]], Sequence[np.ndarray]]
"""Returns, per trajectory, the current policy's log-prob of every token (aligned with token_ids)."""


class KLOdometer:
    """Cumulative per-token KL across policy updates, indexed by the policy version each produced."""

    def __init__(self) -> None:
        self._versions: list[int] = [0]
        self._readings: list[float] = [0.0]

    @property
    def total(self) -> float:
        return self._readings[-1]

    @property
    def version(self) -> int:
        return self._versions[-1]

    def record(self, kl: float, version: int | None = None) -> float:
        """Add the KL of the update that produced `version` (default: the next version).

        Call it once per update that changed the policy (`UpdateStats.optimizer_steps > 0`), with
        `UpdateStats.kl` and `UpdateStats.version`.

        Negative estimates (possible with some KL estimators) count as 0: the odometer never runs back.
        """
        if not math.isfinite(kl):
            raise ValueError(f"KL must be finite, got {kl}")
        v = self.version + 1 if version is None else int(version)
        if v <= self.version:
            raise ValueError(f"odometer versions must increase: got {v} after {self.version}")
        self._versions.append(v)
        self._readings.append(self.total + max(float(kl), 0.0))
        return self.total

    def reading(self, version: int | None = None) -> float:
        """Odometer at `version` (the latest recorded version <= it); the current total if None."""
        if version is None:
            return self.total
        i = bisect.bisect_right(self._versions, int(version)) - 1
        return self._readings[max(i, 0)]

    def readings(self, versions: Sequence[int] | np.ndarray | None, n: int | None = None) -> np.ndarray:
        if versions is None:
            if n is None:
                raise ValueError("pass versions or n")
            return np.full(n, self.total)
        return np.asarray([self.reading(int(v)) for v in versions], dtype=np.float64)

    def state_dict(self) -> dict[str, Any]:
        return {"versions": list(self._versions), "readings": list(self._readings)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        versions, readings = list(state["versions"]), list(state["readings"])
        if len(versions) != len(readings) or not versions:
            raise ValueError("odometer state must hold equally long, non-empty versions and readings")
        if any(b <= a for a, b in itertools.pairwise(versions)):
            raise ValueError("odometer state versions must increase")
        self._versions = [int(v) for v in versions]
        self._readings = [float(r) for r in readings]


class OdometerDivergence:
    """D(x) from the KL odometer and the reading the tracker stored at x's last visit."""

    name = "odometer"

    def __init__(self, tracker: ValueTracker, odometer: KLOdometer | None = None, scale: float = 1.0) -> None:
        if not (scale > 0 and math.isfinite(scale)):
            raise ValueError(f"scale must be a finite number > 0, got {scale}")
        self.tracker = tracker
        self.odometer = odometer if odometer is not None else KLOdometer()
        self.scale = float(scale)  # D = scale · summed KL: puts D on the replay estimator's scale

    def estimate(
        self, prompt_ids: Sequence[str], policy_versions: Sequence[int] | np.ndarray | None = None
    ) -> np.ndarray:
        now = self.scale * self.odometer.readings(policy_versions, len(prompt_ids))
        return np.abs(now - self.tracker.last_odometer(prompt_ids))

    def update_tracker(
        self,
        prompt_ids: Sequence[str],
        rewards: Sequence[float] | np.ndarray,
        policy_versions: Sequence[int] | np.ndarray | None = None,
        trajectories: Sequence[Trajectory] | None = None,
    ) -> np.ndarray:
        """Fold a batch into the tracker; returns the baselines v̂₋. Repeats within the batch see D≈0."""
        del trajectories
        readings = self.scale * self.odometer.readings(policy_versions, len(prompt_ids))
        self.last_estimate = np.abs(readings - self.tracker.last_odometer(prompt_ids))
        return self.tracker.update_batch(
            prompt_ids, rewards, None, odometer=readings, policy_versions=policy_versions
        )

    def state_dict(self) -> dict[str, Any]:
        return {"name": self.name, "odometer": self.odometer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.odometer.load_state_dict(state["odometer"])


def mean_abs_logprob_change(old: np.ndarray, new: np.ndarray, mask: np.ndarray) -> float:
    """Mean |log π_new − log π_old| over the masked-in (model) tokens; 0.0 if there are none."""
    old, new, m = (np.asarray(a, dtype=np.float64) for a in (old, new, mask))
    if not old.shape == new.shape == m.shape:
        raise ValueError(f"shapes differ: old {old.shape}, new {new.shape}, mask {m.shape}")
    k = m > 0
    if not k.any():
        return 0.0
    return float(np.mean(np.abs(new[k] - old[k])))


def response_mask(t: Trajectory) -> list[int]:
    """1 on every token after the first prompt (model, tool and environment tokens), 0 before."""
    start = max(int(t.prompt_len), 1)
    return [0] * min(start, len(t.token_ids)) + [1] * max(len(t.token_ids) - start, 0)


class ReplayDivergence:
    """Re-score each prompt's last response under the current policy: D(x) = mean |Δ log p|.

    Stores the response's token ids, a mask and reference log-probs. The options cover agentrl's
    default and the reference recipe's way:

    - `mask`: `"model"` (tokens the model sampled) or `"response"` (everything after the prompt,
      tool tokens included, as the recipe does);
    - `reference`: `"sampling"` (the log-probs the response was sampled with, stored when the batch
      is folded in) or `"rescored"` (the trainer's own re-score right after the update that used
      the response, stored by `remember_rescored`; both sides of D then come from the trainer);
    - `unseen`: D for a prompt with no stored response: inf (ρ = ρ_min, no evidence that the old
      estimate holds) or 0 (ρ = ρ_max, the recipe's first visit).

    `score_fn` must score at the temperature the responses were sampled at.
    """

    name = "replay"

    def __init__(
        self,
        tracker: ValueTracker,
        score_fn: ScoreFn,
        unseen: float = math.inf,
        *,
        mask: str = "model",
        reference: str = "sampling",
    ) -> None:
        if not (unseen >= 0):
            raise ValueError(f"unseen must be >= 0, got {unseen}")
        if mask not in ("model", "response"):
            raise ValueError(f"mask must be 'model' or 'response', got {mask!r}")
        if reference not in ("sampling", "rescored"):
            raise ValueError(f"reference must be 'sampling' or 'rescored', got {reference!r}")
        self.tracker = tracker
        self.score_fn = score_fn
        self.unseen = float(unseen)
        self.mask = mask
        self.reference = reference
        self._last: dict[str, Trajectory] = {}

    def _store(self, t: Trajectory, logprobs: Sequence[float]) -> None:
        self._last[t.prompt_id] = Trajectory(
            prompt_id=t.prompt_id,
            token_ids=list(t.token_ids),
            loss_mask=list(t.loss_mask) if self.mask == "model" else response_mask(t),
            logprobs=[float(x) for x in logprobs],
            policy_version=t.policy_version,
            prompt_len=t.prompt_len,
        )

    def remember(self, trajectories: Sequence[Trajectory]) -> None:
        """Store each trajectory with its sampling log-probs as the reference."""
        for t in trajectories:
            self._store(t, t.logprobs)

    def remember_rescored(self, trajectories: Sequence[Trajectory]) -> None:
        """Store each trajectory with the current policy's re-score as the reference (call it right
        after the update that used them)."""
        last: dict[str, Trajectory] = {t.prompt_id: t for t in trajectories}  # a prompt's last sample
        scores = self.score_fn(list(last.values()))
        for t, s in zip(last.values(), scores, strict=True):
            self._store(t, np.asarray(s, dtype=np.float64).tolist())

    def estimate(
        self, prompt_ids: Sequence[str], policy_versions: Sequence[int] | np.ndarray | None = None
    ) -> np.ndarray:
        del policy_versions  # the scorer is the current policy
        out = np.full(len(prompt_ids), self.unseen, dtype=np.float64)
        known = [i for i, pid in enumerate(prompt_ids) if pid in self._last]
        if not known:
            return out
        unique = list(dict.fromkeys(prompt_ids[i] for i in known))
        stored = [self._last[pid] for pid in unique]
        scores = self.score_fn(stored)
        if len(scores) != len(stored):
            raise ValueError(f"score_fn returned {len(scores)} results for {len(stored)} trajectories")
        d = {
            pid: mean_abs_logprob_change(np.asarray(t.logprobs), np.asarray(s), np.asarray(t.loss_mask))
            for pid, t, s in zip(unique, stored, scores, strict=True)
        }
        for i in known:
            out[i] = d[prompt_ids[i]]
        return out

    def update_tracker(
        self,
        prompt_ids: Sequence[str],
        rewards: Sequence[float] | np.ndarray,
        policy_versions: Sequence[int] | np.ndarray | None = None,
        trajectories: Sequence[Trajectory] | None = None,
    ) -> np.ndarray:
        """Estimate D, fold the batch into the tracker, then store the new responses."""
        d = self.estimate(prompt_ids, policy_versions)
        base = self.tracker.update_batch(prompt_ids, rewards, d, policy_versions=policy_versions)
        if trajectories is not None and self.reference == "sampling":
            self.remember(trajectories)
        self.last_estimate = d
        return base

    def state_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "last": {
                pid: {
                    "token_ids": t.token_ids,
                    "loss_mask": t.loss_mask,
                    "logprobs": t.logprobs,
                    "policy_version": t.policy_version,
                    "prompt_len": t.prompt_len,
                }
                for pid, t in self._last.items()
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._last = {pid: Trajectory(prompt_id=pid, **rec) for pid, rec in state["last"].items()}


def make_divergence(
    name: str,
    tracker: ValueTracker,
    *,
    score_fn: ScoreFn | None = None,
    odometer: KLOdometer | None = None,
    scale: float = 1.0,
    **replay: Any,
) -> OdometerDivergence | ReplayDivergence:
    """Build the configured estimator: `"odometer"` (default; `scale` multiplies its readings) or
    `"replay"` (needs `score_fn`; `replay` holds `unseen`, `mask` and `reference`)."""
    if name == "odometer":
        return OdometerDivergence(tracker, odometer, scale=scale)
    if name == "replay":
        if score_fn is None:
            raise ValueError("the replay divergence needs score_fn (e.g. a Learner's compute_logprobs)")
        return ReplayDivergence(tracker, score_fn, **replay)
    raise ValueError(f"unknown divergence estimator {name!r}; expected 'odometer' or 'replay'")
