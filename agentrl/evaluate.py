"""Held-out evaluation: avg@k, unbiased pass@k and maj@k on an environment's test split.

`agentrl eval --checkpoint runs/NAME/checkpoints/step_000040 --k 8` prints a table and writes JSON.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from agentrl.algo.metrics import maj_at_k, pass_at_k
from agentrl.envs.answers import normalize_text
from agentrl.types import SamplingParams, Trajectory


@dataclass
class EvalResult:
    env_id: str
    tasks: int
    k: int
    avg_at_k: float
    pass_at: dict[int, float]
    maj_at: dict[int, float]
    statuses: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    temperature: float = 0.0

    @property
    def success(self) -> float:
        """Mean correctness over all samples (avg@k), the headline held-out figure."""
        return self.avg_at_k

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["pass_at"] = {str(k): v for k, v in self.pass_at.items()}
        d["maj_at"] = {str(k): v for k, v in self.maj_at.items()}
        return d

    def table(self) -> str:
        rows = [(f"avg@{self.k}", self.avg_at_k)]
        rows += [(f"pass@{k}", v) for k, v in sorted(self.pass_at.items())]
        rows += [(f"maj@{k}", v) for k, v in sorted(self.maj_at.items())]
        head = f"{self.env_id}: {self.tasks} test tasks × {self.k} samples (T={self.temperature:g}), {self.seconds:.1f} s"
        return "\n".join([head, *(f"  {name:<9} {value:6.3f}" for name, value in rows)])


def _answer_key(t: Trajectory) -> str | None:
    answer = t.info.get("answer")
    return None if answer is None else normalize_text(str(answer))


def summarise(
    env_id: str, trajectories: Sequence[Trajectory], k: int, ks: Sequence[int] | None = None
) -> EvalResult:
    """Aggregate k samples per prompt into avg@k, pass@k' and maj@k' for each k' in `ks` (<= k)."""
    by_prompt: dict[str, list[Trajectory]] = defaultdict(list)
    for t in trajectories:
        by_prompt[t.prompt_id].append(t)
    ks = sorted({x for x in (ks or [1, k]) if 1 <= x <= k})
    n = np.array([len(v) for v in by_prompt.values()])
    c = np.array([sum(1 for t in v if t.reward >= 1.0) for v in by_prompt.values()])
    avg = float(np.mean([np.mean([t.reward for t in v]) for v in by_prompt.values()])) if by_prompt else 0.0
    passes = {kk: float(np.mean(pass_at_k(n, c, kk))) if len(n) else 0.0 for kk in ks}
    majs = {
        kk: float(
            np.mean(
                [
                    maj_at_k([_answer_key(t) for t in v], [t.reward >= 1.0 for t in v], kk)
                    for v in by_prompt.values()
                ]
            )
        )
        if by_prompt
        else 0.0
        for kk in ks
    }
    statuses = Counter(str(t.status) for t in trajectories)
    return EvalResult(env_id, len(by_prompt), k, avg, passes, majs, dict(statuses))


async def evaluate(
    policy: Any,
    tokenizer: Any,
    env_id: str,
    *,
    tasks: int = 100,
    k: int = 1,
    ks: Sequence[int] | None = None,
    temperature: float = 0.0,
    top_p: float = 1.0,
    max_new_tokens: int = 96,
    max_tokens: int = 1024,
    max_turns: int | None = None,
    env_kwargs: dict[str, Any] | None = None,
    concurrency: int = 64,
    seed: int = 0,
) -> EvalResult:
    """Run k episodes on each of the first `tasks` test tasks and aggregate them."""
    import gymnasium

    from agentrl.rollout.episode import EpisodeRunner

    kwargs = dict(env_kwargs or {})
    probe = gymnasium.make(env_id, **kwargs).unwrapped
    ids = probe.task_ids("test")[:tasks]
    prompt_ids = [f"{probe.name}/test/{t}" for t in ids]
    probe.close()
    params = SamplingParams(temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens)
    runner = EpisodeRunner(
        lambda _name: gymnasium.make(env_id, split="test", **kwargs).unwrapped,
        policy,
        tokenizer=tokenizer,
        params=params,
        max_turns=max_turns,
        max_tokens=max_tokens,
        seed=seed,
    )
    sem = asyncio.Semaphore(concurrency)

    async def one(pid: str) -> Trajectory:
        async with sem:
            return await runner(pid, getattr(policy, "version", 0))

    t0 = time.perf_counter()
    try:
        trajs = await asyncio.gather(*(one(pid) for pid in prompt_ids for _ in range(k)))
    finally:
        await runner.aclose()
    result = summarise(env_id, trajs, k, ks)
    result.seconds = time.perf_counter() - t0
    result.temperature = temperature
    return result
