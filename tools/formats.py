"""Tool-call formats: how a model writes a call, parsed and formatted per model family.

Each format has one parser and one formatter, and returns the same `ParsedAction`; answers are
always `<answer>...</answer>`. Every parser is linear in the length of the text and never raises.

| name    | a call looks like                                                  | models                 |
|---------|--------------------------------------------------------------------|------------------------|
| hermes  | `<tool_call>{"name": "f", "arguments": {...}}</tool_call>`         | Qwen2/2.5/3, Hermes    |
| llama3  | `{"name": "f", "parameters": {...}}` (optionally `<|python_tag|>`) | Llama 3.1 / 3.2 / 3.3  |
| mistral | `[TOOL_CALLS][{"name": "f", "arguments": {...}}]`                  | Mistral, Mixtral       |
|         | or `[TOOL_CALLS]f[ARGS]{...}`                                      | newer Mistral          |
| json    | `{"name": "f", "arguments": {...}}` anywhere in the reply          | anything else          |

`detect_tool_format(chat_template)` picks one from a chat template's text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from agentrl.tools.base import (
    ParsedAction,
    ToolCall,
    add_call,
    find_answer,
    format_tool_call,
    json_spans,
    loads_json,
    parse_action,
)

__all__ = [
    "TOOL_FORMATS",
    "HermesFormat",
    "JsonFormat",
    "Llama3Format",
    "MistralFormat",
    "ToolFormat",
    "detect_tool_format",
    "get_tool_format",
    "reformat_action",
]


class ToolFormat:
    """One tool-call convention. Subclasses set `name`, `call_example` and implement the three methods."""

    name: ClassVar[str]
    call_example: ClassVar[str]  # a call to "TOOL", as the system prompt and error hints show it

    def parse(self, text: str, max_calls: int = 8) -> ParsedAction:
        raise NotImplementedError

    def format_calls(self, calls: Sequence[ToolCall]) -> str:
        raise NotImplementedError

    def format_call(self, name: str, arguments: Mapping[str, Any]) -> str:
        return self.format_calls([ToolCall(name, dict(arguments))])

    def instruction(self) -> str:
        """The system-prompt sentence on how to call a tool."""
        return (
            f"To call a tool, write {self.call_example} (several calls in one turn run in parallel); "
            "the results come back in the next message."
        )

    def hint(self) -> str:
        """What an error observation adds so the model can fix its reply."""
        return f"Call a tool as {self.call_example} or give the final answer as <answer>...</answer>."

    def preamble(self, tools: Sequence[Mapping[str, Any]]) -> str:
        """Tool schemas and calling convention, for chat templates that ignore the `tools` argument."""
        lines = "\n".join(json.dumps(t) for t in tools)
        return (
            "# Tools\n\nYou may call one or more functions. Their signatures are inside <tools></tools>:\n"
            f"<tools>\n{lines}\n</tools>\n\n{self._preamble_call()}"
        )

    def _preamble_call(self) -> str:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class HermesFormat(ToolFormat):
    name = "hermes"
    call_example = '<tool_call>{"name": "TOOL", "arguments": {...}}</tool_call>'

    def parse(self, text: str, max_calls: int = 8) -> ParsedAction:
        return parse_action(text, max_calls)

    def format_calls(self, calls: Sequence[ToolCall]) -> str:
        return "".join(format_tool_call(c.name, c.arguments) for c in calls)

    def _preamble_call(self) -> str:
        return (
            "For each call, write a JSON object with the name and arguments inside <tool_call></tool_call> "
            'tags:\n<tool_call>{"name": <function-name>, "arguments": <args-json-object>}</tool_call>'
        )


def _parse_json_calls(
    text: str, max_calls: int, args_keys: tuple[str, ...], what: str
) -> tuple[ParsedAction, bool]:
    """Calls written as bare JSON objects (or lists of them) in free text; (parsed, something left open)."""
    out = ParsedAction(text=text)
    find_answer(text, out)
    spans, open_at = json_spans(text)
    n = 0
    for start, end in spans:
        raw = text[start:end]
        if '"name"' not in raw:  # JSON that does not try to be a call (e.g. inside an answer)
            continue
        obj, problem = loads_json(raw)
        items = obj if isinstance(obj, list) and problem is None else [obj]
        for item in items:
            n += 1
            if n > max_calls:
                out.errors.append(
                    f"too many tool calls in one turn (limit {max_calls}); the rest were ignored"
                )
                return out, False
            if problem is not None:
                out.errors.append(f"tool call {n} {problem}")
            else:
                add_call(out, item, n, args_keys, what)
    tail = max(open_at, spans[-1][1] if spans else 0) if open_at is not None else len(text)
    left_open = '"name"' in text[tail:]
    return out, left_open


class Llama3Format(ToolFormat):
    name = "llama3"
    call_example = '{"name": "TOOL", "parameters": {...}}'

    def parse(self, text: str, max_calls: int = 8) -> ParsedAction:
        if not isinstance(text, str):
            return parse_action(text, max_calls)
        out, left_open = _parse_json_calls(text, max_calls, ("parameters", "arguments"), "a JSON")
        if left_open:
            out.errors.append("a JSON tool call was opened with '{' but never closed")
        return out

    def format_calls(self, calls: Sequence[ToolCall]) -> str:
        return "\n".join(json.dumps({"name": c.name, "parameters": dict(c.arguments)}) for c in calls)

    def _preamble_call(self) -> str:
        return (
            "To call a function, reply with a JSON object of the form "
            '{"name": <function-name>, "parameters": <args-json-object>}, one per line for several calls.'
        )


class JsonFormat(ToolFormat):
    name = "json"
    call_example = '{"name": "TOOL", "arguments": {...}}'

    def parse(self, text: str, max_calls: int = 8) -> ParsedAction:
        if not isinstance(text, str):
            return parse_action(text, max_calls)
        out, left_open = _parse_json_calls(text, max_calls, ("arguments", "parameters"), "a JSON")
        if left_open:
            out.errors.append("a JSON tool call was opened with '{' but never closed")
        return out

    def format_calls(self, calls: Sequence[ToolCall]) -> str:
        return "\n".join(json.dumps({"name": c.name, "arguments": dict(c.arguments)}) for c in calls)

    def _preamble_call(self) -> str:
        return (
            "To call a function, write a JSON object of the form "
            '{"name": <function-name>, "arguments": <args-json-object>}, one per line for several calls.'
        )


MISTRAL_CALLS, MISTRAL_ARGS, MISTRAL_CALL_ID = "[TOOL_CALLS]", "[ARGS]", "[CALL_ID]"
_BARE_MISTRAL = re.compile(r"\s*([A-Za-z_][\w.-]{0,63})\s*(?=\{)")


class MistralFormat(ToolFormat):
    """`[TOOL_CALLS]` and `[ARGS]` are special tokens in Mistral tokenizers, and text decoded with
    `skip_special_tokens=True` loses them; so a reply with no marker that starts with a JSON list or
    object, or with `name{...}`, is read as if the marker were there."""

    name = "mistral"
    call_example = '[TOOL_CALLS][{"name": "TOOL", "arguments": {...}}]'

    def parse(self, text: str, max_calls: int = 8) -> ParsedAction:
        if not isinstance(text, str):
            return parse_action(text, max_calls)
        out = ParsedAction(text=text)
        find_answer(text, out)
        n = 0
        segments = text.split(MISTRAL_CALLS)[1:]
        if not segments:  # `[TOOL_CALLS]`/`[ARGS]` are special tokens, which decoding may have dropped
            bare = _BARE_MISTRAL.match(text)
            if text.lstrip()[:1] in ("[", "{"):
                segments = [text]
            elif bare:
                segments = [f"{bare.group(1)}{MISTRAL_ARGS}{text[bare.end(1) :]}"]
        for segment in segments:
            found: list[tuple[Any, str | None]] = []
            body = segment.lstrip()
            if body[:1] in ("[", "{"):  # [TOOL_CALLS][{...}, ...]
                spans, _ = json_spans(body, first=True)
                if not spans or spans[0][0] != 0:
                    found.append((None, "is not closed JSON after [TOOL_CALLS]"))
                else:
                    obj, problem = loads_json(body[: spans[0][1]])
                    found += [(x, None) for x in obj] if isinstance(obj, list) else [(obj, problem)]
            elif MISTRAL_ARGS in segment:  # [TOOL_CALLS]name[ARGS]{...}
                name, _, rest = segment.partition(MISTRAL_ARGS)
                name = name.partition(MISTRAL_CALL_ID)[0].strip()
                rest = rest.lstrip()
                spans, _ = json_spans(rest, first=True)
                if not spans or spans[0][0] != 0:
                    found.append((None, "has no closed JSON object after [ARGS]"))
                else:
                    args, problem = loads_json(rest[: spans[0][1]])
                    found.append(({"name": name, "arguments": args}, problem))
            else:
                found.append((None, "must be a JSON list after [TOOL_CALLS]"))
            for obj, problem in found:
                n += 1
                if n > max_calls:
                    out.errors.append(
                        f"too many tool calls in one turn (limit {max_calls}); the rest were ignored"
                    )
                    return out
                if problem is not None:
                    out.errors.append(f"tool call {n} {problem}")
                else:
                    add_call(out, obj, n)
        return out

    def format_calls(self, calls: Sequence[ToolCall]) -> str:
        return MISTRAL_CALLS + json.dumps([{"name": c.name, "arguments": dict(c.arguments)} for c in calls])

    def _preamble_call(self) -> str:
        return (
            "To call functions, write [TOOL_CALLS] followed by a JSON list of calls:\n"
            '[TOOL_CALLS][{"name": <function-name>, "arguments": <args-json-object>}]'
        )


TOOL_FORMATS: dict[str, ToolFormat] = {
    f.name: f for f in (HermesFormat(), Llama3Format(), MistralFormat(), JsonFormat())
}


def get_tool_format(name: str | ToolFormat) -> ToolFormat:
    """The format called `name`; an unknown name is a one-line error listing the known ones."""
    if isinstance(name, ToolFormat):
        return name
    fmt = TOOL_FORMATS.get(name) if isinstance(name, str) else None
    if fmt is None:
        raise ValueError(
            f"tool_format (model.tool_format): unknown tool-call format {name!r}; "
            f"expected one of {', '.join(TOOL_FORMATS)} (or auto, to detect it from the chat template)"
        )
    return fmt


def detect_tool_format(chat_template: str | None) -> str:
    """The tool-call format a chat template teaches, from the markers it writes.

    `<tool_call>` is Hermes/Qwen, `[TOOL_CALLS]` or `[AVAILABLE_TOOLS]` Mistral, and `<|python_tag|>` or
    an `ipython` role Llama 3.x. A template that renders tools or tool calls without any of these
    gets plain JSON; one with no tool support at all gets Hermes, the format of the system-prompt
    preamble that such templates receive.
    """
    t = chat_template or ""
    if "<tool_call>" in t:
        return "hermes"
    if "[TOOL_CALLS]" in t or "[AVAILABLE_TOOLS]" in t:
        return "mistral"
    if "<|python_tag|>" in t or ("<|start_header_id|>" in t and "ipython" in t):
        return "llama3"
    if "tool_calls" in t or "tools" in t:
        return "json"
    return "hermes"


def reformat_action(text: str, tool_format: str | ToolFormat, source: str | ToolFormat = "hermes") -> str:
    """An action written in `source` (e.g. a scripted expert's Hermes calls) rewritten in `tool_format`.

    The calls and the answer are kept; other text is dropped. Text that is neither is returned as is.
    """
    src, dst = get_tool_format(source), get_tool_format(tool_format)
    if src is dst:
        return text
    parsed = src.parse(text)
    if not parsed.tool_calls and parsed.answer is None:
        return text
    parts = [dst.format_calls(parsed.tool_calls)] if parsed.tool_calls else []
    if parsed.answer is not None:
        parts.append(f"<answer>{parsed.answer}</answer>")
    return "".join(parts)
