"""Scheduler overhead: episodes per second of pure bookkeeping (virtual time, zero-latency episodes).

Every episode is an asyncio task whose runner returns at once, so the figure measures the
scheduler plus asyncio, nothing else. Run: `.venv/bin/python benchmarks/scheduler_overhead.py`.
Target: >= 20,000 episodes/s on one core.

The process pins itself to one core. The headline rate divides by the process's CPU time (what
one core delivers even when other jobs share the machine); the wall-clock rate is printed beside
it and equals it on an idle core. "Launched" counts every episode the scheduler ran through its
life cycle (including the cancelled surplus of over-provisioned rounds); "consumed" those that
reached a batch.
"""

from __future__ import annotations

import argparse
import os
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


def measure(cfg: SchedulerConfig, episodes: int) -> dict[str, float]:
    """Run about `episodes` consumed episodes; return counts, CPU and wall seconds."""
    n_batches = max(1, episodes // cfg.batch_size)

    async def main() -> tuple[int, int]:
        async with RolloutScheduler(CyclingSampler(), zero_latency, cfg) as s:
            async for _ in s.batches(n_batches):
                s.set_policy_version(s.policy_version + 1)
            c = s.counts
        s.check_accounting()
        return c.launched, c.consumed

    wall, cpu = time.perf_counter(), time.process_time()
    launched, consumed = run_virtual(main())
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return {"launched": launched, "consumed": consumed, "cpu_s": cpu, "wall_s": wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--episodes", type=int, default=100_000)
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
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    print(f"{'case':<56} {'launched/s (CPU)':>17} {'consumed/s (CPU)':>17} {'launched/s (wall)':>18}")
    worst = float("inf")
    for name, cfg in cases.items():
        r = measure(cfg, args.episodes)
        rate = r["launched"] / r["cpu_s"]
        worst = min(worst, rate)
        print(
            f"{name:<56} {rate:>17,.0f} {r['consumed'] / r['cpu_s']:>17,.0f} "
            f"{r['launched'] / r['wall_s']:>18,.0f}   ({r['launched']:,} episodes)"
        )
    verdict = "meets" if worst >= 20_000 else "MISSES"
    print(f"\nslowest case: {worst:,.0f} episodes/s handled per core; {verdict} the 20,000/s target")


if __name__ == "__main__":
    main()
