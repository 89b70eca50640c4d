from __future__ import annotations

import asyncio
import time

import pytest

from agentrl.rollout.clock import VirtualTimeLoop, is_virtual, run_virtual


@pytest.mark.timeout(10)
def test_virtual_sleep_jumps_exactly() -> None:
    async def main() -> tuple[float, list[float]]:
        loop = asyncio.get_running_loop()
        assert is_virtual()
        t0 = loop.time()
        await asyncio.sleep(3600.25)

        async def s(d: float) -> float:
            await asyncio.sleep(d)
            return loop.time() - t0

        r = await asyncio.gather(*(s(d) for d in (3.0, 1.0, 2.0)))
        return loop.time() - t0, r

    wall = time.perf_counter()
    total, r = run_virtual(main())
    assert time.perf_counter() - wall < 2.0
    assert total == 3603.25
    assert r == [3603.25, 3601.25, 3602.25]


@pytest.mark.timeout(10)
def test_timeout_call_at_and_threads_work() -> None:
    async def main() -> tuple[bool, float, int]:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        timed_out = False
        try:
            async with asyncio.timeout(5):
                await asyncio.sleep(10)
        except TimeoutError:
            timed_out = True
        fired: list[float] = []
        loop.call_at(loop.time() + 7, lambda: fired.append(loop.time()))
        await asyncio.sleep(8)
        n = await asyncio.to_thread(lambda: 41 + 1)  # real thread wake-up still works
        return timed_out, fired[0] - t0, n

    timed_out, fired, n = run_virtual(main(), start=100.0)
    assert timed_out and fired == 12.0 and n == 42


@pytest.mark.timeout(10)
def test_cancelled_timers_do_not_move_the_clock() -> None:
    async def main() -> float:
        loop = asyncio.get_running_loop()
        h = loop.call_later(1000, lambda: None)
        h.cancel()
        await asyncio.sleep(1)
        return loop.time()

    assert run_virtual(main()) == 1.0
    loop = VirtualTimeLoop()
    assert isinstance(loop, asyncio.AbstractEventLoop) and loop.time() == 0.0
    loop.close()


@pytest.mark.timeout(10)
def test_thread_work_takes_zero_virtual_time() -> None:
    """While a thread computes, virtual timers must not fire (they would time out real work)."""

    async def main() -> tuple[float, bool, float]:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        sleeper = asyncio.create_task(asyncio.sleep(1.0))
        async with asyncio.timeout(5.0):  # a virtual deadline around real work
            await asyncio.to_thread(time.sleep, 0.2)
        during = loop.time() - t0
        done_during = sleeper.done()
        await sleeper
        return during, done_during, loop.time() - t0

    during, done_during, after = run_virtual(main())
    assert during == 0.0 and not done_during and after == 1.0
