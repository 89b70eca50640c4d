"""agentrl: train tool-using LLM agents with reinforcement learning (SPO and GRPO).

The public API is re-exported here. Names resolve lazily (PEP 562), so `import agentrl` does not
import torch, transformers or the environments until something that needs them is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from agentrl.types import Generation, SamplingParams, Status, Trajectory, Turn

__version__ = "0.1.0"

_LAZY: dict[str, str] = {
    # algorithm maths
    "ValueTracker": "agentrl.algo.value_tracker",
    "PrioritizedSampler": "agentrl.algo.sampler",
    "UniformSampler": "agentrl.algo.sampler",
    "KLOdometer": "agentrl.algo.divergence",
    "OdometerDivergence": "agentrl.algo.divergence",
    "ReplayDivergence": "agentrl.algo.divergence",
    "make_divergence": "agentrl.algo.divergence",
    "AdvantageResult": "agentrl.algo.advantage",
    "AdvantageDiagnostics": "agentrl.algo.advantage",
    "compute_advantages": "agentrl.algo.advantage",
    "spo_advantages": "agentrl.algo.advantage",
    "grpo_advantages": "agentrl.algo.advantage",
    "no_baseline_advantages": "agentrl.algo.advantage",
    "pass_at_k": "agentrl.algo.metrics",
    "avg_at_k": "agentrl.algo.metrics",
    "maj_at_k": "agentrl.algo.metrics",
    # learner
    "Learner": "agentrl.learner",
    "UpdateStats": "agentrl.learner",
    "compute_logprobs": "agentrl.learner",
    # rollouts
    "RolloutScheduler": "agentrl.rollout.scheduler",
    "Batch": "agentrl.rollout.scheduler",
    "run_virtual": "agentrl.rollout.clock",
    "VirtualTimeLoop": "agentrl.rollout.clock",
    "SimulatedRunner": "agentrl.rollout.simulated",
    "EpisodeProfile": "agentrl.rollout.simulated",
    "EpisodeRunner": "agentrl.rollout.episode",
    "RayEnvPool": "agentrl.rollout.ray_envs",  # envs in Ray actors (agentrl[ray])
    "Replicas": "agentrl.serve",  # several local vLLM servers
    # latency simulator
    "simulate_study": "agentrl.simulate",  # `agentrl.simulate` is the module; this is its `simulate`
    "run_arm": "agentrl.simulate",
    "build_study": "agentrl.simulate",
    "load_study_file": "agentrl.simulate",
    "Preset": "agentrl.rollout.presets",
    "Arm": "agentrl.rollout.presets",
    "make_arms": "agentrl.rollout.presets",
    "get_preset": "agentrl.rollout.presets",
    "RewardModel": "agentrl.rollout.simulated",
    "read_run": "agentrl.whatif",
    "what_if": "agentrl.whatif",
    "LatencyModel": "agentrl.envs.latency",
    "Constant": "agentrl.envs.latency",
    "Uniform": "agentrl.envs.latency",
    "LogNormal": "agentrl.envs.latency",
    "Pareto": "agentrl.envs.latency",
    "Mixture": "agentrl.envs.latency",
    "Empirical": "agentrl.envs.latency",
    "from_spec": "agentrl.envs.latency",
    "load_trace": "agentrl.envs.latency",
    "run_episode": "agentrl.rollout.episode",
    # policies and models
    "Policy": "agentrl.policy.base",
    "HFPolicy": "agentrl.policy.hf",
    "OpenAIPolicy": "agentrl.policy.openai",
    "SimulatedPolicy": "agentrl.policy.simulated",
    "load_model": "agentrl.models",
    # environments
    "ToolEnv": "agentrl.envs.base",
    "Task": "agentrl.envs.base",
    "LatencyWrapper": "agentrl.envs.wrappers",
    "LatencyProfile": "agentrl.envs.latency",
    "DatasetEnv": "agentrl.envs.dataset",
    "function_tool": "agentrl.tools.function",
    "MCPToolset": "agentrl.tools.mcp",
    "export_trajectories": "agentrl.rollout.messages",
    # configuration: one vocabulary for the trainer, learner, scheduler and evaluation
    "TrainConfig": "agentrl.train_config",
    "ModelConfig": "agentrl.train_config",
    "EnvConfig": "agentrl.train_config",
    "AlgoConfig": "agentrl.train_config",
    "RolloutConfig": "agentrl.train_config",
    "SchedulerConfig": "agentrl.train_config",
    "OptimConfig": "agentrl.train_config",
    "LossConfig": "agentrl.train_config",
    "LearnerConfig": "agentrl.train_config",
    "EvalConfig": "agentrl.train_config",
    "LogConfig": "agentrl.train_config",
    # algorithms
    "Algorithm": "agentrl.algorithms",
    "register_algorithm": "agentrl.algorithms",
    "get_algorithm": "agentrl.algorithms",
    "ALGORITHMS": "agentrl.algorithms",
    # training
    "Trainer": "agentrl.trainer",
    "evaluate": "agentrl.evaluate",
    "load_config": "agentrl.config",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'agentrl' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


if TYPE_CHECKING:  # static re-exports for type checkers and IDEs
    from agentrl.algo.advantage import (  # noqa: F401
        AdvantageDiagnostics,
        AdvantageResult,
        compute_advantages,
        grpo_advantages,
        no_baseline_advantages,
        spo_advantages,
    )
    from agentrl.algo.divergence import KLOdometer, OdometerDivergence, ReplayDivergence, make_divergence  # noqa: F401
    from agentrl.algo.metrics import avg_at_k, maj_at_k, pass_at_k  # noqa: F401
    from agentrl.algo.sampler import PrioritizedSampler, UniformSampler  # noqa: F401
    from agentrl.algo.value_tracker import ValueTracker  # noqa: F401
    from agentrl.algorithms import ALGORITHMS, Algorithm, get_algorithm, register_algorithm  # noqa: F401
    from agentrl.config import load_config  # noqa: F401
    from agentrl.envs.base import Task, ToolEnv  # noqa: F401
    from agentrl.envs.dataset import DatasetEnv  # noqa: F401
    from agentrl.envs.latency import (  # noqa: F401
        Constant,
        Empirical,
        LatencyModel,
        LatencyProfile,
        LogNormal,
        Mixture,
        Pareto,
        Uniform,
        from_spec,
        load_trace,
    )
    from agentrl.envs.wrappers import LatencyWrapper  # noqa: F401
    from agentrl.evaluate import evaluate  # noqa: F401
    from agentrl.learner import Learner, UpdateStats, compute_logprobs  # noqa: F401
    from agentrl.models import load_model  # noqa: F401
    from agentrl.policy.base import Policy  # noqa: F401
    from agentrl.policy.hf import HFPolicy  # noqa: F401
    from agentrl.policy.openai import OpenAIPolicy  # noqa: F401
    from agentrl.policy.simulated import SimulatedPolicy  # noqa: F401
    from agentrl.rollout.clock import VirtualTimeLoop, run_virtual  # noqa: F401
    from agentrl.rollout.episode import EpisodeRunner, run_episode  # noqa: F401
    from agentrl.rollout.messages import export_trajectories  # noqa: F401
    from agentrl.rollout.presets import Arm, Preset, get_preset, make_arms  # noqa: F401
    from agentrl.rollout.scheduler import Batch, RolloutScheduler  # noqa: F401
    from agentrl.rollout.simulated import EpisodeProfile, RewardModel, SimulatedRunner  # noqa: F401
    from agentrl.simulate import build_study, load_study_file, run_arm, simulate_study  # noqa: F401
    from agentrl.tools.function import function_tool  # noqa: F401
    from agentrl.tools.mcp import MCPToolset  # noqa: F401
    from agentrl.train_config import (  # noqa: F401
        AlgoConfig,
        EnvConfig,
        EvalConfig,
        LearnerConfig,
        LogConfig,
        LossConfig,
        ModelConfig,
        OptimConfig,
        RolloutConfig,
        SchedulerConfig,
        TrainConfig,
    )
    from agentrl.trainer import Trainer  # noqa: F401
    from agentrl.whatif import read_run, what_if  # noqa: F401

__all__ = ["Generation", "SamplingParams", "Status", "Trajectory", "Turn", "__version__", *_LAZY]


def _build_tiny(out_dir: Any, recipe: Any, name: str, base_dir: Any) -> Any:
    """Build a tiny recipe with the SFT stage, imported only when a build is needed."""
    from agentrl.tiny import build_tiny

    return build_tiny(out_dir, recipe, name, base_dir)


# The model loader (`agentrl.models`) sits below the SFT stage that builds the tiny models, so the
# build is plugged in here, at the top of the package, rather than imported by the loader.
from agentrl.tiny_recipes import set_builder as _set_builder  # noqa: E402

_set_builder(_build_tiny)

# `import agentrl` alone registers the bundled envs with Gymnasium, so
# `gymnasium.make("agentrl/Calculator-v0")` works without importing agentrl.envs by hand.
import agentrl.envs  # noqa: E402, F401
