"""200 expert episodes at once under lognormal latency: wall time tracks the longest, not the sum."""

from __future__ import annotations

import asyncio
import time

from agentrl.envs import LatencyProfile, LogNormal
from agentrl.envs.calculator import CalculatorEnv
from agentrl.envs.kb_search import KBSearchEnv

from ._helpers import expert, run_episode


async def test_200_concurrent_episodes_overlap():
    profile = LatencyProfile(step=LogNormal(0.02, 0.5), tool=LogNormal(0.02, 0.5))
    envs = [
        (CalculatorEnv if i % 2 else KBSearchEnv)(latency=profile, seed=i, split="test") for i in range(200)
    ]
    start = time.perf_counter()
    episodes = await asyncio.gather(*(run_episode(env, expert) for env in envs))
    wall = time.perf_counter() - start
    total = sum(e.wall_s for e in episodes)
    longest = max(e.wall_s for e in episodes)
    assert sum(e.reward for e in episodes) >= 0.95 * len(episodes)
    assert sum(sum(e.latencies) for e in episodes) > 20  # the latency really was applied
    # structural bound: run one after another this would take `total`; overlapped it is near `longest`
    assert wall < 0.25 * total, (wall, longest, total)
    assert wall < 1.5 * longest + 0.5, (wall, longest, total)
    print(f"wall {wall:.2f} s, longest episode {longest:.2f} s, sum of episodes {total:.1f} s")
