"""The PPO-clip learner: one update over a batch of Trajectories with per-trajectory advantages.

The trajectory's sampling log-probs are π_old; the loss only sees tokens the model sampled
(`loss_mask == 1`). A batch is split into mini-batches (one optimizer step each) and each
mini-batch into micro-batches whose gradients accumulate, so peak memory is set by
`micro_batch_size`, not by the batch.

After the update the learner measures the mean per-token KL between the reference policy and the
updated one with the k3 estimator (see `agentrl.algo.loss.kl_k3`); the `odometer` divergence
estimator sums these figures.

Distributed use: pass a `process_group`. Token and sequence counts, the skip decision and the
reported statistics are all-reduced, so every rank normalises by the global mini-batch and steps
(or skips) together. Gradients are synchronised by a DDP/FSDP wrapper if the model has one,
otherwise by the learner itself. Either each rank passes its own trajectories, or (`shard=True`)
every rank passes the whole batch and trains on its share of each mini-batch
(`agentrl.distributed.split_balanced`); ranks with fewer micro-batches run zero-weight forwards so
that a wrapper's collectives stay in step. Nothing here is module-level state.

The learner does not switch the model between train and eval mode: as usual in RL fine-tuning,
build the policy with dropout 0 so that log-probs are deterministic and ratios mean something.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from agentrl.algo.loss import (
    Aggregation,
    ClipConfig,
    aggregate,
    entropy_from_logits,
    kl_k3,
    ppo_clip_token_losses,
    token_logprobs,
)
from agentrl.distributed import grad_sync, split_balanced
from agentrl.prefix import is_wrapped, selected_logits
from agentrl.train_config import LossConfig, OptimConfig
from agentrl.types import Trajectory

log = logging.getLogger(__name__)


@dataclass(slots=True)
class UpdateStats:
    """What one `Learner.update` did. `kl` is NaN when not measured."""

    loss: float = 0.0
    kl: float = math.nan
    kl_pre: float = 0.0  # KL(π_old ‖ policy at loss time), averaged over the update's forwards
    clip_frac: float = 0.0
    ratio_mean: float = 1.0
    entropy: float = 0.0
    grad_norm: float = 0.0
    optimizer_steps: int = 0
    skipped_steps: int = 0
    sequences: int = 0
    tokens: int = 0  # non-padding tokens in the batch
    model_tokens: int = 0  # tokens in the loss (loss_mask == 1)
    seconds: float = 0.0
    tokens_per_s: float = 0.0  # tokens × epochs / seconds, the KL pass included
    lr: float = 0.0
    version: int = 0
    kl_reference: str = "sampling"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _forward_logits(
    model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    out = model(input_ids=input_ids, attention_mask=attention_mask)
    logits = out.logits if hasattr(out, "logits") else out
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"model output has no logits tensor: {type(out).__name__}")
    return logits


@dataclass(slots=True)
class _Padded:
    input_ids: torch.Tensor  # [B, T]
    attention_mask: torch.Tensor  # [B, T]
    loss_mask: torch.Tensor  # [B, T-1], for predicted tokens 1..T-1
    old_logprobs: torch.Tensor  # [B, T-1]
    advantages: torch.Tensor  # [B, 1]


def _pad(trajs: Sequence[Trajectory], advantages: np.ndarray, device: torch.device, pad_id: int) -> _Padded:
    """Right-pad a micro-batch; targets are tokens 1..T−1 (token 0 has no context to score it)."""
    b = len(trajs)
    t = max(len(x.token_ids) for x in trajs)
    ids = torch.full((b, t), pad_id, dtype=torch.long)
    att = torch.zeros((b, t), dtype=torch.long)
    lmask = torch.zeros((b, t), dtype=torch.float32)
    old = torch.zeros((b, t), dtype=torch.float32)
    for i, x in enumerate(trajs):
        n = len(x.token_ids)
        ids[i, :n] = torch.as_tensor(x.token_ids, dtype=torch.long)
        att[i, :n] = 1
        lmask[i, :n] = torch.as_tensor(x.loss_mask, dtype=torch.float32)
        old[i, :n] = torch.as_tensor(x.logprobs, dtype=torch.float32)
    adv = torch.as_tensor(np.asarray(advantages, dtype=np.float32)).view(b, 1)
    return _Padded(
        ids.to(device), att.to(device), lmask[:, 1:].to(device), old[:, 1:].to(device), adv.to(device)
    )


def _dummy_forward(model: torch.nn.Module, device: torch.device, pad_id: int) -> torch.Tensor:
    """A two-token forward: a rank without rows of its own still joins the wrapper's collectives."""
    ids = torch.full((1, 2), pad_id, dtype=torch.long, device=device)
    return _forward_logits(model, ids, torch.ones_like(ids))


