"""Tool-call formats: each parser reads what its formatter writes, detection from chat templates,
errors, and hostile inputs that must stay linear and never raise."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentrl.tools import ToolCall
from agentrl.tools.formats import (
    TOOL_FORMATS,
    detect_tool_format,
    get_tool_format,
    reformat_action,
)

CALLS = [ToolCall("calculator", {"expression": "2+2"}), ToolCall("search", {"query": "x", "k": 2})]


@pytest.mark.parametrize("name", list(TOOL_FORMATS))
def test_each_format_round_trips_calls_and_answers(name: str) -> None:
    fmt = get_tool_format(name)
    one = fmt.format_call("calculator", {"expression": "2+2"})
    parsed = fmt.parse("Let me compute. " + one)
    assert parsed.tool_calls == CALLS[:1] and parsed.answer is None and parsed.errors == []
    parsed = fmt.parse(fmt.format_calls(CALLS))
    assert parsed.tool_calls == CALLS and parsed.errors == []
    parsed = fmt.parse("so <answer> 4 </answer>")
    assert parsed.answer == "4" and parsed.tool_calls == [] and parsed.errors == []
    assert "<answer>" in fmt.hint() and "TOOL" in fmt.instruction()
    preamble = fmt.preamble([{"type": "function", "function": {"name": "calculator"}}])
    assert '"name": "calculator"' in preamble


@pytest.mark.parametrize(
    ("name", "text", "calls"),
    [
        ("hermes", '<tool_call>{"name": "f", "arguments": {"a": 1}}</tool_call>', [("f", {"a": 1})]),
        ("llama3", '<|python_tag|>{"name": "f", "parameters": {"a": 1}}', [("f", {"a": 1})]),
        (
            "llama3",
            '{"name": "f", "parameters": {"a": 1}}; {"name": "g", "parameters": {}}',
            [("f", {"a": 1}), ("g", {})],
        ),
        ("llama3", 'I will { think. {"name": "f", "arguments": "{\\"a\\": 1}"}', [("f", {"a": 1})]),
        ("mistral", '[TOOL_CALLS] [{"name": "f", "arguments": {"a": 1}}]', [("f", {"a": 1})]),
        ("mistral", '[TOOL_CALLS]f[ARGS]{"a": 1}[TOOL_CALLS]g[ARGS] {}', [("f", {"a": 1}), ("g", {})]),
        ("mistral", '[TOOL_CALLS]f[CALL_ID]abc123xyz[ARGS]{"a": [1, "]"]}', [("f", {"a": [1, "]"]})]),
        ("mistral", '[{"name": "f", "arguments": {"a": 1}}]', [("f", {"a": 1})]),  # marker decoded away
        ("mistral", 'f{"a": 1}', [("f", {"a": 1})]),  # [TOOL_CALLS]f[ARGS]{...}, markers decoded away
        ("json", 'Sure: {"name": "f", "arguments": {"a": "}"}} and {"x": 1}', [("f", {"a": "}"})]),
        ("json", '[{"name": "f", "arguments": {}}, {"name": "g", "arguments": {}}]', [("f", {}), ("g", {})]),
    ],
)
def test_model_written_variants(name: str, text: str, calls: list[tuple[str, dict]]) -> None:
    parsed = get_tool_format(name).parse(text)
    assert [(c.name, c.arguments) for c in parsed.tool_calls] == calls and parsed.errors == []


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("llama3", '{"name": "f", "parameters": [1]}', '"parameters" must be a JSON object'),
        ("llama3", '{"name": "f", "parameters": {', "never closed"),
        ("json", '{"name": 3, "arguments": {}}', 'string "name"'),
        ("json", '{"name": "f", "arguments": {"a": 1,}}', "not valid JSON"),
        ("mistral", "[TOOL_CALLS] calculator please", "JSON list after [TOOL_CALLS]"),
        ("mistral", '[TOOL_CALLS][{"name": "f", "arguments": {}', "not closed JSON"),
        ("mistral", "[TOOL_CALLS]f[ARGS]oops", "no closed JSON object after [ARGS]"),
        ("mistral", "[TOOL_CALLS][1]", 'string "name"'),
    ],
)
def test_format_errors_are_reported(name: str, text: str, message: str) -> None:
    parsed = get_tool_format(name).parse(text)
    assert parsed.tool_calls == []
    assert any(message in e for e in parsed.errors), parsed.errors


@pytest.mark.parametrize("name", list(TOOL_FORMATS))
def test_too_many_calls_are_cut(name: str) -> None:
    fmt = get_tool_format(name)
    parsed = fmt.parse("\n".join(fmt.format_call("t", {}) for _ in range(5)), max_calls=3)
    assert len(parsed.tool_calls) == 3 and "too many tool calls" in parsed.errors[-1]


def test_unknown_format_is_one_line_naming_the_field() -> None:
    with pytest.raises(ValueError, match=r"model\.tool_format.*hermes, llama3, mistral, json") as e:
        get_tool_format("chatml")
    assert "\n" not in str(e.value)


# Marker excerpts in the style of each family's chat template.
QWEN = (
    "{%- if tools %}<tools>{% for t in tools %}{{ t | tojson }}{% endfor %}</tools> <tool_call>{%- endif %}"
)
LLAMA = "<|start_header_id|>{{ role }}{% if message.role == 'tool' %}ipython{% endif %}<|eot_id|>"
LLAMA_PY = "{%- if builtin_tools %}<|python_tag|>{{ call }}{% endif %}"
MISTRAL = "[AVAILABLE_TOOLS] {{ tools | tojson }}[/AVAILABLE_TOOLS][INST]{{ m }}[/INST][TOOL_CALLS]"
GENERIC = "{% for tool_call in message.tool_calls %}{{ tool_call | tojson }}{% endfor %}"
PLAIN = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>{% endfor %}"


@pytest.mark.parametrize(
    ("template", "name"),
    [
        *[(QWEN, "hermes"), (LLAMA, "llama3"), (LLAMA_PY, "llama3"), (MISTRAL, "mistral")],
        *[(GENERIC, "json"), (PLAIN, "hermes"), (None, "hermes"), ("", "hermes")],
    ],
)
def test_detect_tool_format(template: str | None, name: str) -> None:
    assert detect_tool_format(template) == name


@pytest.mark.parametrize("name", list(TOOL_FORMATS))
def test_reformat_expert_action(name: str) -> None:
    hermes = get_tool_format("hermes").format_calls(CALLS)
    assert get_tool_format(name).parse(reformat_action(hermes, name)).tool_calls == CALLS
    assert reformat_action("<answer>7</answer>", name) == "<answer>7</answer>"
    assert reformat_action("thinking", name) == "thinking"


# --- hostile input: linear, never raises --------------------------------------------------------

HOSTILE = {
    "repeated <tool_call>": lambda n: ("<tool_call>" * (n // 11 + 1))[:n],
    "deep brackets": lambda n: "<tool_call>" + "[" * (n - 23) + "</tool_call>",
    "deep braces": lambda n: '{"name": "f", "arguments": ' + "{" * (n - 27),
    "repeated [TOOL_CALLS]": lambda n: ("[TOOL_CALLS][" * (n // 13 + 1))[:n],
    "escaped quotes": lambda n: '<tool_call>{"name": "' + '\\"' * (n // 2) + "</tool_call>",
    "repeated <answer>": lambda n: ("<answer>" * (n // 8 + 1))[:n],
    "empty pairs": lambda n: '{"name": "f"}' + "{}" * (n // 2),
}


@pytest.mark.parametrize("name", list(TOOL_FORMATS))
@pytest.mark.parametrize("shape", list(HOSTILE))
def test_hostile_actions_parse_fast_and_linearly(name: str, shape: str) -> None:
    fmt = get_tool_format(name)
    times = []
    for n in (1 << 15, 1 << 17):
        text = HOSTILE[shape](n)
        start = time.perf_counter()
        fmt.parse(text)
        times.append(time.perf_counter() - start)
    assert times[1] < 0.5, f"{shape}: {times[1]:.3f} s at 128K characters"
    assert times[1] < 4 * 4 * max(times[0], 1e-3), f"{shape} grows faster than linearly: {times}"


@pytest.mark.parametrize("name", list(TOOL_FORMATS))
def test_deep_nesting_and_huge_integers_are_errors_not_exceptions(name: str) -> None:
    fmt = get_tool_format(name)
    deep = fmt.format_call("f", {"a": 1}).replace("1", "[" * 1000 + "]" * 1000)
    digits = fmt.format_call("f", {"a": 1}).replace("1", "7" * 4301)
    for text in (deep, digits, "<tool_call>" + "[" * 1000 + "</tool_call>"):
        parsed = fmt.parse(text)
        assert parsed.tool_calls == [] or text.startswith("<tool_call>[")
    assert any("deeper than" in e for e in fmt.parse(deep).errors)
    assert any("not valid JSON" in e for e in fmt.parse(digits).errors)


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(list(TOOL_FORMATS)),
    st.lists(
        st.sampled_from(
            [*'<>/[]{}":,\\ ', "<tool_call>", "</tool_call>", "[TOOL_CALLS]", "[ARGS]", '"name"', "<answer>"]
        ),
        max_size=60,
    ).map("".join),
)
def test_parsers_never_raise(name: str, text: str) -> None:
    parsed = get_tool_format(name).parse(text)
    assert all(isinstance(c.name, str) and isinstance(c.arguments, dict) for c in parsed.tool_calls)
