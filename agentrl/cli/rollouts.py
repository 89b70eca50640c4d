"""`agentrl rollouts`: run episodes with a checkpoint or model and write them as chat-message JSONL.

    agentrl rollouts --checkpoint runs/NAME --env agentrl/Calculator-v0 --tasks 50 --out demos.jsonl
    agentrl rollouts --model tiny --env agentrl/Dataset-v0 --env-arg path=problems.jsonl --out r.jsonl

Each line is one episode in the schema of docs/trajectory-jsonl.md (OpenAI messages with
`tool_calls` and `tool` roles, plus reward, status, per-turn timings and policy version).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group()
    src.add_argument("--checkpoint", help="a checkpoint directory or a run directory (runs/NAME)")
    src.add_argument("--model", default=None, help="a model name (tiny, ...) or a local path (default: tiny)")
    p.add_argument("--env", default="agentrl/Calculator-v0", help="a registered gymnasium id")
    p.add_argument(
        "--env-kwargs", default=None, help='constructor arguments as JSON, e.g. \'{"path": "d.jsonl"}\''
    )
    p.add_argument(
        "--env-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="one constructor argument (VALUE read as YAML); repeatable; e.g. path=data.jsonl",
    )
    p.add_argument("--split", default="test", help="task split (default: test)")
    p.add_argument("--tasks", type=int, default=100, help="first N tasks of the split")
    p.add_argument("--k", type=int, default=1, help="episodes per task")
    p.add_argument("--temperature", type=float, default=None, help="default: 0 if k == 1, else 0.6")
    p.add_argument("--max-new-tokens", type=int, default=96)
    p.add_argument("--max-tokens", type=int, default=2048, help="token budget of a whole episode")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="the JSONL file to write")


def env_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    import yaml

    kwargs: dict[str, Any] = {}
    if args.env_kwargs:
        try:
            kwargs = json.loads(args.env_kwargs)
        except json.JSONDecodeError as e:
            raise ValueError(f"--env-kwargs is not valid JSON ({e.msg})") from None
        if not isinstance(kwargs, dict):
            raise ValueError("--env-kwargs must be a JSON object")
    for item in args.env_arg:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--env-arg {item!r}: expected KEY=VALUE")
        kwargs[key.strip()] = yaml.safe_load(value) if value.strip() else ""
    return kwargs


def _source(args: argparse.Namespace) -> str:
    if not args.checkpoint:
        return args.model or "tiny"
    from agentrl.cli.eval import resolve_checkpoint

    return str(resolve_checkpoint(args.checkpoint, "agentrl rollouts"))


async def collect(
    policy: Any,
    tokenizer: Any,
    env_id: str,
    kwargs: dict[str, Any],
    *,
    split: str,
    tasks: int,
    k: int,
    params: Any,
    max_tokens: int,
    concurrency: int,
    seed: int,
) -> list[Any]:
    """Run k recorded episodes on each of the first `tasks` tasks of `split`."""
    import gymnasium
    import numpy as np

    from agentrl.rollout.messages import run_recorded_episode

    def make() -> Any:
        return gymnasium.make(env_id, **kwargs).unwrapped

    probe = make()
    try:
        ids = probe.task_ids(split)[:tasks]
        name = probe.name
    finally:
        probe.close()
    prompt_ids = [f"{name}/{split}/{t}" for t in ids for _ in range(k)]
    pool: list[Any] = []
    sem = asyncio.Semaphore(concurrency)
    from dataclasses import replace

    async def one(n: int, prompt_id: str) -> Any:
        async with sem:
            env = pool.pop() if pool else make()
            ep_seed = int(np.random.SeedSequence([seed, n]).generate_state(1, dtype=np.uint32)[0])
            try:
                return await run_recorded_episode(
                    env,
                    policy,
                    tokenizer,
                    prompt_id=prompt_id,
                    seed=ep_seed,
                    params=replace(params, seed=ep_seed),
                    max_tokens=max_tokens,
                    episode_id=n,
                )
            finally:
                pool.append(env)

    try:
        return list(await asyncio.gather(*(one(n, pid) for n, pid in enumerate(prompt_ids))))
    finally:
        for env in pool:
            env.close()


def run(args: argparse.Namespace) -> int:
    try:
        if args.k < 1 or args.tasks < 1:
            raise ValueError("--k and --tasks must be >= 1")
        kwargs = env_kwargs(args)
        source = _source(args)
        import gymnasium

        import agentrl.envs  # noqa: F401  (registers the envs)

        if args.env not in gymnasium.registry:
            raise ValueError(f"--env {args.env!r} is not a registered environment")
        gymnasium.make(args.env, **kwargs).unwrapped.close()  # bad env arguments fail before the model loads
    except ValueError as e:
        print(f"agentrl rollouts: {e}", file=sys.stderr)
        return 2

    import torch

    from agentrl.models import load_model
    from agentrl.policy.hf import HFPolicy
    from agentrl.rollout.messages import export_trajectories
    from agentrl.types import SamplingParams

    temperature = args.temperature if args.temperature is not None else (0.0 if args.k == 1 else 0.6)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, tok = load_model(source, device=device)
    params = SamplingParams(temperature=temperature, max_new_tokens=args.max_new_tokens)

    async def go() -> list[Any]:
        policy = HFPolicy(model, tok, seed=args.seed, max_batch_size=64)
        try:
            return await collect(
                policy,
                tok,
                args.env,
                kwargs,
                split=args.split,
                tasks=args.tasks,
                k=args.k,
                params=params,
                max_tokens=args.max_tokens,
                concurrency=args.concurrency,
                seed=args.seed,
            )
        finally:
            await policy.aclose()

    t0 = time.perf_counter()
    trajs = asyncio.run(go())
    n = export_trajectories(trajs, tok, args.out)
    mean = sum(t.reward for t in trajs) / max(len(trajs), 1)
    print(
        f"model: {source}\n{args.env} ({args.split}): {n} episodes, mean reward {mean:.3f}, "
        f"{time.perf_counter() - t0:.1f} s\nwrote {args.out}"
    )
    return 0
