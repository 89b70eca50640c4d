"""Fault injection: episode exceptions, timeouts and cancellation mid-batch, all at once.

Every launched episode must end in exactly one recorded state, the run must complete, and shutdown
must leave no task behind and print no warning.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import warnings

import numpy as np
import pytest

from agentrl.envs.latency import LogNormal
from agentrl.rollout.clock import run_virtual
from agentrl.rollout.scheduler import RolloutScheduler, SchedulerConfig
from agentrl.rollout.simulated import EpisodeProfile, SimulatedRunner
from agentrl.types import Status, Trajectory

from .conftest import TinySampler


def _episode_tasks(sched: RolloutScheduler) -> list[asyncio.Task[None]]:
    """The scheduler's running episode tasks (what an outside party could cancel)."""
    return [e.task for e in sched._running.values() if e.task is not None and not e.task.done()]


@pytest.mark.timeout(40)
@pytest.mark.parametrize("mode", ["stream", "group"])
@pytest.mark.parametrize("regime", ["sync", "async"])
def test_exceptions_timeouts_and_cancellation_mid_batch(
    mode: str, regime: str, caplog: pytest.LogCaptureFixture
) -> None:
    """10% of episodes raise, 5% hang past episode_timeout, an outside party cancels running episode
    tasks mid-batch, and finally the consumer itself is cancelled mid-batch. The books balance
    exactly at every batch and at the end; every failure is handed out; no task or warning is left."""
    runner = SimulatedRunner(
        EpisodeProfile(duration=LogNormal(10.0, 0.8)), seed=21, failure_rate=0.10, hang_rate=0.05
    )
    extra = {"max_concurrency": 24, "max_staleness": 2} if regime == "async" else {"max_concurrency": 12}
    cfg = SchedulerConfig(
        mode=mode, batch_size=16, group_size=4, regime=regime, episode_timeout=120.0, max_retries=1, **extra
    )
    sched = RolloutScheduler(TinySampler(seed=21), runner, cfg)
    rng = np.random.default_rng(21)
    delivered: list[Trajectory] = []
    failures: list[Trajectory] = []
    n_batches = 0
    outside_cancels = 0
    dozen = asyncio.Event()
    at_close: list = []

    async def consume() -> None:
        nonlocal n_batches
        async for b in sched.batches():
            sched.check_accounting()
            assert b.metrics.counts.balanced()
            delivered.extend(b.trajectories)
            failures.extend(b.failures)
            n_batches += 1
            await asyncio.sleep(3.0)
            sched.set_policy_version(sched.policy_version + 1)
            if n_batches == 12:
                dozen.set()  # the consumer goes on to ask for batch 13

    async def chaos() -> None:
        """Every ~20 virtual seconds, cancel a just-started episode from outside."""
        nonlocal outside_cancels
        while True:
            await asyncio.sleep(float(rng.uniform(10.0, 30.0)))
            now = asyncio.get_running_loop().time()
            eps = [
                e
                for e in sched._running.values()
                if e.task is not None and not e.task.done() and now - e.started_at < 5.0
            ]  # young ones only, so that hung episodes are left for episode_timeout to catch
            if eps:
                max(eps, key=lambda e: e.started_at).task.cancel()  # type: ignore[union-attr]
                outside_cancels += 1

    async def main() -> None:
        async with sched:
            consumer = asyncio.create_task(consume())
            agitator = asyncio.create_task(chaos())
            await dozen.wait()
            await asyncio.sleep(1.0)  # mid-batch 13: episodes in flight, some units half done
            assert sched.counts.running > 0
            consumer.cancel()
            agitator.cancel()
            for task in (consumer, agitator):
                with pytest.raises(asyncio.CancelledError):
                    await task
            at_close.append(sched.counts)
        failures.extend(sched.take_failures())
        me = asyncio.current_task()
        assert [t for t in asyncio.all_tasks() if t is not me] == []

    gc.collect()  # garbage left by earlier tests must not be blamed on this run
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING):
        warnings.simplefilter("always")
        run_virtual(main())
        gc.collect()
    assert [str(w.message) for w in caught] == []
    assert caplog.text == ""

    sched.check_accounting()
    c = sched.counts
    assert n_batches >= 12 and c.running == 0 and c.buffered == 0 and c.balanced()
    assert c.consumed == len(delivered) and all(t.status is Status.OK for t in delivered)
    by_status = {s: sum(t.status is s for t in failures) for s in Status}
    assert by_status[Status.ENV_ERROR] == c.failed > 0
    assert by_status[Status.TIMEOUT] == c.timed_out > 0
    assert outside_cancels > 0 and by_status[Status.CANCELLED] == outside_cancels
    before = at_close[0]  # aclose() cancels exactly what was still in flight or buffered
    assert before.cancelled == outside_cancels and before.running > 0
    assert c.cancelled == outside_cancels + before.running + before.buffered
    assert c.launched == c.consumed + c.failed + c.timed_out + c.dropped_stale + c.discarded + c.cancelled
    assert len({t.episode_id for t in delivered + failures}) == len(delivered) + len(failures)


