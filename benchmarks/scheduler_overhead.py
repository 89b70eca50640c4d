"""Scheduler overhead: episodes per second of pure bookkeeping (virtual time, zero-latency episodes).

Every episode is an asyncio task whose runner returns at once, so the figure measures the
scheduler plus asyncio, nothing else. Run: `.venv/bin/python benchmarks/scheduler_overhead.py`.
Target (issue 4): >= 20,000 episodes/s on one core in stream mode.
"""

from __future__ import annotations

import argparse
import time

from agentrl.rollout.clock import run_virtual
from agentrl.rollout.scheduler import RolloutScheduler, SchedulerConfig
from agentrl.types import Trajectory


class CyclingSampler:
    def __init__(self, n: int = 4096) -> None:
        self.ids = [f"bench/{i}" for i in range(n)]
        self.i = 0

    def sample(self, n: int) -> list[str]:
        out = []
        for _ in range(n):
            out.append(self.ids[self.i])
            self.i = (self.i + 1) % len(self.ids)
        return out


async def zero_latency(prompt_id: str, version: int) -> Trajectory:
    return Trajectory(prompt_id, reward=1.0, policy_version=version)


def measure(cfg: SchedulerConfig, episodes: int) -> tuple[float, int]:
    n_batches = max(1, episodes // cfg.batch_size)

    async def main() -> int:
        async with RolloutScheduler(CyclingSampler(), zero_latency, cfg) as s:
            async for _ in s.batches(n_batches):
                s.set_policy_version(s.policy_version + 1)
            launched = s.counts.launched
        s.check_accounting()
        return launched

    t = time.perf_counter()
    launched = run_virtual(main())
    return launched / (time.perf_counter() - t), launched


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--episodes", type=int, default=200_000)
    args = ap.parse_args()
    cases = {
        "stream async, 256 slots, B=256": SchedulerConfig(
            batch_size=256, regime="async", max_concurrency=256, watchdog_s=None
        ),
        "stream async, 256 slots, B=256, staleness<=1, watchdog": SchedulerConfig(
            batch_size=256, regime="async", max_concurrency=256, max_staleness=1
        ),
        "stream sync, unlimited, B=256, 2x over-provisioned": SchedulerConfig(
            batch_size=256, overprovision=2.0, watchdog_s=None
        ),
        "group async, G=8, 256 slots, B=256": SchedulerConfig(
            mode="group", group_size=8, batch_size=256, regime="async", max_concurrency=256, watchdog_s=None
        ),
        "group sync, G=8, unlimited, B=256": SchedulerConfig(
            mode="group", group_size=8, batch_size=256, watchdog_s=None
        ),
    }
    for name, cfg in cases.items():
        rate, n = measure(cfg, args.episodes)
        print(f"{name:<58} {rate:>10,.0f} episodes/s  ({n:,} episodes)")


if __name__ == "__main__":
    main()
