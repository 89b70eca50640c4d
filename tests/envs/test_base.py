"""The ToolEnv contract, on a tiny environment with tools that misbehave on purpose."""

from __future__ import annotations

import asyncio
import warnings
from typing import Any, ClassVar

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from agentrl.envs import (
    Constant,
    LatencyProfile,
    LatencyWrapper,
    LogNormal,
    Task,
    TextSpace,
    ToolEnv,
    unwrap,
)
from agentrl.tools import Tool, ToolError, format_answer, format_tool_call


class EchoTool(Tool):
    name: ClassVar[str] = "echo"
    description: ClassVar[str] = "Echo the text back; 'boom' raises, 'oops' is a ToolError, 'slow' hangs."
    parameters: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {"text": {"type": "string"}},
        "required": ["text"],
        "additionalProperties": False,
    }

    async def run(self, **arguments: Any) -> str:
        text = arguments["text"]
        if text == "boom":
            raise RuntimeError("kaboom")
        if text == "oops":
            raise ToolError("you asked for oops")
        if text == "slow":
            await asyncio.sleep(3600)
        return text


class EchoEnv(ToolEnv):
    name = "echo"
    tools = (lambda: EchoTool(timeout=0.05),)
    max_turns = 3

    def load_tasks(self, split: str) -> list[Task]:
        base = 0 if split == "train" else 100
        return [Task(f"{i:03d}", f"Say {base + i}.", answer=base + i) for i in range(10)]

    def expert_action(self) -> str:
        out = self.tool_outputs("echo")
        if out:
            return format_answer(out[-1])
        return format_tool_call("echo", {"text": str(self.task.answer)})


ENV_ID = "test/Echo-v0"
if ENV_ID not in gymnasium.registry:
    gymnasium.register(ENV_ID, entry_point=EchoEnv)


def test_check_env_raw_and_made():
    check_env(EchoEnv())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # check_env warns that a made env is wrapped
        check_env(gymnasium.make(ENV_ID))


def test_reset_info_and_prompt_ids():
    env = EchoEnv(split="train")
    obs, info = env.reset(options={"task_id": "003", "split": "test"})
    assert obs == "Say 103."
    assert info["prompt_id"] == "echo/test/003"
    assert info["task_id"] == "003" and info["split"] == "test" and info["max_turns"] == 3
    assert info["tools"][0]["function"]["name"] == "echo"
    roles = [m["role"] for m in info["messages"]]
    assert roles == ["system", "user"]
    system = info["messages"][0]["content"]
    assert "<tool_call>" in system and "<answer>" in system and "3 turns" in system
    # a full prompt id and an index select tasks too
    _, info2 = env.reset(options={"task_id": "echo/test/003"})
    assert info2["prompt_id"] == "echo/test/003"
    _, info3 = env.reset(options={"task_id": 4})
    assert info3["prompt_id"] == "echo/train/004"
    assert env.task_ids("test")[0] == "000"


@pytest.mark.parametrize(
    "options, match",
    [
        ({"task_id": "999"}, "unknown task_id"),
        ({"split": "valid"}, "unknown split"),
        ({"task_id": "other/test/001"}, "does not belong"),
        ({"taskid": "001"}, "unknown reset option"),
        ({"task_id": 50}, "out of range"),
    ],
)
def test_bad_reset_options_are_clear_errors(options, match):
    with pytest.raises(ValueError, match=match):
        EchoEnv().reset(options=options)


def test_expert_episode_and_reward():
    env = EchoEnv()
    env.reset(options={"task_id": "007"})
    obs, r, term, trunc, info = env.step(env.expert_action())
    assert (r, term, trunc) == (0.0, False, False)
    assert obs == "<tool_response>\n7\n</tool_response>"
    assert info["messages"] == [{"role": "tool", "name": "echo", "content": "7"}]
    assert info["tool_results"][0]["ok"]
    obs, r, term, trunc, info = env.step(env.expert_action())
    assert (r, term, trunc) == (1.0, True, False)
    assert info["answer"] == "7" and info["correct"] is True
    assert [m["role"] for m in env.messages] == ["system", "user", "assistant", "tool", "assistant"]