@pytest.mark.timeout(20)
@pytest.mark.parametrize("mode", ["stream", "group"])
def test_outside_cancellation_never_strands_a_group(mode: str) -> None:
    """Every episode of the first wave is cancelled from outside. Their units must not wait forever
    for members that will not come back; the scheduler refills the slots and the run completes."""
    runner = SimulatedRunner(EpisodeProfile(duration=LogNormal(10.0, 0.5)), seed=3)
    cfg = SchedulerConfig(
        mode=mode,
        batch_size=8,
        group_size=4,
        regime="async",
        max_concurrency=8,
        max_staleness=1,
        watchdog_s=600.0,
    )
    sched = RolloutScheduler(TinySampler(seed=3), runner, cfg)

    async def main() -> int:
        n = 0
        async with sched:
            gen = sched.batches(4)
            first = asyncio.ensure_future(anext(gen))
            await asyncio.sleep(1.0)
            victims = _episode_tasks(sched)
            assert len(victims) == 8
            for t in victims:
                t.cancel()
            await first
            n = 1
            sched.set_policy_version(1)
            async for _ in gen:
                n += 1
                sched.set_policy_version(sched.policy_version + 1)
            before_close.append(sched.counts)
        return n

    before_close: list = []
    assert run_virtual(main()) == 4
    assert before_close[0].cancelled == 8  # the victims; the rest were cancelled by aclose()
    c = sched.counts
    assert c.consumed == 32 and c.running == 0 and c.balanced()
    sched.check_accounting()


@pytest.mark.timeout(20)
def test_runner_raising_cancelled_error_on_its_own_is_a_failure_and_retried() -> None:
    calls: dict[str, int] = {}

    async def runner(prompt_id: str, version: int) -> Trajectory:
        calls[prompt_id] = calls.get(prompt_id, 0) + 1
        await asyncio.sleep(1.0)
        if calls[prompt_id] == 1:
            raise asyncio.CancelledError  # e.g. a library giving up an inner wait; nobody cancelled us
        return Trajectory(prompt_id, reward=1.0)

    sched = RolloutScheduler(TinySampler(n=50), runner, SchedulerConfig(batch_size=4, max_retries=1))

    async def main() -> list:
        async with sched:
            return [b async for b in sched.batches(1)]

    (b,) = run_virtual(main())
    assert len(b) == 4 and len(b.failures) == 4
    assert all(t.status is Status.CANCELLED for t in b.failures)
    assert {t.prompt_id for t in b.failures} == {t.prompt_id for t in b.trajectories}  # retried
    c = sched.counts
    assert c.failed == 4 and c.consumed == 4 and c.cancelled == 0 and c.balanced()


@pytest.mark.timeout(20)
@pytest.mark.parametrize("mode", ["stream", "group"])
def test_task_cancelled_before_its_first_step_is_accounted(mode: str) -> None:
    """`set_policy_version` starts episodes synchronously (async regime); cancelling such a task
    before it ever runs skips `_episode`'s body entirely. It must still count as cancelled and
    release its unit, or the paced admission would wait for it forever (found by hypothesis)."""
    runner = SimulatedRunner(EpisodeProfile(duration=LogNormal(5.0, 1.0)), seed=0)
    cfg = SchedulerConfig(
        mode=mode, batch_size=4, group_size=2, regime="async", max_staleness=0, watchdog_s=1e6
    )
    sched = RolloutScheduler(TinySampler(seed=0), runner, cfg)
    victims = 0

    async def main() -> int:
        nonlocal victims
        n = 0
        async with sched:
            async for _ in sched.batches(5):
                n += 1
                sched.set_policy_version(sched.policy_version + 1)  # starts the next units now
                fresh = _episode_tasks(sched)
                assert fresh and all(not t.done() for t in fresh)
                fresh[0].cancel()  # before its first step
                victims += 1
        return n

    assert run_virtual(main()) == 5
    c = sched.counts
    assert c.cancelled >= victims and c.balanced()
    sched.check_accounting()
