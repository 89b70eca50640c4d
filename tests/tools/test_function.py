"""Function tools: schemas from signatures and docstrings, the Tool contract, and envs built from them."""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Sequence
from typing import ClassVar, Literal

import pytest

from agentrl.envs import Task, ToolEnv
from agentrl.rollout.episode import run_episode
from agentrl.tools import ToolBox, ToolCall, format_answer, format_tool_call, function_tool
from agentrl.tools.function import FunctionTool
from agentrl.types import SamplingParams, Status
from tests.policy.conftest import ScriptedPolicy, _tokenizer


class Unit(enum.Enum):
    C = "celsius"
    F = "fahrenheit"


def convert(value: float, to: Unit, digits: int = 1) -> str:
    """Convert a temperature.

    Args:
        value: the temperature in the other unit.
        to: the unit to convert to.
        digits: decimals to round to.
    """
    out = value * 9 / 5 + 32 if to is Unit.F else (value - 32) * 5 / 9
    return f"{out:.{digits}f}"


async def lookup(key: str, keys: list[str] | None = None, mode: Literal["a", "b"] = "a") -> dict[str, str]:
    """Look a key up.

    Parameters
    ----------
    key : str
        The key to find.
    keys : list of str, optional
        Extra keys.
    """
    await asyncio.sleep(0)
    if key == "boom":
        raise KeyError(key)
    return {"key": key, "mode": mode}


def test_schema_from_signature_and_docstrings() -> None:
    tool = function_tool(convert)
    fn = tool.schema()["function"]
    assert fn["name"] == "convert" and fn["description"] == "Convert a temperature."
    props = fn["parameters"]["properties"]
    assert props["value"] == {"type": "number", "description": "the temperature in the other unit."}
    assert props["to"]["enum"] == ["celsius", "fahrenheit"] and props["to"]["type"] == "string"
    assert props["digits"]["default"] == 1 and fn["parameters"]["required"] == ["value", "to"]
    numpy_style = function_tool(lookup).schema()["function"]
    assert numpy_style["parameters"]["properties"]["key"]["description"] == "The key to find."
    assert numpy_style["parameters"]["properties"]["keys"]["type"] == ["array", "null"]
    assert numpy_style["parameters"]["properties"]["mode"] == {
        "enum": ["a", "b"],
        "type": "string",
        "default": "a",
    }


async def test_calls_validate_convert_and_report_errors() -> None:
    box = ToolBox([convert, lookup])
    r = await box.call(ToolCall("convert", {"value": 100, "to": "fahrenheit"}))
    assert r.ok and r.content == "212.0"
    r = await box.call(ToolCall("convert", {"value": "hot", "to": "celsius"}))
    assert not r.ok and r.error_kind == "bad_arguments" and "'value' must be of type number" in r.content
    r = await box.call(ToolCall("convert", {"value": 1, "to": "kelvin"}))
    assert r.error_kind == "bad_arguments" and "must be one of" in r.content
    r = await box.call(ToolCall("lookup", {"key": "k"}))
    assert r.ok and r.content == '{"key": "k", "mode": "a"}'
    r = await box.call(ToolCall("lookup", {"key": "boom"}))
    assert not r.ok and r.error_kind == "exception" and "KeyError" in r.content


async def test_timeout_and_rate_limit_like_any_tool() -> None:
    def nap(seconds: float) -> str:
        """Sleep."""
        time.sleep(seconds)
        return "awake"

    tool = function_tool(nap, timeout=0.1)
    t0 = time.perf_counter()
    r = await tool({"seconds": 2.0})
    assert r.error_kind == "timeout" and time.perf_counter() - t0 < 1.0
    limited = function_tool(name="n2", rate_limit=(2, 0.3))(nap)
    t0 = time.perf_counter()
    await asyncio.gather(*(limited({"seconds": 0.0}) for _ in range(4)))
    assert time.perf_counter() - t0 >= 0.25


def test_bad_functions_give_one_line_errors() -> None:
    def untyped(a: int, b) -> int:  # type: ignore[no-untyped-def]
        return a

    with pytest.raises(ValueError) as e:
        function_tool(untyped)
    msg = str(e.value)
    assert "\n" not in msg and "untyped" in msg and "parameter 'b' has no type hint" in msg

    def star(*args: int) -> int:
        return 0

    with pytest.raises(ValueError, match=r"star.*\*args"):
        function_tool(star)

    def weird(x: bytes) -> str:
        return ""

    with pytest.raises(ValueError, match=r"weird.*parameter 'x'.*no JSON-schema equivalent"):
        ToolBox([weird])


class Conversion(ToolEnv):
    """An env whose only tool is a plain function, declared on the class."""

    name: ClassVar[str] = "convert"
    tools: ClassVar[Sequence[object]] = (convert,)
    max_turns = 3

    def load_tasks(self, split: str) -> list[Task]:
        return [Task(f"{c:03d}", f"What is {c} C in F?", round(c * 9 / 5 + 32, 1)) for c in (0, 20, 37, 100)]

    def expert_action(self) -> str:
        assert self.task is not None
        done = self.tool_outputs("convert")
        if done:
            return format_answer(done[-1])
        return format_tool_call("convert", {"value": float(self.task.id), "to": "fahrenheit"})


async def test_env_with_function_tools_end_to_end() -> None:
    env = Conversion()
    assert isinstance(env.toolbox.tools["convert"], FunctionTool)
    tok = _tokenizer()
    for task_id in env.task_ids():
        traj = await run_episode(env, ScriptedPolicy(tok, env=env), tok, prompt_id=f"convert/train/{task_id}")
        assert traj.status is Status.OK and traj.reward == 1.0, traj.error
        assert env.messages[2]["role"] == "assistant" and env.messages[3]["role"] == "tool"
    # a tool given to the constructor as a plain function
    env2 = Conversion(tools=[lookup])
    assert list(env2.toolbox.tools) == ["lookup"]

    from agentrl.models import load_model, model_path
    from agentrl.policy.hf import HFPolicy

    model, mtok = load_model(str(model_path("tiny")))
    policy = HFPolicy(model, mtok)
    traj = await run_episode(
        env, policy, prompt_id="convert/test/020", params=SamplingParams(max_new_tokens=32, seed=3)
    )
    assert traj.status in (Status.OK, Status.TRUNCATED) and traj.turns, traj.error
    await policy.aclose()
