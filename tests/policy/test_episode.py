"""The episode loop: token-exact trajectories, masks, budgets, failures, and the scheduler's runner."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agentrl.chat import ChatFormat
from agentrl.policy.hf import HFPolicy, rescore
from agentrl.rollout.episode import EpisodeRunner, parse_prompt_id, run_episode
from agentrl.types import SamplingParams, Status, Trajectory
from tests.policy.conftest import ScriptedPolicy, StandInEnv


def _model_segments(traj: Trajectory) -> list[list[int]]:
    segs: list[list[int]] = []
    prev = 0
    for tok, m in zip(traj.token_ids, traj.loss_mask, strict=True):
        if m and not prev:
            segs.append([])
        if m:
            segs[-1].append(tok)
        prev = m
    return segs


def assert_rescoring_matches(model: Any, traj: Trajectory, tol: float = 2e-4) -> None:
    """The learner's log-probs of the trajectory equal the sampling log-probs on every model token."""
    scored = rescore(model, traj.token_ids)
    model_positions = [i for i, m in enumerate(traj.loss_mask) if m]
    assert model_positions, "trajectory has no model tokens"
    for i in model_positions:
        assert scored[i] == pytest.approx(traj.logprobs[i], abs=tol), f"token {i} drifted"
    assert all(traj.logprobs[i] == 0.0 for i, m in enumerate(traj.loss_mask) if not m)


async def test_expert_episode_is_the_rendered_conversation(tokenizer: Any) -> None:
    env = StandInEnv()
    policy = ScriptedPolicy(tokenizer, env=env)
    traj = await run_episode(env, policy, tokenizer, prompt_id="standin/train/00003")
    assert traj.status is Status.OK and traj.reward == 1.0 and traj.info["correct"]
    assert traj.prompt_id == "standin/train/00003" and len(traj.turns) == 2
    chat = ChatFormat(tokenizer)
    assert tokenizer.decode(traj.token_ids) == chat.render(env.messages, env_tools()) + ""
    # model tokens are exactly the assistant turns with their <|im_end|>
    texts = [m["content"] for m in env.messages if m["role"] == "assistant"]
    assert [tokenizer.decode(s) for s in _model_segments(traj)] == [t + "<|im_end|>" for t in texts]
    assert traj.prompt_len == len(chat.prompt_ids(env.messages[:2], env_tools()))
    assert traj.loss_mask[: traj.prompt_len] == [0] * traj.prompt_len
    assert traj.num_model_tokens == sum(t.n_model_tokens for t in traj.turns)
    assert traj.num_tokens == traj.prompt_len + sum(t.n_model_tokens + t.n_env_tokens for t in traj.turns)
    # each generation saw exactly the trajectory so far
    assert policy.prompts[1] == traj.token_ids[: len(policy.prompts[1])]


def env_tools() -> list[dict[str, Any]]:
    from tests.policy.conftest import CALC_SCHEMA

    return [CALC_SCHEMA]


async def test_missing_end_of_turn_is_added_with_mask_zero(tokenizer: Any) -> None:
    env = StandInEnv()
    policy = ScriptedPolicy(tokenizer, env=env, emit_eos=False)
    traj = await run_episode(env, policy, tokenizer)
    assert traj.status is Status.OK
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    ends = [i for i, t in enumerate(traj.token_ids) if t == im_end and i >= traj.prompt_len]
    assert ends and all(traj.loss_mask[i] == 0 for i in ends)
    assert tokenizer.decode(traj.token_ids) == ChatFormat(tokenizer).render(env.messages, env_tools())


async def test_turn_budget_truncates(tokenizer: Any) -> None:
    env = StandInEnv(max_turns=5)
    policy = ScriptedPolicy(tokenizer, texts=["thinking..."] * 10)
    traj = await run_episode(env, policy, tokenizer, max_turns=3)
    assert traj.status is Status.TRUNCATED and len(traj.turns) == 3 and traj.reward == 0.0
    env = StandInEnv(max_turns=2)
    traj = await run_episode(env, ScriptedPolicy(tokenizer, texts=["hm"] * 10), tokenizer)
    assert traj.status is Status.TRUNCATED and len(traj.turns) == 2


async def test_length_budget_truncates_without_overflow(tokenizer: Any) -> None:
    env = StandInEnv(max_turns=50)
    prompt_len = len(ChatFormat(tokenizer).prompt_ids((await env.areset())[1]["messages"], env_tools()))
    for budget in (prompt_len + 3, prompt_len + 40, prompt_len + 200):
        traj = await run_episode(
            env, ScriptedPolicy(tokenizer, texts=["still thinking"] * 60), tokenizer, max_tokens=budget
        )
        assert traj.status is Status.TRUNCATED and traj.num_tokens <= budget
    traj = await run_episode(env, ScriptedPolicy(tokenizer, texts=[]), tokenizer, max_tokens=prompt_len)
    assert traj.status is Status.TRUNCATED and "prompt" in traj.error


