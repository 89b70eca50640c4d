"""`LatencyWrapper`: make any `ToolEnv` slow in a controlled, seeded way.

Gymnasium 1.x wrappers do not forward unknown attributes, so this wrapper forwards the async twins
`areset`/`astep` explicitly; the delays themselves are drawn inside `ToolEnv.astep` from the env's
latency generator, which `reset(seed=...)` reseeds.
"""

from __future__ import annotations

from typing import Any

import gymnasium

from agentrl.envs.base import ToolEnv, unwrap
from agentrl.envs.latency import LatencyProfile


class LatencyWrapper(gymnasium.Wrapper[str, str, str, str]):
    """Install `profile` (per step, per tool call, per named tool) on the wrapped `ToolEnv`."""

    def __init__(self, env: gymnasium.Env[str, str], profile: LatencyProfile) -> None:
        super().__init__(env)
        if not isinstance(profile, LatencyProfile):
            raise TypeError(f"profile must be a LatencyProfile, got {type(profile).__name__}")
        self.profile = profile
        unwrap(env).latency = profile

    @property
    def tool_env(self) -> ToolEnv:
        return unwrap(self.env)

    async def areset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[str, dict[str, Any]]:
        inner = self.env if hasattr(self.env, "areset") else self.tool_env
        return await inner.areset(seed=seed, options=options)

    async def astep(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        inner = self.env if hasattr(self.env, "astep") else self.tool_env
        return await inner.astep(action)

    def expert_action(self) -> str:
        return self.tool_env.expert_action()
