"""Envs in Ray actors: the same episodes, token for token, as in process; a dead worker fails its
episodes with `env_error` and is replaced; an unreachable cluster address is one line, at once.

The Ray tests start a local instance (`ray.init(num_cpus=2)`) and shut it down at the end."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import socket
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from agentrl.config import ConfigError
from agentrl.rollout.episode import EpisodeRunner
from agentrl.rollout.ray_envs import check_ray_address
from agentrl.train_config import EnvConfig, TrainConfig
from agentrl.types import Generation, SamplingParams, Status, Trajectory


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens once the socket is closed


# -- no cluster needed -----------------------------------------------------------------------------


def test_unreachable_address_is_one_line_at_once() -> None:
    port = _closed_port()
    t0 = time.monotonic()
    with pytest.raises(
        ValueError, match=rf"env.ray_address: no Ray cluster answers at 127.0.0.1:{port}"
    ) as e:
        check_ray_address(f"127.0.0.1:{port}", timeout=2.0)
    assert time.monotonic() - t0 < 3 and "\n" not in str(e.value)
    with pytest.raises(ValueError, match="no valid port"):
        check_ray_address("head:http")
    check_ray_address(None)  # a local instance: nothing to check
    check_ray_address("auto")


def test_env_config_fields_are_validated() -> None:
    assert EnvConfig(backend="ray", workers=4, ray_address="head:6379").workers == 4
    with pytest.raises(ValueError, match="workers: must be an integer >= 1"):
        EnvConfig(backend="ray", workers=0)
    with pytest.raises(ValueError, match=r"are for env\.backend=ray"):
        EnvConfig(workers=2)


def test_train_check_refuses_an_unreachable_ray_address_before_any_work() -> None:
    pytest.importorskip("ray")
    from agentrl.cli.train import check

    cfg = TrainConfig(name="x", env=EnvConfig(backend="ray", ray_address=f"127.0.0.1:{_closed_port()}"))
    with pytest.raises(ConfigError, match=r"env\.ray_address: no Ray cluster answers"):
        check(cfg)


# -- a local Ray instance --------------------------------------------------------------------------


class ScriptedPolicy:
    """Deterministic text from the prompt's token ids (so every env observation shapes the tokens):
    a calculator call on the first turn, an answer after; log-probs from a hash of the ids."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.version = 0

    async def generate(self, prompt_ids: Sequence[int], params: SamplingParams) -> Generation:
        await asyncio.sleep(0)
        digest = int(hashlib.sha256(str(list(prompt_ids)).encode()).hexdigest()[:8], 16)
        if "tool_response" in self.tokenizer.decode(list(prompt_ids[-40:])):
            text = f"<answer>{digest % 1000}</answer>"
        else:
            expr = f"{digest % 97} * {len(prompt_ids)} + {(params.seed or 0) % 13}"
            text = f'<tool_call>{{"name": "calculator", "arguments": {{"expression": "{expr}"}}}}</tool_call>'
        ids = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])[: params.max_new_tokens]
        logprobs = [-((digest >> (i % 24)) % 100) / 50.0 for i in range(len(ids))]
        return Generation(ids, logprobs, "stop", self.tokenizer.decode(ids), self.version)

    async def sync_weights(self, version: int, weights: Any = None) -> None:
        self.version = version

    async def aclose(self) -> None:
        pass


@pytest.fixture(scope="module")
def ray_local() -> Iterator[Any]:
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def tiny() -> tuple[Any, Any]:
    from agentrl.models import load_model, model_path

    return load_model(str(model_path("tiny")))


def _calc_cfg(**env: Any) -> TrainConfig:
    return TrainConfig(name="ray-test", env=EnvConfig(id="agentrl/Calculator-v0", **env))


def _factory(cfg: TrainConfig) -> Any:
    from agentrl.trainer import make_env

    return functools.partial(make_env, cfg, "train", "hermes")


def _key(t: Trajectory) -> tuple[Any, ...]:
    return (t.prompt_id, t.status, t.token_ids, t.loss_mask, t.logprobs, t.reward, len(t.turns), t.error)


async def _episodes(factory: Any, policy: Any, prompts: list[str], concurrent: bool) -> list[Trajectory]:
    runner = EpisodeRunner(
        factory, policy, params=SamplingParams(max_new_tokens=64), max_tokens=1024, seed=11, env_timeout=60
    )
    try:
        if concurrent:
            return list(await asyncio.gather(*(runner(p, 0) for p in prompts)))
        return [await runner(p, 0) for p in prompts]
    finally:
        await runner.aclose()


