"""The learner on several processes: the process group, the model wrapper and the batch split.

`torchrun --nproc-per-node N -m agentrl.cli train ...` (or `agentrl train --nproc-per-node N ...`, which
re-launches itself under torchrun) starts N ranks. Rank 0 is the one rollout coordinator: it runs the
sampler, the scheduler, the episodes, evaluation, logging and the checkpoint metadata. Every rank,
rank 0 included, runs the learner update on its share of each batch; rank 0 sends the batch's
trajectories and advantages to the others (`broadcast_object_list` on a gloo group, so NCCL runs keep
control messages off the GPUs). Each mini-batch is split across the ranks with equal counts, balanced
by token count, and the learner normalises by the global token and sequence counts, so the ranks
compute the loss one process would compute on the whole batch.

The model is wrapped with FSDP2 (`fully_shard`, each decoder layer then the root: weights, gradients
and optimizer state sharded) or DDP (replicas). Rank 0 keeps an unwrapped full copy for generation,
evaluation and the checkpoint's model files (with DDP the replica itself; with FSDP2 a copy refreshed
after each update from the gathered full state dict).

Nothing here imports the trainer or the learner.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist

from agentrl.config import ConfigError

if TYPE_CHECKING:
    from agentrl.train_config import LearnerConfig, TrainConfig

__all__ = [
    "DistContext",
    "check_world",
    "full_state_dict",
    "init_distributed",
    "launched_world_size",
    "load_full_optimizer_state",
    "split_balanced",
    "wrap_model",
]


def launched_world_size() -> int:
    """The world size torchrun set for this process (1 when not launched by torchrun)."""
    try:
        return max(int(os.environ.get("WORLD_SIZE", "1")), 1)
    except ValueError:
        return 1


def resolve_backend(name: str, device: torch.device) -> str:
    if name == "auto":
        return "nccl" if device.type == "cuda" else "gloo"
    return name


def check_world(cfg: TrainConfig, world: int, *, cuda: bool | None = None) -> None:
    """One-line errors for a world size the config cannot use; nothing is started."""
    cuda = torch.cuda.is_available() if cuda is None else cuda
    on_cpu = cfg.model.device == "cpu" or (cfg.model.device == "auto" and not cuda)
    if cfg.learner.mixed_precision == "bf16" and (on_cpu or not cuda):
        raise ConfigError("learner.mixed_precision: bf16 mixed precision is a GPU option; use none on CPU")
    if world <= 1:
        return
    per = world * cfg.optim.mini_batches
    if cfg.rollout.batch_size % per:
        raise ConfigError(
            f"rollout.batch_size ({cfg.rollout.batch_size}) must be a multiple of the world size × "
            f"optim.mini_batches ({world} × {cfg.optim.mini_batches} = {per}): every rank takes an "
            "equal share of each mini-batch"
        )
    lc = cfg.learner
    if lc.dist_backend == "nccl" and (on_cpu or not cuda):
        raise ConfigError(
            "learner.dist_backend: nccl needs CUDA devices"
            + (" (model.device is cpu)" if cuda else ", and this machine has none")
            + "; use gloo or auto"
        )
    if cfg.model.device.startswith("cuda:"):
        raise ConfigError(
            f"model.device: {cfg.model.device} pins one GPU; with several ranks use cuda or auto "
            "(each rank takes the GPU of its LOCAL_RANK)"
        )
    if cfg.model.lora_rank and lc.strategy != "ddp":
        raise ConfigError(
            "model.lora_rank: on several learner ranks a LoRA adapter trains under DDP (each rank holds "
            "the frozen base, the adapter's gradients are averaged): set learner.strategy=ddp"
        )


@dataclass
class DistContext:
    """This process's place in the group; `control` carries the coordinator's messages."""

    rank: int
    world_size: int
    local_rank: int
    backend: str
    device: torch.device
    control: Any  # a gloo process group (the default group itself when that is gloo)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def broadcast(self, obj: Any = None) -> Any:
        """Rank 0's `obj`, on every rank (pickled; rank 0 passes it, the others pass nothing)."""
        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0, group=self.control)
        return box[0]

    def barrier(self) -> None:
        dist.barrier(group=self.control)

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()


