"""The three bundled environments: API conformance, splits, expert, random policy, replay.

PythonMath's expert and random-policy runs need the bubblewrap sandbox and live in
test_python_math_env.py (marked integration); here it runs with a stand-in python tool.
"""

from __future__ import annotations

import asyncio
import warnings
from collections import Counter
from typing import Any, ClassVar

import gymnasium
import pytest
from gymnasium.utils.env_checker import check_env

import agentrl.envs
from agentrl.envs import BUNDLED_ENVS, LatencyProfile, LogNormal, Uniform
from agentrl.envs.calculator import CalculatorEnv
from agentrl.envs.kb_search import KBSearchEnv, knowledge_base
from agentrl.envs.python_math import PythonMathEnv
from agentrl.tools import Tool

from ._helpers import RandomPolicy, expert, run_episode, summarize


class StubPython(Tool):
    """Stands in for the sandbox where a test does not need code to really run."""

    name: ClassVar[str] = "python"
    description: ClassVar[str] = "stub"
    parameters: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {"code": {"type": "string"}},
        "required": ["code"],
        "additionalProperties": False,
    }

    async def run(self, **arguments: Any) -> str:
        return "NameError: stub sandbox"


def make_env(env_id: str, **kwargs: Any) -> agentrl.envs.ToolEnv:
    if env_id == "agentrl/PythonMath-v0":
        kwargs.setdefault("tools", [StubPython()])
    return gymnasium.make(env_id, **kwargs).unwrapped


TOOL_ENVS = ["agentrl/Calculator-v0", "agentrl/KBSearch-v0"]  # experts need no external process
ALL_ENVS = list(BUNDLED_ENVS)


@pytest.mark.parametrize("env_id", ALL_ENVS)
def test_check_env_raw_and_made(env_id):
    kwargs = {"tools": [StubPython()]} if "Python" in env_id else {}
    check_env(gymnasium.make(env_id, **kwargs).unwrapped)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # check_env warns that a made env is wrapped
        check_env(gymnasium.make(env_id, **kwargs))


@pytest.mark.parametrize("env_id", ALL_ENVS)
def test_splits_are_deterministic_disjoint_and_spread(env_id):
    env = make_env(env_id)
    train, test = env.tasks("train"), env.tasks("test")
    assert (len(train), len(test)) == (1000, 200)
    assert len({t.id for t in train}) == 1000
    assert not {t.prompt for t in train} & {t.prompt for t in test}
    # rebuilding from scratch (no cache) gives the same tasks
    mod = type(env).__module__
    gen = __import__(mod, fromlist=["generate"]).generate
    assert gen("test", 200, frozenset(t.prompt for t in train)) == test
    levels = Counter(t.difficulty for t in train)
    assert len(levels) >= 2 and min(levels.values()) >= 50, levels
    _, info = env.reset(options={"task_id": test[7].id, "split": "test"})
    assert info["prompt_id"] == f"{env.name}/test/{test[7].id}"


@pytest.mark.parametrize("env_id", TOOL_ENVS)
async def test_expert_solves_test_subset(env_id):
    env = make_env(env_id)
    ids = env.task_ids("test")[::4]  # 50 tasks; the full split runs in the slow test below
    episodes = [await run_episode(env, expert, tid) for tid in ids]
    assert summarize(episodes) >= 0.95
    assert all(not e.truncated for e in episodes)


@pytest.mark.slow
@pytest.mark.parametrize("env_id", TOOL_ENVS)
async def test_expert_solves_full_test_split(env_id):
    env = make_env(env_id)
    episodes = [await run_episode(env, expert, tid) for tid in env.task_ids("test")]
    assert summarize(episodes) >= 0.95


@pytest.mark.parametrize("env_id", ALL_ENVS)
async def test_random_policy_rarely_succeeds(env_id):
    env = make_env(env_id)
    policy = RandomPolicy(seed=0)
    episodes = [await run_episode(env, policy, tid) for tid in env.task_ids("test")[:100]]
    assert summarize(episodes) < 0.10


@pytest.mark.parametrize("env_id", TOOL_ENVS)
async def test_same_seed_replays_tasks_and_latencies(env_id):
    profile = LatencyProfile(step=Uniform(0.0, 0.002), tool=LogNormal(0.001, 0.3))

    async def replay(seed: int) -> list[tuple[str, list[float]]]:
        env = make_env(env_id, latency=profile)
        out = []
        for i in range(4):
            ep = await run_episode(env, expert, seed=seed if i == 0 else None)
            out.append((ep.prompt_id, ep.latencies))
        return out

    a, b, c = await replay(11), await replay(11), await replay(12)
    assert a == b
    assert a != c


def test_calculator_tasks_need_several_dependent_steps():
    env = CalculatorEnv()
    tasks = env.tasks("train")
    assert Counter(t.difficulty for t in tasks).keys() == {1, 2, 3, 4}
    sizes = Counter(t.data["size"] for t in tasks)
    assert len(sizes) == 3
    multi = [t for t in tasks if len(t.data["steps"]) > 1]
    assert all("{x}" in step for t in multi for step in t.data["steps"][1:])


def test_calculator_warmup_split_is_fresh_stories_outside_train_and_test():
    env = CalculatorEnv()
    warm = env.tasks("warmup")
    held = {t.prompt for t in env.tasks("train")} | {t.prompt for t in env.tasks("test")}
    assert len(warm) == 20000 and len({t.prompt for t in warm}) == 20000
    assert not {t.prompt for t in warm} & held
    _, info = env.reset(options={"task_id": warm[3].id, "split": "warmup"})
    assert info["prompt_id"] == f"calculator/warmup/{warm[3].id}"


