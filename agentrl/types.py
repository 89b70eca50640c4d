"""The records that flow between environments, policies, the scheduler and the learner.

A `Trajectory` is the single unit of data: the scheduler emits it, the learner consumes it, and
nothing re-tokenises it on the way (re-tokenising text drifts token ids and breaks PPO ratios).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Status(StrEnum):
    """How an episode ended. Only `OK` and `TRUNCATED` trajectories carry a trustworthy reward."""

    OK = "ok"
    TRUNCATED = "truncated"
    TOOL_ERROR = "tool_error"
    TIMEOUT = "timeout"
    ENV_ERROR = "env_error"
    CANCELLED = "cancelled"

    @property
    def trainable(self) -> bool:
        return self in (Status.OK, Status.TRUNCATED)


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """Decoding settings shared by every policy backend (defaults are the paper's training ones)."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    max_new_tokens: int = 256
    stop: tuple[str, ...] = ()
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")


@dataclass(slots=True)
class Generation:
    """What a policy returns for one request: exactly the sampled ids and their log-probs."""

    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str = "stop"  # "stop" | "length"
    text: str = ""
    policy_version: int = 0


@dataclass(slots=True)
class Turn:
    """Timing and size of one model turn plus the environment's reply to it."""

    gen_s: float = 0.0
    tool_s: float = 0.0
    n_model_tokens: int = 0
    n_env_tokens: int = 0
    tool_calls: int = 0
    gen_at: float = 0.0  # loop time the generation request was sent (the clock of `Trajectory.started_at`)
    tool_wait_s: float = 0.0  # of tool_s: the longest a call of this turn queued behind its tool's cap


@dataclass(slots=True)
class Trajectory:
    """One finished (or failed) episode.

    `token_ids`, `loss_mask` and `logprobs` have equal length; `loss_mask` is 1 on tokens the model
    sampled and 0 on prompt, tool and environment tokens; `logprobs` holds the sampling log-prob on
    masked-in tokens and 0.0 elsewhere.
    """

    prompt_id: str
    token_ids: list[int] = field(default_factory=list)
    loss_mask: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    reward: float = 0.0
    status: Status = Status.OK
    policy_version: int = 0
    prompt_len: int = 0
    turns: list[Turn] = field(default_factory=list)
    group_id: int | None = None
    episode_id: int = -1
    started_at: float = 0.0
    finished_at: float = 0.0
    error: str | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.token_ids)
        if len(self.loss_mask) != n or len(self.logprobs) != n:
            raise ValueError(
                f"token_ids, loss_mask and logprobs must have equal length, got "
                f"{n}, {len(self.loss_mask)}, {len(self.logprobs)}"
            )

    @property
    def duration(self) -> float:
        return self.finished_at - self.started_at

    @property
    def num_model_tokens(self) -> int:
        return sum(self.loss_mask)

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)
