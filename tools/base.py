"""The tool contract and the Hermes/Qwen tool-call format.

A model acts by writing `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` blocks and finishes
with `<answer>...</answer>` (other models' call formats are in `agentrl.tools.formats`). Everything
that can go wrong (bad JSON, unknown tool, bad arguments, timeout, an exception inside the tool)
becomes a `ToolResult` with `ok=False` and a message that tells the model what to fix; nothing raises
out of `Tool.__call__` or `parse_action`.

Parsing is linear in the length of the text: tags are found with `str.find` (never a regex that
rescans from every opening tag), JSON nested deeper than `MAX_JSON_DEPTH` is refused before it is
decoded, and every string echoed back in an error is shortened with `shorten`.
"""

from __future__ import annotations

import abc
import asyncio
import json
import re
import time
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from asyncio_throttle import Throttler

CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
MAX_JSON_DEPTH = 64
MAX_ECHO_CHARS = 200  # longest tool name, argument name or value repeated back in an error
MAX_ERROR_CHARS = 2_000  # longest exception message from inside a tool shown to the model
_JSON_TOKENS = re.compile(r'[\[\]{}"\\]')
_CLOSERS = {"}": "{", "]": "["}


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
    wait_s: float = 0.0  # of latency_s: queued behind the tool's concurrency cap or rate limit


def format_tool_call(name: str, arguments: Mapping[str, Any]) -> str:
    return CALL_OPEN + json.dumps({"name": name, "arguments": dict(arguments)}) + CALL_CLOSE


def format_answer(answer: object) -> str:
    return f"{ANSWER_OPEN}{answer}{ANSWER_CLOSE}"


def shorten(text: object, limit: int = MAX_ECHO_CHARS) -> str:
    """`text` (or its `str`) cut to `limit` characters, saying how much was left out."""
    try:
        s = text if isinstance(text, str) else str(text)
    except Exception:  # an exception or object whose __str__ itself fails
        s = f"<{type(text).__name__}>"
    if len(s) <= limit:
        return s
    return f"{s[:limit]}... [{len(s) - limit:,} more characters]"


