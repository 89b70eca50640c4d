"""`agentrl/Outcome-v0`: a reward-only environment for studies of the scheduler and value tracker.

There is nothing to solve: any `<answer>` ends the episode with a Bernoulli reward whose success
probability belongs to the prompt (drawn once per task from Beta(a, b) with a fixed seed). It runs the
real environment and episode code paths while the per-prompt success rates are known exactly, so a
study can compare the tracker's estimates with the truth.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import ClassVar

import numpy as np

from agentrl.envs.base import Task, ToolEnv
from agentrl.tools.base import format_answer

SPLIT_SIZES = {"train": 1000, "test": 200}
BETA_A, BETA_B = 0.8, 0.8  # U-shaped: many easy and many hard prompts, as in real task pools


@functools.cache
def generate(split: str, n: int) -> tuple[Task, ...]:
    rng = np.random.default_rng(np.random.SeedSequence(list(b"agentrl/outcome/" + split.encode())))
    probs = rng.beta(BETA_A, BETA_B, size=n)
    return tuple(
        Task(
            id=f"{i:05d}",
            prompt=f"Task {split}-{i}: reply with any answer.",
            answer=None,
            difficulty=int(np.clip(4 - p * 4, 0, 3)) + 1,  # 1 (easy) .. 4 (hard)
            data={"p": float(p)},
        )
        for i, p in enumerate(probs)
    )


class OutcomeEnv(ToolEnv):
    """Reward ~ Bernoulli(p(task)) on the first answer, drawn from the env's seeded `np_random`."""

    name: ClassVar[str] = "outcome"
    instructions: ClassVar[str] = "No tools are needed: reply with <answer>anything</answer>."
    max_turns = 2

    def load_tasks(self, split: str) -> Sequence[Task]:
        return generate(split, SPLIT_SIZES[split])

    def success_probability(self, task_id: str, split: str | None = None) -> float:
        return float(self.get_task(task_id, split)[0].data["p"])

    def score(self, task: Task, answer: str) -> float:
        return float(self.np_random.random() < task.data["p"])

    def expert_action(self) -> str:
        return format_answer("done")
