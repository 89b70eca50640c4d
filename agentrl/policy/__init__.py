"""Policy backends behind one protocol: `hf` (in-process transformers), `openai` (vLLM servers over
HTTP), `vllm` (in-process vLLM on a GPU) and `simulated` (timing only).

Backends are imported lazily, so using one never imports the others' dependencies.
"""

from __future__ import annotations

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
]

BACKENDS = ("hf", "openai", "vllm", "simulated")
