"""agentrl/Dataset-v0: sources, splits, scorers, per-task tools, episodes end to end, and bad input."""

from __future__ import annotations

import asyncio
import functools
import json
from pathlib import Path
from typing import Any

import gymnasium
import pytest

import agentrl.envs  # noqa: F401  (registers the envs)
from agentrl.envs.dataset import DatasetEnv, exact_scorer, math_scorer, numeric_scorer
from agentrl.rollout.episode import run_episode
from agentrl.types import SamplingParams, Status
from tests.policy.conftest import ScriptedPolicy, _tokenizer

MATH_ROWS = [
    {"question": "What is 1/2 + 1/4?", "answer": "\\frac{3}{4}"},
    {"question": "Solve x^2 = 4 and give the solution set.", "answer": "\\{-2, 2\\}"},
    {"question": "Where is 0 < x <= 1?", "answer": "(0, 1]"},
    {"question": "What is 6 * 7?", "answer": "42"},
    {"question": "What is 2 / 8?", "answer": "0.25"},
]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@functools.cache
def tiny() -> tuple[Any, Any]:
    from agentrl.models import load_model, model_path

    return load_model(str(model_path("tiny")))


def test_builtin_scorers() -> None:
    assert math_scorer("0.75", "\\frac{3}{4}") == 1.0
    assert math_scorer("\\{2, -2\\}", "\\{-2, 2\\}") == 1.0
    assert math_scorer("(0, 1]", "(0,1]") == 1.0 and math_scorer("[0, 1]", "(0,1]") == 0.0
    assert math_scorer("\\boxed{42}", "42") == 1.0 and math_scorer("41", "42") == 0.0
    assert numeric_scorer("3.1416", "3.14159", tolerance=1e-3) == 1.0
    assert numeric_scorer("3.2", "3.14159", tolerance=1e-3) == 0.0
    assert numeric_scorer("1,000", 1000) == 1.0 and numeric_scorer("abc", 1) == 0.0
    assert exact_scorer("The Paris.", "paris") == 1.0 and exact_scorer("Lyon", ["Paris", "Lyon"]) == 1.0


async def test_jsonl_with_math_verify_scorer_end_to_end(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "math.jsonl", MATH_ROWS)
    env = gymnasium.make(
        "agentrl/Dataset-v0", path=str(path), prompt_column="question", scorer="math", test_size=2
    ).unwrapped
    assert (
        env.splits == ("train", "test") and len(env.task_ids("train")) == 3 and len(env.task_ids("test")) == 2
    )
    # the seeded split is reproducible and reported
    again = DatasetEnv(path, prompt_column="question", scorer="math", test_size=2)
    assert again.task_ids("test") == env.task_ids("test")
    _, info = await env.areset(options={"split": "test", "task_id": env.task_ids("test")[0]})
    assert info["dataset"]["split_source"] == "seeded" and info["dataset"]["sizes"] == {"train": 3, "test": 2}

    tok = _tokenizer()
    for split in ("train", "test"):
        for task_id in env.task_ids(split):
            traj = await run_episode(
                env, ScriptedPolicy(tok, env=env), tok, prompt_id=f"dataset/{split}/{task_id}"
            )
            assert traj.status is Status.OK and traj.reward == 1.0, (task_id, traj.error)
    # an equivalent answer in another notation scores too (row 0's answer is \frac{3}{4})
    split0 = "train" if "00000" in env.task_ids("train") else "test"
    traj = await run_episode(
        env, ScriptedPolicy(tok, texts=["<answer>0.75</answer>"]), tok, prompt_id=f"dataset/{split0}/00000"
    )
    assert traj.reward == 1.0

    model, mtok = tiny()
    from agentrl.policy.hf import HFPolicy

    policy = HFPolicy(model, mtok)
    for task_id in env.task_ids("test"):
        traj = await run_episode(
            env, policy, prompt_id=f"dataset/test/{task_id}", params=SamplingParams(max_new_tokens=24, seed=1)
        )
        assert traj.status in (Status.OK, Status.TRUNCATED) and 0.0 <= traj.reward <= 1.0, traj.error
    await policy.aclose()


