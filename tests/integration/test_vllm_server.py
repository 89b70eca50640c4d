"""Episodes through a real vLLM server on CPU: token-exact trajectories, weight reloads that change
generations, and a server that freezes or dies mid-run."""

from __future__ import annotations

import asyncio
import copy
import signal
import time
from pathlib import Path
from typing import Any

import gymnasium
import pytest
import torch

import agentrl.envs  # noqa: F401  (registers the bundled envs)
from agentrl.models import load_model
from agentrl.policy.base import PolicyTimeoutError, PolicyUnavailableError
from agentrl.policy.hf import rescore
from agentrl.policy.openai import OpenAIPolicy
from agentrl.rollout.episode import EpisodeRunner
from agentrl.types import SamplingParams, Status, Trajectory
from tests.integration.conftest import VLLMServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

ENVS = {
    "calculator": "agentrl/Calculator-v0",
    "kb_search": "agentrl/KBSearch-v0",
    "python_math": "agentrl/PythonMath-v0",
}


@pytest.fixture(scope="module")
def hf_tiny(tiny_dir: Path) -> tuple[Any, Any]:
    return load_model(str(tiny_dir))


def max_drift(model: Any, traj: Trajectory) -> float:
    scored = rescore(model, traj.token_ids)
    return max(abs(scored[i] - traj.logprobs[i]) for i, m in enumerate(traj.loss_mask) if m)


async def test_episodes_in_all_envs_match_hf_rescoring(
    vllm_server: VLLMServer, hf_tiny: tuple[Any, Any]
) -> None:
    model, tokenizer = hf_tiny
    policy = OpenAIPolicy(vllm_server.url, tokenizer, timeout=60)
    runner = EpisodeRunner(
        {k: v for k, v in ENVS.items()},
        policy,
        max_tokens=2048,
        params=SamplingParams(temperature=1.0, max_new_tokens=128),
        seed=0,
    )
    prompt_ids = [f"{name}/test/{i:05d}" for name in ENVS for i in range(4)]
    trajs = await asyncio.gather(*(runner(p, 0) for p in prompt_ids))
    for traj in trajs:
        assert traj.status in (Status.OK, Status.TRUNCATED), (traj.prompt_id, traj.error)
        assert traj.num_model_tokens > 0 and len(traj.turns) >= 1
        assert max_drift(model, traj) < 2e-3, traj.prompt_id
    solved = {name: sum(t.reward for t in trajs if t.prompt_id.startswith(name)) for name in ENVS}
    print("vLLM episodes, reward per env (4 tasks each):", solved)
    assert sum(endpoint.served for endpoint in policy.endpoints) >= len(trajs)
    await runner.aclose()
    await policy.aclose()


async def test_weight_reload_changes_generations(
    vllm_server: VLLMServer, hf_tiny: tuple[Any, Any], tmp_path: Path
) -> None:
    model, tokenizer = hf_tiny
    policy = OpenAIPolicy(vllm_server.url, tokenizer, timeout=60, weights_dir=tmp_path / "w")
    prompt = list(
        tokenizer(
            "<|im_start|>user\nWhat is 12 * 7?<|im_end|>\n<|im_start|>assistant\n", add_special_tokens=False
        )["input_ids"]
    )
    greedy = SamplingParams(temperature=0.0, max_new_tokens=24)
    before = await policy.generate(prompt, greedy)

    # "an update": perturb the weights, save the checkpoint as the learner would
    torch.manual_seed(0)
    updated = copy.deepcopy(model)
    with torch.no_grad():
        for p in updated.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    updated.save_pretrained(tmp_path / "ckpt-1")
    expected = rescore(updated, prompt + before.token_ids)[len(prompt) :]

    await policy.sync_weights(1, tmp_path / "ckpt-1")
    after = await policy.generate(prompt, greedy)
    assert policy.version == 1 and after.policy_version == 1
    assert after.token_ids != before.token_ids or after.logprobs != pytest.approx(before.logprobs, abs=1e-3)
    new_scores = rescore(updated, prompt + after.token_ids)[len(prompt) :]
    assert after.logprobs == pytest.approx(new_scores, abs=2e-3)  # the server now runs the new weights
    assert expected != pytest.approx(before.logprobs, abs=1e-3)

    # back to the original weights, this time from an in-memory state dict
    await policy.sync_weights(2, {k: v for k, v in model.state_dict().items()})
    again = await policy.generate(prompt, greedy)
    assert again.token_ids == before.token_ids and again.policy_version == 2
    await policy.aclose()


async def test_frozen_then_killed_server_times_out_retries_and_fails_clearly(
    vllm_server: VLLMServer, hf_tiny: tuple[Any, Any]
) -> None:
    """Runs last in this module: it kills the module's server."""
    _, tokenizer = hf_tiny
    policy = OpenAIPolicy(vllm_server.url, tokenizer, timeout=4, max_retries=2, backoff_s=0.2, cooldown_s=0.5)
    prompt = list(
        tokenizer("<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n", add_special_tokens=False)[
            "input_ids"
        ]
    )
    params = SamplingParams(max_new_tokens=8)
    assert (await policy.generate(prompt, params)).token_ids

    # 1. frozen server: every attempt times out, then a PolicyTimeoutError; after it thaws, service resumes
    vllm_server.signal(signal.SIGSTOP)
    t0 = time.monotonic()
    with pytest.raises(PolicyTimeoutError, match="timed out on all 3 attempts"):
        await policy.generate(prompt, params)
    assert time.monotonic() - t0 < 4 * 3 + 5
    vllm_server.signal(signal.SIGCONT)
    policy.endpoints[0].down_until = 0.0
    assert (await policy.generate(prompt, params)).token_ids

    # 2. killed mid-run: in-flight and later requests fail over retries; episodes end, none hangs
    env_id = ENVS["calculator"]
    runner = EpisodeRunner(env_id, policy, params=SamplingParams(max_new_tokens=64), seed=1)
    answered = asyncio.Event()
    generate = policy.generate

    async def generate_and_tell(prompt_ids: Any, params: SamplingParams) -> Any:
        out = await generate(prompt_ids, params)
        answered.set()
        return out

    policy.generate = generate_and_tell  # type: ignore[method-assign]
    tasks = [asyncio.create_task(runner(f"calculator/test/{i:05d}", 0)) for i in range(6)]
    # Kill once the first turn is back: every Calculator episode needs at least one more model turn
    # (tool call, then answer), so all of them are mid-run however fast the server is.
    async with asyncio.timeout(60):
        await answered.wait()
    vllm_server.signal(signal.SIGKILL)
    t0 = time.monotonic()
    async with asyncio.timeout(60):
        trajs = await asyncio.gather(*tasks)
    failed = [t for t in trajs if t.status is Status.TIMEOUT]
    assert failed, [t.status for t in trajs]
    for t in failed:
        assert "policy unavailable" in t.error or "timed out" in t.error or "deadline" in t.error
        assert vllm_server.url in t.error
    print(
        "after kill:",
        [(t.status.value, (t.error or "")[:120]) for t in trajs],
        f"{time.monotonic() - t0:.1f} s",
    )
    with pytest.raises(PolicyUnavailableError, match="failed on all 3 attempts"):
        await policy.generate(prompt, params)
    assert gymnasium  # the env registry import above is what made env_id resolvable
    await policy.aclose()
