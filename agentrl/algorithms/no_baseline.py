"""The no-baseline ablation: `A = r`, normalised over the batch (its mean is the only baseline)."""

from __future__ import annotations

from collections.abc import Sequence

from agentrl.algo.advantage import AdvantageResult, no_baseline
from agentrl.algorithms.base import Algorithm, batch_arrays
from agentrl.algorithms.registry import register_algorithm
from agentrl.types import Trajectory


@register_algorithm("no_baseline")
class NoBaseline(Algorithm):
    mode = "stream"

    def advantages(self, batch: Sequence[Trajectory]) -> AdvantageResult:
        c = self.config
        rewards, _, _ = batch_arrays(batch)
        return no_baseline(
            rewards,
            centring="token" if c.token_centring else "trajectory",
            token_counts=[t.num_model_tokens for t in batch],
            ddof=c.adv_std_ddof,
        )
