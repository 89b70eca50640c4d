"""The tool contract: call parsing, argument validation, and limits that never raise out of a call."""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentrl.tools import (
    Tool,
    ToolBox,
    ToolCall,
    ToolError,
    format_answer,
    format_tool_call,
    parse_action,
)
from agentrl.tools.base import validate_arguments

# --- parsing -----------------------------------------------------------------------------------------


def test_round_trip_of_calls_and_answer() -> None:
    text = (
        "Let me compute. "
        + format_tool_call("calculator", {"expression": "2+2"})
        + format_tool_call("search", {"query": "x", "k": 2})
        + format_answer(4)
    )
    parsed = parse_action(text)
    assert parsed.tool_calls == [
        ToolCall("calculator", {"expression": "2+2"}),
        ToolCall("search", {"query": "x", "k": 2}),
    ]
    assert parsed.answer == "4" and parsed.errors == []


def test_arguments_given_as_a_json_string() -> None:
    parsed = parse_action(
        '<tool_call>{"name": "calc", "arguments": "{\\"expression\\": \\"1\\"}"}</tool_call>'
    )
    assert parsed.tool_calls == [ToolCall("calc", {"expression": "1"})]


def test_last_answer_wins_and_is_stripped() -> None:
    assert parse_action("<answer>1</answer> <answer> 2 </answer>").answer == "2"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("<tool_call>{not json}</tool_call>", "is not valid JSON"),
        ('<tool_call>["calc"]</tool_call>', 'string "name"'),
        ('<tool_call>{"arguments": {}}</tool_call>', 'string "name"'),
        ('<tool_call>{"name": "calc", "arguments": [1]}</tool_call>', '"arguments" must be a JSON object'),
        ('<tool_call>{"name": "calc", "arguments": "nope"}</tool_call>', '"arguments" must be a JSON object'),
        ('<tool_call>{"name": "calc"', "never closed with </tool_call>"),
        ("<answer>42", "never closed with </answer>"),
    ],
)
def test_format_errors_are_reported(text: str, message: str) -> None:
    parsed = parse_action(text)
    assert parsed.tool_calls == []
    assert any(message in e for e in parsed.errors), parsed.errors


def test_too_many_calls_are_cut() -> None:
    parsed = parse_action(format_tool_call("t", {}) * 5, max_calls=3)
    assert len(parsed.tool_calls) == 3 and "too many tool calls" in parsed.errors[0]


def test_non_text_action() -> None:
    parsed = parse_action(123)  # type: ignore[arg-type]
    assert parsed.errors == ["the action must be text, got int"]


_PIECES = [*'<>/tool_cansw{}":[], ', "<tool_call>", "</tool_call>", "<answer>", "</answer>", '"name"']


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(_PIECES), max_size=60).map("".join))
def test_parse_never_raises(text: str) -> None:
    parsed = parse_action(text)
    assert all(isinstance(c.arguments, dict) for c in parsed.tool_calls)


# --- validation --------------------------------------------------------------------------------------

SCHEMA = {
    "type": "object",
    "properties": {
        "s": {"type": "string", "maxLength": 5},
        "i": {"type": "integer"},
        "n": {"type": "number"},
        "mode": {"type": "string", "enum": ["a", "b"]},
        "opt": {"type": ["string", "null"]},
    },
    "required": ["s"],
    "additionalProperties": False,
}


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({}, "missing required argument(s): s"),
        ({"s": "x", "zz": 1}, "unexpected argument(s): zz"),
        ({"s": 1}, "'s' must be of type string, got int"),
        ({"s": "x", "i": 1.5}, "'i' must be of type integer"),
        ({"s": "x", "i": True}, "'i' must be of type integer, got bool"),
        ({"s": "x", "n": False}, "'n' must be of type number, got bool"),
        ({"s": "x", "mode": "c"}, "must be one of ['a', 'b']"),
        ({"s": "toolong"}, "longer than 5 characters"),
        ({"s": "x", "opt": 3}, "'opt' must be of type string or null"),
    ],
)
def test_validation_errors(arguments: dict[str, Any], message: str) -> None:
    with pytest.raises(ToolError) as info:
        validate_arguments(SCHEMA, arguments)
    assert message in str(info.value)


