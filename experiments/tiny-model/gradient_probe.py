"""Where one batch's policy gradient takes a model: `python gradient_probe.py MODEL 'STEPS' [token-mean|seq-mean]`.

Samples 128 Calculator train episodes at T = 1, takes the gradient of the learner's PPO loss with
advantages `r - mean(r)`, then for each step in STEPS (a Python list of (kind, size, groups):
kind "grad" = along the gradient scaled to norm `size`, "sign" = `size` times its sign (Adam's first
step), "rand" = a random direction of norm `size`; groups None or a subset of embed, attn0, attn1,
mlp0, mlp1, norm) applies it to the starting weights and scores 256 test episodes at T = 1 and 64
greedy. Example:

    python experiments/tiny-model/gradient_probe.py tiny '[("grad", 0.03, None), ("rand", 0.03, None)]'
"""

from __future__ import annotations

import ast
import asyncio
import sys
from typing import Any

import numpy as np
import torch

from agentrl.envs.calculator import CalculatorEnv
from agentrl.learner import Learner
from agentrl.models import load_model
from agentrl.policy.hf import HFPolicy
from agentrl.rollout.episode import run_episode
from agentrl.train_config import LossConfig, OptimConfig
from agentrl.types import SamplingParams


def group(name: str) -> str:
    if "embed" in name or "lm_head" in name:
        return "embed"
    layer = name.split("layers.")[1].split(".")[0] if "layers." in name else ""
    if "self_attn" in name:
        return f"attn{layer}"
    if "mlp" in name:
        return f"mlp{layer}"
    return "norm"


def main() -> None:
    torch.manual_seed(0)
    model, tok = load_model(sys.argv[1])
    steps = ast.literal_eval(sys.argv[2])
    aggregation = sys.argv[3] if len(sys.argv) > 3 else "token-mean"

    async def roll(n: int, split: str, temperature: float, seed0: int) -> list[Any]:
        policy = HFPolicy(model, tok, seed=seed0, max_batch_size=128)
        envs = [CalculatorEnv(split=split) for _ in range(n)]
        ids = (envs[0].task_ids(split) * 4)[:n]
        try:
            return await asyncio.gather(
                *(
                    run_episode(
                        e,
                        policy,
                        tok,
                        task_id=t,
                        split=split,
                        params=SamplingParams(temperature=temperature, max_new_tokens=96, seed=seed0 + k),
                    )
                    for k, (e, t) in enumerate(zip(envs, ids, strict=True))
                )
            )
        finally:
            await policy.aclose()

    def score(tag: str) -> None:
        sampled = np.mean([t.reward for t in asyncio.run(roll(256, "test", 1.0, 10_000))])
        greedy = np.mean([t.reward for t in asyncio.run(roll(64, "test", 0.0, 20_000))])
        print(f"{tag:40s} sampled {sampled:.3f} greedy {greedy:.3f}", flush=True)

    trajs = asyncio.run(roll(128, "train", 1.0, 0))
    r = np.array([t.reward for t in trajs])
    lengths = np.array([sum(t.loss_mask) for t in trajs])
    print(
        f"train reward {r.mean():.3f}; model tokens: success {lengths[r > 0].mean():.1f}, "
        f"failure {lengths[r == 0].mean():.1f}"
    )
    learner = Learner(
        model,
        OptimConfig(lr=1e-12, mini_batches=1, micro_batch_size=16),
        LossConfig(aggregation=aggregation),
        pad_id=tok.pad_token_id,
    )
    grads: dict[str, torch.Tensor] = {}
    step = learner.optimizer.step

    def capture(*a: Any, **k: Any) -> Any:
        grads.update({n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None})
        return step(*a, **k)

    learner.optimizer.step = capture  # type: ignore[method-assign]
    learner.update(trajs, (r - r.mean()) / (r.std() + 1e-6))
    base = {n: p.detach().clone() for n, p in model.named_parameters()}
    norms: dict[str, float] = {}
    for n, g in grads.items():
        norms[group(n)] = norms.get(group(n), 0.0) + float((g**2).sum())
    print("gradient norm by group:", {k: round(v**0.5, 4) for k, v in norms.items()})
    score("no step")
    rand = torch.Generator().manual_seed(1)
    for kind, size, groups in steps:
        direction = (
            grads if kind != "rand" else {n: torch.randn(g.shape, generator=rand) for n, g in grads.items()}
        )
        norm = float(torch.sqrt(sum((d**2).sum() for d in direction.values())))
        with torch.no_grad():
            for n, p in model.named_parameters():
                p.copy_(base[n])
                d = direction.get(n)
                if d is None or (groups and group(n) not in groups):
                    continue
                p.sub_(size * (torch.sign(d) if kind == "sign" else d / norm))
        score(f"{kind} {size} {groups or 'all'}")


if __name__ == "__main__":
    main()
