"""Property test: whatever the configuration and faults, every launched episode is accounted for."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentrl.envs.latency import LogNormal
from agentrl.rollout.clock import run_virtual
from agentrl.rollout.scheduler import RolloutScheduler, SchedulerConfig
from agentrl.rollout.simulated import EpisodeProfile, SimulatedRunner

from .conftest import TinySampler


@st.composite
def configs(draw: st.DrawFn) -> tuple[SchedulerConfig, float, float, int, bool]:
    mode = draw(st.sampled_from(["stream", "group"]))
    G = draw(st.sampled_from([2, 4])) if mode == "group" else 1
    B = G * draw(st.integers(1, 4))
    regime = draw(st.sampled_from(["sync", "async"]))
    conc = draw(st.sampled_from([None, 3, 8]))
    kw: dict = {"mode": mode, "batch_size": B, "regime": regime, "max_concurrency": conc}
    if mode == "group":
        kw["group_size"] = G
        if draw(st.booleans()):
            kw["group_deadline"] = draw(st.sampled_from([15.0, 40.0]))
            kw["straggler_policy"] = draw(st.sampled_from(["drop", "partial"]))
    if regime == "sync":
        kw["overprovision"] = draw(st.sampled_from([1.0, 1.5, 2.0]))
    else:
        kw["max_staleness"] = draw(st.sampled_from([None, 0, 2])) if conc else draw(st.sampled_from([0, 2]))
        kw["stale_policy"] = draw(st.sampled_from(["drop", "keep"]))
        if conc:
            kw["admission"] = draw(st.sampled_from(["pace", "none"]))
    kw["episode_timeout"] = draw(st.sampled_from([None, 60.0]))
    kw["max_retries"] = draw(st.integers(0, 2))
    kw["max_consecutive_failures"] = None
    kw["watchdog_s"] = 1e6
    fail = draw(st.sampled_from([0.0, 0.1, 0.3]))
    hang = draw(st.sampled_from([0.0, 0.05])) if kw["episode_timeout"] else 0.0
    bump = draw(st.sampled_from([1, 2]))
    cancel = draw(st.booleans())  # an outside party cancels a running episode after each batch
    return SchedulerConfig(**kw), fail, hang, bump, cancel


@pytest.mark.timeout(60)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(configs(), st.integers(0, 10_000))
def test_accounting_always_balances(
    setup: tuple[SchedulerConfig, float, float, int, bool], seed: int
) -> None:
    cfg, fail, hang, bump, cancel = setup
    runner = SimulatedRunner(
        EpisodeProfile(duration=LogNormal(5.0, 1.0)), seed=seed, failure_rate=fail, hang_rate=hang, hang_s=1e5
    )
    sched = RolloutScheduler(TinySampler(n=50, seed=seed), runner, cfg)

    async def main() -> int:
        n = 0
        async with sched:
            async for b in sched.batches(6):
                sched.check_accounting()
                assert b.metrics.counts.balanced()
                n_units = cfg.units_per_batch
                assert len(b.groups) == n_units
                assert all(cfg.min_unit <= len(g) <= cfg.unit_size for g in b.groups)
                if cfg.max_staleness is not None and cfg.stale_policy == "drop":
                    assert max(b.metrics.staleness) <= cfg.max_staleness
                n += 1
                await asyncio.sleep(1.0)
                sched.set_policy_version(sched.policy_version + bump)
                running = [e.task for e in sched._running.values() if e.task is not None]
                if cancel and running:
                    running[seed % len(running)].cancel()
        return n

    assert run_virtual(main()) == 6
    sched.check_accounting()
    c = sched.counts
    assert c.running == 0 and c.buffered == 0 and c.balanced()