def init_distributed(cfg: TrainConfig) -> DistContext | None:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, MASTER_ADDR, ...); None for one process."""
    world = launched_world_size()
    if world <= 1:
        return None
    check_world(cfg, world)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    name = cfg.model.device
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(f"cuda:{local_rank}") if name == "cuda" else torch.device(name)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = resolve_backend(cfg.learner.dist_backend, device)
    timeout = timedelta(seconds=cfg.learner.dist_timeout_s)
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=timeout)
    control = dist.new_group(backend="gloo", timeout=timeout) if backend != "gloo" else dist.group.WORLD
    return DistContext(rank, world, local_rank, backend, device, control)


# ---- the model ------------------------------------------------------------------------------------


def _decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The transformer blocks (a transformers causal LM's `model.layers`, or any ModuleList found)."""
    base = getattr(model, getattr(model, "base_model_prefix", "") or "model", None)
    layers = getattr(base, "layers", None) if base is not None else None
    if isinstance(layers, torch.nn.ModuleList):
        return list(layers)
    for m in model.modules():
        if isinstance(m, torch.nn.ModuleList) and len(m) > 0:
            return list(m)
    return []


def enable_activation_checkpointing(model: torch.nn.Module) -> None:
    """Recompute each layer's activations in backward (transformers' gradient checkpointing)."""
    enable = getattr(model, "gradient_checkpointing_enable", None)
    if enable is None:
        raise ConfigError(
            "learner.activation_checkpointing: the model has no gradient_checkpointing_enable()"
        )
    enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def wrap_model(model: torch.nn.Module, ctx: DistContext, cfg: LearnerConfig) -> torch.nn.Module:
    """FSDP2 (`fully_shard` per decoder layer, then the root; in place) or DDP around `model`."""
    if cfg.strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        # no buffer sync in forward: forwards then run no collective, so rank 0 may score alone
        params = inspect.signature(DistributedDataParallel).parameters
        sync = (
            {"forward_sync_buffers": False}
            if "forward_sync_buffers" in params
            else {"broadcast_buffers": False}
        )
        return DistributedDataParallel(model, device_ids=ids, **sync)
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    kw: dict[str, Any] = {}
    if cfg.bf16_compute(ctx.device, ctx.world_size):
        kw["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    for layer in _decoder_layers(model):
        fully_shard(layer, **kw)
    fully_shard(model, **kw)
    return model


def unwrapped(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") and hasattr(model, "no_sync") else model


def is_fsdp(model: torch.nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


@contextlib.contextmanager
def grad_sync(model: torch.nn.Module, enabled: bool) -> Iterator[None]:
    """Let the wrapper reduce gradients in this backward only if `enabled` (accumulation otherwise)."""
    if enabled:
        yield
    elif is_fsdp(model):
        model.set_requires_gradient_sync(False)  # type: ignore[operator]
        try:
            yield
        finally:
            model.set_requires_gradient_sync(True)  # type: ignore[operator]
    elif hasattr(model, "no_sync"):
        with model.no_sync():
            yield
    else:
        yield


def full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The full weights on rank 0 (CPU tensors; empty on other ranks). A collective with FSDP2."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_full_optimizer_state(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]
) -> None:
    """Load a one-process optimizer state dict (parameters numbered in order) into a wrapped model's
    optimizer; every rank passes the same full state, FSDP2 keeps each rank's shard."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    names = {id(p): n for n, p in unwrapped(model).named_parameters()}
    order = [names[id(p)] for g in optimizer.param_groups for p in g["params"]]
    keyed = {
        "state": {order[int(i)]: v for i, v in state["state"].items()},
        "param_groups": [
            {**g, "params": [order[int(i)] for i in g["params"]]} for g in state["param_groups"]
        ],
    }
    set_optimizer_state_dict(
        model, optimizer, optim_state_dict=keyed, options=StateDictOptions(full_state_dict=True)
    )


# ---- the batch ------------------------------------------------------------------------------------


def split_balanced(lengths: Sequence[int], world: int) -> list[list[int]]:
    """Indices of `lengths` per rank: counts differ by at most one, token totals as even as a greedy
    longest-first assignment makes them; each rank's indices in ascending order. Deterministic."""
    n = len(lengths)
    cap = math.ceil(n / world) if n else 0
    full_ranks = n - (cap - 1) * world if n else 0  # ranks that take `cap` items, the rest cap-1
    limits = [cap if r < full_ranks else cap - 1 for r in range(world)]
    shares: list[list[int]] = [[] for _ in range(world)]
    tokens = [0] * world
    for i in sorted(range(n), key=lambda i: (-int(lengths[i]), i)):
        open_ranks = [r for r in range(world) if len(shares[r]) < limits[r]]
        r = min(open_ranks, key=lambda r: (tokens[r], r))
        shares[r].append(i)
        tokens[r] += int(lengths[i])
    return [sorted(s) for s in shares]
