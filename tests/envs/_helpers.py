"""Shared drivers for the environment tests: the scripted expert and a seeded random policy."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import numpy as np

from agentrl.envs import ToolEnv
from agentrl.tools import format_answer, format_tool_call


@dataclass
class Episode:
    prompt_id: str
    reward: float
    turns: int
    truncated: bool
    wall_s: float
    latencies: list[float]


async def run_episode(
    env: ToolEnv, policy, task_id: str | None = None, split: str = "test", seed=None
) -> Episode:
    """Drive one episode with `policy(env) -> action text` through the async API."""
    start = time.perf_counter()
    options = {"split": split} if task_id is None else {"split": split, "task_id": task_id}
    _, info = await env.areset(seed=seed, options=options)
    prompt_id = info["prompt_id"]
    latencies: list[float] = []
    reward, terminated, truncated = 0.0, False, False
    while not (terminated or truncated):
        _, reward, terminated, truncated, info = await env.astep(policy(env))
        latencies.append(info["latency"]["step"])
        latencies.extend(info["latency"]["tools"])
    return Episode(prompt_id, reward, env.turn, truncated, time.perf_counter() - start, latencies)


def expert(env: ToolEnv) -> str:
    return env.expert_action()


class RandomPolicy:
    """Seeded random actions: junk text, random tool calls (known and unknown names), random answers."""

    WORDS = ("the", "city", "42", "founder", "sum", "print", "Labs", "7", "x", "of", "born", "+", "*")

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def _text(self, n: int) -> str:
        return " ".join(str(self.rng.choice(self.WORDS)) for _ in range(n))

    def __call__(self, env: ToolEnv) -> str:
        r = self.rng
        kind = r.integers(4)
        if kind == 0:
            return "".join(chr(int(c)) for c in r.integers(32, 127, size=int(r.integers(0, 60))))
        if kind == 1:
            names = [*env.toolbox.tools, "nope"]
            name = str(r.choice(names))
            tool = env.toolbox.tools.get(name)
            keys = list(tool.parameters["properties"]) if tool else ["q"]
            args = {str(r.choice(keys)): self._text(int(r.integers(1, 5)))}
            return format_tool_call(name, args)
        if kind == 2:
            return format_answer(int(r.integers(0, 10_000)))
        return format_answer(self._text(int(r.integers(1, 3))))


def summarize(episodes: list[Episode]) -> float:
    return sum(e.reward for e in episodes) / len(episodes)


def dumps(x) -> str:
    return json.dumps(x, sort_keys=True, default=str)
