"""GRPO, Group Relative Policy Optimization (Shao et al., 2024; arXiv 2402.03300).

`G = algo.group_size` trajectories per uniformly drawn prompt, launched and consumed as a group;
`A = (r − mean_G) / (std_G + 1e-6)` within each group (`algo.grpo_scale_std=false` drops the std).
A group whose rewards are all equal ("degenerate") gives all its members exactly 0.
"""

from __future__ import annotations

from collections.abc import Sequence

from agentrl.algo.advantage import AdvantageResult, grpo
from agentrl.algorithms.base import Algorithm, batch_arrays
from agentrl.algorithms.registry import register_algorithm
from agentrl.types import Trajectory


@register_algorithm("grpo")
class GRPO(Algorithm):
    mode = "group"
    panels = (("degenerate.png", "share of samples", ("adv/frac_samples_in_degenerate_groups",)),)
    scale_std: bool | None = None  # None: algo.grpo_scale_std

    def advantages(self, batch: Sequence[Trajectory]) -> AdvantageResult:
        rewards, _, _ = batch_arrays(batch)
        scale = self.config.grpo_scale_std if self.scale_std is None else self.scale_std
        return grpo(rewards, [t.group_id for t in batch], scale_std=scale)
