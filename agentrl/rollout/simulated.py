"""A simulated episode runner for latency studies: time from `envs/latency.py`, rewards from coins.

Every episode's draws (duration, turn sizes, reward, injected faults) come from a generator keyed
by `(seed, prompt, policy_version, k)`, where `k` counts earlier episodes of the same prompt at the
same version. Results therefore do not depend on the order the scheduler launches or finishes
episodes, and `draw()` lets a test recompute any episode without running it.

The keyed generator is one reused numpy PCG64 whose 128-bit state and increment are set from a
BLAKE2b hash of the key: statistically as good as a fresh `default_rng(key)` (distinct keys give
unrelated streams) and about five times cheaper, which matters at ~100k episodes per study.

Per-prompt traits are drawn once from `(seed, prompt)`: a base success probability from a Beta
distribution and a latency multiplier; a Gaussian copula can correlate them so that hard prompts
are also slow, the case in which dropping stragglers starves the learner of hard prompts.
"""

from __future__ import annotations

import asyncio
import bisect
import functools
import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from agentrl.envs.latency import LatencyModel, Mixture, from_spec
from agentrl.types import Status, Trajectory, Turn


class SimulatedFailure(RuntimeError):
    """Raised by the simulated runner to inject an episode exception."""


@dataclass(frozen=True)
class EpisodeProfile:
    """How long an episode takes and how many tokens it has.

    Either `duration` (one draw per trajectory: the paper's model) or per-turn timing:
    `turns` (inclusive range) × (`generation` + `tool`), each drawn per turn. `turn_counts`, when
    given, replaces the range with a recorded distribution (turns per episode resampled from it).
    All latency models are `envs.latency` models or their dict specs.
    """

    duration: LatencyModel | None = None
    turns: tuple[int, int] = (1, 1)
    turn_counts: tuple[int, ...] | None = None
    generation: LatencyModel | None = None
    tool: LatencyModel | None = None
    model_tokens: tuple[int, int] = (64, 512)  # per turn, inclusive
    env_tokens: tuple[int, int] = (16, 256)  # per tool result, inclusive
    prompt_tokens: int = 256
    prompt_slowness_sigma: float = 0.0  # per-prompt latency multiplier exp(sigma * z)

    def __post_init__(self) -> None:
        for name in ("duration", "generation", "tool"):
            v = getattr(self, name)
            if v is not None and not isinstance(v, LatencyModel):
                object.__setattr__(self, name, from_spec(v))
        if self.duration is None and self.generation is None and self.tool is None:
            raise ValueError(
                "EpisodeProfile needs `duration`, or per-turn `generation` and/or `tool` latency"
            )
        lo, hi = self.turns
        if not 1 <= lo <= hi:
            raise ValueError(f"turns must be an inclusive range with 1 <= low <= high, got {self.turns}")
        if self.turn_counts is not None:
            if not self.turn_counts or any(int(n) != n or n < 1 for n in self.turn_counts):
                raise ValueError("turn_counts must be a non-empty list of whole numbers >= 1")
            counts = tuple(int(n) for n in self.turn_counts)
            object.__setattr__(self, "turn_counts", counts)
            object.__setattr__(self, "turns", (min(counts), max(counts)))
        for name in ("model_tokens", "env_tokens"):
            a, b = getattr(self, name)
            if not 0 <= a <= b:
                raise ValueError(f"{name} must be an inclusive range with 0 <= low <= high, got {(a, b)}")
        if self.prompt_tokens < 0 or self.prompt_slowness_sigma < 0:
            raise ValueError("prompt_tokens and prompt_slowness_sigma must be >= 0")


@dataclass(frozen=True)
class RewardModel:
    """Bernoulli outcome rewards. Per prompt p0 ~ Beta(alpha, beta); at policy version v the success
    probability is sigmoid(logit(p0) + drift * v), so `drift > 0` mimics learning."""

    alpha: float = 1.0
    beta: float = 1.0
    drift: float = 0.0
    hard_is_slow: float = 0.0  # copula correlation in [-1, 1] between hardness and slowness

    def __post_init__(self) -> None:
        if self.alpha <= 0 or self.beta <= 0:
            raise ValueError(f"Beta parameters must be > 0, got alpha={self.alpha}, beta={self.beta}")
        if not -1 <= self.hard_is_slow <= 1:
            raise ValueError(f"hard_is_slow must be in [-1, 1], got {self.hard_is_slow}")


@dataclass(frozen=True, slots=True)
class EpisodeDraw:
    """Everything random about one simulated episode."""

    duration: float
    turns: tuple[Turn, ...]
    reward: float
    p_success: float
    fail: bool
    hang: bool


@dataclass(frozen=True, slots=True)
class PromptTraits:
    p0: float
    slowness: float


