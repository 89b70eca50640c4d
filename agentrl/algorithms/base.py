"""The `Algorithm` interface: what the trainer asks of an RL algorithm, and nothing else.

An algorithm owns its prompt sampler, its scheduler mode ("stream": one trajectory per draw, or
"group": `group_size` trajectories per prompt, launched and consumed together), its advantage
function over a whole batch of Trajectories, its state (for SPO: the value tracker, the divergence
estimator and the KL odometer), its metrics and its plot panels. The trainer calls these methods in
a fixed order every step and never branches on an algorithm's name:

    sampler = algorithm.make_sampler()                       # once
    request = algorithm.offline_init_request()               # once, before training (or None)
    algorithm.init_offline(rewards)                          #   ... with n samples per prompt
    loop:
        result  = algorithm.advantages(batch)                # A for every trajectory, + diagnostics
        stats   = learner.update(batch, result.advantages, **algorithm.loss_aggregation())
        metrics = algorithm.after_update(batch, stats, version)

The maths lives in `agentrl.algo` as pure functions; an algorithm class wires them to a batch.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np

from agentrl.algo.advantage import AdvantageResult
from agentrl.algo.sampler import UniformSampler
from agentrl.train_config import AlgoConfig
from agentrl.types import Trajectory

if TYPE_CHECKING:
    from agentrl.learner import UpdateStats

ScoreFn = Callable[[Sequence[Trajectory]], Sequence[np.ndarray]]
"""The learner's per-token re-score of trajectories under the current policy, at the rollout
temperature (what a replay divergence estimator needs)."""

Panel = tuple[str, str, tuple[str, ...]]
"""(file name, y label, metric keys) of one plot: `agentrl.plots` draws these per algorithm."""


@dataclass(frozen=True)
class AlgorithmContext:
    """What an algorithm is built from: its settings, the training prompts and the run's seed."""

    config: AlgoConfig
    prompt_ids: Sequence[str]
    seed: int = 0
    score: ScoreFn | None = None  # None where nothing can re-score (simulations, unit tests)
    max_tokens: int = 768  # a trajectory's token budget (rollout.max_tokens)


class Algorithm(ABC):
    """One RL algorithm. Subclass it in one file and register it with `@register_algorithm("name")`."""

    name: ClassVar[str] = ""
    mode: ClassVar[Literal["stream", "group"]] = "stream"
    panels: ClassVar[tuple[Panel, ...]] = ()

    def __init__(self, ctx: AlgorithmContext) -> None:
        self.ctx = ctx
        self.config = ctx.config

    @property
    def group_size(self) -> int:
        """Trajectories launched per drawn prompt (1 in stream mode)."""
        return self.config.group_size if self.mode == "group" else 1

    def make_sampler(self) -> Any:
        """The prompt sampler (`sample(n)`, `state_dict`, `load_state_dict`); uniform by default."""
        return UniformSampler(list(self.ctx.prompt_ids), seed=self.ctx.seed)

    def offline_init_request(self) -> tuple[list[str], int] | None:
        """Prompts and samples per prompt to draw from the initial policy before training, or None."""
        return None

    def init_offline(self, rewards: dict[str, list[float]]) -> dict[str, float]:
        """Take the rewards of the offline pass (prompt id -> rewards); returns metrics."""
        return {}

    @abstractmethod
    def advantages(self, batch: Sequence[Trajectory]) -> AdvantageResult:
        """One advantage per trajectory of a trainable batch, with diagnostics."""

    def loss_aggregation(self) -> dict[str, Any]:
        """Keyword arguments for `Learner.update` (`aggregation`, `norm_tokens`); {} keeps the config's."""
        return {}

    def after_update(self, batch: Sequence[Trajectory], stats: UpdateStats, version: int) -> dict[str, float]:
        """Called after the learner's update that produced policy `version`; returns metrics to log."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        del state


def batch_arrays(batch: Sequence[Trajectory]) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Rewards, prompt ids and policy versions of a batch."""
    rewards = np.array([t.reward for t in batch], dtype=np.float64)
    versions = np.array([t.policy_version for t in batch], dtype=np.int64)
    return rewards, [t.prompt_id for t in batch], versions


def finite(x: float, default: float = 0.0) -> float:
    return x if math.isfinite(x) else default
