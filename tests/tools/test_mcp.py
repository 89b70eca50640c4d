"""MCP toolsets against a small MCP server started by the tests (tests/tools/mcp_server.py)."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

pytest.importorskip("mcp")

from agentrl.envs import Task, ToolEnv
from agentrl.rollout.episode import run_episode
from agentrl.tools import MCPToolset, ToolBox, ToolCall, format_answer, format_tool_call
from agentrl.types import SamplingParams, Status
from tests.policy.conftest import ScriptedPolicy, _tokenizer

SERVER = [sys.executable, str(Path(__file__).with_name("mcp_server.py"))]


@pytest.fixture(scope="module")
def toolset() -> Iterator[MCPToolset]:
    ts = MCPToolset(SERVER, timeout=5.0, include=["add", "lookup", "slow"])
    yield ts
    ts.close()


async def test_lists_tools_with_their_schemas(toolset: MCPToolset) -> None:
    schemas = {s["function"]["name"]: s["function"] for s in ToolBox([toolset]).schemas()}
    assert set(schemas) == {"add", "lookup", "slow"}
    assert schemas["add"]["description"] == "Add two integers."
    params = schemas["add"]["parameters"]
    assert params["required"] == ["a", "b"] and params["properties"]["a"]["type"] == "integer"


async def test_calls_errors_and_deadlines(toolset: MCPToolset) -> None:
    box = ToolBox([toolset])
    r = await box.call(ToolCall("add", {"a": 2, "b": 40}))
    assert r.ok and r.content == "42"
    r = await box.call(ToolCall("add", {"a": "two", "b": 1}))
    assert r.error_kind == "bad_arguments"
    r = await box.call(ToolCall("lookup", {"key": "nothing"}))
    assert not r.ok and r.error_kind == "exception"
    slow = toolset.tools[[t.name for t in toolset.tools].index("slow")]
    slow.timeout = 0.3
    t0 = time.perf_counter()
    r = await slow({"seconds": 5})
    assert r.error_kind == "timeout" and time.perf_counter() - t0 < 2.0
    # many concurrent calls from one loop, and calls from the sync API's fresh loops
    results = await asyncio.gather(*(box.call(ToolCall("add", {"a": i, "b": 1})) for i in range(20)))
    assert [r.content for r in results] == [str(i + 1) for i in range(20)]


def test_sync_calls_from_fresh_loops(toolset: MCPToolset) -> None:
    for i in range(3):
        assert toolset.call("add", {"a": i, "b": i}).content[0].text == str(2 * i)


async def test_a_crashed_server_gives_error_observations_not_a_hang() -> None:
    ts = MCPToolset(SERVER, timeout=5.0)
    box = ToolBox([ts])
    t0 = time.perf_counter()
    r = await box.call(ToolCall("crash", {}))
    assert not r.ok and r.error_kind == "exception"
    r = await box.call(ToolCall("add", {"a": 1, "b": 2}))
    assert not r.ok and "not running" in r.content and time.perf_counter() - t0 < 5.0
    ts.close()
    ts.close()  # idempotent


def test_a_command_that_fails_to_start_is_one_line() -> None:
    with pytest.raises(ValueError) as e:
        MCPToolset(["agentrl-no-such-mcp-server", "--stdio"])
    msg = str(e.value)
    assert "\n" not in msg and "'agentrl-no-such-mcp-server --stdio' failed to start" in msg
    with pytest.raises(ValueError) as e:
        MCPToolset(
            [sys.executable, "-c", "import sys; print('no server here', file=sys.stderr); sys.exit(3)"]
        )
    msg = str(e.value)
    assert "\n" not in msg and "failed during start-up" in msg and "no server here" in msg


class Adder(ToolEnv):
    """Sums through the MCP server's `add`; each env starts (and closes) its own server."""

    name: ClassVar[str] = "adder"
    tools = (lambda: MCPToolset(SERVER, timeout=5.0, include=["add"]),)
    max_turns = 3

    def load_tasks(self, split: str) -> list[Task]:
        return [Task(f"{a:02d}", f"What is {a} + {a + 3}?", 2 * a + 3, data={"a": a}) for a in (1, 5, 9)]

    def expert_action(self) -> str:
        assert self.task is not None
        done = self.tool_outputs("add")
        if done:
            return format_answer(done[-1])
        a = self.task.data["a"]
        return format_tool_call("add", {"a": a, "b": a + 3})


async def test_env_with_mcp_tools_end_to_end() -> None:
    env = Adder()
    try:
        tok = _tokenizer()
        for task_id in env.task_ids():
            traj = await run_episode(
                env, ScriptedPolicy(tok, env=env), tok, prompt_id=f"adder/train/{task_id}"
            )
            assert traj.status is Status.OK and traj.reward == 1.0, traj.error
        from agentrl.models import load_model, model_path
        from agentrl.policy.hf import HFPolicy

        model, mtok = load_model(str(model_path("tiny")))
        policy = HFPolicy(model, mtok)
        traj = await run_episode(
            env, policy, prompt_id="adder/test/09", params=SamplingParams(max_new_tokens=32, seed=4)
        )
        assert traj.status in (Status.OK, Status.TRUNCATED) and traj.turns, traj.error
        await policy.aclose()
    finally:
        env.close()
    toolset = env.toolbox.tools["add"].toolset
    assert not toolset.alive


def test_env_with_mcp_tools_through_the_sync_api() -> None:
    env = Adder()
    try:  # each sync step runs on a fresh event loop; the server's client loop is its own
        env.reset(options={"task_id": "05"})
        obs, *_ = env.step(env.expert_action())
        assert "13" in obs
        assert env.step(env.expert_action())[1] == 1.0
    finally:
        env.close()
