"""1,000 fuzzed malformed actions per environment: every one becomes an observation, none raises."""

from __future__ import annotations

import json

import gymnasium
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import agentrl.envs  # noqa: F401  (registers the environments)
from agentrl.envs import ToolEnv

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
    st.sampled_from(
        ["<tool_call>", "</tool_call>", "<answer>", "</answer>", "{", "}", '"', "\x00", "\ud7ff"]
    ),
)
actions = st.one_of(
    st.lists(fragments, max_size=5).map("".join),
    st.builds(lambda t: f"<answer>{t}</answer>", st.text(max_size=30)),
    st.none(),
    st.integers(),
    st.binary(max_size=20),
)

FUZZ = settings(
    max_examples=1000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)


def _fuzz(env: ToolEnv):
    state = {"done": True, "steps": 0}

    @FUZZ
    @given(action=actions)
    def drive(action):
        if state["done"]:
            env.reset()
        obs, reward, terminated, truncated, info = env.step(action)
        assert obs in env.observation_space
        assert 0.0 <= reward <= 1.0
        assert isinstance(terminated, bool) and isinstance(truncated, bool)
        assert isinstance(info["messages"], list)
        if not terminated:
            assert info["messages"], "a non-final step must say something back to the model"
        state["done"] = terminated or truncated
        state["steps"] += 1

    drive()
    return state["steps"]


@pytest.mark.parametrize("env_id", ["agentrl/Calculator-v0", "agentrl/KBSearch-v0", "agentrl/PythonMath-v0"])
def test_fuzzed_actions_never_raise(env_id):
    kwargs = {"tools": [StubPython()]} if "Python" in env_id else {}
    env = gymnasium.make(env_id, max_turns=4, **kwargs).unwrapped
    env.reset(seed=0)
    assert _fuzz(env) >= 1000


@pytest.mark.integration
def test_fuzzed_actions_never_raise_with_real_sandbox():
    env = gymnasium.make("agentrl/PythonMath-v0", max_turns=4).unwrapped
    env.reset(seed=0)
    assert _fuzz(env) >= 1000
