"""Small facts about Hugging Face model objects that the learner and the policies both need."""

from __future__ import annotations

import inspect
from typing import Any


def cache_kwarg(model: Any) -> str:
    """Name of the KV-cache argument of `model.forward`: `cache` (transformers >= 5.2x) or the older
    `past_key_values`."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"
