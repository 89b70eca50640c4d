"""The tool contract and the Hermes/Qwen tool-call format.

A model acts by writing `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` blocks and finishes
with `<answer>...</answer>`. Everything that can go wrong (bad JSON, unknown tool, bad arguments,
timeout, an exception inside the tool) becomes a `ToolResult` with `ok=False` and a message that tells
the model what to fix; nothing raises out of `Tool.__call__`.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import json
import re
import time
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from asyncio_throttle import Throttler

TOOL_CALL_RE = re.compile(r"<tool_call>(.*?)</tool_call>", re.DOTALL)
ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_UNCLOSED_CALL_RE = re.compile(r"<tool_call>(?![\s\S]*</tool_call>)")


class ToolError(Exception):
    """Raised inside a tool for a failure the model caused and can fix; the message is shown to it."""


@dataclass(frozen=True, slots=True)
class ToolCall:
    name: str
    arguments: dict[str, Any]


@dataclass(slots=True)
class ParsedAction:
    """A model turn split into tool calls, a final answer, and the format errors found."""

    text: str
    tool_calls: list[ToolCall] = field(default_factory=list)
    answer: str | None = None
    errors: list[str] = field(default_factory=list)


@dataclass(slots=True)
class ToolResult:
    name: str
    content: str
    ok: bool = True
    error_kind: str | None = (
        None  # malformed | unknown_tool | bad_arguments | timeout | exception | rate_limited
    )
    latency_s: float = 0.0


def format_tool_call(name: str, arguments: Mapping[str, Any]) -> str:
    return "<tool_call>" + json.dumps({"name": name, "arguments": dict(arguments)}) + "</tool_call>"


def format_answer(answer: object) -> str:
    return f"<answer>{answer}</answer>"


def parse_action(text: str, max_calls: int = 8) -> ParsedAction:
    """Split a model turn. Never raises: problems are collected in `errors` for the observation."""
    if not isinstance(text, str):
        return ParsedAction(text=str(text), errors=[f"the action must be text, got {type(text).__name__}"])
    out = ParsedAction(text=text)
    answers = ANSWER_RE.findall(text)
    if answers:
        out.answer = answers[-1].strip()
    for i, raw in enumerate(TOOL_CALL_RE.findall(text)):
        if i >= max_calls:
            out.errors.append(f"too many tool calls in one turn (limit {max_calls}); the rest were ignored")
            break
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as e:
            out.errors.append(f"tool call {i + 1} is not valid JSON ({e.msg} at char {e.pos})")
            continue
        if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
            out.errors.append(
                f'tool call {i + 1} must be an object with a string "name" and an "arguments" object'
            )
            continue
        args = obj.get("arguments", {})
        if isinstance(args, str):  # some models emit arguments as a JSON string
            with contextlib.suppress(json.JSONDecodeError):
                args = json.loads(args)
        if not isinstance(args, dict):
            out.errors.append(f'tool call {i + 1} ("{obj["name"]}"): "arguments" must be a JSON object')
            continue
        out.tool_calls.append(ToolCall(obj["name"], args))
    if _UNCLOSED_CALL_RE.search(text):
        out.errors.append("a <tool_call> tag was opened but never closed with </tool_call>")
    if "<answer>" in text and not answers:
        out.errors.append("an <answer> tag was opened but never closed with </answer>")
    return out


_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
}


def _is_json_type(value: Any, name: str) -> bool:
    if name == "null":
        return value is None
    if isinstance(value, bool) and name in ("integer", "number"):
        return False  # bool is an int subclass in Python, but not a number in JSON
    return isinstance(value, _JSON_TYPES.get(name, (object,)))


def validate_arguments(schema: Mapping[str, Any], arguments: Mapping[str, Any]) -> None:
    """Check arguments against a flat JSON-schema object (the subset tool schemas use)."""
    props: Mapping[str, Any] = schema.get("properties", {})
    missing = [k for k in schema.get("required", []) if k not in arguments]
    if missing:
        raise ToolError(f"missing required argument(s): {', '.join(missing)}")
    if schema.get("additionalProperties", False) is False:
        extra = sorted(set(arguments) - set(props))
        if extra:
            raise ToolError(
                f"unexpected argument(s): {', '.join(extra)}; allowed: {', '.join(props) or 'none'}"
            )
    for key, value in arguments.items():
        spec = props.get(key)
        if not spec or "type" not in spec:
            continue
        names = spec["type"] if isinstance(spec["type"], list) else [spec["type"]]  # e.g. ["string", "null"]
        if not any(_is_json_type(value, t) for t in names):
            shown = " or ".join(names)
            raise ToolError(f"argument {key!r} must be of type {shown}, got {type(value).__name__}")
        if "enum" in spec and value not in spec["enum"]:
            raise ToolError(f"argument {key!r} must be one of {spec['enum']}, got {value!r}")
        if isinstance(value, str) and "maxLength" in spec and len(value) > spec["maxLength"]:
            raise ToolError(f"argument {key!r} is longer than {spec['maxLength']} characters")


class Tool(abc.ABC):
    """Subclass, set the class attributes, and implement `run`.

    `timeout` bounds each call, `max_concurrency` caps calls in flight, and `rate_limit`
    (calls, period_s) throttles them with asyncio-throttle. Limits are per instance and per event loop.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    parameters: ClassVar[dict[str, Any]]

    def __init__(
        self,
        timeout: float = 10.0,
        max_concurrency: int = 64,
        rate_limit: tuple[int, float] | None = None,
    ) -> None:
        if timeout <= 0:
            raise ValueError(f"{type(self).__name__}: timeout must be > 0, got {timeout}")
        if max_concurrency < 1:
            raise ValueError(f"{type(self).__name__}: max_concurrency must be >= 1, got {max_concurrency}")
        self.timeout = timeout
        self.max_concurrency = max_concurrency
        self.rate_limit = rate_limit
        self._limits: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, tuple[asyncio.Semaphore, Throttler | None]
        ] = weakref.WeakKeyDictionary()

    @abc.abstractmethod
    async def run(self, **arguments: Any) -> str:
        """Do the work. Raise `ToolError` for mistakes the model should see and fix."""

    def schema(self) -> dict[str, Any]:
        """OpenAI-style function schema, as chat templates expect it."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }

    def _loop_limits(self) -> tuple[asyncio.Semaphore, Throttler | None]:
        loop = asyncio.get_running_loop()
        limits = self._limits.get(loop)
        if limits is None:
            throttler = None
            if self.rate_limit is not None:
                calls, period = self.rate_limit
                throttler = Throttler(rate_limit=calls, period=period)
            limits = (asyncio.Semaphore(self.max_concurrency), throttler)
            self._limits[loop] = limits
        return limits

    async def __call__(self, arguments: Mapping[str, Any]) -> ToolResult:
        start = time.perf_counter()

        def result(content: str, kind: str | None = None) -> ToolResult:
            return ToolResult(self.name, content, kind is None, kind, time.perf_counter() - start)

        try:
            if not isinstance(arguments, Mapping):
                raise ToolError(f"arguments must be a JSON object, got {type(arguments).__name__}")
            validate_arguments(self.parameters, arguments)
        except ToolError as e:
            return result(f"Error: bad arguments for {self.name}: {e}", "bad_arguments")
        sem, throttler = self._loop_limits()
        try:
            # the deadline starts once the call may run: time spent queued behind the concurrency cap
            # or the rate limit is not the tool's slowness (every holder is itself bounded)
            async with sem:
                if throttler is not None:
                    await throttler.acquire()
                async with asyncio.timeout(self.timeout):
                    return result(await self.run(**arguments))
        except TimeoutError:
            return result(f"Error: {self.name} timed out after {self.timeout:g} s", "timeout")
        except ToolError as e:
            return result(f"Error: {e}", "exception")
        except asyncio.CancelledError:
            raise
        except Exception as e:  # a bug or outage inside the tool must not crash the episode
            return result(f"Error: {self.name} failed: {type(e).__name__}: {e}", "exception")


class ToolBox:
    """The tools of one environment, by name, with dispatch that turns every failure into a result."""

    def __init__(self, tools: Sequence[Any]) -> None:
        """`tools`: Tool instances, toolsets (e.g. `MCPToolset`) and plain functions (see `function_tool`)."""
        from agentrl.tools.function import as_tools  # function tools build on this module

        tools = as_tools(tools)
        names = [t.name for t in tools]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate tool names: {names}")
        self.tools = {t.name: t for t in tools}

    def schemas(self) -> list[dict[str, Any]]:
        return [t.schema() for t in self.tools.values()]

    async def call(self, call: ToolCall) -> ToolResult:
        tool = self.tools.get(call.name)
        if tool is None:
            known = ", ".join(self.tools) or "none"
            return ToolResult(
                call.name,
                f"Error: unknown tool {call.name!r}; available tools: {known}",
                False,
                "unknown_tool",
            )
        return await tool(call.arguments)
