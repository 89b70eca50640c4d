"""Gymnasium tool-use environments (installed as `agentrl.envs`).

Importing this package registers the bundled environments:
`agentrl/Calculator-v0`, `agentrl/KBSearch-v0` and `agentrl/PythonMath-v0`, plus
`agentrl/Dataset-v0`, which serves your own tasks (`gymnasium.make("agentrl/Dataset-v0", path=...)`).
"""

from __future__ import annotations

import gymnasium

from agentrl.envs.answers import answers_match, normalize_text, numbers_equal, parse_number
from agentrl.envs.base import Task, TextSpace, ToolEnv, as_profile, unwrap
from agentrl.envs.dataset import DatasetEnv
from agentrl.envs.latency import (
    Constant,
    Empirical,
    LatencyModel,
    LatencyProfile,
    LogNormal,
    Mixture,
    Pareto,
    Uniform,
    from_spec,
)
from agentrl.envs.shaping import SHAPINGS, TurnOutcome, format_shaping, tool_call_shaping
from agentrl.envs.wrappers import LatencyWrapper

BUNDLED_ENVS = {
    "agentrl/Calculator-v0": "agentrl.envs.calculator:CalculatorEnv",
    "agentrl/KBSearch-v0": "agentrl.envs.kb_search:KBSearchEnv",
    "agentrl/PythonMath-v0": "agentrl.envs.python_math:PythonMathEnv",
}


STUDY_ENVS = {"agentrl/Outcome-v0": "agentrl.envs.outcome:OutcomeEnv"}

# envs built from user data: they need constructor arguments (path=...), so they are not bundled
DATA_ENVS = {"agentrl/Dataset-v0": "agentrl.envs.dataset:DatasetEnv"}


def register_envs() -> None:
    """Register the bundled environments with gymnasium (idempotent)."""
    for env_id, entry_point in (BUNDLED_ENVS | STUDY_ENVS | DATA_ENVS).items():
        if env_id not in gymnasium.registry:
            gymnasium.register(id=env_id, entry_point=entry_point, disable_env_checker=False)


register_envs()

__all__ = [
    "BUNDLED_ENVS",
    "DATA_ENVS",
    "SHAPINGS",
    "STUDY_ENVS",
    "Constant",
    "DatasetEnv",
    "Empirical",
    "LatencyModel",
    "LatencyProfile",
    "LatencyWrapper",
    "LogNormal",
    "Mixture",
    "Pareto",
    "Task",
    "TextSpace",
    "ToolEnv",
    "TurnOutcome",
    "Uniform",
    "answers_match",
    "as_profile",
    "format_shaping",
    "from_spec",
    "normalize_text",
    "numbers_equal",
    "parse_number",
    "register_envs",
    "tool_call_shaping",
    "unwrap",
]