def clip(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters in all, ending with a note that says it was cut."""
    if len(text) <= limit:
        return text
    note = f"\n[truncated: {len(text):,} characters, over the limit of {limit:,}]"
    if len(note) >= limit:
        return note[:limit]
    return text[: limit - len(note)] + note


def show(value: object, limit: int = MAX_ECHO_CHARS) -> str:
    """A short `repr` for error messages; never raises (deep or odd values are described instead)."""
    if isinstance(value, str):
        return repr(shorten(value, limit))
    try:
        return shorten(repr(value), limit)
    except Exception:  # RecursionError on a deep value, or a broken __repr__
        return f"<{type(value).__name__}>"


def tagged_blocks(
    text: str, open_tag: str, close_tag: str, limit: int | None = None
) -> tuple[list[str], bool]:
    """The bodies of `open_tag ... close_tag` blocks, leftmost-shortest, and whether a tag is left open.

    One forward pass with `str.find`, so it is linear in `len(text)` however many tags there are;
    with `limit`, it stops after that many blocks.
    """
    bodies: list[str] = []
    pos = 0
    while limit is None or len(bodies) < limit:
        start = text.find(open_tag, pos)
        if start < 0:
            return bodies, False
        end = text.find(close_tag, start + len(open_tag))
        if end < 0:
            return bodies, True
        bodies.append(text[start + len(open_tag) : end])
        pos = end + len(close_tag)
    return bodies, False


def json_depth(text: str) -> int:
    """The deepest bracket nesting in `text`, outside JSON strings, counted up to one past
    `MAX_JSON_DEPTH` (deeper text is refused anyway); linear in its length."""
    if text.count("[") + text.count("{") <= MAX_JSON_DEPTH:
        return min(text.count("[") + text.count("{"), MAX_JSON_DEPTH)
    depth = deepest = 0
    in_string, skip = False, -1
    for m in _JSON_TOKENS.finditer(text):
        i, c = m.start(), m.group()
        if i == skip:
            continue
        if in_string:
            if c == "\\":
                skip = i + 1
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c in "[{":
            depth += 1
            deepest = max(deepest, depth)
            if deepest > MAX_JSON_DEPTH:
                break
        elif c in "]}":
            depth = max(depth - 1, 0)
    return deepest


def loads_json(raw: str) -> tuple[Any, str | None]:
    """Decode JSON without raising: (value, None), or (None, what is wrong, for the model to read)."""
    if json_depth(raw) >= MAX_JSON_DEPTH:
        return None, f"is nested deeper than {MAX_JSON_DEPTH} levels"
    try:
        return json.loads(raw), None
    except json.JSONDecodeError as e:
        return None, f"is not valid JSON ({e.msg} at char {e.pos})"
    except (ValueError, RecursionError) as e:  # e.g. an integer over Python's 4,300-digit limit
        return None, f"is not valid JSON ({shorten(str(e).split(';')[0], 120)})"


def json_spans(text: str, start: int = 0, first: bool = False) -> tuple[list[tuple[int, int]], int | None]:
    """Outermost balanced `{...}` / `[...]` spans in free text, as (start, end) offsets, in order.

    Brackets inside JSON strings do not count; a closing bracket of the wrong kind drops what is
    open. Returns the spans and the offset of the first bracket left open at the end (or None).
    With `first`, stops at the first complete span. One pass, linear in the length of the text.
    """
    stack: list[tuple[str, int]] = []
    done: list[tuple[int, int]] = []
    in_string, skip = False, -1
    for m in _JSON_TOKENS.finditer(text, start):
        i, c = m.start(), m.group()
        if i == skip:
            continue
        if in_string:
            if c == "\\":
                skip = i + 1
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = bool(stack)  # quotes in prose outside any bracket are just text
        elif c in "[{":
            stack.append((c, i))
        elif c in "]}" and stack:
            opener, at = stack.pop()
            if opener != _CLOSERS[c]:
                stack.clear()
                continue
            while done and done[-1][0] > at:  # spans inside this one are not outermost
                done.pop()
            done.append((at, i + 1))
            if first and not stack:
                return done, None
    return done, (stack[0][1] if stack else None)


def find_answer(text: str, out: ParsedAction) -> None:
    """Set `out.answer` to the last complete `<answer>` block; note an unclosed one."""
    answers, unclosed = tagged_blocks(text, ANSWER_OPEN, ANSWER_CLOSE)
    if answers:
        out.answer = answers[-1].strip()
    elif unclosed:
        out.errors.append("an <answer> tag was opened but never closed with </answer>")


def add_call(
    out: ParsedAction, obj: Any, i: int, args_keys: tuple[str, ...] = ("arguments",), what: str = "an"
) -> None:
    """Append the call in decoded JSON `obj` (number `i`, from 1) to `out`, or the reason it is not one."""
    keys = " or ".join(f'"{k}"' for k in args_keys)
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        out.errors.append(f'tool call {i} must be {what} object with a string "name" and an {keys} object')
        return
    key = next((k for k in args_keys if k in obj), args_keys[0])
    args = obj.get(key, {})
    if isinstance(args, str):  # some models emit arguments as a JSON string
        decoded, problem = loads_json(args)
        if problem is None:
            args = decoded
    if not isinstance(args, dict):
        out.errors.append(f'tool call {i} ({show(obj["name"])}): "{key}" must be a JSON object')
        return
    out.tool_calls.append(ToolCall(obj["name"], args))


def parse_action(text: str, max_calls: int = 8) -> ParsedAction:
    """Split a model turn written in the Hermes/Qwen format. Never raises, and is linear in the text:
    problems are collected in `errors` for the observation."""
    if not isinstance(text, str):
        return ParsedAction(text=str(text), errors=[f"the action must be text, got {type(text).__name__}"])
    out = ParsedAction(text=text)
    find_answer(text, out)
    bodies, unclosed = tagged_blocks(text, CALL_OPEN, CALL_CLOSE, limit=max_calls + 1)
    for i, raw in enumerate(bodies, 1):
        if i > max_calls:
            out.errors.append(f"too many tool calls in one turn (limit {max_calls}); the rest were ignored")
            break
        obj, problem = loads_json(raw)
        if problem is not None:
            out.errors.append(f"tool call {i} {problem}")
            continue
        add_call(out, obj, i)
    if unclosed:
        out.errors.append("a <tool_call> tag was opened but never closed with </tool_call>")
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
        raise ToolError(f"missing required argument(s): {shorten(', '.join(missing))}")
    if schema.get("additionalProperties", False) is False:
        extra = sorted(set(arguments) - set(props))
        if extra:
            raise ToolError(
                f"unexpected argument(s): {shorten(', '.join(map(str, extra)))}; "
                f"allowed: {', '.join(props) or 'none'}"
            )
    for key, value in arguments.items():
        spec = props.get(key)
        if not spec or "type" not in spec:
            continue
        names = spec["type"] if isinstance(spec["type"], list) else [spec["type"]]  # e.g. ["string", "null"]
        if not any(_is_json_type(value, t) for t in names):
            shown = " or ".join(names)
            raise ToolError(f"argument {show(key)} must be of type {shown}, got {type(value).__name__}")
        if "enum" in spec and value not in spec["enum"]:
            raise ToolError(f"argument {show(key)} must be one of {show(spec['enum'])}, got {show(value)}")
        if isinstance(value, str) and "maxLength" in spec and len(value) > spec["maxLength"]:
            raise ToolError(f"argument {show(key)} is longer than {spec['maxLength']} characters")


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
        admitted: float | None = None  # when the call got past the concurrency cap and the rate limit

        def result(content: str, kind: str | None = None) -> ToolResult:
            wait = 0.0 if admitted is None else admitted - start
            return ToolResult(self.name, content, kind is None, kind, time.perf_counter() - start, wait)

        try:
            if not isinstance(arguments, Mapping):
                raise ToolError(f"arguments must be a JSON object, got {type(arguments).__name__}")
            validate_arguments(self.parameters, arguments)
        except ToolError as e:
            return result(
                f"Error: bad arguments for {self.name}: {shorten(e, MAX_ERROR_CHARS)}", "bad_arguments"
            )
        except Exception as e:  # an unusual schema or argument value must not crash the episode
            return result(f"Error: bad arguments for {self.name}: {type(e).__name__}", "bad_arguments")
        sem, throttler = self._loop_limits()
        try:
            # the deadline starts once the call may run: time spent queued behind the concurrency cap
            # or the rate limit is not the tool's slowness (every holder is itself bounded)
            async with sem:
                if throttler is not None:
                    await throttler.acquire()
                admitted = time.perf_counter()
                async with asyncio.timeout(self.timeout):
                    content = await self.run(**arguments)
            return result(content if isinstance(content, str) else str(content))
        except TimeoutError:
            return result(f"Error: {self.name} timed out after {self.timeout:g} s", "timeout")
        except ToolError as e:
            return result(f"Error: {shorten(e, MAX_ERROR_CHARS)}", "exception")
        except asyncio.CancelledError:
            raise
        except Exception as e:  # a bug or outage inside the tool must not crash the episode
            return result(
                f"Error: {self.name} failed: {type(e).__name__}: {shorten(e, MAX_ERROR_CHARS)}", "exception"
            )


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
                shorten(call.name),
                f"Error: unknown tool {show(call.name)}; available tools: {known}",
                False,
                "unknown_tool",
            )
        return await tool(call.arguments)
