"""A timing-only policy: generation takes time drawn from a latency model and returns fake tokens.

It follows the `Policy` protocol so schedulers, episode loops and simulators run unchanged on it,
on a real or a virtual-time event loop (all waiting is `asyncio.sleep`). With a `respond` function
and a tokenizer it returns real text, e.g. an env's scripted expert, so episodes can succeed.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from agentrl.envs.latency import LatencyModel, from_spec
from agentrl.policy.base import PolicyTimeoutError, WeightsSource, check_prompt
from agentrl.types import Generation, SamplingParams

__all__ = ["SimulatedPolicy"]


class SimulatedPolicy:
    """Fake generations with seeded timing.

    Generation time = `first_token` draw + `per_token` draw × number of tokens (both latency models
    or specs for `envs.latency.from_spec`). The token count is drawn from `num_tokens` and capped by
    `max_new_tokens`; fake tokens are uniform over `vocab_size` and end with `eos_id` unless cut by
    length. Log-probs are those of the uniform distribution. A request whose simulated time exceeds
    `timeout` raises `PolicyTimeoutError` after `timeout` seconds, as a real backend would.
    """

    def __init__(
        self,
        *,
        first_token: LatencyModel | dict[str, Any] | float | None = 0.0,
        per_token: LatencyModel | dict[str, Any] | float | None = 0.0,
        num_tokens: LatencyModel | dict[str, Any] | float | None = 32,
        vocab_size: int = 4096,
        eos_id: int | None = None,
        tokenizer: Any = None,
        respond: Callable[[Sequence[int]], str] | None = None,
        timeout: float | None = None,
        seed: int = 0,
        version: int = 0,
    ) -> None:
        if respond is not None and tokenizer is None:
            raise ValueError("SimulatedPolicy: `respond` needs a tokenizer to turn its text into tokens")
        self.first_token = from_spec(first_token)
        self.per_token = from_spec(per_token)
        self.num_tokens = from_spec(num_tokens)
        self.vocab_size = vocab_size
        self.tokenizer = tokenizer
        if eos_id is None and tokenizer is not None:
            eos_id = tokenizer.eos_token_id
        self.eos_id = eos_id if eos_id is not None else vocab_size - 1
        self.respond = respond
        self.timeout = timeout
        self.version = version
        self.rng = np.random.default_rng(seed)
        self.calls = 0

    async def generate(self, prompt_ids: Sequence[int], params: SamplingParams) -> Generation:
        check_prompt(prompt_ids)
        rng = np.random.default_rng(params.seed) if params.seed is not None else self.rng
        self.calls += 1
        if self.respond is not None:
            text = self.respond(prompt_ids)
            tokens = [*self.tokenizer(text, add_special_tokens=False)["input_ids"], self.eos_id]
        else:
            n = max(1, round(self.num_tokens.sample(rng))) if self.num_tokens is not None else 1
            tokens = [int(t) for t in rng.integers(0, self.vocab_size, size=n - 1)] + [self.eos_id]
        finish = "stop"
        if len(tokens) > params.max_new_tokens:
            tokens, finish = tokens[: params.max_new_tokens], "length"
        delay = self.first_token.sample(rng) if self.first_token is not None else 0.0
        if self.per_token is not None:
            delay += sum(self.per_token.sample(rng) for _ in tokens)
        if self.timeout is not None and delay > self.timeout:
            await asyncio.sleep(self.timeout)
            raise PolicyTimeoutError(f"simulated generation took {delay:.3g} s > timeout {self.timeout:g} s")
        if delay > 0:
            await asyncio.sleep(delay)
        text = self.tokenizer.decode(tokens, skip_special_tokens=True) if self.tokenizer is not None else ""
        logprob = -math.log(self.vocab_size)
        return Generation(tokens, [logprob] * len(tokens), finish, text, self.version)

    async def sync_weights(self, version: int, weights: WeightsSource = None) -> None:
        self.version = version

    async def aclose(self) -> None:
        return None
