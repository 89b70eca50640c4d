"""Per-prompt success of a model on an env's train split at the training temperature.

`.venv/bin/python experiments/learning/pilot.py --prompts 48 --k 8 --out pilot.json` samples k episodes on
each of the first N train prompts and writes each prompt's success count, from which the expected GRPO
degenerate-group share of any prompt subset follows (a group of G is degenerate when all G rewards are
equal). round 2 of the learning study picks its prompt set from this file.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any


async def measure(
    model: str, env_id: str, prompts: int, k: int, temperature: float, seed: int, max_turns: int | None = None
) -> dict[str, Any]:
    import gymnasium

    import agentrl.envs  # noqa: F401  (registers the envs)
    from agentrl.models import load_model
    from agentrl.policy.hf import HFPolicy
    from agentrl.rollout.episode import EpisodeRunner
    from agentrl.types import SamplingParams

    mdl, tok = load_model(model, device="cpu")
    policy = HFPolicy(mdl, tok, seed=seed, max_batch_size=64)
    probe = gymnasium.make(env_id).unwrapped
    ids = probe.task_ids("train")[:prompts]
    tasks = {t.id: t for t in probe.tasks("train")}
    name = probe.name
    probe.close()
    runner = EpisodeRunner(
        lambda _n: gymnasium.make(env_id, split="train").unwrapped,
        policy,
        tokenizer=tok,
        params=SamplingParams(temperature=temperature, top_p=1.0, max_new_tokens=96),
        max_tokens=768,
        max_turns=max_turns,
        seed=seed,
    )
    sem = asyncio.Semaphore(64)

    async def one(pid: str) -> Any:
        async with sem:
            return await runner(pid, 0)

    t0 = time.perf_counter()
    try:
        trajs = await asyncio.gather(*(one(f"{name}/train/{i}") for i in ids for _ in range(k)))
    finally:
        await runner.aclose()
        await policy.aclose()
    rows: dict[str, dict[str, Any]] = {}
    for t in trajs:
        tid = t.prompt_id.split("/")[-1]
        r = rows.setdefault(
            tid, {"n": 0, "c": 0, "difficulty": tasks[tid].difficulty, "size": tasks[tid].data.get("size")}
        )
        r["n"] += 1
        r["c"] += int(t.reward >= 1.0)
    return {
        "model": model,
        "env": env_id,
        "k": k,
        "temperature": temperature,
        "max_turns": max_turns,
        "seconds": time.perf_counter() - t0,
        "prompts": [{"id": i, **rows[i]} for i in ids],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--env", default="agentrl/Calculator-v0")
    ap.add_argument("--prompts", type=int, default=48)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-turns", type=int, default=None, help="turn budget (default: the env's)")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    res = asyncio.run(measure(a.model, a.env, a.prompts, a.k, a.temperature, a.seed, a.max_turns))
    a.out.write_text(json.dumps(res, indent=1))
    print(
        f"{res['seconds']:.0f} s; mean success {sum(p['c'] for p in res['prompts']) / sum(p['n'] for p in res['prompts']):.3f}"
    )


if __name__ == "__main__":
    main()