async def test_env_exception_and_deadlines_become_statuses(tokenizer: Any) -> None:
    env = StandInEnv(fail_on_step=2)
    traj = await run_episode(env, ScriptedPolicy(tokenizer, env=env), tokenizer)
    assert (
        traj.status is Status.ENV_ERROR and "stand-in env broke" in traj.error and not traj.status.trainable
    )
    env = StandInEnv(step_delay=1.0)
    traj = await run_episode(env, ScriptedPolicy(tokenizer, env=env), tokenizer, env_timeout=0.02)
    assert traj.status is Status.TIMEOUT and "env step" in traj.error
    env = StandInEnv()
    traj = await run_episode(env, ScriptedPolicy(tokenizer, env=env, delay=1.0), tokenizer, gen_timeout=0.02)
    assert traj.status is Status.TIMEOUT and traj.turns[0].gen_s >= 0.02
    assert len(traj.token_ids) == len(traj.loss_mask) == len(traj.logprobs)


async def test_timings_split_generation_and_tool_time(tokenizer: Any) -> None:
    env = StandInEnv(step_delay=0.03)
    traj = await run_episode(env, ScriptedPolicy(tokenizer, env=env, delay=0.01), tokenizer)
    assert all(t.gen_s >= 0.009 and t.tool_s >= 0.029 for t in traj.turns)
    assert traj.duration >= sum(t.gen_s + t.tool_s for t in traj.turns) - 1e-6
    assert traj.turns[0].tool_calls == 1


async def test_hf_episode_logprobs_survive_rescoring(model: Any, tokenizer: Any) -> None:
    policy = HFPolicy(model, tokenizer)
    envs = [StandInEnv(max_turns=3) for _ in range(4)]
    params = SamplingParams(temperature=1.0, max_new_tokens=24, seed=11)
    trajs = await asyncio.gather(
        *(run_episode(e, policy, task_id=f"{i:05d}", params=params) for i, e in enumerate(envs))
    )
    for traj in trajs:
        assert traj.status in (Status.OK, Status.TRUNCATED)
        assert_rescoring_matches(model, traj)
    await policy.aclose()


async def test_runner_maps_prompt_ids_and_pools_envs(tokenizer: Any) -> None:
    made: list[StandInEnv] = []

    def factory(name: str) -> StandInEnv:
        assert name == "standin"
        made.append(StandInEnv())
        return made[-1]

    runner = EpisodeRunner(factory, ScriptedPolicy(tokenizer, texts=["<answer>9</answer>"] * 3), seed=1)
    t1 = await runner("standin/test/00002", 0)
    t2 = await runner("standin/train/00004", 0)
    assert len(made) == 1 and made[0].resets == 2  # one env reused
    assert (t1.reward, t2.reward) == (1.0, 0.0) and t1.episode_id == 0 and t2.episode_id == 1
    assert t1.info["split"] == "test" and t2.prompt_id == "standin/train/00004"
    # concurrent episodes get their own envs
    runner2 = EpisodeRunner(factory, ScriptedPolicy(tokenizer, texts=["x"] * 100, delay=0.01), max_turns=2)
    await asyncio.gather(*(runner2(f"standin/train/{i:05d}", 0) for i in range(3)))
    assert len(made) == 4
    with pytest.raises(ValueError, match="<env>/<split>/<task_id>"):
        parse_prompt_id("calculator-00042")
    assert parse_prompt_id("kb/test/a/b").task_id == "a/b"


async def test_prompt_id_mismatch_is_an_env_error(tokenizer: Any) -> None:
    class Liar(StandInEnv):
        async def areset(self, **kw):
            obs, info = await super().areset(**kw)
            return obs, {**info, "prompt_id": "standin/train/99999"}

    traj = await run_episode(
        Liar(), ScriptedPolicy(tokenizer, texts=[]), tokenizer, prompt_id="standin/train/00001"
    )
    assert traj.status is Status.ENV_ERROR and "99999" in traj.error


@pytest.mark.parametrize("env_id", ["agentrl/Calculator-v0", "agentrl/KBSearch-v0", "agentrl/PythonMath-v0"])
async def test_bundled_envs_with_expert_and_with_model(env_id: str, model: Any, tokenizer: Any) -> None:
    import gymnasium

    import agentrl.envs  # noqa: F401  (registers the envs)

    env = gymnasium.make(env_id).unwrapped
    prompt_id = f"{env.name}/test/{env.task_ids('test')[0]}"
    traj = await run_episode(env, ScriptedPolicy(tokenizer, env=env), tokenizer, prompt_id=prompt_id)
    if traj.status is Status.OK and traj.reward == 0.0 and "python" in env_id:
        pytest.skip(f"python sandbox unavailable here: {env.messages[-2]['content'][:200]}")
    assert traj.status is Status.OK and traj.reward == 1.0, traj.error
    expected = ChatFormat(tokenizer).render(env.messages, env.toolbox.schemas())
    assert tokenizer.decode(traj.token_ids) == expected
    policy = HFPolicy(model, tokenizer)
    traj = await run_episode(
        env, policy, prompt_id=prompt_id, max_turns=2, params=SamplingParams(max_new_tokens=16, seed=5)
    )
    assert traj.status in (Status.OK, Status.TRUNCATED)
    assert_rescoring_matches(model, traj)
    await policy.aclose()