def test_calculator_expert_uses_tool_outputs():
    env = CalculatorEnv()
    env.reset(options={"task_id": next(t.id for t in env.tasks() if t.difficulty >= 2)})
    env.step(env.expert_action())
    # tamper with the tool's answer: the expert must carry the tampered value forward
    env.messages[-1]["content"] = "1000003"
    assert "1000003" in env.expert_action()


def test_kb_is_deterministic_and_questions_are_multi_hop():
    kb = knowledge_base()
    assert len(kb.documents()) == len({d[0] for d in kb.documents()})
    knowledge_base.cache_clear()
    assert knowledge_base() == kb
    tasks = KBSearchEnv().tasks("train")
    assert {t.difficulty for t in tasks} == {2, 3}


def test_kb_expert_uses_search_results():
    env = KBSearchEnv()
    env.reset(options={"task_id": "00000", "split": "test"})
    first = env.expert_action()
    assert env.task.data["start"] in first
    env.step(first)
    env.messages[-1]["content"] = "No documents match. Try other keywords."
    assert env.expert_action() == first  # it searches again rather than using the stored answer


def test_python_math_expert_answers_what_the_tool_printed():
    env = PythonMathEnv(tools=[StubPython()])
    env.reset(options={"task_id": "00003", "split": "test"})
    assert '"name": "python"' in env.expert_action()
    env.step(env.expert_action())
    env.messages[-1]["content"] = "debug line\n12345\n"
    assert env.expert_action() == "<answer>12345</answer>"


def test_python_math_scores_symbolically():
    env = PythonMathEnv(tools=[StubPython()])
    frac = next(t for t in env.tasks("train") if "/" in str(t.answer))
    num, den = map(int, str(frac.answer).split("/"))
    assert env.score(frac, f"{2 * num}/{2 * den}") == 1.0
    assert env.score(frac, f"\\frac{{{num}}}{{{den}}}") == 1.0
    assert env.score(frac, str(num)) == 0.0


def test_gymnasium_make_passes_constructor_arguments():
    env = gymnasium.make("agentrl/Calculator-v0", split="test", max_turns=3)
    _, info = env.reset(seed=0)
    assert info["split"] == "test" and info["max_turns"] == 3


def test_sync_and_async_apis_agree():
    env_a, env_b = CalculatorEnv(), CalculatorEnv()
    obs_a, info_a = env_a.reset(seed=9)
    obs_b, info_b = asyncio.run(env_b.areset(seed=9))
    assert (obs_a, info_a) == (obs_b, info_b)


def test_outcome_env_rewards_follow_the_prompt_probability():
    check_env(gymnasium.make("agentrl/Outcome-v0").unwrapped)
    env = gymnasium.make("agentrl/Outcome-v0").unwrapped
    env.reset(seed=0)
    easy = max(env.tasks(), key=lambda t: t.data["p"])
    hard = min(env.tasks(), key=lambda t: t.data["p"])
    rates = []
    for task in (easy, hard):
        wins = 0
        for _ in range(200):
            env.reset(options={"task_id": task.id})
            wins += env.step(env.expert_action())[1]
        rates.append(wins / 200)
    assert rates[0] > 0.9 and rates[1] < 0.1
    assert env.success_probability(easy.id) == easy.data["p"]


def test_latency_config_mapping_and_module_prefixed_make():
    env = gymnasium.make(
        "agentrl.envs:agentrl/Calculator-v0",
        latency={"step": 0.001, "per_tool": {"calculator": {"kind": "uniform", "low": 0, "high": 0.001}}},
    ).unwrapped
    assert env.latency.step.seconds == 0.001
    assert env.latency.for_tool("calculator").high == 0.001
    with pytest.raises(ValueError, match="unknown latency key"):
        CalculatorEnv(latency={"steps": 1})


@pytest.mark.parametrize(("cls", "size"), [(KBSearchEnv, 4000), (PythonMathEnv, 5000)])
def test_warmup_split_is_outside_train_and_test(cls: type, size: int) -> None:
    env = cls()
    warm = env.tasks("warmup")
    held = {t.prompt for t in env.tasks("train")} | {t.prompt for t in env.tasks("test")}
    assert len(warm) == size and len({t.prompt for t in warm}) == size
    assert not {t.prompt for t in warm} & held
    # the expert solves warmup tasks like any other
    env.reset(options={"task_id": warm[0].id, "split": "warmup"})
    assert env.expert_action()


def test_kb_warmup_asks_about_other_knowledge_bases_and_searches_them() -> None:
    """Warm-start demos must teach searching and copying, not the evaluation KB's facts."""
    from agentrl.envs.kb_search import KB_SEED, WARMUP_KBS

    env = KBSearchEnv()
    warm = env.tasks("warmup")
    assert {t.data["kb"] for t in warm} == {f"{KB_SEED}/warmup/{i}" for i in range(WARMUP_KBS)}
    main = knowledge_base()
    other = knowledge_base(warm[0].data["kb"])
    names = [set(kb.countries) | set(kb.cities) | set(kb.people) | set(kb.companies) for kb in (main, other)]
    assert not names[0] & names[1]
    assert knowledge_base(warm[0].data["kb"]) != main
    for task in (warm[0], warm[-1]):
        _, info = env.reset(options={"task_id": task.id, "split": "warmup"})
        reward = 0.0
        for _ in range(info["max_turns"]):
            _, reward, terminated, _, _ = env.step(env.expert_action())
            if terminated:
                break
        assert reward == 1.0
    # the next episode, on the env's own KB, searches that KB again
    test_task = env.tasks("test")[0]
    env.reset(options={"task_id": test_task.id, "split": "test"})
    env.step(env.expert_action())
    assert test_task.data["start"] in env.messages[-1]["content"]
