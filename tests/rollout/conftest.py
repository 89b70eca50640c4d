from __future__ import annotations

import asyncio
from collections.abc import Callable

import numpy as np

from agentrl.types import Trajectory


class TinySampler:
    """Seeded stand-in for agentrl.algo.sampler: uniform over n prompt ids, no replacement per call."""

    def __init__(self, n: int = 200, seed: int = 0) -> None:
        self.ids = [f"t/{i:04d}" for i in range(n)]
        self.rng = np.random.default_rng(seed)
        self.calls = 0

    def sample(self, n: int) -> list[str]:
        self.calls += 1
        idx = self.rng.choice(len(self.ids), size=n, replace=n > len(self.ids))
        return [self.ids[i] for i in idx]


def sleeping_runner(duration: Callable[[str, int], float]):
    async def run(prompt_id: str, version: int) -> Trajectory:
        d = duration(prompt_id, version)
        if d > 0:
            await asyncio.sleep(d)
        return Trajectory(prompt_id, reward=float(hash(prompt_id) % 2), policy_version=version)

    return run
