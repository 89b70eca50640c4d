"""Hostile and fuzzed actions: every one becomes an observation, none raises, none is slow.

Each bundled environment takes at least 1,000 generated actions through `step` and 1,000 through
`astep`, in every tool-call format, plus the known hostile cases as explicit examples: deep brackets,
an integer over Python's 4,300-digit limit, an opening tag repeated to the action length limit, a
1 MB action, and a tool name of 100,000 characters.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, ClassVar

import gymnasium
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import agentrl.envs  # noqa: F401  (registers the environments)
from agentrl.envs import ToolEnv
from agentrl.envs.base import MAX_ACTION_CHARS, MAX_OBS_CHARS
from agentrl.tools import Tool
from agentrl.tools.formats import TOOL_FORMATS, get_tool_format

from .test_bundled_envs import StubPython

TOOL_NAMES = ["calculator", "search", "python", "Calculator", "", "nope"]
ARG_KEYS = ["expression", "query", "code", "k", "text", ""]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
arguments = st.one_of(
    st.dictionaries(st.sampled_from(ARG_KEYS) | st.text(max_size=6), json_values, max_size=3),
    json_values,
    st.fixed_dictionaries({"expression": st.text(max_size=40)}),
    st.fixed_dictionaries({"query": st.text(max_size=40)}, optional={"k": st.integers(-5, 50)}),
    st.fixed_dictionaries({"code": st.sampled_from(["print(1)", "1/0", "while True: pass", "import os"])}),
)
call_json = st.builds(
    lambda name, args, as_string: json.dumps(
        {"name": name, "arguments": json.dumps(args) if as_string else args}
    ),
    st.sampled_from(TOOL_NAMES) | st.text(max_size=10),
    arguments,
    st.booleans(),
)
fragments = st.one_of(
    st.text(max_size=80),
    st.builds(lambda j: f"<tool_call>{j}</tool_call>", call_json),
    st.builds(lambda t: f"<tool_call>{t}</tool_call>", st.text(max_size=40)),
    st.builds(lambda j: f"<tool_call>{j}", call_json),  # never closed
    st.builds(lambda t: f"<answer>{t}", st.text(max_size=20)),  # never closed
    st.builds(lambda j: f"<|python_tag|>{j}", call_json),  # Llama 3.x
    st.builds(lambda j: j.replace('"arguments"', '"parameters"'), call_json),
    st.builds(lambda j: f"[TOOL_CALLS][{j}]", call_json),  # Mistral
    st.builds(lambda n, a: f"[TOOL_CALLS]{n}[ARGS]{a}", st.sampled_from(TOOL_NAMES), st.text(max_size=30)),
    st.sampled_from(
        [
            *'{}[]"\\\x00\ud7ff',
            *("<tool_call>", "</tool_call>", "<answer>", "</answer>"),
            *("[TOOL_CALLS]", "[ARGS]", "<|python_tag|>", '"name"', "9" * 40),
        ]
    ),
)
actions = st.one_of(
    st.lists(fragments, max_size=5).map("".join),
    st.builds(lambda t: f"<answer>{t}</answer>", st.text(max_size=30)),
    st.none(),
    st.integers(),
    st.binary(max_size=20),
)

FORMATS = list(TOOL_FORMATS)
DIGITS = "7" * 4301  # one digit over Python's limit on int() of a decimal string
HOSTILE = [
    "<tool_call>" + "[" * 1000 + "</tool_call>",
    '<tool_call>{"name": "calculator", "arguments": {"expression": ' + DIGITS + "}}</tool_call>",
    '{"name": "calculator", "parameters": {"x": ' + DIGITS + "}}",
    '[TOOL_CALLS][{"name": "calculator", "arguments": {"x": ' + "[" * 1000 + "}}]",
    ("<tool_call>" * (MAX_ACTION_CHARS // 11 + 1))[:MAX_ACTION_CHARS],
    ("[TOOL_CALLS]" * (MAX_ACTION_CHARS // 12 + 1))[:MAX_ACTION_CHARS],
    "{" * MAX_ACTION_CHARS,
    "<tool_call>" * (1 << 20 // 11),  # over the action length limit
    json.dumps({"name": "x" * 100_000, "arguments": {}}),
    '<tool_call>{"name": "' + "x" * 100_000 + '", "arguments": {}}</tool_call>',
    '<tool_call>{"name": "calculator", "arguments": {"expression": "1", "'
    + "k" * 99_000
    + '": 1}}</tool_call>',
]

FUZZ = settings(
    max_examples=1000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)
STEP_LIMIT_S = 1.0


def _check(env: ToolEnv, result: tuple[Any, ...], seconds: float, limit: float = STEP_LIMIT_S) -> bool:
    obs, reward, terminated, truncated, info = result
    assert seconds < limit, f"a step took {seconds:.2f} s"
    assert isinstance(obs, str) and len(obs) <= MAX_OBS_CHARS and obs in env.observation_space
    assert sum(len(m["content"]) for m in info["messages"]) <= MAX_OBS_CHARS
    assert 0.0 <= reward <= 1.0
    assert isinstance(terminated, bool) and isinstance(truncated, bool)
    assert isinstance(info["messages"], list)
    if not terminated:
        assert info["messages"], "a non-final step must say something back to the model"
    return terminated or truncated


def _fuzz(env: ToolEnv, path: str, limit: float = STEP_LIMIT_S) -> int:
    """Drive `env` through `path` ("step" or "astep") with 1,000+ generated actions; the step count."""
    state = {"done": True, "steps": 0}
    loop = asyncio.new_event_loop()

    @FUZZ
    @given(action=actions, fmt=st.sampled_from(FORMATS))
    @example(action=None, fmt="hermes")  # hypothesis runs explicit examples first, then 1,000 drawn
    def drive(action: Any, fmt: str) -> None:
        env.call_format = get_tool_format(fmt)
        if state["done"] or env.done:  # env.done too: a failed example that hypothesis replays left it over
            env.reset()
        start = time.perf_counter()
        result = env.step(action) if path == "step" else loop.run_until_complete(env.astep(action))
        state["done"] = _check(env, result, time.perf_counter() - start, limit)
        state["steps"] += 1

    for text in HOSTILE:  # the known hostile cases, in every format
        drive = example(action=text, fmt=FORMATS[len(text) % len(FORMATS)])(drive)
    try:
        drive()
    finally:
        loop.close()
    return state["steps"]


def _make(env_id: str, **kwargs: Any) -> ToolEnv:
    if "Python" in env_id:
        kwargs.setdefault("tools", [StubPython()])
    return gymnasium.make(env_id, max_turns=4, **kwargs).unwrapped


@pytest.mark.parametrize("path", ["step", "astep"])
@pytest.mark.parametrize("env_id", ["agentrl/Calculator-v0", "agentrl/KBSearch-v0", "agentrl/PythonMath-v0"])
def test_fuzzed_actions_never_raise(env_id: str, path: str) -> None:
    env = _make(env_id)
    env.reset(seed=0)
    assert _fuzz(env, path) >= 1000


@pytest.mark.integration
@pytest.mark.parametrize("path", ["step", "astep"])
def test_fuzzed_actions_never_raise_with_real_sandbox(path: str) -> None:
    """Generated code really runs here, so a step may last as long as the sandbox lets a program run
    (a fuzzed `input()` waits for its wall limit); the limit is that plus the env's own 1 s."""
    from agentrl.tools.python_sandbox import PythonTool, SandboxLimits

    wall = 2.0
    env = gymnasium.make(
        "agentrl/PythonMath-v0", max_turns=4, tools=[PythonTool(SandboxLimits(wall_s=wall))]
    ).unwrapped
    env.reset(seed=0)
    assert _fuzz(env, path, limit=wall + STEP_LIMIT_S) >= 1000


