"""`agentrl train --backend openai` against a real vLLM server on CPU: every training step ends with
the server running exactly the learner's new weights."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

import pytest

from agentrl.cli.train import add_arguments, config_from_args
from agentrl.policy.hf import rescore
from agentrl.runlog import read_metrics
from agentrl.trainer import Trainer
from agentrl.types import SamplingParams
from tests.integration.conftest import VLLMServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]

STEPS = 3


def cli_config(server: VLLMServer, run_root: Path) -> Any:
    """The config `agentrl train --backend openai ...` would run, parsed by the CLI's own parser."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(
        [
            "--backend",
            "openai",
            "--model",
            "tiny",
            f'model.endpoints=["{server.url}"]',
            f"run_root={run_root}",
            "name=openai-sync",
            f"steps={STEPS}",
            "progress=false",
            "checkpoint_every=100",
            "env.max_turns=2",
            # few prompts (more than a batch), so some repeat: the tracker's baselines then differ
            # within a batch, which has non-zero advantages even when every reward is equal
            "env.train_prompts=6",
            "rollout.batch_size=4",
            "rollout.max_concurrency=4",
            "rollout.max_new_tokens=32",
            "rollout.max_tokens=1400",
            "algo.offline_init=false",  # baselines from the prior: advantages are non-zero at once
            "eval.tasks=4",
            "optim.lr=1e-3",  # big enough steps that every update visibly moves the log-probs
            "optim.mini_batches=1",
        ]
    )
    return config_from_args(args)


def test_openai_backend_trains_and_syncs_the_server_every_step(
    vllm_server: VLLMServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = cli_config(vllm_server, tmp_path / "runs")
    assert cfg.model.backend == "openai" and cfg.model.endpoints == [vllm_server.url]
    syncs: list[dict[str, Any]] = []  # syncs[v]: what the server answered at weight version v
    original = Trainer._sync

    async def probe(policy: Any, model: Any, version: int) -> dict[str, Any]:
        """A greedy continuation from the server, re-scored with the learner's current weights."""
        tok = policy.tokenizer
        prompt = list(
            tok(
                "<|im_start|>user\nWhat is 12 * 7?<|im_end|>\n<|im_start|>assistant\n",
                add_special_tokens=False,
            )["input_ids"]
        )
        gen = await policy.generate(prompt, SamplingParams(temperature=0.0, max_new_tokens=16))
        learner_view = (await asyncio.to_thread(rescore, model, prompt + gen.token_ids))[len(prompt) :]
        return {
            "version": version,
            "policy_version": gen.policy_version,
            "server_versions": await policy.server_versions(),
            "tokens": gen.token_ids,
            "logprobs": gen.logprobs,
            "drift": max(abs(a - b) for a, b in zip(learner_view, gen.logprobs, strict=True)),
        }

    async def observed(self: Trainer) -> float:
        if not syncs:  # the server's answer before the first sync (base weights)
            syncs.append(await probe(self.policy, self.model, 0))
        seconds = await original(self)
        syncs.append(await probe(self.policy, self.model, self.step))
        return seconds

    monkeypatch.setattr(Trainer, "_sync", observed)
    result = Trainer(cfg).run()

    assert result.steps == STEPS and result.eval_before is not None and result.eval_after is not None
    assert [s["version"] for s in syncs] == list(range(STEPS + 1))  # one sync per step
    for s in syncs[1:]:
        assert s["policy_version"] == s["version"]
        assert s["server_versions"] == {vllm_server.url: str(s["version"])}
        assert s["drift"] < 2e-3, s  # the server samples from exactly the learner's new weights
    rows = [r for r in read_metrics(result.run_dir / "metrics.jsonl") if "batch/trainable" in r]
    assert len(rows) == STEPS and all(r["batch/trainable"] > 0 for r in rows)
    # before each update the learner's log-probs equal the server's sampling log-probs (no drift)
    assert all(r["learner/kl_pre"] < 1e-6 for r in rows), [r["learner/kl_pre"] for r in rows]
    # wherever the learner took a real gradient step, the server's answers changed with it
    moved = [v for v, r in enumerate(rows, start=1) if r.get("learner/grad_norm", 0.0) > 0.0]
    assert moved, "no step had a non-zero gradient; nothing to check the sync against"
    for v in moved:
        old, new = syncs[v - 1], syncs[v]
        shift = max(abs(a - b) for a, b in zip(old["logprobs"], new["logprobs"], strict=False))
        assert old["tokens"] != new["tokens"] or shift > 1e-3, (v, rows[v - 1])
    print(
        "openai-backend run:",
        [(s["version"], f"{s['drift']:.1e}") for s in syncs[1:]],
        f"gradient steps {moved}",
        f"eval {result.eval_before.success:.2f} -> {result.eval_after.success:.2f}",
        f"{result.seconds:.0f} s",
    )