def fast_sampler(model: LatencyModel) -> Callable[[np.random.Generator], float]:
    """`model.sample`, with `Mixture`'s component choice done without `Generator.choice`'s per-call
    overhead (about 10 us, a third of a simulated episode's cost). It consumes the generator exactly
    as `Generator.choice(k, p=weights)` does (one double against the normalised cumulative weights),
    so draws are bit-identical to `model.sample(rng)`; a test pins that."""
    if type(model) is Mixture:
        cdf_arr = np.asarray(model.weights, dtype=float).cumsum()
        cdf_arr /= cdf_arr[-1]
        cdf = cdf_arr.tolist()
        parts = [fast_sampler(c) for c in model.components]
        right = bisect.bisect_right

        def sample(rng: np.random.Generator) -> float:
            return parts[right(cdf, rng.random())](rng)

        return sample
    return model.sample


class SimulatedRunner:
    """Async runner `(prompt_id, policy_version) -> Trajectory` whose only waiting is `asyncio.sleep`.

    Fault injection for tests and studies: `failure_rate` raises `SimulatedFailure` at the end of
    the episode's time; `hang_rate` sleeps `hang_s` instead (so `episode_timeout` must catch it).

    `common_timing=True` keys an episode's timing (turns, durations, token counts, faults) by its
    launch index instead of its prompt: the n-th episode any scheduler launches with this seed takes
    the same time, whatever its prompt. Two arms run with the same seed then draw the same
    durations (common random numbers), so their per-seed ratio is paired. Rewards stay keyed by
    prompt, version and `k`.
    """

    def __init__(
        self,
        profile: EpisodeProfile,
        rewards: RewardModel | None = None,
        *,
        seed: int = 0,
        failure_rate: float = 0.0,
        hang_rate: float = 0.0,
        hang_s: float = 1e7,
        materialize_tokens: bool = False,
        common_timing: bool = False,
    ) -> None:
        if not 0 <= failure_rate <= 1 or not 0 <= hang_rate <= 1 or failure_rate + hang_rate > 1:
            raise ValueError(
                f"failure_rate and hang_rate must be in [0, 1] with sum <= 1, got {failure_rate}, {hang_rate}"
            )
        self.profile = profile
        self.rewards = rewards or RewardModel()
        self.seed = int(seed)
        self.failure_rate = failure_rate
        self.hang_rate = hang_rate
        self.hang_s = hang_s
        self.materialize_tokens = materialize_tokens
        self.common_timing = common_timing
        self.launched = 0  # episodes started so far (the launch index of the next one)
        self._calls: dict[tuple[str, int], int] = {}
        self._traits: dict[str, PromptTraits] = {}
        self._bitgen = np.random.PCG64(0)
        self._gen = np.random.Generator(self._bitgen)
        self._duration = fast_sampler(profile.duration) if profile.duration is not None else None
        self._generation = fast_sampler(profile.generation) if profile.generation is not None else None
        self._tool = fast_sampler(profile.tool) if profile.tool is not None else None

    def _rng(self, key: str) -> np.random.Generator:
        """The shared generator, re-keyed: same key, same stream, whatever was drawn before."""
        h = hashlib.blake2b(f"{self.seed}|{key}".encode(), digest_size=32).digest()
        self._bitgen.state = {
            "bit_generator": "PCG64",
            "state": {"state": int.from_bytes(h[:16], "little"), "inc": int.from_bytes(h[16:], "little") | 1},
            "has_uint32": 0,
            "uinteger": 0,
        }
        return self._gen

    def traits(self, prompt_id: str) -> PromptTraits:
        t = self._traits.get(prompt_id)
        if t is None:
            rng = self._rng(f"traits|{prompt_id}")
            z_hard, z_own = rng.standard_normal(2).tolist()
            rm = self.rewards
            u = 0.5 * math.erfc(z_hard / math.sqrt(2))  # Phi(-z_hard): hard prompt (large z) -> small p0
            if rm.alpha == rm.beta == 1.0:
                p0 = u
            else:
                from scipy import special  # only here: importing scipy costs ~0.3 s of CLI start-up

                p0 = float(special.betaincinv(rm.alpha, rm.beta, u))
            rho = rm.hard_is_slow
            z_slow = rho * z_hard + math.sqrt(1 - rho * rho) * z_own
            slow = math.exp(self.profile.prompt_slowness_sigma * z_slow)
            t = self._traits[prompt_id] = PromptTraits(min(max(p0, 1e-9), 1 - 1e-9), slow)
        return t

    def p_success(self, prompt_id: str, policy_version: int) -> float:
        p0 = self.traits(prompt_id).p0
        logit = math.log(p0 / (1 - p0)) + self.rewards.drift * policy_version
        return 1.0 / (1.0 + math.exp(-logit))

    def draw(self, prompt_id: str, policy_version: int, k: int, launch: int | None = None) -> EpisodeDraw:
        """The `k`-th episode of `prompt_id` at `policy_version`, computed without running it.

        With `launch` (the episode's launch index), the timing comes from a stream keyed by the
        launch index alone and the reward from one keyed by the prompt (common random numbers)."""
        prof = self.profile
        slow = self.traits(prompt_id).slowness if prof.prompt_slowness_sigma else 1.0
        p = self.p_success(prompt_id, policy_version)
        if launch is None:
            rng = self._rng(f"episode|{prompt_id}|{policy_version}|{k}")
            u_turns, u_reward, u_fault = rng.random(3).tolist()
        else:
            u_reward = float(self._rng(f"reward|{prompt_id}|{policy_version}|{k}").random())
            rng = self._rng(f"launch|{launch}")
            u_turns, u_fault = rng.random(2).tolist()
        if prof.turn_counts is not None:
            tc = prof.turn_counts
            n_turns = tc[min(int(u_turns * len(tc)), len(tc) - 1)]
        else:
            t_lo, t_hi = prof.turns
            n_turns = t_lo + min(int(u_turns * (t_hi - t_lo + 1)), t_hi - t_lo)
        u_tok = rng.random(2 * n_turns).tolist()  # one call: per-call overhead dominates small draws
        (m_lo, m_hi), (e_lo, e_hi) = prof.model_tokens, prof.env_tokens
        m_span, e_span = m_hi - m_lo + 1, e_hi - e_lo + 1
        n_model = [m_lo + min(int(u * m_span), m_span - 1) for u in u_tok[:n_turns]]
        n_env = [e_lo + min(int(u * e_span), e_span - 1) for u in u_tok[n_turns:]]
        if self._duration is not None:
            total = self._duration(rng) * slow
            per = total / n_turns
            turns = tuple(Turn(per, 0.0, n_model[i], n_env[i], 1) for i in range(n_turns))
        else:
            gen, tool = self._generation, self._tool
            ts = []
            total = 0.0
            for i in range(n_turns):
                g = gen(rng) * slow if gen is not None else 0.0
                x = tool(rng) * slow if tool is not None else 0.0
                total += g + x
                ts.append(Turn(g, x, n_model[i], n_env[i], 1))
            turns = tuple(ts)
        fail = u_fault < self.failure_rate
        hang = not fail and u_fault < self.failure_rate + self.hang_rate
        return EpisodeDraw(total, turns, float(u_reward < p), p, fail, hang)

    async def __call__(self, prompt_id: str, policy_version: int) -> Trajectory:
        key = (prompt_id, policy_version)
        k = self._calls.get(key, 0)
        self._calls[key] = k + 1
        launch = self.launched
        self.launched += 1
        d = self.draw(prompt_id, policy_version, k, launch if self.common_timing else None)
        wait = self.hang_s if d.hang else d.duration
        if wait > 0:
            await asyncio.sleep(wait)
        if d.fail:
            raise SimulatedFailure(f"injected failure in {prompt_id!r} (version {policy_version}, k={k})")
        info: dict[str, Any] = {
            "sim_duration": d.duration,
            "p_success": d.p_success,
            "k": k,
            "launch": launch,
        }
        prompt_len = self.profile.prompt_tokens
        if self.materialize_tokens:
            ids: list[int] = [0] * prompt_len
            mask: list[int] = [0] * prompt_len
            for t in d.turns:
                ids += [1] * t.n_model_tokens + [2] * t.n_env_tokens
                mask += [1] * t.n_model_tokens + [0] * t.n_env_tokens
            logp = [-1.0 if m else 0.0 for m in mask]
            return Trajectory(
                prompt_id,
                ids,
                mask,
                logp,
                d.reward,
                Status.OK,
                policy_version,
                prompt_len,
                list(d.turns),
                info=info,
            )
        return Trajectory(
            prompt_id,
            reward=d.reward,
            policy_version=policy_version,
            prompt_len=prompt_len,
            turns=list(d.turns),
            info=info,
        )


