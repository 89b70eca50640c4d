"""Virtual time: run any coroutine on an event loop whose clock jumps instead of waiting.

Everything in the rollout path takes its time from the loop (`loop.time()`, `asyncio.sleep`,
`asyncio.timeout`, `loop.call_at`), so the very same scheduler that drives real episodes becomes
a latency simulator when it runs here: a ten-hour study takes seconds, and the simulator cannot
drift from the real code because it *is* the real code.

Why our own loop and not `looptime`: `looptime` is built around pytest and rounds time to a fixed
resolution; we want exact float time (order statistics must match to the last digit) and a runtime
helper with no test-framework coupling. The loop below is ~40 lines on top of the standard
selector loop: the selector's `select(timeout)` polls real I/O without blocking and, when nothing
is ready, moves the clock to the next timer. Real I/O and thread wake-ups still work; only waiting
is skipped. A loop with no timers and nothing ready blocks exactly as the real loop would.

Work in threads (`asyncio.to_thread`, `run_in_executor`: a model's forward pass, a learner step)
takes zero virtual time: while such a job is outstanding the clock stands still and the loop waits
for it in real time. Otherwise the clock would race through every pending timer (episode
timeouts, the watchdog) while the thread computes. Real network I/O, on the other hand, is not
waited for: a virtual timeout racing a real socket fires first.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class _VirtualSelector(selectors.DefaultSelector):  # type: ignore[misc,valid-type]
    """Polls real file descriptors without blocking, and advances virtual time instead of sleeping."""

    def __init__(self) -> None:
        super().__init__()
        self.loop: VirtualTimeLoop | None = None

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None:  # nothing scheduled at all: behave like the real loop (wait for I/O)
            return super().select(None)
        if timeout <= 0:  # callbacks are ready: just poll
            return super().select(0)
        loop = self.loop
        if loop is not None and loop._executor_jobs:  # a thread is working: the clock waits for it
            return super().select(None)  # its completion wakes us through the loop's self-pipe
        events = super().select(0)
        if not events and loop is not None:
            loop._advance()
        return events


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """A selector event loop whose `time()` is virtual: it jumps to the next timer when idle."""

    def __init__(self, start: float = 0.0) -> None:
        selector = _VirtualSelector()
        super().__init__(selector)
        selector.loop = self
        self._virtual_now = float(start)
        self._clock_resolution = 1e-9
        self._executor_jobs = 0

    def time(self) -> float:
        return self._virtual_now

    def run_in_executor(self, executor: Any, func: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        fut = super().run_in_executor(executor, func, *args)
        self._executor_jobs += 1
        fut.add_done_callback(self._executor_job_done)
        return fut

    def _executor_job_done(self, _: asyncio.Future[Any]) -> None:
        self._executor_jobs -= 1

    def _advance(self) -> None:
        # The base loop has already popped cancelled timers off the head of the heap, so the head is
        # the next timer that will fire; jumping exactly to it keeps times exact (no float drift).
        scheduled = self._scheduled  # type: ignore[attr-defined]
        if scheduled:
            when = scheduled[0]._when
            if when > self._virtual_now:
                self._virtual_now = when


def new_virtual_loop(start: float = 0.0) -> VirtualTimeLoop:
    return VirtualTimeLoop(start)


def run_virtual(coro: Coroutine[Any, Any, T], *, start: float = 0.0, debug: bool | None = None) -> T:
    """Run `coro` to completion on a fresh virtual-time loop (like `asyncio.run`) and return its result.

    Shutdown is `asyncio.Runner`'s: remaining tasks are cancelled and awaited, async generators
    closed, so a clean program prints no "Task was destroyed but it is pending" warnings.
    """
    with asyncio.Runner(debug=debug, loop_factory=lambda: VirtualTimeLoop(start)) as runner:
        return runner.run(coro)


def is_virtual(loop: asyncio.AbstractEventLoop | None = None) -> bool:
    """True when running (or given) a virtual-time loop."""
    loop = loop or asyncio.get_running_loop()
    return isinstance(loop, VirtualTimeLoop)


__all__ = ["VirtualTimeLoop", "is_virtual", "new_virtual_loop", "run_virtual"]