def test_wrong_answer_scores_zero_and_formatting_is_forgiven():
    env = EchoEnv()
    env.reset(options={"task_id": "007"})
    assert env.step("<answer>8</answer>")[1] == 0.0
    for text in ("7", " 7 ", "7.0", "7.00", "$7", "\\boxed{7}"):
        env.reset(options={"task_id": "007"})
        assert env.step(f"<answer>{text}</answer>")[1] == 1.0, text


@pytest.mark.parametrize(
    "action, needle",
    [
        ("just chatting", "no tool call and no answer"),
        ("<tool_call>{not json}</tool_call>", "not valid JSON"),
        ('<tool_call>{"name": "nope", "arguments": {}}</tool_call>', "unknown tool"),
        ('<tool_call>{"name": "echo", "arguments": {"txt": "a"}}</tool_call>', "bad arguments"),
        ('<tool_call>{"name": "echo", "arguments": {"text": 5}}</tool_call>', "must be of type string"),
        ('<tool_call>{"name": "echo", "arguments": {"text": "boom"}}</tool_call>', "kaboom"),
        ('<tool_call>{"name": "echo", "arguments": {"text": "oops"}}</tool_call>', "you asked for oops"),
        ('<tool_call>{"name": "echo", "arguments": {"text": "slow"}}</tool_call>', "timed out"),
        ('<tool_call>{"name": "echo"', "never closed"),
        ("<answer>7", "never closed"),
        ("", "no tool call and no answer"),
    ],
)
def test_malformed_actions_become_error_observations(action, needle):
    env = EchoEnv()
    env.reset(options={"task_id": "001"})
    obs, r, term, trunc, info = env.step(action)
    assert needle in obs
    assert (r, term, trunc) == (0.0, False, False)
    assert info["messages"]


def test_non_text_action_is_an_error_observation():
    env = EchoEnv()
    env.reset()
    obs, *_ = env.step(12345)  # type: ignore[arg-type]
    assert "must be text" in obs


def test_parallel_tool_calls_and_mixed_errors():
    env = EchoEnv()
    env.reset()
    action = (
        format_tool_call("echo", {"text": "a"})
        + "<tool_call>bad</tool_call>"
        + format_tool_call("echo", {"text": "b"})
    )
    _, _, _, _, info = env.step(action)
    assert [m.get("content") for m in info["messages"][:2]] == ["a", "b"]
    assert info["messages"][2]["role"] == "user" and "not valid JSON" in info["messages"][2]["content"]


def test_turn_budget_truncates():
    env = EchoEnv(max_turns=2)
    env.reset()
    assert env.step("hmm")[3] is False
    _obs, r, term, trunc, info = env.step("hmm")
    assert (r, term, trunc) == (0.0, False, True)
    assert info["correct"] is False
    with pytest.raises(RuntimeError, match="episode is over"):
        env.step("<answer>1</answer>")


def test_step_before_reset_is_an_error():
    with pytest.raises(RuntimeError, match="reset"):
        EchoEnv().step("x")


async def test_sync_api_inside_a_running_loop_says_to_use_async():
    env = EchoEnv()
    with pytest.raises(RuntimeError, match="areset"):
        env.reset()
    await env.areset()
    with pytest.raises(RuntimeError, match="astep"):
        env.step("x")
    obs, *_ = await env.astep("<answer>1</answer>")
    assert obs == ""


def test_score_errors_do_not_escape():
    class Broken(EchoEnv):
        def score(self, task, answer):
            raise ZeroDivisionError("bug in score")

    env = Broken()
    env.reset()
    _, r, term, _, info = env.step("<answer>1</answer>")
    assert (r, term) == (0.0, True) and "bug in score" in info["score_error"]