# --- the hostile cases, one by one, through both step paths ------------------------------------------


async def _both_paths(env: ToolEnv, action: Any) -> list[tuple[Any, ...]]:
    """The same action through `astep` here and through `step` in a thread (it runs its own loop)."""
    await env.areset(seed=0)
    via_astep = await env.astep(action)

    def sync() -> tuple[Any, ...]:
        env.reset(seed=0)
        return env.step(action)

    via_step = await asyncio.to_thread(sync)
    return [via_astep, via_step]


@pytest.mark.parametrize(
    ("action", "message"),
    [
        ("<tool_call>" + "[" * 1000 + "</tool_call>", "nested deeper than"),
        (
            '<tool_call>{"name": "calculator", "arguments": {"x": ' + DIGITS + "}}</tool_call>",
            "not valid JSON",
        ),
        ("<tool_call>" * 11_000, "never closed"),
        ("x" * (MAX_ACTION_CHARS + 1), f"over the limit of {MAX_ACTION_CHARS:,}"),
    ],
)
async def test_hostile_actions_become_error_observations(action: str, message: str) -> None:
    env = _make("agentrl/Calculator-v0")
    for obs, reward, terminated, _, info in await _both_paths(env, action):
        assert message in obs and "Error:" in obs and reward == 0.0 and not terminated
        assert info["messages"][-1]["role"] == "user"