@functools.lru_cache(maxsize=16)
def _prompt_ids(n: int, prefix: str) -> list[str]:
    return [f"{prefix}{i:05d}" for i in range(n)]


class SeededPromptSampler:
    """Uniform prompt sampler over `n` synthetic prompt ids, seeded; for simulations and tests.

    The training sampler lives in `agentrl.algo.sampler`; this stand-in keeps studies free of it.
    Draws without replacement inside one call when the pool is large enough.
    """

    def __init__(self, n_prompts: int = 1000, seed: int = 0, prefix: str = "sim/train/") -> None:
        if n_prompts < 1:
            raise ValueError(f"n_prompts must be >= 1, got {n_prompts}")
        self.prompt_ids = _prompt_ids(n_prompts, prefix)
        self._rng = np.random.default_rng(seed)

    def sample(self, n: int) -> list[str]:
        ids = self.prompt_ids
        if n <= len(ids):
            idx = (
                self._rng.choice(len(ids), size=n, replace=False)
                if n > 1
                else self._rng.integers(len(ids), size=1)
            )
        else:
            idx = self._rng.integers(len(ids), size=n)
        return [ids[i] for i in idx]


__all__ = [
    "EpisodeDraw",
    "EpisodeProfile",
    "PromptTraits",
    "RewardModel",
    "SeededPromptSampler",
    "SimulatedFailure",
    "SimulatedRunner",
    "fast_sampler",
]