def test_seed_replays_tasks_and_latencies():
    profile = LatencyProfile(step=LogNormal(0.001, 0.5), tool=Constant(0.0005))

    def run(seed: int) -> list[Any]:
        env = EchoEnv(latency=profile)
        out = []
        env.reset(seed=seed)
        for _ in range(5):
            _, info = env.reset()
            _, _, _, _, sinfo = env.step(env.expert_action())
            out.append((info["prompt_id"], sinfo["latency"]["step"], sinfo["latency"]["tools"]))
        return out

    assert run(3) == run(3)
    assert run(3) != run(4)
    # the constructor seed works too
    a, b = EchoEnv(seed=5), EchoEnv(seed=5)
    assert [a.reset()[1]["prompt_id"] for _ in range(5)] == [b.reset()[1]["prompt_id"] for _ in range(5)]


def test_latency_is_applied_through_asyncio_sleep(monkeypatch):
    slept: list[float] = []

    async def fake_sleep(d: float) -> None:
        slept.append(d)

    monkeypatch.setattr("agentrl.envs.latency.asyncio.sleep", fake_sleep)
    env = EchoEnv(latency=LatencyProfile(step=Constant(0.5), per_tool={"echo": Constant(2.0)}))
    env.reset()
    two_calls = format_tool_call("echo", {"text": "a"}) * 2
    _, _, _, _, info = env.step(two_calls)
    assert sorted(slept) == [0.5, 2.0, 2.0]
    assert info["latency"] == {"step": 0.5, "tools": [2.0, 2.0]}


@pytest.mark.looptime
async def test_tool_calls_in_a_step_run_concurrently():
    env = EchoEnv(latency=LatencyProfile(step=Constant(1.0), tool=Constant(20.0)))
    await env.areset()
    loop = asyncio.get_running_loop()
    t0 = loop.time()  # virtual time: the step costs 1 s plus one 20 s tool wait, not five in a row
    await env.astep(format_tool_call("echo", {"text": "a"}) * 5)
    assert loop.time() - t0 == pytest.approx(21.0, abs=0.01)


def test_latency_wrapper_installs_profile_and_forwards_async():
    profile = LatencyProfile(step=Constant(0.001))
    env = LatencyWrapper(gymnasium.make(ENV_ID), profile)
    assert unwrap(env).latency is profile

    async def go():
        _, _info = await env.areset(seed=1)
        return await env.astep(env.expert_action())

    *_, info = asyncio.run(go())
    assert info["latency"]["step"] == 0.001
    _obs, info = env.reset(seed=1)  # the sync API still works through the wrapper chain
    assert info["prompt_id"].startswith("echo/")


def test_returned_data_is_fresh_each_call():
    env = EchoEnv()
    _, info1 = env.reset(seed=0)
    info1["messages"].append({"role": "user", "content": "tamper"})
    info1["tools"][0]["function"]["name"] = "tamper"
    _, info2 = env.reset(seed=0)
    assert len(info2["messages"]) == 2 and info2["tools"][0]["function"]["name"] == "echo"
    assert len(env.messages) == 2


def test_text_space_accepts_any_unicode_text():
    space = TextSpace(100)
    assert "héllo 中文 \n\t😀" in space
    assert "x" * 101 not in space and 5 not in space
    space.seed(0)
    assert space.sample() in space


def test_unwrap_rejects_other_envs():
    with pytest.raises(TypeError, match="ToolEnv"):
        unwrap(gymnasium.make("CartPole-v1"))


def test_render_ansi():
    env = EchoEnv(render_mode="ansi")
    env.reset()
    assert "[system]" in env.render()


def test_np_random_drawn_task_choice_is_seeded():
    env = EchoEnv()
    ids = []
    for s in range(20):
        _, info = env.reset(seed=s)
        ids.append(info["task_id"])
    assert len(set(ids)) > 3
    assert np.all([EchoEnv().reset(seed=s)[1]["task_id"] == ids[s] for s in range(20)])