async def test_action_length_cap_refuses_even_a_valid_call() -> None:
    env = _make("agentrl/Calculator-v0")
    call = env.format_tool_call("calculator", {"expression": "1 + 1"})
    for obs, _, _, _, info in await _both_paths(env, call + " " * MAX_ACTION_CHARS):
        assert info["tool_results"] == [] and "it was not read" in obs
    ok = await _both_paths(env, call + " " * (MAX_ACTION_CHARS - len(call)))
    assert all(r[4]["tool_results"][0]["content"] == "2" for r in ok)


async def test_parsing_at_the_length_limit_is_fast() -> None:
    env = _make("agentrl/Calculator-v0")
    action = ("<tool_call>" * (MAX_ACTION_CHARS // 11 + 1))[:MAX_ACTION_CHARS]
    start = time.perf_counter()
    await _both_paths(env, action)
    assert time.perf_counter() - start < 0.5


async def test_echoed_strings_are_shortened() -> None:
    env = _make("agentrl/Calculator-v0")
    long_name = '<tool_call>{"name": "' + "n" * 100_000 + '", "arguments": {}}</tool_call>'
    long_key = '<tool_call>{"name": "calculator", "arguments": {"expression": "1", "'
    long_key += "k" * 100_000 + '": 1}}</tool_call>'
    for action in (long_name, long_key):
        for obs, _, _, _, info in await _both_paths(env, action):
            assert len(obs) < 2_000 and "more characters]" in obs
            assert all(len(m.get("name", "")) < 300 for m in info["messages"])


class Flood(Tool):
    name: ClassVar[str] = "flood"
    description: ClassVar[str] = "returns a lot, or raises"
    parameters: ClassVar[dict[str, Any]] = {"type": "object", "properties": {"n": {"type": "integer"}}}

    async def run(self, n: int = 0) -> str:
        if n < 0:
            raise RuntimeError("x" * 1_000_000)
        return "y" * n


class FloodEnv(ToolEnv):
    name = "flood"
    tools = (Flood,)

    def load_tasks(self, split: str) -> list[Any]:
        from agentrl.envs import Task

        return [Task("0", "flood me", "0")]


async def test_observations_are_capped_with_a_note() -> None:
    env = FloodEnv()
    calls = "".join(env.format_tool_call("flood", {"n": 10_000_000}) for _ in range(8))
    for obs, _, _, _, info in await _both_paths(env, calls + "<tool_call>"):
        assert len(obs) <= MAX_OBS_CHARS and "[truncated:" in obs
        assert all(len(m["content"]) <= 16_000 for m in info["messages"])
        assert sum(len(m["content"]) for m in info["messages"]) <= MAX_OBS_CHARS
        assert "never closed" in info["messages"][-1]["content"]  # the feedback survives the cap
        assert all("[truncated:" in r["content"] for r in info["tool_results"])


async def test_exceptions_in_tools_and_parsers_become_error_observations() -> None:
    env = FloodEnv()
    obs, *_ = (await _both_paths(env, env.format_tool_call("flood", {"n": -1})))[0]
    assert "Error: flood failed: RuntimeError" in obs and len(obs) < 3_000

    class Broken(type(env.call_format)):  # a parser bug
        def parse(self, text: str, max_calls: int = 8) -> Any:
            raise RecursionError("boom")

    env.call_format = Broken()
    for obs, *_ in await _both_paths(env, "anything"):
        assert "could not be parsed (RecursionError)" in obs

    class BadBox:  # a custom toolbox that raises
        tools: ClassVar[dict[str, Any]] = {}

        def schemas(self) -> list[Any]:
            return []

        async def call(self, call: Any) -> Any:
            raise KeyError(call.name)

    env = FloodEnv()
    env.toolbox = BadBox()  # type: ignore[assignment]
    for obs, *_ in await _both_paths(env, env.format_tool_call("flood", {})):
        assert "Error: flood failed: KeyError" in obs


@pytest.mark.parametrize("fmt", FORMATS)
async def test_env_parses_its_own_format_only(fmt: str) -> None:
    env = _make("agentrl/Calculator-v0", tool_format=fmt)
    assert env.tool_format == fmt and env.call_format.call_example in env.system_prompt()
    call = env.format_tool_call("calculator", {"expression": "6 * 7"})
    for _, _, _, _, info in await _both_paths(env, call):
        assert [r["content"] for r in info["tool_results"]] == ["42"]
    if fmt == "mistral":  # llama3 and json find a bare JSON call anywhere, even inside Hermes tags
        hermes = get_tool_format("hermes").format_call("calculator", {"expression": "6 * 7"})
        obs, _, _, _, info = (await _both_paths(env, hermes))[0]
        assert info["tool_results"] == [] and env.call_format.call_example in obs


def test_unknown_tool_format_is_a_one_line_error() -> None:
    with pytest.raises(ValueError, match=r"tool_format.*hermes, llama3, mistral, json"):
        gymnasium.make("agentrl/Calculator-v0", tool_format="chatml")
