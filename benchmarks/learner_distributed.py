"""Learner tokens/s on 1 rank and on N ranks (gloo on CPU, NCCL on CUDA), same batch, as a ratio.

Every configuration trains the same Qwen2-style causal LM built from config (no hub downloads) on the
same batch of `batch` sequences (`prompt_len + completion_len` tokens, loss on the completion):

- 1 rank: one process, `Learner.update` on the plain model (no wrapper, no process group);
- N ranks: N processes (`torch.multiprocessing`), the model wrapped with FSDP2 or DDP, every rank
  calling `Learner.update(batch, shard=True)`: each trains on its share of every mini-batch, with the
  global token-mean loss.

Tokens/s counts every non-padding token of the batch per update (forward, backward, optimizer step,
and the post-update KL pass); best and median over the timed updates after warm-up. Each rank uses
`--threads` CPU threads, so on a machine with fewer cores than ranks × threads the ranks compete
for cores and the ratio says little beyond the communication overhead.

Run: .venv/bin/python benchmarks/learner_distributed.py [--ranks 2] [--strategy both] [--steps 4]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from agentrl.learner import Learner, compute_logprobs
from agentrl.train_config import LearnerConfig, LossConfig, OptimConfig
from agentrl.types import Trajectory


def build_model(a: argparse.Namespace) -> Qwen2ForCausalLM:
    torch.manual_seed(0)
    cfg = Qwen2Config(
        vocab_size=a.vocab,
        hidden_size=a.hidden,
        intermediate_size=3 * a.hidden,
        num_hidden_layers=a.layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=a.prompt_len + a.completion_len,
        tie_word_embeddings=True,
        pad_token_id=0,
    )
    return Qwen2ForCausalLM(cfg)


def build_batch(a: argparse.Namespace, model: torch.nn.Module) -> list[Trajectory]:
    rng = np.random.default_rng(0)
    trajs = []
    for i in range(a.batch):
        c = int(rng.integers(a.completion_len // 2, a.completion_len + 1))  # uneven lengths
        ids = [int(x) for x in rng.integers(3, a.vocab, size=a.prompt_len + c)]
        mask = [0] * a.prompt_len + [1] * c
        trajs.append(Trajectory(prompt_id=f"p{i}", token_ids=ids, loss_mask=mask, logprobs=[0.0] * len(ids)))
    with torch.no_grad():
        for t, lp in zip(trajs, compute_logprobs(model, trajs, micro_batch_size=a.micro), strict=True):
            t.logprobs = [float(v) if m else 0.0 for v, m in zip(lp, t.loss_mask, strict=True)]
    return trajs


def _configs(a: argparse.Namespace) -> tuple[OptimConfig, LossConfig]:
    return (
        OptimConfig(lr=1e-5, mini_batches=a.mini_batches, micro_batch_size=a.micro),
        LossConfig(kl_reference="sampling"),
    )


def _time_updates(
    learner: Learner, trajs: list[Trajectory], a: argparse.Namespace, shard: bool
) -> list[float]:
    import torch.distributed as dist

    adv = np.linspace(-1, 1, len(trajs))
    rates = []
    for i in range(a.warmup + a.steps):
        if shard:
            dist.barrier()
        t0 = time.perf_counter()
        st = learner.update(trajs, adv, shard=shard)
        if shard:
            dist.barrier()
        dt = time.perf_counter() - t0
        if i >= a.warmup:
            rates.append(st.tokens / dt)
    return rates


def _rank(rank: int, world: int, strategy: str, init: str, out: str, a: argparse.Namespace) -> None:
    import torch.distributed as dist

    from agentrl.distributed import DistContext, wrap_model

    torch.set_num_threads(a.threads)
    cuda = torch.cuda.is_available() and not a.cpu
    device = torch.device(f"cuda:{rank}") if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    dist.init_process_group(
        "nccl" if cuda else "gloo", init_method=f"file://{init}", rank=rank, world_size=world
    )
    try:
        model = build_model(a).to(device)
        trajs = build_batch(a, model)
        ctx = DistContext(rank, world, rank, dist.get_backend(), device, dist.group.WORLD)
        wrapped = wrap_model(model, ctx, LearnerConfig(strategy=strategy))  # type: ignore[arg-type]
        opt, loss = _configs(a)
        learner = Learner(wrapped, opt, loss, device=device, process_group=dist.group.WORLD)
        rates = _time_updates(learner, trajs, a, shard=True)
        if rank == 0:
            Path(out).write_text(json.dumps(rates))
    finally:
        dist.destroy_process_group()


def one_rank(a: argparse.Namespace) -> list[float]:
    torch.set_num_threads(a.threads)
    device = torch.device("cuda" if torch.cuda.is_available() and not a.cpu else "cpu")
    model = build_model(a).to(device)
    trajs = build_batch(a, model)
    opt, loss = _configs(a)
    return _time_updates(Learner(model, opt, loss, device=device), trajs, a, shard=False)


def n_ranks(a: argparse.Namespace, world: int, strategy: str) -> list[float]:
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "rates.json")
        mp.spawn(_rank, args=(world, strategy, os.path.join(tmp, "init"), out, a), nprocs=world, join=True)
        return json.loads(Path(out).read_text())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--strategy", choices=["fsdp", "ddp", "both"], default="both")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--prompt-len", type=int, default=64)
    p.add_argument("--completion-len", type=int, default=64)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--vocab", type=int, default=4096)
    p.add_argument("--micro", type=int, default=4, help="micro-batch size")
    p.add_argument("--mini-batches", type=int, default=1)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=1, help="CPU threads per rank")
    p.add_argument("--cpu", action="store_true", help="CPU (gloo) even where CUDA is available")
    a = p.parse_args()
    params = sum(x.numel() for x in build_model(a).parameters())
    where = "CUDA/NCCL" if torch.cuda.is_available() and not a.cpu else f"CPU/gloo, {os.cpu_count()} cores"
    print(
        f"{params / 1e6:.1f}M-parameter model, batch {a.batch} × ≤{a.prompt_len + a.completion_len} tokens, "
        f"micro-batch {a.micro}, {a.threads} thread(s) per rank, {where}"
    )
    results: dict[str, list[float]] = {"1 rank": one_rank(a)}
    for s in ["fsdp", "ddp"] if a.strategy == "both" else [a.strategy]:
        results[f"{a.ranks} ranks {s}"] = n_ranks(a, a.ranks, s)
    base = max(results["1 rank"])
    print(f"{'':16} {'tokens/s best':>14} {'median':>10} {'ratio (best)':>13}")
    for name, rates in results.items():
        print(f"{name:16} {max(rates):14.0f} {statistics.median(rates):10.0f} {max(rates) / base:12.2f}x")


if __name__ == "__main__":
    main()
