"""Trajectories as OpenAI chat messages: conversion, recording, replay, JSONL export and `agentrl rollouts`."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium
import pytest

import agentrl.envs  # noqa: F401  (registers the envs)
from agentrl.cli import main
from agentrl.rollout.episode import run_episode
from agentrl.rollout.messages import (
    export_trajectories,
    read_trajectory_jsonl,
    run_recorded_episode,
    to_openai_messages,
    trajectory_messages,
)
from agentrl.types import Status
from tests.policy.conftest import ScriptedPolicy, _tokenizer


def test_tool_calls_and_results_become_openai_messages() -> None:
    env_msgs = [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "q"},
        {
            "role": "assistant",
            "content": 'Let me add.<tool_call>{"name": "calc", "arguments": {"e": "1+2"}}</tool_call>'
            '<tool_call>{"name": "search", "arguments": {"q": "x"}}</tool_call><tool_call>{bad</tool_call>',
        },
        {"role": "tool", "name": "calc", "content": "3"},
        {"role": "tool", "name": "search", "content": "nothing"},
        {"role": "user", "content": "Error: tool call 3 is not valid JSON"},
        {"role": "assistant", "content": "<answer>3</answer>"},
    ]
    out = to_openai_messages(env_msgs)
    turn = out[2]
    assert turn["content"] == "Let me add.<tool_call>{bad</tool_call>"  # what did not parse stays as written
    assert [c["function"]["name"] for c in turn["tool_calls"]] == ["calc", "search"]
    assert json.loads(turn["tool_calls"][0]["function"]["arguments"]) == {"e": "1+2"}
    assert out[3] == {
        "role": "tool",
        "content": "3",
        "tool_call_id": turn["tool_calls"][0]["id"],
        "name": "calc",
    }
    assert out[4]["tool_call_id"] == turn["tool_calls"][1]["id"]
    assert out[6] == {"role": "assistant", "content": "<answer>3</answer>"}


@pytest.mark.parametrize(
    ("fmt", "text", "left"),
    [
        ("llama3", 'Adding.\n{"name": "calc", "parameters": {"e": "1+2"}}', "Adding."),
        ("json", '{"name": "calc", "arguments": {"e": "1+2"}}', ""),
        ("mistral", '[TOOL_CALLS][{"name": "calc", "arguments": {"e": "1+2"}}]', ""),
    ],
)
def test_calls_in_other_formats_become_openai_tool_calls(fmt: str, text: str, left: str) -> None:
    env_msgs = [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": text},
        {"role": "tool", "name": "calc", "content": "3"},
        {"role": "assistant", "content": '{"name": "calc", "arguments": {"e": '},  # did not parse
    ]
    out = to_openai_messages(env_msgs, fmt)
    assert out[1]["content"] == left
    (call,) = out[1]["tool_calls"]
    assert call["function"]["name"] == "calc" and json.loads(call["function"]["arguments"]) == {"e": "1+2"}
    assert out[2]["tool_call_id"] == call["id"]
    assert out[3] == env_msgs[3]  # what did not parse stays as written
    hermes = to_openai_messages(env_msgs)  # read as Hermes, the same turn holds no call
    assert "tool_calls" not in hermes[1]


async def test_a_recorded_llama3_episode_exports_its_calls() -> None:
    env = gymnasium.make("agentrl/Calculator-v0", split="test", tool_format="llama3").unwrapped
    tok = _tokenizer()
    prompt_id = f"calculator/test/{env.task_ids('test')[0]}"
    traj = await run_recorded_episode(env, ScriptedPolicy(tok, env=env), tok, prompt_id=prompt_id)
    assert traj.status is Status.OK and traj.info["tool_format"] == "llama3"
    messages, _ = trajectory_messages(traj)
    assert messages[2]["tool_calls"][0]["function"]["name"] == "calculator"
    assert "calculator" not in messages[2]["content"]


async def test_recorded_episode_exports_and_replays_identically(tmp_path: Path) -> None:
    env = gymnasium.make("agentrl/Calculator-v0", split="test").unwrapped
    tok = _tokenizer()
    prompt_id = f"calculator/test/{env.task_ids('test')[0]}"
    traj = await run_recorded_episode(env, ScriptedPolicy(tok, env=env), tok, prompt_id=prompt_id)
    assert traj.status is Status.OK and traj.reward == 1.0
    recorded, tools = trajectory_messages(traj)
    assert [m["role"] for m in recorded[:4]] == ["system", "user", "assistant", "tool"]
    assert (
        recorded[2]["tool_calls"][0]["function"]["name"] == "calculator"
        and tools[0]["function"]["name"] == "calculator"
    )

    # the same episode without a recording: replayed from its token ids in a fresh env
    plain = await run_episode(env, ScriptedPolicy(tok, env=env), tok, prompt_id=prompt_id)
    fresh = gymnasium.make("agentrl/Calculator-v0", split="test")
    import asyncio

    replayed, _ = await asyncio.to_thread(trajectory_messages, plain, tok, fresh)
    assert replayed == recorded
    with pytest.raises(ValueError, match="has no recorded messages"):
        trajectory_messages(plain)

    out = tmp_path / "runs" / "r.jsonl"
    assert export_trajectories([traj, traj], tok, out) == 2
    rows = read_trajectory_jsonl(out)
    row = rows[0]
    assert row["reward"] == 1.0 and row["status"] == "ok" and row["policy_version"] == 0
    assert row["prompt_id"] == prompt_id and row["answer"] is not None and row["correct"] is True
    assert len(row["turns"]) == len(traj.turns) and {"gen_s", "tool_s", "n_model_tokens"} <= set(
        row["turns"][0]
    )
    assert row["messages"] == recorded


def test_reader_names_the_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n{"messages": [{"role": "robot"}]}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl: line 2: messages\[0\] needs a role"):
        read_trajectory_jsonl(path)


def test_rollouts_cli_writes_demonstration_jsonl(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "qa.jsonl"
    data.write_text(
        "".join(json.dumps({"prompt": f"What is {i} + {i}?", "answer": 2 * i}) + "\n" for i in range(6))
    )
    out = tmp_path / "rollouts.jsonl"
    rc = main(
        [
            "rollouts",
            "--model",
            "tiny",
            "--env",
            "agentrl/Dataset-v0",
            "--env-arg",
            f"path={data}",
            "--env-arg",
            "scorer=numeric",
            "--split",
            "train",
            "--tasks",
            "3",
            "--max-new-tokens",
            "24",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    rows = read_trajectory_jsonl(out)
    assert len(rows) == 3 and all(r["messages"][0]["role"] == "system" for r in rows)
    assert all(r["status"] in ("ok", "truncated") and r["messages"][2]["role"] == "assistant" for r in rows)
    assert "wrote" in capsys.readouterr().out

    rc = main(
        [
            "rollouts",
            "--env",
            "agentrl/Dataset-v0",
            "--env-arg",
            f"path={tmp_path / 'none.jsonl'}",
            "--out",
            str(out),
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("agentrl rollouts: ") and "none.jsonl does not exist" in err
