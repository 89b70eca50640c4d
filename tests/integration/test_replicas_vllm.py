"""Two real vLLM CPU servers started by `agentrl.serve.Replicas`: episodes spread over both, a weight
sync reaches both, one is killed and the episodes still complete, it is restarted and used again
(with the current weights, which the health probe reloads into it first)."""

from __future__ import annotations

import asyncio
import importlib.util
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch

import agentrl.envs  # noqa: F401  (registers the bundled envs)
from agentrl.models import load_model, model_path
from agentrl.policy.openai import OpenAIPolicy
from agentrl.rollout.episode import EpisodeRunner
from agentrl.serve import Replicas, find_vllm_python
from agentrl.types import SamplingParams, Status, Trajectory

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    python = find_vllm_python()
    if python == Path(sys.executable) and importlib.util.find_spec("vllm") is None:
        pytest.skip("no vLLM: run scripts/setup_vllm_cpu.sh (or set AGENTRL_VLLM_PYTHON)")
    reps = Replicas(
        "tiny",
        2,
        device="cpu",
        log_dir=tmp_path_factory.mktemp("serve"),
        env={"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "VLLM_LOGGING_LEVEL": "WARNING"},
    )
    reps.start(ready_timeout=600)
    try:
        yield reps
    finally:
        reps.stop()
        print(f"vLLM logs: {[str(r.log_path) for r in reps.replicas]}", file=sys.stderr)


async def _greedy(url: str, prompt: list[int]) -> list[int]:
    body = {"model": "tiny", "prompt": prompt, "max_tokens": 12, "temperature": 0.0, "return_token_ids": True}
    async with httpx.AsyncClient() as c:
        resp = await c.post(url + "/v1/completions", json=body, timeout=60)
    resp.raise_for_status()
    return [int(t) for t in resp.json()["choices"][0]["token_ids"]]


async def _episodes(runner: EpisodeRunner, n: int, start: int) -> list[Trajectory]:
    prompts = [f"calculator/train/{i:05d}" for i in range(start, start + n)]
    async with asyncio.timeout(300):
        trajs = await asyncio.gather(*(runner(p, 0) for p in prompts))
    assert all(t.status in (Status.OK, Status.TRUNCATED) for t in trajs), [(t.status, t.error) for t in trajs]
    return list(trajs)


async def test_two_servers_spread_sync_survive_a_kill_and_take_back_a_restart(
    replicas: Replicas, tmp_path: Path
) -> None:
    model, tokenizer = load_model(str(model_path("tiny")))
    policy = OpenAIPolicy(
        replicas.endpoints,
        tokenizer,
        timeout=60,
        max_retries=4,
        backoff_s=0.2,
        cooldown_s=0.5,
        health_interval_s=1.0,
        weights_dir=tmp_path / "w",
    )
    a, b = policy.endpoints
    runner = EpisodeRunner(
        "agentrl/Calculator-v0", policy, params=SamplingParams(max_new_tokens=48), max_tokens=1024, seed=0
    )
    prompt = list(
        tokenizer(
            "<|im_start|>user\nWhat is 12 * 7?<|im_end|>\n<|im_start|>assistant\n", add_special_tokens=False
        )["input_ids"]
    )

    # 1. episodes spread over both servers
    t0 = time.monotonic()
    await _episodes(runner, 8, 0)
    assert a.served > 0 and b.served > 0, (a.served, b.served)
    print(f"8 episodes over 2 servers in {time.monotonic() - t0:.1f} s: served {a.served}/{b.served}")

    # 2. a weight sync reaches both: both report the version and generate the same new tokens
    before = await _greedy(a.url, prompt)
    torch.manual_seed(0)
    with torch.no_grad():
        perturbed = {k: v + torch.randn_like(v) * 0.05 for k, v in model.state_dict().items()}
    t0 = time.monotonic()
    await policy.sync_weights(1, perturbed)
    print(f"weight sync to 2 servers: {time.monotonic() - t0:.1f} s")
    assert await policy.server_versions() == {a.url: "1", b.url: "1"}
    after_a, after_b = await _greedy(a.url, prompt), await _greedy(b.url, prompt)
    assert after_a == after_b and after_a != before

    # 3. kill one server: every episode still completes, on the other
    replicas.replicas[0].signal(signal.SIGKILL)
    served_b = b.served
    trajs = await _episodes(runner, 8, 8)
    assert not a.in_rotation and b.served > served_b
    assert all(t.policy_version == 1 for t in trajs)

    # 4. restart it: the probe reloads the current weights into it, puts it back, and it serves again
    t0 = time.monotonic()
    await asyncio.to_thread(replicas.restart, 0, 600.0)
    async with asyncio.timeout(120):
        while not a.in_rotation:  # noqa: ASYNC110 (waits on the policy's health probe)
            await asyncio.sleep(0.5)
    print(f"restart and return to rotation: {time.monotonic() - t0:.1f} s")
    assert a.returns >= 1 and await policy.server_versions() == {a.url: "1", b.url: "1"}
    assert await _greedy(a.url, prompt) == after_b
    served_a = a.served
    await _episodes(runner, 8, 16)
    assert a.served > served_a
    await runner.aclose()
    await policy.aclose()
