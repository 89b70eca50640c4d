"""Policy backends behind one protocol: `hf` (in-process transformers), `openai` (vLLM servers over
HTTP), `vllm` (in-process vLLM on a GPU) and `simulated` (timing only).

Backends are imported lazily, so using one never imports the others' dependencies.
"""

from __future__ import annotations

from typing import Any

from agentrl.policy.base import (
    Policy,
    PolicyError,
    PolicyTimeoutError,
    PolicyUnavailableError,
    WeightsSource,
)

__all__ = [
    "BACKENDS",
    "Policy",
    "PolicyError",
    "PolicyTimeoutError",
    "PolicyUnavailableError",
    "WeightsSource",
    "create_policy",
]

BACKENDS = ("hf", "openai", "vllm", "simulated")


def create_policy(backend: str = "hf", model: str = "tiny", **kwargs: Any) -> Policy:
    """Build a policy by backend name.

    - `hf`: loads `model` (`tiny`, `smollm2-135m`, a directory or a Hugging Face id) with
      `agentrl.models.load_model`; kwargs go to `HFPolicy`.
    - `openai`: kwargs must include `endpoints`; the tokenizer of `model` is loaded locally.
    - `vllm`: `model` is resolved to a local directory; kwargs go to `VLLMPolicy` / the engine.
    - `simulated`: kwargs go to `SimulatedPolicy`.
    """
    if backend == "hf":
        from agentrl.models import load_model
        from agentrl.policy.hf import HFPolicy

        hf_model, tokenizer = load_model(model)
        return HFPolicy(hf_model, tokenizer, **kwargs)
    if backend == "openai":
        from transformers import AutoTokenizer

        from agentrl.models import model_path
        from agentrl.policy.openai import OpenAIPolicy

        if "endpoints" not in kwargs:
            raise ValueError("the openai backend needs endpoints=[...] (base URLs of vLLM servers)")
        tokenizer = kwargs.pop("tokenizer", None) or AutoTokenizer.from_pretrained(model_path(model))
        return OpenAIPolicy(kwargs.pop("endpoints"), tokenizer, **kwargs)
    if backend == "vllm":
        from agentrl.models import model_path
        from agentrl.policy.vllm import VLLMPolicy

        return VLLMPolicy(model_path(model), **kwargs)
    if backend == "simulated":
        from agentrl.policy.simulated import SimulatedPolicy

        return SimulatedPolicy(**kwargs)
    raise ValueError(f"unknown policy backend {backend!r}; expected one of {', '.join(BACKENDS)}")