@pytest.mark.integration
@pytest.mark.timeout(300)
async def test_ray_episodes_match_in_process_token_for_token(ray_local: Any, tiny: tuple[Any, Any]) -> None:
    from agentrl.policy.hf import HFPolicy
    from agentrl.rollout.ray_envs import RayEnvPool, SameEnv

    model, tokenizer = tiny
    make = _factory(_calc_cfg())
    pool = RayEnvPool(SameEnv(make), workers=2, call_timeout=60)
    try:
        # a scripted policy whose every token depends on the env's observations, 12 concurrent episodes
        prompts = [f"calculator/train/{i:05d}" for i in range(12)]
        scripted = ScriptedPolicy(tokenizer)
        local = await _episodes(lambda _n: make(), scripted, prompts, concurrent=True)
        remote = await _episodes(pool, scripted, prompts, concurrent=True)
        assert [_key(t) for t in remote] == [_key(t) for t in local]
        assert all(t.status is Status.OK and len(t.turns) == 2 for t in local)
        assert len(set(await pool.worker_pids())) == 2

        # the tiny model sampling (seeded, one episode at a time so batching cannot change numerics)
        hf = HFPolicy(model, tokenizer, seed=5, max_batch_size=1)
        local = await _episodes(lambda _n: make(), hf, prompts[:4], concurrent=False)
        remote = await _episodes(pool, hf, prompts[:4], concurrent=False)
        assert [_key(t) for t in remote] == [_key(t) for t in local]
        assert sum(t.num_model_tokens for t in local) > 0
        await hf.aclose()
    finally:
        pool.shutdown()


@pytest.mark.integration
@pytest.mark.timeout(300)
async def test_a_dead_worker_fails_its_episodes_and_is_replaced(
    ray_local: Any, tiny: tuple[Any, Any]
) -> None:
    from agentrl.rollout.ray_envs import RayEnvPool, SameEnv

    _, tokenizer = tiny
    # each env step waits 2 s, so the episodes are mid-step when the worker is killed
    make = _factory(_calc_cfg(latency={"step": 2.0}))
    pool = RayEnvPool(SameEnv(make), workers=2, call_timeout=30)
    try:
        pids = await pool.worker_pids()
        prompts = [f"calculator/train/{i:05d}" for i in range(6)]
        policy = ScriptedPolicy(tokenizer)
        runner = EpisodeRunner(
            pool, policy, params=SamplingParams(max_new_tokens=64), max_tokens=1024, seed=3, env_timeout=30
        )
        tasks = [asyncio.create_task(runner(p, 0)) for p in prompts]
        await asyncio.sleep(1.0)
        ray_local.kill(pool.slots[0].actor, no_restart=True)
        async with asyncio.timeout(60):
            trajs = await asyncio.gather(*tasks)
        failed = [t for t in trajs if t.status is Status.ENV_ERROR]
        assert len(failed) == 3 and all(t.status is Status.OK for t in trajs if t not in failed)
        assert all("EnvWorkerError: env worker 0 died" in (t.error or "") for t in failed), failed[0].error
        assert pool.replaced == 1

        # the replacement serves: every env (those of the dead worker included) runs episodes again
        async with asyncio.timeout(60):
            again = await asyncio.gather(*(runner(p, 0) for p in prompts))
        assert all(t.status is Status.OK for t in again), [t.error for t in again]
        new_pids = await pool.worker_pids()
        assert new_pids[0] != pids[0] and new_pids[1] == pids[1]
        await runner.aclose()
    finally:
        pool.shutdown()


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_trainer_runs_its_episodes_on_ray_workers(ray_local: Any, tmp_path: Any) -> None:
    import json

    from agentrl.trainer import Trainer
    from tests.test_trainer import make_micro_model, micro_config

    model_dir = make_micro_model(tmp_path / "micro")
    cfg = micro_config(model_dir, tmp_path / "runs", steps=1, name="ray")
    cfg.env.backend, cfg.env.workers = "ray", 2
    trainer = Trainer(cfg)
    result = trainer.run()
    assert result.steps == 1 and trainer.env_pool.replaced == 0 and trainer.env_pool._closed
    rows = [json.loads(line) for line in (result.run_dir / "rollouts.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all(r["status"] in ("ok", "truncated") for r in rows)