async def test_local_datasets_dataset_end_to_end(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    dd = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict(
                {"id": ["a", "b"], "problem": ["2 + 3?", "4 * 5?"], "solution": [5, 20]}
            ),
            "test": datasets.Dataset.from_dict({"id": ["c"], "problem": ["9 - 1?"], "solution": [8]}),
        }
    )
    dd.save_to_disk(str(tmp_path / "ds"))
    env = DatasetEnv(
        tmp_path / "ds", prompt_column="problem", answer_column="solution", id_column="id", scorer="numeric"
    )
    assert env.splits == ("train", "test") and env.task_ids("train") == ["a", "b"]
    assert env.dataset_info["split_source"] == "source"
    tok = _tokenizer()
    traj = await run_episode(env, ScriptedPolicy(tok, env=env), tok, prompt_id="dataset/test/c")
    assert traj.status is Status.OK and traj.reward == 1.0
    traj = await run_episode(
        env, ScriptedPolicy(tok, texts=["<answer>21</answer>"]), tok, prompt_id="dataset/train/b"
    )
    assert traj.reward == 0.0

    model, mtok = tiny()
    from agentrl.policy.hf import HFPolicy

    policy = HFPolicy(model, mtok)
    traj = await run_episode(
        env, policy, prompt_id="dataset/train/a", params=SamplingParams(max_new_tokens=24, seed=2)
    )
    assert traj.status in (Status.OK, Status.TRUNCATED), traj.error
    await policy.aclose()

    # a single saved Dataset gets the seeded split
    datasets.Dataset.from_dict(
        {"prompt": [f"q{i}" for i in range(10)], "answer": [str(i) for i in range(10)]}
    ).save_to_disk(str(tmp_path / "one"))
    one = DatasetEnv(str(tmp_path / "one"), scorer="exact", test_size=0.2, split_seed=3)
    assert len(one.task_ids("test")) == 2 and one.dataset_info["split_seed"] == 3


def test_csv_split_column_import_path_and_async_scorers(tmp_path: Path) -> None:
    path = tmp_path / "qa.csv"
    path.write_text("q,a,part,weight\nCapital of France?,Paris,train,1\nCapital of Peru?,Lima,eval,1\n")
    env = DatasetEnv(
        path,
        prompt_column="q",
        answer_column="a",
        split_column="part",
        scorer="tests.envs.dataset_scorers:first_word",
    )
    assert env.splits == ("train", "eval") and env.dataset_info["split_source"] == "column 'part'"
    env.reset(options={"task_id": 0})
    assert env.step("<answer>paris is it</answer>")[1] == 1.0
    env = DatasetEnv(
        path,
        prompt_column="q",
        answer_column="a",
        split_column="part",
        scorer="tests.envs.dataset_scorers:async_exact",
        split="eval",
    )
    env.reset(options={"task_id": 0})
    assert env.step("<answer>Lima</answer>")[1] == 1.0
    env.reset(options={"task_id": 0})
    assert env.step("<answer>Quito</answer>")[1] == 0.0


async def test_astep_awaits_an_async_scorer_on_the_episodes_own_loop(tmp_path: Path) -> None:
    from tests.envs import dataset_scorers

    path = write_jsonl(tmp_path / "qa.jsonl", [{"prompt": "Capital of Peru?", "answer": "Lima"}] * 2)
    env = DatasetEnv(path, scorer="tests.envs.dataset_scorers:loop_recording", test_size=0)
    probes = len(dataset_scorers.LOOPS)  # construction probes the scorer from synchronous code
    await env.areset(options={"task_id": 0})
    _, reward, terminated, _, _ = await env.astep("<answer>Lima</answer>")
    assert terminated and reward == 1.0
    assert dataset_scorers.LOOPS[probes:] == [asyncio.get_running_loop()]  # not a background loop
    slow = DatasetEnv(
        path, scorer="tests.envs.dataset_scorers:slow_when_wrong", test_size=0, scorer_timeout=0.05
    )
    await slow.areset(options={"task_id": 0})
    _, reward, terminated, _, info = await slow.astep("<answer>Quito</answer>")
    assert terminated and reward == 0.0 and "took longer than 0.05 s" in info["score_error"]


def test_files_per_split_in_a_directory_and_per_task_tools(tmp_path: Path) -> None:
    def shout(text: str) -> str:
        """Upper-case the text."""
        return text.upper()

    def whisper(text: str) -> str:
        """Lower-case the text."""
        return text.lower()

    write_jsonl(tmp_path / "train.jsonl", [{"prompt": "shout hi", "answer": "HI", "tools": ["shout"]}])
    write_jsonl(tmp_path / "test.jsonl", [{"prompt": "whisper HI", "answer": "hi", "tools": "whisper"}])
    env = DatasetEnv(tmp_path, tools=[shout, whisper], tools_column="tools", scorer="exact")
    _, info = env.reset(options={"task_id": 0})
    assert [t["function"]["name"] for t in info["tools"]] == ["shout"]
    assert "shout" in info["messages"][0]["content"] and "whisper" not in info["messages"][0]["content"]
    obs, *_ = env.step('<tool_call>{"name": "whisper", "arguments": {"text": "x"}}</tool_call>')
    assert "unknown tool" in obs
    obs, *_ = env.step('<tool_call>{"name": "shout", "arguments": {"text": "hi"}}</tool_call>')
    assert "HI" in obs
    with pytest.raises(ValueError, match=r"test\.jsonl: row 0 .*unknown tool\(s\) \['whisper'\]"):
        DatasetEnv(tmp_path, tools=[shout], tools_column="tools", scorer="exact")


