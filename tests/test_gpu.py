"""The GPU paths (marker `gpu`, skipped without CUDA): generation and the token-in/token-out check on
a CUDA model, `agentrl train` on a GPU with full fine-tuning and with LoRA, and a one-rank FSDP2
update with bf16 mixed precision over NCCL. Run with `pytest -m gpu tests/test_gpu.py`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from agentrl.cli import main
from agentrl.policy.hf import HFPolicy, rescore
from agentrl.runlog import read_metrics
from agentrl.types import SamplingParams, Trajectory
from tests.test_trainer import MICRO_OVERRIDES, make_micro_model

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.fixture(scope="module")
def micro_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_micro_model(tmp_path_factory.mktemp("micro"))


def _model(path: Path, dtype: torch.dtype = torch.float32) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to("cuda").eval()
    return model, AutoTokenizer.from_pretrained(path)


@pytest.mark.parametrize("temperature", [1.0, 0.7, 0.0])
async def test_generation_on_cuda_is_seeded_and_matches_rescoring(
    micro_model: Path, temperature: float
) -> None:
    model, tok = _model(micro_model)
    policy = HFPolicy(model, tok)
    prompt = list(tok("What is 3 + 5?", add_special_tokens=False)["input_ids"])
    params = SamplingParams(max_new_tokens=16, temperature=temperature, seed=11)
    a, b = await policy.generate(prompt, params), await policy.generate(prompt, params)
    assert a.token_ids == b.token_ids and a.logprobs == b.logprobs
    scored = rescore(model, prompt + a.token_ids, temperature or 1.0)[len(prompt) :]
    assert scored == pytest.approx(a.logprobs, abs=1e-3)
    await policy.aclose()


@pytest.mark.parametrize("extra", [[], ["model.lora_rank=4"]], ids=["full", "lora"])
def test_train_runs_on_the_gpu(micro_model: Path, tmp_path: Path, extra: list[str]) -> None:
    os.environ["AGENTRL_CACHE"] = str(tmp_path / "cache")
    runs = tmp_path / "runs"
    args = ["train", f"model.name={micro_model}", f"run_root={runs}", *MICRO_OVERRIDES]
    assert main([*args, "name=g", "steps=2", "model.device=cuda", *extra]) == 0
    rows = [r for r in read_metrics(runs / "g" / "metrics.jsonl") if "reward_mean" in r]
    assert [r["step"] for r in rows] == [1, 2]
    assert all(np.isfinite(r["learner/loss"]) for r in rows)


def test_fsdp2_bf16_mixed_precision_update_on_one_nccl_rank(micro_model: Path) -> None:
    import torch.distributed as dist

    from agentrl.distributed import DistContext, wrap_model
    from agentrl.learner import Learner
    from agentrl.train_config import LearnerConfig, LossConfig, OptimConfig

    model, tok = _model(micro_model)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29561")
    dist.init_process_group("nccl", rank=0, world_size=1)
    try:
        device = torch.device("cuda")
        ctx = DistContext(0, 1, 0, "nccl", device, dist.group.WORLD)
        model = wrap_model(model.train(), ctx, LearnerConfig(strategy="fsdp", mixed_precision="bf16"))
        learner = Learner(
            model, OptimConfig(lr=1e-3), LossConfig(), device=device, process_group=dist.group.WORLD
        )
        rng = np.random.default_rng(0)
        trajs = [
            Trajectory(
                prompt_id=f"p{i}",
                token_ids=rng.integers(3, len(tok), size=24).tolist(),
                loss_mask=[0] * 12 + [1] * 12,
                logprobs=[-2.0] * 24,
            )
            for i in range(4)
        ]
        stats = learner.update(trajs, np.array([-1.0, -0.5, 0.5, 1.0]))
        assert np.isfinite(stats.loss) and stats.optimizer_steps > 0
        after = {
            k: v.full_tensor() if hasattr(v, "full_tensor") else v for k, v in model.state_dict().items()
        }
        assert any(not torch.equal(before[k].to(after[k].dtype), after[k]) for k in before if k in after)
        assert all(v.dtype == torch.float32 for v in after.values() if v.is_floating_point())  # fp32 master
    finally:
        dist.destroy_process_group()
