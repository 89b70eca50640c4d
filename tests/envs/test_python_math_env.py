"""PythonMath with the real bubblewrap sandbox. These fail (never skip) when the sandbox is missing:
a PythonMath run without its sandbox would silently train on error messages."""

from __future__ import annotations

import asyncio
import time

import pytest

from agentrl.envs import LatencyProfile, LogNormal
from agentrl.envs.python_math import PythonMathEnv
from agentrl.tools import format_tool_call

from ._helpers import RandomPolicy, expert, run_episode, summarize

pytestmark = pytest.mark.integration


def _env(**kwargs) -> PythonMathEnv:
    try:
        return PythonMathEnv(**kwargs)
    except RuntimeError as e:  # bubblewrap missing or unusable: say so loudly
        pytest.fail(f"the python sandbox is unavailable, PythonMath cannot run: {e}")


async def test_sandbox_really_runs_code():
    env = _env()
    await env.areset(options={"task_id": "00000"})
    _, _, _, _, info = await env.astep(format_tool_call("python", {"code": "print(6 * 7)"}))
    result = info["tool_results"][0]
    assert result["ok"] and result["content"].strip() == "42", f"sandbox did not run code: {result}"


async def test_expert_solves_test_subset():
    env = _env()
    episodes = [await run_episode(env, expert, tid) for tid in env.task_ids("test")[::4]]
    assert summarize(episodes) >= 0.95


@pytest.mark.slow
async def test_expert_solves_full_test_split_concurrently():
    envs = [_env(split="test") for _ in range(200)]
    ids = envs[0].task_ids("test")
    episodes = await asyncio.gather(*(run_episode(e, expert, tid) for e, tid in zip(envs, ids, strict=True)))
    assert summarize(episodes) >= 0.95


async def test_random_policy_rarely_succeeds():
    env = _env()
    policy = RandomPolicy(seed=0)
    episodes = [await run_episode(env, policy, tid) for tid in env.task_ids("test")[:60]]
    assert summarize(episodes) < 0.10


async def test_concurrent_episodes_overlap_under_latency():
    profile = LatencyProfile(step=LogNormal(0.05, 0.5))
    envs = [_env(latency=profile, seed=i) for i in range(40)]
    start = time.perf_counter()
    episodes = await asyncio.gather(*(run_episode(e, expert) for e in envs))
    wall = time.perf_counter() - start
    assert summarize(episodes) >= 0.95
    assert wall < 0.5 * sum(e.wall_s for e in episodes)
