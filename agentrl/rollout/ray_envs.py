"""Environments, and the tools they run, in Ray actors: the episode loop stays on the driver.

`RayEnvPool(make, workers=N)` starts N `EnvWorker` actors (spread over the cluster's nodes, one CPU
reserved each). Called with a prompt's env name it returns a `RayEnv`, a proxy with the async
`areset`/`astep` that `run_episode` drives exactly as it drives an env in process: the env object
lives in one actor, its sandboxed tools run there, and only messages and rewards cross the wire. So an
episode gives the same trajectory, token for token, in process and on Ray.

Every call into an actor has a deadline (`call_timeout`; the first call also waits up to
`start_timeout` for the workers to start). A worker that dies fails the episodes it was running with
`EnvWorkerError` (the episode's status is `env_error`) and is replaced by a fresh actor; the proxies
that lived on it make their env again on the new worker at their next reset.

`make` runs inside the workers, so it must pickle (a module-level function, a `functools.partial`,
`SameEnv`), and the env's module must be importable there: on other machines, install agentrl (and
your env's package) in the same environment as the driver.

`check_ray_address` tells, within a few seconds, whether a cluster answers at an address; `agentrl
train` runs it before any work starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["EnvWorkerError", "RayEnv", "RayEnvPool", "SameEnv", "check_ray_address"]

DEFAULT_RAY_PORT = 6379  # `ray start --head` listens here (GCS)
RAY_CLIENT_PORT = 10001  # `ray://HOST` (Ray Client) listens here


class EnvWorkerError(RuntimeError):
    """An env worker (Ray actor) died or cannot be reached; its episodes end with `env_error`."""


@dataclass(frozen=True)
class SameEnv:
    """A picklable env factory that makes the same env whatever the prompt's env name."""

    make: Callable[[], Any]

    def __call__(self, _name: str) -> Any:
        return self.make()


def _ray() -> Any:
    try:
        import ray
    except ModuleNotFoundError:
        raise ModuleNotFoundError(
            "env.backend=ray needs Ray: pip install 'agentrl[ray]' (or pip install ray)"
        ) from None
    return ray


def _host_port(address: str) -> tuple[str, int]:
    """`HOST[:PORT]` or `ray://HOST[:PORT]` → (host, port) with Ray's default ports."""
    client = address.startswith("ray://")
    rest = address.removeprefix("ray://").rstrip("/")
    host, sep, port = rest.rpartition(":")
    if not sep:
        host, port = rest, ""
    if not host:
        raise ValueError(
            f"env.ray_address: {address!r} names no host (expected HOST:PORT or ray://HOST:PORT)"
        )
    if not port:
        return host, RAY_CLIENT_PORT if client else DEFAULT_RAY_PORT
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"env.ray_address: {address!r} has no valid port")
    return host, int(port)


def check_ray_address(address: str | None, timeout: float = 5.0) -> None:
    """Raise ValueError (one line) unless something accepts connections at the cluster's address.

    None or "local" means a Ray instance that this process starts (nothing to check); "auto" means the
    cluster `ray start` left on this machine, which Ray finds itself.
    """
    if address in (None, "", "local", "auto"):
        return
    host, port = _host_port(address)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as e:
        why = "no answer" if isinstance(e, TimeoutError) else (e.strerror or type(e).__name__)
        raise ValueError(
            f"env.ray_address: no Ray cluster answers at {host}:{port} within {timeout:g} s ({why}); "
            "start one with `ray start --head` or fix the address"
        ) from None


class EnvWorker:
    """The actor: env instances by key, driven through their async twins on the actor's event loop."""

    def __init__(self, make: Callable[[str], Any]) -> None:
        self._make = make
        self._envs: dict[int, Any] = {}
        self._keys = itertools.count()

    async def ping(self) -> int:
        import os

        return os.getpid()

    async def create(self, name: str) -> int:
        env = self._make(name)
        # gymnasium's wrappers do not forward the async twins; the env applies its own limits.
        env = env if hasattr(env, "astep") else env.unwrapped
        key = next(self._keys)
        self._envs[key] = env
        return key

    async def reset(self, key: int, seed: int | None, options: dict[str, Any] | None) -> Any:
        return await self._envs[key].areset(seed=seed, options=options)

    async def step(self, key: int, action: str) -> Any:
        return await self._envs[key].astep(action)

    async def call(self, key: int, method: str, args: tuple[Any, ...]) -> Any:
        """A plain method of the env (`task_ids`, `expert_action`, ...)."""
        return getattr(self._envs[key], method)(*args)

    async def close(self, key: int) -> None:
        env = self._envs.pop(key, None)
        close = getattr(env, "close", None)
        if close is not None:
            close()

    async def count(self) -> int:
        return len(self._envs)


class _Slot:
    """One worker position: the current actor and how many times it was replaced."""

    def __init__(self, actor: Any) -> None:
        self.actor = actor
        self.generation = 0
        self.started = False
        self.envs = 0  # proxies assigned to this slot (they follow it across replacements)