def _model_device(model: torch.nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _selected_logits(
    model: torch.nn.Module, p: _Padded, select: torch.Tensor, share_prefix: bool = True
) -> torch.Tensor:
    """Logits at the selected positions of a padded batch (see `agentrl.prefix.selected_logits`)."""
    if share_prefix:
        return selected_logits(model, p.input_ids, p.attention_mask, select)
    return _forward_logits(model, p.input_ids, p.attention_mask)[:, :-1][select]


@torch.no_grad()
def compute_logprobs(
    model: torch.nn.Module,
    trajectories: Sequence[Trajectory],
    *,
    micro_batch_size: int = 8,
    temperature: float = 1.0,
    device: torch.device | str | None = None,
    pad_id: int = 0,
    only_sampled: bool = False,
    share_prefix: bool = True,
    min_forwards: int = 0,
) -> list[np.ndarray]:
    """Re-score trajectories: per trajectory, `log π(token_t | tokens_<t)` for every t (float32).

    Entry 0 is 0.0 (no context); entries are given on every token, masked or not, so callers pick
    the ones they need (compare with `Trajectory.logprobs` on `loss_mask == 1`). With
    `only_sampled`, only `loss_mask == 1` tokens are scored (the rest are 0.0), which lets the prompt
    head the trajectories share run once. `min_forwards` pads the call with zero-weight forwards (so
    the ranks of a sharded model run the same number).
    """
    dev = torch.device(device) if device is not None else _model_device(model)
    out: list[np.ndarray] = []
    for _ in range(min_forwards - math.ceil(len(trajectories) / micro_batch_size)):
        _dummy_forward(model, dev, pad_id)
    for s in range(0, len(trajectories), micro_batch_size):
        chunk = trajectories[s : s + micro_batch_size]
        if any(len(x.token_ids) == 0 for x in chunk):
            raise ValueError("cannot score an empty trajectory")
        p = _pad(chunk, np.zeros(len(chunk)), dev, pad_id)
        sel = p.loss_mask > 0 if only_sampled else p.attention_mask[:, 1:] > 0
        lp = torch.zeros_like(p.old_logprobs)
        lp[sel] = token_logprobs(
            _selected_logits(model, p, sel, share_prefix), p.input_ids[:, 1:][sel], temperature
        )
        lp_np = lp.float().cpu().numpy()
        for i, x in enumerate(chunk):
            row = np.zeros(len(x.token_ids), dtype=np.float32)
            row[1:] = lp_np[i, : len(x.token_ids) - 1]
            out.append(row)
    return out


class Learner:
    """PPO-clip updates of `model` (a causal LM returning `.logits`) from Trajectories.

    Args:
        model: the policy, already on `device` (and wrapped in DDP/FSDP if distributed).
        optim, loss: `agentrl.train_config.OptimConfig` and `LossConfig` (dicts are accepted too),
            the same classes `agentrl train` loads.
        temperature: the sampling temperature the trajectories' log-probs were computed at.
        device: where batches go; defaults to the model's parameter device.
        process_group: a torch.distributed group for multi-rank training, else None.
        pad_id: the id written into padding (never scored; any valid id works).
        autocast: a dtype (bf16) to compute the model's forwards in, over weights kept in their own
            dtype (fp32 master weights); None computes in the weights' dtype. The log-prob maths is
            float32 either way.
        score_model: an unwrapped module with the same weights that `score` uses (a caller on one
            rank cannot run a sharded model alone); the update's own KL pass uses `model`.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        optim: OptimConfig | dict[str, Any] | None = None,
        loss: LossConfig | dict[str, Any] | None = None,
        *,
        temperature: float = 1.0,
        device: torch.device | str | None = None,
        process_group: Any | None = None,
        pad_id: int = 0,
        score_model: torch.nn.Module | None = None,
        autocast: torch.dtype | None = None,
    ) -> None:
        if isinstance(optim, dict):
            optim = OptimConfig(**optim)
        if isinstance(loss, dict):
            loss = LossConfig(**loss)
        if not (math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"temperature: must be > 0, got {temperature}")
        self.model = model
        self.opt_cfg = optim or OptimConfig()
        self.loss_cfg = loss or LossConfig()
        self.temperature = float(temperature)
        self.device = torch.device(device) if device is not None else _model_device(model)
        self.process_group = process_group
        self.pad_id = int(pad_id)
        self.score_model = score_model
        self.autocast = autocast
        self.version = 0
        self.total_steps = 0
        self.total_skipped = 0
        decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
        no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
        groups = [{"params": decay, "weight_decay": self.opt_cfg.weight_decay}]
        if no_decay:
            groups.append({"params": no_decay, "weight_decay": 0.0})
        self.optimizer = torch.optim.AdamW(
            groups, lr=self.opt_cfg.lr, betas=self.opt_cfg.betas, eps=self.opt_cfg.eps
        )
        warm = self.opt_cfg.warmup_steps
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: min(1.0, (step + 1) / warm) if warm > 0 else 1.0
        )
        mode = self.loss_cfg.grad_sync
        self._wrapper_syncs = mode == "wrapper" or (mode == "auto" and is_wrapped(model))

    # ------------------------------------------------------------------ distributed helpers

    @property
    def world_size(self) -> int:
        return dist.get_world_size(self.process_group) if self.process_group is not None else 1

    def _all_reduce(self, values: list[float], op: Any = None) -> list[float]:
        if self.process_group is None:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op=op or dist.ReduceOp.SUM, group=self.process_group)
        return t.tolist()

    def _sync_grads(self) -> None:
        if self.process_group is None or self._wrapper_syncs:
            return
        for p in self.model.parameters():
            if p.grad is not None:
                dist.all_reduce(p.grad, group=self.process_group)

    # ------------------------------------------------------------------ the update

    def _validate(self, trajs: Sequence[Trajectory], advantages: np.ndarray) -> None:
        if advantages.shape != (len(trajs),):
            raise ValueError(f"need one advantage per trajectory: {advantages.shape} for {len(trajs)}")
        if not np.all(np.isfinite(advantages)):
            raise ValueError("advantages must be finite")
        for x in trajs:
            if len(x.token_ids) == 0:
                raise ValueError(f"trajectory {x.prompt_id!r} (episode {x.episode_id}) is empty")
            if x.loss_mask[0]:
                raise ValueError(
                    f"trajectory {x.prompt_id!r}: loss_mask[0] is 1, but the first token has no "
                    "context to score it; trajectories must start with prompt tokens"
                )

    def _minibatches(self, n: int) -> list[np.ndarray]:
        k = min(self.opt_cfg.mini_batches, max(n, 1))
        return [c for c in np.array_split(np.arange(n), k) if c.size]

    def _compute_dtype(self) -> contextlib.AbstractContextManager[Any]:
        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast)

    def score(self, trajs: Sequence[Trajectory], only_sampled: bool = False) -> list[np.ndarray]:
        """The current policy's per-token log-probs (see `compute_logprobs`); a replay `score_fn`."""
        return self._score(self.score_model or self.model, trajs, only_sampled)

    def _score(
        self, model: torch.nn.Module, trajs: Sequence[Trajectory], only_sampled: bool, min_forwards: int = 0
    ) -> list[np.ndarray]:
        with self._compute_dtype():
            return compute_logprobs(
                model,
                trajs,
                micro_batch_size=self.opt_cfg.micro_batch_size,
                temperature=self.temperature,
                device=self.device,
                pad_id=self.pad_id,
                only_sampled=only_sampled,
                share_prefix=self.loss_cfg.share_prefix,
                min_forwards=min_forwards,
            )

    def _mean_kl(
        self, trajs: Sequence[Trajectory], ref: Sequence[np.ndarray], min_forwards: int = 0
    ) -> float:
        new = self._score(self.model, trajs, True, min_forwards)
        total, count = 0.0, 0.0
        for x, r, nw in zip(trajs, ref, new, strict=True):
            m = np.asarray(x.loss_mask, dtype=bool)
            if m.any():
                k = kl_k3(
                    torch.as_tensor(r[m], dtype=torch.float64), torch.as_tensor(nw[m], dtype=torch.float64)
                )
                total += float(k.sum())
                count += float(m.sum())
        total, count = self._all_reduce([total, count])
        return total / count if count else 0.0

    def _plan(
        self, trajs: Sequence[Trajectory], shard: bool
    ) -> tuple[np.ndarray, list[tuple[np.ndarray, int]]]:
        """The rank that trains each trajectory, and per mini-batch this rank's rows and the number of
        micro-batch forwards every rank runs."""
        micro = self.opt_cfg.micro_batch_size
        owner = np.zeros(len(trajs), dtype=np.int64)
        plans: list[tuple[np.ndarray, int]] = []
        rank = dist.get_rank(self.process_group) if shard else 0
        for mb in self._minibatches(len(trajs)):
            if not shard:
                plans.append((mb, math.ceil(len(mb) / micro)))
                continue
            parts = split_balanced([len(trajs[i].token_ids) for i in mb], self.world_size)
            for r, part in enumerate(parts):
                owner[mb[part]] = r
            plans.append((mb[parts[rank]], max(math.ceil(len(p) / micro) for p in parts)))
        return owner, plans

    def update(
        self,
        trajectories: Sequence[Trajectory],
        advantages: Sequence[float] | np.ndarray,
        *,
        aggregation: Aggregation | None = None,
        norm_tokens: float | None = None,
        shard: bool = False,
    ) -> UpdateStats:
        """One PPO update (`epochs` passes over `mini_batches` mini-batches); returns its stats.

        `aggregation` (default `loss.aggregation`) is the algorithm's choice of how token losses
        reduce; `"constant"` divides each sequence's token sum by `norm_tokens` (Dr. GRPO).
        With `shard`, every rank of the process group passes the same whole batch and trains on its
        share (the result is one process's update on the whole batch).
        """
        cfg, opt = self.loss_cfg, self.opt_cfg
        agg = aggregation or cfg.aggregation
        if agg == "constant" and not (norm_tokens and norm_tokens > 0):
            raise ValueError("aggregation 'constant' needs norm_tokens > 0")
        trajs = list(trajectories)
        adv = np.asarray(advantages, dtype=np.float64)
        self._validate(trajs, adv)
        t0 = time.perf_counter()
        shard = shard and self.world_size > 1
        rank = dist.get_rank(self.process_group) if shard else 0
        owner, plans = self._plan(trajs, shard)
        mine = [i for i in range(len(trajs)) if owner[i] == rank]
        keep = np.arange(len(trajs))
        if cfg.kl_max_sequences is not None and len(trajs) > cfg.kl_max_sequences:
            keep = np.linspace(0, len(trajs) - 1, cfg.kl_max_sequences).round().astype(int)
        kl_rows = [int(i) for i in keep if owner[i] == rank]  # the KL rows this rank scores
        kl_forwards = (
            max(
                math.ceil(int(np.sum(owner[keep] == r)) / opt.micro_batch_size)
                for r in range(self.world_size)
            )
            if shard
            else 0
        )
        reuse_pre = opt.mini_batches == 1 and opt.epochs == 1
        ref_pre: dict[int, np.ndarray] | None = None
        if cfg.measure_kl and cfg.kl_reference == "pre_update" and not reuse_pre:
            rows = kl_rows if shard else list(range(len(trajs)))
            ref_pre = dict(
                zip(rows, self._score(self.model, [trajs[i] for i in rows], False, kl_forwards), strict=True)
            )
        pre_collect: dict[int, np.ndarray] = {}

        sums = {"loss": 0.0, "clip": 0.0, "ratio": 0.0, "kl_pre": 0.0, "ent": 0.0, "tok": 0.0}
        grad_norms: list[float] = []
        steps = skipped = 0
        clip = ClipConfig(cfg.clip_low, cfg.clip_high, cfg.dual_clip)
        micro = opt.micro_batch_size
        for _ in range(opt.epochs):
            for mb, forwards in plans:
                mb_trajs = [trajs[i] for i in mb]
                n_tok = float(sum(sum(x.loss_mask) for x in mb_trajs))
                n_seq = float(sum(1 for x in mb_trajs if any(x.loss_mask)))
                n_tok, n_seq = self._all_reduce([n_tok, n_seq])
                scale = float(self.world_size) if self._wrapper_syncs else 1.0
                self.optimizer.zero_grad(set_to_none=True)
                bad = False
                mb_loss = 0.0
                for c in range(forwards):
                    idx = mb[c * micro : (c + 1) * micro]
                    # a wrapper reduces gradients once per mini-batch, in its last backward
                    with grad_sync(self.model, c == forwards - 1 or not self._wrapper_syncs):
                        if len(idx) == 0:  # this rank's share ran out: join the collectives at zero weight
                            (_dummy_forward(self.model, self.device, self.pad_id).sum() * 0.0).backward()
                            continue
                        chunk = [trajs[i] for i in idx]
                        p = _pad(chunk, adv[idx], self.device, self.pad_id)
                        m = p.loss_mask
                        sel = m > 0
                        # logits only where the loss looks (the shared prompt head runs once); scattered
                        # back to [B, T-1] so aggregation sees the usual padded layout
                        with self._compute_dtype():
                            logits = _selected_logits(self.model, p, sel, cfg.share_prefix)
                        lp = torch.zeros_like(p.old_logprobs).index_put(
                            (sel,), token_logprobs(logits, p.input_ids[:, 1:][sel], self.temperature)
                        )
                        tok_loss, ratio, clipped = ppo_clip_token_losses(
                            lp, p.old_logprobs, p.advantages, clip
                        )
                        kl_tok = kl_k3(p.old_logprobs, lp)
                        if cfg.kl_coef:
                            tok_loss = tok_loss + cfg.kl_coef * kl_tok
                        if cfg.entropy_coef:
                            ent_tok = torch.zeros_like(lp).index_put(
                                (sel,), entropy_from_logits(logits, self.temperature)
                            )
                            tok_loss = tok_loss - cfg.entropy_coef * ent_tok
                        else:
                            with torch.no_grad():
                                ent_tok = torch.zeros_like(lp)
                                ent_tok[sel] = entropy_from_logits(logits.detach(), self.temperature)
                        loss = aggregate(
                            tok_loss, m, agg, num_tokens=n_tok, num_seqs=n_seq, norm_tokens=norm_tokens
                        )
                        if not torch.isfinite(loss):
                            bad = True
                            if self._wrapper_syncs:  # the step is skipped, but the collectives still run
                                (loss * 0.0).backward()
                            continue
                        (loss * scale).backward()
                    mb_loss += float(loss.detach())
                    with torch.no_grad():
                        sums["clip"] += float(clipped[sel].sum())
                        sums["ratio"] += float(ratio[sel].sum())
                        sums["kl_pre"] += float(kl_tok[sel].sum())
                        sums["ent"] += float(ent_tok[sel].sum())
                        sums["tok"] += float(sel.sum())
                    if reuse_pre and cfg.measure_kl and cfg.kl_reference == "pre_update":
                        lp_np = lp.detach().float().cpu().numpy()
                        for row, i in enumerate(idx):
                            full = np.zeros(len(trajs[i].token_ids), dtype=np.float32)
                            full[1:] = lp_np[row, : len(trajs[i].token_ids) - 1]
                            pre_collect[int(i)] = full
                self._sync_grads()
                max_norm = self.opt_cfg.grad_clip if self.opt_cfg.grad_clip is not None else math.inf
                norm_t = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
                full_tensor = getattr(norm_t, "full_tensor", None)  # FSDP2: a DTensor
                norm = float(full_tensor() if full_tensor is not None else norm_t)
                bad = bad or not math.isfinite(norm)
                (bad_any,) = self._all_reduce(
                    [float(bad)], op=dist.ReduceOp.MAX if self.process_group else None
                )
                if bad_any:
                    self.optimizer.zero_grad(set_to_none=True)
                    skipped += 1
                    log.warning("non-finite loss or gradient (grad norm %s): optimizer step skipped", norm)
                    continue
                self.optimizer.step()
                self.scheduler.step()
                steps += 1
                grad_norms.append(norm)
                sums["loss"] += mb_loss
        self.optimizer.zero_grad(set_to_none=True)
        self.total_steps += steps
        self.total_skipped += skipped
        if steps:
            self.version += 1

        kl = math.nan
        if cfg.measure_kl and shard:
            if cfg.kl_reference == "sampling":
                ref_map = {i: np.asarray(trajs[i].logprobs, dtype=np.float32) for i in kl_rows}
            else:
                ref_map = ref_pre if ref_pre is not None else pre_collect
            (missing,) = self._all_reduce(
                [float(any(i not in ref_map for i in kl_rows))], op=dist.ReduceOp.MAX
            )
            if not missing:
                kl = self._mean_kl([trajs[i] for i in kl_rows], [ref_map[i] for i in kl_rows], kl_forwards)
        elif cfg.measure_kl:
            if cfg.kl_reference == "sampling":
                ref = [np.asarray(x.logprobs, dtype=np.float32) for x in trajs]
            elif ref_pre is not None:
                ref = [ref_pre[i] for i in range(len(trajs))]
            else:
                ref = [pre_collect[i] for i in range(len(trajs))] if len(pre_collect) == len(trajs) else []
            if ref:
                kl = self._mean_kl([trajs[i] for i in keep], [ref[i] for i in keep])
        seconds = time.perf_counter() - t0

        red = self._all_reduce([sums[k] for k in ("clip", "ratio", "kl_pre", "ent", "tok", "loss")])
        clip_s, ratio_s, klpre_s, ent_s, tok_s, loss_s = red  # loss: ranks hold shares of one global loss
        tokens = sum(len(trajs[i].token_ids) for i in mine)
        model_tokens = sum(sum(trajs[i].loss_mask) for i in mine)
        tokens_g, model_tokens_g, seq_g = self._all_reduce(
            [float(tokens), float(model_tokens), float(len(mine))]
        )
        return UpdateStats(
            loss=loss_s / steps if steps else math.nan,
            kl=kl,
            kl_pre=klpre_s / tok_s if tok_s else 0.0,
            clip_frac=clip_s / tok_s if tok_s else 0.0,
            ratio_mean=ratio_s / tok_s if tok_s else 1.0,
            entropy=ent_s / tok_s if tok_s else 0.0,
            grad_norm=float(np.mean(grad_norms)) if grad_norms else math.nan,
            optimizer_steps=steps,
            skipped_steps=skipped,
            sequences=int(seq_g),
            tokens=int(tokens_g),
            model_tokens=int(model_tokens_g),
            seconds=seconds,
            tokens_per_s=tokens_g * opt.epochs / seconds if seconds > 0 else 0.0,
            lr=float(self.scheduler.get_last_lr()[0]),
            version=self.version,
            kl_reference=cfg.kl_reference,
        )

    # ------------------------------------------------------------------ checkpointing

    def state_dict(self, include_model: bool = True, include_optimizer: bool = True) -> dict[str, Any]:
        """Optimizer, scheduler and counters (plus model weights and optimizer state unless they are
        saved elsewhere, e.g. sharded by `agentrl.checkpoint.save_sharded`)."""
        state: dict[str, Any] = {
            "scheduler": self.scheduler.state_dict(),
            "version": self.version,
            "total_steps": self.total_steps,
            "total_skipped": self.total_skipped,
        }
        if include_optimizer:
            state["optimizer"] = self.optimizer.state_dict()
        if include_model:
            state["model"] = self.model.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "model" in state:
            self.model.load_state_dict(state["model"])
        if "optimizer" in state:  # absent when the optimizer state is sharded elsewhere
            self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.version = int(state["version"])
        self.total_steps = int(state["total_steps"])
        self.total_skipped = int(state["total_skipped"])
