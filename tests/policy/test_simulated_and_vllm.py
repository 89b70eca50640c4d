"""The timing-only policy, and the pure parts of the in-process vLLM backend (no vLLM needed)."""

from __future__ import annotations

import asyncio
import math
from types import SimpleNamespace
from typing import Any

import pytest

from agentrl.envs.latency import Constant
from agentrl.policy.base import Policy, PolicyError, PolicyTimeoutError
from agentrl.policy.simulated import SimulatedPolicy
from agentrl.policy.vllm import INSTALL_HINT, generation_from_output, sampling_kwargs
from agentrl.rollout.episode import run_episode
from agentrl.types import SamplingParams, Status
from tests.policy.conftest import StandInEnv


async def test_simulated_policy_timing_and_tokens() -> None:
    policy = SimulatedPolicy(first_token=0.01, per_token=0.001, num_tokens=10, vocab_size=100, seed=1)
    assert isinstance(policy, Policy)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    out = await policy.generate([1, 2], SamplingParams())
    assert loop.time() - t0 >= 0.0195
    assert len(out.token_ids) == 10 and out.token_ids[-1] == 99 and out.finish_reason == "stop"
    assert out.logprobs == pytest.approx([-math.log(100)] * 10)
    cut = await policy.generate([1], SamplingParams(max_new_tokens=4))
    assert len(cut.token_ids) == 4 and cut.finish_reason == "length"
    await policy.sync_weights(7)
    assert (await policy.generate([1], SamplingParams())).policy_version == 7


async def test_simulated_policy_is_seeded() -> None:
    spec = {"kind": "lognormal", "median": 5.0, "sigma": 0.5}
    a = SimulatedPolicy(num_tokens=spec, seed=3)
    b = SimulatedPolicy(num_tokens=spec, seed=3)
    ra = [await a.generate([1], SamplingParams()) for _ in range(5)]
    rb = [await b.generate([1], SamplingParams()) for _ in range(5)]
    assert [r.token_ids for r in ra] == [r.token_ids for r in rb]
    c = await a.generate([1], SamplingParams(seed=9))
    d = await b.generate([1], SamplingParams(seed=9))
    assert c.token_ids == d.token_ids


async def test_simulated_policy_timeout_and_expert_responses(tokenizer: Any) -> None:
    slow = SimulatedPolicy(first_token=Constant(5.0), timeout=0.02)
    with pytest.raises(PolicyTimeoutError):
        await slow.generate([1], SamplingParams())
    env = StandInEnv()
    expert = SimulatedPolicy(tokenizer=tokenizer, respond=lambda _ids: env.expert_action(), per_token=0.0001)
    traj = await run_episode(env, expert, prompt_id="standin/train/00001")
    assert traj.status is Status.OK and traj.reward == 1.0
    with pytest.raises(ValueError, match="tokenizer"):
        SimulatedPolicy(respond=lambda _: "x")


def test_vllm_sampling_kwargs() -> None:
    kw = sampling_kwargs(SamplingParams(temperature=0.5, top_k=-1, max_new_tokens=9, stop=("</a>",)), seed=4)
    assert kw["temperature"] == 0.5 and kw["top_k"] == -1 and kw["max_tokens"] == 9 and kw["seed"] == 4
    assert kw["logprobs"] == 0 and kw["stop"] == ["</a>"] and kw["include_stop_str_in_output"]
    assert sampling_kwargs(SamplingParams(seed=2, top_k=5), seed=4)["seed"] == 2


def test_vllm_output_parsing() -> None:
    lp = lambda x: SimpleNamespace(logprob=x)  # noqa: E731
    completion = SimpleNamespace(
        token_ids=[5, 7],
        logprobs=[{5: lp(-0.1), 3: lp(-2.0)}, {7: lp(-0.3)}],
        finish_reason="length",
        text="hi",
    )
    gen = generation_from_output(SimpleNamespace(outputs=[completion]), version=2)
    assert gen.token_ids == [5, 7] and gen.logprobs == [-0.1, -0.3] and gen.finish_reason == "length"
    assert gen.policy_version == 2
    completion.logprobs = None
    with pytest.raises(PolicyError, match="log-prob"):
        generation_from_output(SimpleNamespace(outputs=[completion]), 0)


def test_vllm_backend_without_vllm_says_how_to_install() -> None:
    pytest.importorskip("torch")
    try:
        import vllm  # noqa: F401
    except ImportError:
        from agentrl.policy.vllm import VLLMPolicy

        with pytest.raises(ImportError, match="agentrl\\[vllm\\]"):
            VLLMPolicy("/nonexistent")
    else:
        pytest.skip("vLLM is installed here")
    assert "hf" in INSTALL_HINT
