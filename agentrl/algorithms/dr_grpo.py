"""Dr. GRPO, "GRPO done right" (Liu et al., 2025; arXiv 2503.20783).

GRPO with its two length and difficulty biases removed: no division by the group's std
(`A = r − mean_G`), and each sequence's summed token loss divided by one constant (`algo.norm_tokens`,
default `rollout.max_tokens`) instead of by its own length or the batch's token count.
"""

from __future__ import annotations

from typing import Any

from agentrl.algorithms.grpo import GRPO
from agentrl.algorithms.registry import register_algorithm


@register_algorithm("drgrpo")
class DrGRPO(GRPO):
    scale_std = False

    def loss_aggregation(self) -> dict[str, Any]:
        return {
            "aggregation": "constant",
            "norm_tokens": float(self.config.norm_tokens or self.ctx.max_tokens),
        }