# ---- bad input: one line, naming the file, row or field, raised by the constructor ---------------


def one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    text = str(exc.value)
    assert "\n" not in text, text
    return text


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as e:
        gymnasium.make("agentrl/Dataset-v0", path=str(tmp_path / "nope.jsonl"))
    assert "nope.jsonl does not exist" in one_line(e)


def test_row_without_prompt_or_answer_column(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "d.jsonl",
        [{"prompt": "a", "answer": "1"}, {"prompt": "b", "answer": "2"}, {"question": "c", "answer": "3"}],
    )
    with pytest.raises(ValueError) as e:
        DatasetEnv(path)
    assert "d.jsonl: row 2 (line 3) has no prompt column 'prompt'" in one_line(e)
    path = write_jsonl(tmp_path / "e.jsonl", [{"prompt": "a"}])
    with pytest.raises(ValueError) as e:
        DatasetEnv(path, test_size=0)
    assert "e.jsonl: row 0 (line 1) has no answer column 'answer'" in one_line(e)
    csv_path = tmp_path / "f.csv"
    csv_path.write_text("prompt,answer\nq1,1\nq2,\n")
    with pytest.raises(ValueError) as e:
        DatasetEnv(csv_path)
    assert "f.csv: row 1 (line 3): answer column 'answer' is empty" in one_line(e)
    (tmp_path / "g.jsonl").write_text('{"prompt": "a", "answer": 1}\n{"prompt": \n')
    with pytest.raises(ValueError) as e:
        DatasetEnv(tmp_path / "g.jsonl")
    assert "g.jsonl: row 1 (line 2) is not valid JSON" in one_line(e)


def test_bad_scorers(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", MATH_ROWS)
    with pytest.raises(ValueError) as e:
        DatasetEnv(path, prompt_column="question", scorer="no_such_module_xyz:score")
    assert "scorer 'no_such_module_xyz:score': module 'no_such_module_xyz' does not import" in one_line(e)
    with pytest.raises(ValueError) as e:
        DatasetEnv(path, prompt_column="question", scorer="tests.envs.dataset_scorers:missing")
    assert "has no attribute 'missing'" in one_line(e)
    with pytest.raises(ValueError) as e:
        DatasetEnv(path, prompt_column="question", scorer="tests.envs.dataset_scorers:not_a_number")
    assert "returned str 'yes'" in one_line(e) and "d.jsonl: row" in str(e.value)
    with pytest.raises(ValueError) as e:
        DatasetEnv(path, prompt_column="question", scorer="fuzzy")
    assert "scorer 'fuzzy'" in one_line(e)


def test_duplicate_ids_and_empty_name(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "d.jsonl", [{"id": 1, "prompt": "a", "answer": 1}, {"id": 1, "prompt": "b", "answer": 2}]
    )
    with pytest.raises(ValueError) as e:
        DatasetEnv(path, id_column="id", test_size=0)
    assert "row 1 (line 2): task id '1' repeats" in one_line(e)
    with pytest.raises(ValueError, match="contain no '/'"):
        DatasetEnv(path, name="a/b")


def test_shaping_is_off_by_default_and_reported_beside_the_reward(tmp_path: Path) -> None:
    def add(a: int, b: int) -> int:
        """Add."""
        return a + b

    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "2+3?", "answer": 5}])
    env = DatasetEnv(path, tools=[add], test_size=0)
    env.reset()
    _, _, _, _, info = env.step("hmm")
    assert "shaping" not in info
    env = DatasetEnv(path, tools=[add], test_size=0, shaping="tool_calls")
    env.reset()
    _, r, *_, info = env.step('<tool_call>{"name": "add", "arguments": {"a": 2, "b": 3}}</tool_call>')
    assert r == 0.0 and info["shaping"] == 0.1
    _, r, term, _, info = env.step("<answer>4</answer>")
    assert term and r == 0.0 and info["shaping_total"] == pytest.approx(0.1)  # reward stays the scorer's
    env = DatasetEnv(path, test_size=0, shaping="format")
    env.reset()
    assert env.step("no tags")[4]["shaping"] == -0.1
    with pytest.raises(ValueError, match="shaping 'bogus'"):
        DatasetEnv(path, test_size=0, shaping="bogus")
