"""Token-level PPO-clip loss pieces (spec §3.3), as pure tensor functions.

The learner feeds them padded [batch, time] tensors plus a mask that is 1 only on tokens the model
sampled, so prompt, tool and environment tokens and padding never reach the loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

Aggregation = Literal["token-mean", "seq-mean", "constant"]


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log π(target_t | context) from logits [B, T, V] aligned with targets [B, T] (float32 maths)."""
    x = logits.float()
    if temperature != 1.0:
        x = x / temperature
    logz = torch.logsumexp(x, dim=-1)
    return x.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - logz


def entropy_from_logits(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Per-position entropy of the softmax, [B, T]."""
    x = logits.float()
    if temperature != 1.0:
        x = x / temperature
    logp = torch.log_softmax(x, dim=-1)
    return -(logp.exp() * logp).sum(-1)


def kl_k3(logp_old: torch.Tensor, logp_new: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of KL(π_old ‖ π_new) on tokens sampled from π_old.

    With `u = π_new/π_old`, `k3 = (u − 1) − log u`: unbiased and never negative (Schulman, 2020).
    """
    log_u = (logp_new - logp_old).clamp(-20.0, 20.0)
    return torch.expm1(log_u) - log_u


@dataclass(frozen=True, slots=True)
class ClipConfig:
    clip_low: float = 0.2
    clip_high: float = 0.28
    dual_clip: float | None = 10.0

    def __post_init__(self) -> None:
        if not (0.0 <= self.clip_low < 1.0 and self.clip_high >= 0.0):
            raise ValueError(
                f"need 0 <= clip_low < 1 and clip_high >= 0, got {self.clip_low}, {self.clip_high}"
            )
        if self.dual_clip is not None and self.dual_clip <= 1.0:
            raise ValueError(f"dual_clip must be > 1 (or None), got {self.dual_clip}")


def ppo_clip_token_losses(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    clip: ClipConfig = ClipConfig(),
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-token PPO-clip loss `−min(u·A, clip(u, 1−ε_low, 1+ε_high)·A)`, dual-clipped for A < 0.

    Returns (loss, ratio, clipped) where `clipped` marks tokens whose gradient the clip zeroed
    (the clipped branch is the active minimum, or the dual clip caps a negative advantage).
    """
    log_ratio = (logprobs - old_logprobs).clamp(-20.0, 20.0)
    ratio = torch.exp(log_ratio)
    surr = ratio * advantages
    surr_clipped = ratio.clamp(1.0 - clip.clip_low, 1.0 + clip.clip_high) * advantages
    loss = -torch.minimum(surr, surr_clipped)
    clipped = surr_clipped < surr
    if clip.dual_clip is not None:
        cap = -clip.dual_clip * advantages  # loss bound for negative advantages
        dual = (advantages < 0) & (loss > cap)
        loss = torch.where(dual, cap, loss)
        clipped = clipped | dual
    return loss, ratio, clipped


def aggregate(
    values: torch.Tensor,
    mask: torch.Tensor,
    mode: Aggregation,
    *,
    num_tokens: float | None = None,
    num_seqs: float | None = None,
    norm_tokens: float | None = None,
) -> torch.Tensor:
    """Reduce per-token values [B, T] to a scalar.

    `token-mean` divides the masked sum by `num_tokens`; `seq-mean` averages each sequence's token
    mean, divided by `num_seqs`; `constant` (Dr. GRPO) divides each sequence's token sum by the
    constant `norm_tokens`, then averages over `num_seqs`, so no sequence's length rescales its
    tokens. Pass the counts of the whole mini-batch (across micro-batches and
    ranks) so accumulated micro-batch losses add up to the mini-batch loss.
    """
    mask = mask.to(values.dtype)
    if mode == "token-mean":
        denom = float(mask.sum()) if num_tokens is None else float(num_tokens)
        return (values * mask).sum() / max(denom, 1.0)
    if mode == "seq-mean":
        per_seq = (values * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)
        has_tokens = (mask.sum(-1) > 0).to(values.dtype)
        denom = float(has_tokens.sum()) if num_seqs is None else float(num_seqs)
        return (per_seq * has_tokens).sum() / max(denom, 1.0)
    if mode == "constant":
        if not norm_tokens or norm_tokens <= 0:
            raise ValueError("aggregation 'constant' needs norm_tokens > 0")
        has_tokens = (mask.sum(-1) > 0).to(values.dtype)
        denom = float(has_tokens.sum()) if num_seqs is None else float(num_seqs)
        return (values * mask).sum() / (max(denom, 1.0) * float(norm_tokens))
    raise ValueError(f"aggregation must be 'token-mean', 'seq-mean' or 'constant', got {mode!r}")