def test_validation_accepts_good_arguments() -> None:
    validate_arguments(SCHEMA, {"s": "x", "i": 3, "n": 2, "mode": "a", "opt": None})
    validate_arguments(SCHEMA, {"s": "x", "n": 2.5, "opt": "y"})


# --- the call wrapper --------------------------------------------------------------------------------


class Echo(Tool):
    name: ClassVar[str] = "echo"
    description: ClassVar[str] = "Echo the text, optionally after a delay."
    parameters: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {"text": {"type": "string"}, "delay": {"type": "number"}},
        "required": ["text"],
        "additionalProperties": False,
    }

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.running = 0
        self.peak = 0

    async def run(self, **arguments: Any) -> str:
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            await asyncio.sleep(arguments.get("delay", 0))
            if arguments["text"] == "fail":
                raise ToolError("you asked me to fail")
            if arguments["text"] == "bug":
                raise KeyError("oops")
            return arguments["text"]
        finally:
            self.running -= 1


async def test_success_and_errors_become_results() -> None:
    tool = Echo()
    ok = await tool({"text": "hi"})
    assert (ok.ok, ok.content, ok.error_kind, ok.name) == (True, "hi", None, "echo")
    fail = await tool({"text": "fail"})
    assert (fail.ok, fail.content, fail.error_kind) == (False, "Error: you asked me to fail", "exception")
    bug = await tool({"text": "bug"})
    assert bug.error_kind == "exception" and "echo failed: KeyError" in bug.content
    bad = await tool({"txt": "hi"})
    assert bad.error_kind == "bad_arguments" and "missing required argument(s): text" in bad.content
    not_a_dict = await tool(["hi"])  # type: ignore[arg-type]
    assert not_a_dict.error_kind == "bad_arguments" and "must be a JSON object" in not_a_dict.content


async def test_timeout() -> None:
    result = await Echo(timeout=0.05)({"text": "slow", "delay": 5})
    assert result.error_kind == "timeout" and "timed out after 0.05 s" in result.content


async def test_concurrency_cap_and_queue_time_is_not_a_timeout() -> None:
    tool = Echo(max_concurrency=2, timeout=0.5)
    results = await asyncio.gather(*(tool({"text": str(i), "delay": 0.2}) for i in range(6)))
    assert tool.peak == 2
    # the last pair waits 0.4 s in the queue, then runs 0.2 s: 0.6 s in all, yet within its 0.5 s budget
    assert [r.content for r in results] == [str(i) for i in range(6)] and all(r.ok for r in results)


async def test_rate_limit_spaces_calls() -> None:
    tool = Echo(rate_limit=(2, 0.2))
    loop = asyncio.get_running_loop()
    start = loop.time()
    results = await asyncio.gather(*(tool({"text": "x"}) for _ in range(4)))
    assert all(r.ok for r in results)
    assert loop.time() - start >= 0.2  # the third call had to wait for the window to pass


async def test_cancellation_propagates() -> None:
    task = asyncio.create_task(Echo()({"text": "x", "delay": 10}))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_limits_are_per_event_loop() -> None:
    tool = Echo(max_concurrency=1)
    for _ in range(2):  # a fresh loop each time must not trip over the old loop's semaphore
        assert asyncio.run(tool({"text": "x"})).ok


def test_constructor_validation() -> None:
    with pytest.raises(ValueError, match="timeout must be > 0"):
        Echo(timeout=0)
    with pytest.raises(ValueError, match="max_concurrency must be >= 1"):
        Echo(max_concurrency=0)


async def test_toolbox_dispatch_and_schemas() -> None:
    box = ToolBox([Echo()])
    assert box.schemas()[0]["function"]["name"] == "echo"
    unknown = await box.call(ToolCall("nope", {}))
    assert unknown.error_kind == "unknown_tool" and "available tools: echo" in unknown.content
    assert (await box.call(ToolCall("echo", {"text": "hey"}))).content == "hey"
    with pytest.raises(ValueError, match="duplicate tool names"):
        ToolBox([Echo(), Echo()])
