"""HF-backend throughput with 1, 8 and 64 concurrent episodes: the gain from micro-batching, and
from the prefix KV store (each turn prefills only what the previous turn did not see).

    .venv/bin/python benchmarks/hf_throughput.py [--model tiny] [--env agentrl/Calculator-v0] [--threads 1]

Each setting runs `--episodes` episodes (at least as many as the concurrency) with the given number
in flight at once on one `HFPolicy`, zero tool latency, temperature 1, once with the prefix KV store
and once without (`prefix_cache_mb=0`: only the head a batch shares is computed once). Figures are
wall-clock and depend on the machine and its load; "gain" is the ratio to 1 episode without the
store.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import gymnasium
import torch

import agentrl.envs  # noqa: F401  (registers the bundled envs)
from agentrl.models import load_model
from agentrl.policy.hf import HFPolicy
from agentrl.rollout.episode import EpisodeRunner
from agentrl.types import SamplingParams


async def measure(
    model: object,
    tokenizer: object,
    env_id: str,
    concurrency: int,
    episodes: int,
    max_turns: int,
    max_new_tokens: int,
    prefix_cache_mb: float,
) -> dict[str, float]:
    policy = HFPolicy(
        model, tokenizer, max_batch_size=max(64, concurrency), seed=0, prefix_cache_mb=prefix_cache_mb
    )
    runner = EpisodeRunner(
        env_id, policy, params=SamplingParams(max_new_tokens=max_new_tokens), max_turns=max_turns, seed=0
    )
    name = gymnasium.make(env_id).unwrapped.name
    prompts = [f"{name}/test/{i % 200:05d}" for i in range(episodes)]
    gate = asyncio.Semaphore(concurrency)

    async def one(prompt_id: str):
        async with gate:
            return await runner(prompt_id, 0)

    start = time.perf_counter()
    trajs = await asyncio.gather(*(one(p) for p in prompts))
    wall = time.perf_counter() - start
    await policy.aclose()
    tokens = sum(t.num_model_tokens for t in trajs)
    return {
        "concurrency": concurrency,
        "store": prefix_cache_mb > 0,
        "episodes": len(trajs),
        "wall_s": wall,
        "model_tokens": tokens,
        "tokens_per_s": tokens / wall,
        "episodes_per_s": len(trajs) / wall,
        "mean_batch": policy.stats["requests"] / max(1, policy.stats["batches"]),
        "reward": sum(t.reward for t in trajs) / len(trajs),
        "reused_tokens": policy.stats["reused_prefix_tokens"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--env", default="agentrl/Calculator-v0")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 64])
    ap.add_argument(
        "--episodes", type=int, default=16, help="episodes per setting (at least the concurrency)"
    )
    ap.add_argument("--max-turns", type=int, default=4)
    ap.add_argument("--prefix-cache-mb", type=float, default=256.0, help="the store's size when on")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads (default: torch's choice); on a CPU shared with other jobs, 1 "
        "avoids OpenMP threads waiting on each other, which can slow a small model down 20x",
    )
    args = ap.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    model, tokenizer = load_model(args.model)
    rows = [
        asyncio.run(
            measure(
                model,
                tokenizer,
                args.env,
                c,
                max(args.episodes, c),
                args.max_turns,
                args.max_new_tokens,
                mb,
            )
        )
        for c in args.concurrency
        for mb in (0.0, args.prefix_cache_mb)
    ]
    base = rows[0]
    print(
        f"HF backend throughput: model={args.model} env={args.env} "
        f"params={sum(p.numel() for p in model.parameters()):,} torch_threads={torch.get_num_threads()}"
    )
    print(
        f"{'concurrent':>10} {'KV store':>8} {'episodes':>8} {'wall s':>8} {'tokens/s':>9} "
        f"{'episodes/s':>10} {'mean batch':>10} {'reused tok':>10} {'gain':>6}"
    )
    for r in rows:
        print(
            f"{r['concurrency']:>10} {'on' if r['store'] else 'off':>8} {r['episodes']:>8} "
            f"{r['wall_s']:>8.2f} {r['tokens_per_s']:>9.1f} {r['episodes_per_s']:>10.2f} "
            f"{r['mean_batch']:>10.1f} {r['reused_tokens']:>10} "
            f"{r['tokens_per_s'] / base['tokens_per_s']:>5.1f}x"
        )


if __name__ == "__main__":
    main()
