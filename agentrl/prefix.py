"""Logits at selected positions of a right-padded batch, with the rows' shared head run once.

Trajectories of one environment start with the same system prompt and tool schemas, often most of
their tokens, and a loss only needs logits where the model sampled. `selected_logits` runs the
shared head once, repeats its key/value cache across the batch, runs the rows' own tails on top of
it and applies the output head only at the selected positions. Loss and gradients equal those of
the full forward (tested); the cost drops with the shared fraction and the unselected fraction.

The fast path needs a transformers causal LM whose logits are exactly `lm_head(base(...))` (no
logit scaling or soft-capping) and that is not wrapped for distributed training (DDP must see its
own forward) and does not checkpoint activations (which drops the cache); anything else takes the
full forward, so callers need not check.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["is_wrapped", "selected_logits", "shares_prefix"]

_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier")


def is_wrapped(model: torch.nn.Module) -> bool:
    """Whether `model` is wrapped for distributed training (DDP, FSDP or FSDP2)."""
    from torch.nn.parallel import DistributedDataParallel

    if isinstance(model, DistributedDataParallel):
        return True
    try:
        from torch.distributed.fsdp import FullyShardedDataParallel

        if isinstance(model, FullyShardedDataParallel):
            return True
    except ImportError:  # pragma: no cover - builds without FSDP
        pass
    try:
        from torch.distributed.fsdp import FSDPModule

        return isinstance(model, FSDPModule)
    except ImportError:  # pragma: no cover
        return False


def shares_prefix(model: Any) -> bool:
    """Whether `model` can take the shared-prefix path (see the module docstring)."""
    prefix = getattr(model, "base_model_prefix", None)
    if not prefix or not hasattr(model, prefix) or is_wrapped(model):
        return False
    # transformers drops the KV cache under activation checkpointing in training mode
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        for flag in ("is_activation_checkpointing", "is_gradient_checkpointing"):
            if getattr(model, flag, False) is True:
                return False
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if not isinstance(head, torch.nn.Linear) or head.bias is not None:
        return False
    config = getattr(model, "config", None)
    if config is None or getattr(config, "is_encoder_decoder", False):
        return False
    return all(getattr(config, name, None) in (None, 1.0) for name in _LOGIT_TRANSFORMS)


def _common_head(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> int:
    same = (input_ids == input_ids[:1]).all(0) & (attention_mask > 0).all(0)
    return int(same.long().cumprod(0).sum())


def selected_logits(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    select: torch.Tensor,
    *,
    min_prefix: int = 16,
) -> torch.Tensor:
    """Logits for the next token at every selected position, in `select`'s row-major order.

    `input_ids` and `attention_mask` are [B, T], right-padded; `select` is a [B, T-1] bool mask over
    positions 0..T-2 (position t predicts token t+1). Returns [N, V] with N = `select.sum()`.
    """
    if select.shape != (input_ids.shape[0], input_ids.shape[1] - 1):
        raise ValueError(
            f"select must be [B, T-1] = {tuple(input_ids.shape)}[:, :-1], got {tuple(select.shape)}"
        )
    if not shares_prefix(model):
        out = model(input_ids=input_ids, attention_mask=attention_mask)
        return out.logits[:, :-1][select]
    from transformers import DynamicCache

    from agentrl.modeling import cache_kwarg

    base = getattr(model, model.base_model_prefix)
    kw = cache_kwarg(base)
    cols = select.any(0).nonzero()
    first = int(cols[0]) if cols.numel() else input_ids.shape[1] - 1
    p = min(_common_head(input_ids, attention_mask), first)
    b = input_ids.shape[0]
    if b < 2 or p < min_prefix:
        hidden = base(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return model.get_output_embeddings()(hidden[:, :-1][select])
    cache = DynamicCache()
    base(input_ids=input_ids[:1, :p], use_cache=True, **{kw: cache})
    cache.batch_repeat_interleave(b)
    hidden = base(
        input_ids=input_ids[:, p:], attention_mask=attention_mask, use_cache=True, **{kw: cache}
    ).last_hidden_state
    return model.get_output_embeddings()(hidden[:, :-1][select[:, p:]])