class RayEnvPool:
    """An env factory (`pool(env_name) -> RayEnv`) backed by `workers` Ray actors."""

    def __init__(
        self,
        make: Callable[[str], Any],
        *,
        workers: int = 1,
        address: str | None = None,
        call_timeout: float = 120.0,
        start_timeout: float = 120.0,
        cpus_per_worker: float = 1.0,
        init_kwargs: dict[str, Any] | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError(f"env.workers: need at least 1 worker, got {workers}")
        ray = _ray()
        if not ray.is_initialized():
            check_ray_address(address)
            ray.init(
                address=None if address in (None, "", "local") else address,
                include_dashboard=False,
                log_to_driver=False,
                **(init_kwargs or {}),
            )
            self._own_ray = True
        else:
            self._own_ray = False
        self.make = make
        self.call_timeout = call_timeout
        self.start_timeout = start_timeout
        self.replaced = 0  # workers replaced after dying
        self._actor_cls = ray.remote(num_cpus=cpus_per_worker, scheduling_strategy="SPREAD")(EnvWorker)
        self.slots = [_Slot(self._spawn()) for _ in range(workers)]
        self._next = itertools.count()
        self._closed = False

    def _spawn(self) -> Any:
        return self._actor_cls.remote(self.make)

    def __call__(self, name: str) -> RayEnv:
        if self._closed:
            raise EnvWorkerError("the env worker pool is shut down")
        # the least-loaded slot, ties to the next in turn: proxies spread evenly over workers
        turn = next(self._next)
        n = len(self.slots)
        order = [(turn + i) % n for i in range(n)]
        index = min(order, key=lambda i: self.slots[i].envs)
        self.slots[index].envs += 1
        return RayEnv(self, index, name)

    # -- calls ------------------------------------------------------------------------------------

    async def _ready(self, slot: _Slot, index: int) -> None:
        if slot.started:
            return
        ray = _ray()
        ref = slot.actor.ping.remote()
        try:
            async with asyncio.timeout(self.start_timeout):
                await ref
        except TimeoutError:
            ray.cancel(ref)
            cpus = ray.cluster_resources().get("CPU", 0)
            raise EnvWorkerError(
                f"env worker {index} did not start within {self.start_timeout:g} s (the cluster has "
                f"{cpus:g} CPUs for {len(self.slots)} workers)"
            ) from None
        slot.started = True

    async def call(self, index: int, generation: int, method: str, *args: Any) -> Any:
        """`actor.method(*args)` on slot `index`'s actor of `generation`, within `call_timeout`."""
        ray = _ray()
        slot = self.slots[index]
        if slot.generation != generation:
            raise EnvWorkerError(f"env worker {index} was replaced; its envs are gone")
        try:
            await self._ready(slot, index)
            ref = getattr(slot.actor, method).remote(*args)
            try:
                async with asyncio.timeout(self.call_timeout):
                    return await ref
            except TimeoutError:
                with contextlib.suppress(Exception):
                    ray.cancel(ref)
                raise TimeoutError(
                    f"env worker {index}: {method} missed its {self.call_timeout:g} s deadline"
                ) from None
        except ray.exceptions.RayTaskError as e:  # the env raised: re-raise what it raised
            cause = getattr(e, "cause", None)
            if isinstance(cause, Exception):
                raise cause from None
            raise
        except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError) as e:
            self._replace(index, generation)
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise EnvWorkerError(f"env worker {index} died ({first}); a new worker replaces it") from None

    def _replace(self, index: int, generation: int) -> None:
        slot = self.slots[index]
        if slot.generation != generation or self._closed:
            return  # already replaced
        with contextlib.suppress(Exception):
            _ray().kill(slot.actor, no_restart=True)
        slot.actor = self._spawn()
        slot.generation += 1
        slot.started = False
        self.replaced += 1

    async def worker_pids(self) -> list[int]:
        """Each worker's process id (starting the workers if needed)."""
        return [await self.call(i, s.generation, "ping") for i, s in enumerate(self.slots)]

    def shutdown(self) -> None:
        """Kill the workers (and the Ray instance this pool started, if it did)."""
        if self._closed:
            return
        self._closed = True
        ray = _ray()
        for slot in self.slots:
            with contextlib.suppress(Exception):
                ray.kill(slot.actor, no_restart=True)
        if self._own_ray:
            ray.shutdown()


class RayEnv:
    """An env in a Ray actor, driven like one in process: `areset`, `astep`, `aclose`/`close`."""

    def __init__(self, pool: RayEnvPool, index: int, name: str) -> None:
        self.pool = pool
        self.index = index
        self.env_name = name
        self._generation = pool.slots[index].generation
        self._key: int | None = None

    async def _bind(self) -> int:
        slot = self.pool.slots[self.index]
        if self._key is not None and self._generation != slot.generation:
            self._key = None  # the worker died since: make the env again on its replacement
        if self._key is None:
            self._generation = slot.generation
            self._key = int(await self.pool.call(self.index, self._generation, "create", self.env_name))
        return self._key

    async def areset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[str, dict[str, Any]]:
        key = await self._bind()
        obs, info = await self.pool.call(self.index, self._generation, "reset", key, seed, options)
        return obs, info

    async def astep(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        if self._key is None:
            raise RuntimeError("call areset() before astep()")
        obs, reward, terminated, truncated, info = await self.pool.call(
            self.index, self._generation, "step", self._key, action
        )
        return obs, reward, terminated, truncated, info

    async def acall(self, method: str, *args: Any) -> Any:
        """Call a plain method of the remote env, e.g. `await env.acall("task_ids", "train")`."""
        key = await self._bind()
        return await self.pool.call(self.index, self._generation, "call", key, method, args)

    async def aclose(self) -> None:
        if self._key is not None:
            key, self._key = self._key, None
            with contextlib.suppress(EnvWorkerError, TimeoutError):
                await self.pool.call(self.index, self._generation, "close", key)

    def close(self) -> None:
        """Ask the worker to close the env without waiting (what `EpisodeRunner.aclose` calls)."""
        slot = self.pool.slots[self.index]
        if self._key is not None and self._generation == slot.generation and not self.pool._closed:
            with contextlib.suppress(Exception):
                slot.actor.close.remote(self._key)
        self._key = None
