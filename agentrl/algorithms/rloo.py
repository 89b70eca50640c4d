"""RLOO, REINFORCE leave-one-out (Kool et al., 2019; Ahmadian et al., 2024; arXiv 2402.14740).

`G = algo.group_size` trajectories per uniformly drawn prompt; each one's baseline is the mean reward
of the *other* `G − 1`: `A_i = r_i − (Σ_{j≠i} r_j)/(G − 1)`, no std scaling.
"""

from __future__ import annotations

from collections.abc import Sequence

from agentrl.algo.advantage import AdvantageResult, rloo
from agentrl.algorithms.base import Algorithm, batch_arrays
from agentrl.algorithms.registry import register_algorithm
from agentrl.types import Trajectory


@register_algorithm("rloo")
class RLOO(Algorithm):
    mode = "group"
    panels = (("degenerate.png", "share of samples", ("adv/frac_samples_in_degenerate_groups",)),)

    def advantages(self, batch: Sequence[Trajectory]) -> AdvantageResult:
        rewards, _, _ = batch_arrays(batch)
        return rloo(rewards, [t.group_id for t in batch])
