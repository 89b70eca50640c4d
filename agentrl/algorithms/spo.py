"""SPO, Single-stream Policy Optimization (Xu & Ding, 2025; arXiv 2509.13232). `docs/spo.md` has the maths.

One trajectory per drawn prompt; its advantage is `A = r − v̂₋(x)`, with `v̂₋` a persistent per-prompt
value tracker's estimate *before* this reward is folded in, then one batch-wide normalisation
(no groups). The tracker is a Beta(α, β) per prompt that forgets at rate `ρ(x) = clip(2^(−D/D_half),
ρ_min, ρ_max)`, where `D(x)` measures how far the policy moved since `x`'s last visit:

- `odometer` (default): the learner's per-update KL, summed per policy version (no extra forward);
- `replay`: re-score `x`'s last response under the current policy (one extra forward per sample).

Prompts are drawn with weight `sqrt(v̂(1 − v̂)) + ε` (prioritised sampling), and the tracker starts
from `n0` samples of the initial policy per prompt, smoothed as `(s + c)/(n0 + 2c)`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from agentrl.algo.advantage import AdvantageResult, spo
from agentrl.algo.divergence import KLOdometer, ReplayDivergence, make_divergence
from agentrl.algo.sampler import PrioritizedSampler
from agentrl.algo.value_tracker import ValueTracker
from agentrl.algorithms.base import Algorithm, AlgorithmContext, batch_arrays, finite
from agentrl.algorithms.registry import register_algorithm
from agentrl.types import Trajectory

if TYPE_CHECKING:
    from agentrl.learner import UpdateStats


@register_algorithm("spo")
class SPO(Algorithm):
    mode = "stream"
    panels = (
        ("tracker.png", "tracker", ("tracker/rho_mean", "tracker/n_eff_mean", "tracker/value_mean")),
        ("divergence.png", "D(x) at revisits", ("tracker/d_revisit_mean", "tracker/d_odometer_mean")),
    )

    def __init__(self, ctx: AlgorithmContext) -> None:
        super().__init__(ctx)
        c = self.config
        self.tracker = ValueTracker(
            rho_min=c.rho_min, rho_max=c.rho_max, d_half=c.d_half, init_smoothing=c.init_smoothing
        )
        replay: dict[str, Any] = {}
        if c.divergence == "replay":
            if ctx.score is None:
                raise ValueError("algo.divergence: 'replay' needs a learner to re-score responses")
            replay = {
                "unseen": 0.0 if c.replay_first_visit == "rho_max" else math.inf,
                "mask": c.replay_mask,
                "reference": c.replay_reference,
            }
        self.divergence = make_divergence(
            c.divergence, self.tracker, score_fn=ctx.score, scale=c.odometer_scale, **replay
        )
        # The summed per-update KL, kept under every estimator: it drives the odometer estimator and,
        # next to replay D, is how odometer_scale is calibrated (`tracker/d_odometer_mean`).
        self.odometer: KLOdometer = getattr(self.divergence, "odometer", None) or KLOdometer()
        self._odo_at_visit: dict[str, float] = {}

    def make_sampler(self) -> Any:
        c = self.config
        if not c.prioritized:
            return super().make_sampler()
        return PrioritizedSampler(
            self.tracker,
            list(self.ctx.prompt_ids),
            eps=c.sampler_eps,
            gamma=c.sampler_gamma,
            seed=self.ctx.seed,
        )

    def offline_init_request(self) -> tuple[list[str], int] | None:
        c = self.config
        if not c.offline_init:
            return None
        ids = list(self.ctx.prompt_ids)
        return (ids[: c.offline_prompts] if c.offline_prompts else ids), c.offline_n0

    def init_offline(self, rewards: dict[str, list[float]]) -> dict[str, float]:
        self.tracker.init_offline_batch(
            list(rewards), [np.asarray(v, dtype=np.float64) for v in rewards.values()]
        )
        return {
            "tracker/offline_mean": float(np.mean([np.mean(v) for v in rewards.values()])) if rewards else 0.0
        }

    def advantages(self, batch: Sequence[Trajectory]) -> AdvantageResult:
        c = self.config
        rewards, pids, versions = batch_arrays(batch)
        baselines = self.divergence.update_tracker(pids, rewards, versions, batch)
        d = np.asarray(self.divergence.last_estimate, dtype=np.float64)
        now = self.odometer.readings(versions)
        # the unscaled odometer D of prompts visited before (NaN at a first visit), beside `d`
        d_odo = np.array(
            [abs(n - self._odo_at_visit.get(p, math.nan)) for p, n in zip(pids, now, strict=True)]
        )
        self._odo_at_visit.update(zip(pids, now.tolist(), strict=True))
        # no group ids: a prompt drawn once is a one-sample "group", so the degenerate-group
        # diagnostics would read ~1.0 and mean nothing for a stream without groups
        result = spo(
            rewards,
            baselines,
            centring="token" if c.token_centring else "trajectory",
            token_counts=[t.num_model_tokens for t in batch],
            ddof=c.adv_std_ddof,
        )
        seen = np.isfinite(d)
        both = seen & np.isfinite(d_odo)  # revisits: where the two estimators can be compared
        self._metrics = {
            "tracker/value_mean": float(np.mean(self.tracker.values(pids))),
            "tracker/n_eff_mean": float(np.mean(self.tracker.n_effs(pids))),
            "tracker/baseline_mean": float(np.mean(baselines)),
            "tracker/rho_mean": float(np.mean(self.tracker.rho(d))),
            "tracker/d_mean": float(np.mean(d[seen])) if seen.any() else 0.0,
            "tracker/revisits": float(both.sum()),
        }
        if both.any():
            self._metrics["tracker/d_revisit_mean"] = float(np.mean(d[both]))
            self._metrics["tracker/d_odometer_mean"] = float(np.mean(d_odo[both]))
        return result

    def after_update(self, batch: Sequence[Trajectory], stats: UpdateStats, version: int) -> dict[str, float]:
        self.odometer.record(finite(stats.kl), version=version)  # NaN (not measured) counts as 0
        if isinstance(self.divergence, ReplayDivergence) and self.divergence.reference == "rescored":
            self.divergence.remember_rescored(batch)  # D is measured against the post-update policy
        return dict(getattr(self, "_metrics", {}))

    def tracker_values(self) -> np.ndarray:
        """v̂ of every prompt training has visited (the offline pass alone is not a visit)."""
        visited = [p for p in self.tracker.prompt_ids if self.tracker.visits(p) > 0]
        return self.tracker.values(visited)

    def state_dict(self) -> dict[str, Any]:
        return {
            "tracker": self.tracker.state_dict(),
            "divergence": self.divergence.state_dict(),
            "odometer": self.odometer.state_dict(),
            "odo_at_visit": dict(self._odo_at_visit),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.tracker.load_state_dict(state["tracker"])
        self.divergence.load_state_dict(state["divergence"])
        if "odometer" in state:
            self.odometer.load_state_dict(state["odometer"])
        self._odo_at_visit = {k: float(v) for k, v in state.get("odo_at_visit", {}).items()}
