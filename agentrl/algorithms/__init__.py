"""RL algorithms as objects: one file and one registry entry each (see `base.Algorithm`).

Bundled: `spo` (Single-stream Policy Optimization), `grpo`, `rloo`, `drgrpo` (Dr. GRPO) and
`no_baseline` (the ablation). Add your own with `@register_algorithm("name")` in any module that
is imported before training (`agentrl train --algo name` then finds it).
"""

from agentrl.algorithms import dr_grpo, grpo, no_baseline, rloo, spo  # noqa: F401  (register)
from agentrl.algorithms.base import Algorithm, AlgorithmContext, Panel, ScoreFn
from agentrl.algorithms.registry import ALGORITHMS, get_algorithm, register_algorithm

__all__ = [
    "ALGORITHMS",
    "Algorithm",
    "AlgorithmContext",
    "Panel",
    "ScoreFn",
    "get_algorithm",
    "register_algorithm",
]
