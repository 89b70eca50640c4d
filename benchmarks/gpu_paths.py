"""The learner's GPU paths, measured: bf16, FSDP2 with bf16 mixed precision over NCCL, LoRA, and
activation checkpointing, on real model architectures.

For each model shape, each variant builds the model on the GPU, wraps it as `agentrl train` would,
builds agentrl's `Learner` and runs `Learner.update` on one synthetic batch (`--batch` sequences of
`--seq-len` tokens, the loss on the second half): one warm-up update, then `--steps` timed ones.

Variants:
- `full-bf16`: every parameter trained, weights in bf16 (what `agentrl train` does on one GPU with
  `model.dtype=auto`);
- `full-bf16-ckpt`: the same with `learner.activation_checkpointing=true`;
- `fsdp-mp`: fp32 master weights wrapped with FSDP2 (`fully_shard` per decoder layer, bf16 compute,
  fp32 reductions: `learner.strategy=fsdp learner.mixed_precision=bf16`), in a one-rank NCCL group;
- `lora-bf16`: a rank-`--rank` LoRA adapter on all linear layers, base weights frozen in bf16.

Figures per variant: trainable parameters, peak GPU memory (`torch.cuda.max_memory_allocated`),
best and median step seconds, and tokens/s (batch tokens over the best step).

Shapes: `smollm2-135m` (read from a model directory's config.json: `--smollm2-config DIR`) and
`qwen2.5-1.5b` (Qwen2.5-1.5B's published shape). The weights are random: step time and memory do
not depend on their values, and no hub download is needed.

Run: python benchmarks/gpu_paths.py --smollm2-config DIR [--out results.json]
Needs a CUDA GPU and `pip install 'agentrl[lora]'`.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import time
from typing import Any

import numpy as np
import torch

QWEN25_15B = {
    "architectures": ["Qwen2ForCausalLM"],
    "model_type": "qwen2",
    "hidden_size": 1536,
    "intermediate_size": 8960,
    "num_hidden_layers": 28,
    "num_attention_heads": 12,
    "num_key_value_heads": 2,
    "vocab_size": 151936,
    "max_position_embeddings": 32768,
    "tie_word_embeddings": True,
    "rms_norm_eps": 1e-6,
}


def _config(shape: str, smollm2_dir: str | None) -> Any:
    from transformers import AutoConfig

    if shape == "smollm2-135m":
        if not smollm2_dir:
            raise SystemExit("--smollm2-config: a directory holding smollm2-135m's config.json")
        return AutoConfig.from_pretrained(smollm2_dir)
    cfg = dict(QWEN25_15B)
    model_type = cfg.pop("model_type")
    return AutoConfig.for_model(model_type, **cfg)


def _one_rank_group(backend: str) -> Any:
    import torch.distributed as dist

    if not dist.is_initialized():
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", "29533")
        dist.init_process_group(backend, rank=0, world_size=1)
    return dist.group.WORLD


def measure(shape: str, variant: str, args: argparse.Namespace) -> dict[str, Any]:
    from transformers import AutoModelForCausalLM

    from agentrl.learner import Learner
    from agentrl.train_config import LearnerConfig, LossConfig, OptimConfig
    from agentrl.types import Trajectory

    torch.manual_seed(0)
    device = torch.device("cpu" if args.cpu else "cuda")
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    dtype = torch.float32 if variant == "fsdp-mp" else torch.bfloat16
    with device:
        model = AutoModelForCausalLM.from_config(_config(shape, args.smollm2_config), dtype=dtype)
    vocab = model.config.vocab_size
    group = None
    if variant == "full-bf16-ckpt":
        from agentrl.distributed import enable_activation_checkpointing

        enable_activation_checkpointing(model)
    elif variant == "fsdp-mp":
        from agentrl.distributed import DistContext, wrap_model

        backend = "nccl" if cuda else "gloo"
        group = _one_rank_group(backend)
        ctx = DistContext(0, 1, 0, backend, device, group)
        model = wrap_model(model, ctx, LearnerConfig(strategy="fsdp", mixed_precision="bf16"))
    elif variant == "lora-bf16":
        from agentrl.lora import wrap

        wrap(model, args.rank, target_modules=["all-linear"])  # in place; the Learner takes the base
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    loaded = torch.cuda.memory_allocated() / 2**20 if cuda else 0.0
    rng = np.random.default_rng(0)
    half = args.seq_len // 2
    trajs = [
        Trajectory(
            prompt_id=f"p{i}",
            token_ids=rng.integers(3, vocab, size=args.seq_len).tolist(),
            loss_mask=[0] * half + [1] * (args.seq_len - half),
            logprobs=[-2.0] * args.seq_len,
        )
        for i in range(args.batch)
    ]
    adv = np.linspace(-1.0, 1.0, args.batch)
    learner = Learner(
        model,
        OptimConfig(lr=1e-5, mini_batches=1, micro_batch_size=args.micro),
        LossConfig(measure_kl=False),
        device=device,
        process_group=group,
    )
    times = []
    loss = float("nan")
    for step in range(args.steps + 1):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        stats = learner.update(trajs, adv)
        if cuda:
            torch.cuda.synchronize()
        if step:  # the first update is a warm-up (allocator, kernels, optimizer state)
            times.append(time.perf_counter() - t0)
        loss = float(getattr(stats, "loss", float("nan")))
    row = {
        "shape": shape,
        "variant": variant,
        "trainable": trainable,
        "total": total,
        "model_mib": round(loaded, 1),
        "peak_mib": round(torch.cuda.max_memory_allocated() / 2**20 if cuda else 0.0, 1),
        "best_s": round(min(times), 4),
        "median_s": round(statistics.median(times), 4),
        "tokens_per_s": round(args.batch * args.seq_len / min(times)),
        "loss_finite": bool(np.isfinite(loss)),
    }
    del learner, model
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--smollm2-config", default=None, help="a directory with smollm2-135m's config.json")
    p.add_argument("--shapes", nargs="+", default=["smollm2-135m", "qwen2.5-1.5b"])
    p.add_argument("--variants", nargs="+", default=["full-bf16", "full-bf16-ckpt", "fsdp-mp", "lora-bf16"])
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--micro", type=int, default=4, help="micro-batch size")
    p.add_argument("--seq-len", type=int, default=1024)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--out", default=None, help="also write the rows here as JSON")
    p.add_argument("--cpu", action="store_true", help="a smoke run of the code paths on CPU (no figures)")
    args = p.parse_args()
    if args.cpu:
        torch.cuda.get_device_name = lambda *a: "cpu (smoke run)"  # type: ignore[assignment]
    elif not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU: this benchmark measures the GPU paths")
    info = {
        "gpu": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "batch": args.batch,
        "seq_len": args.seq_len,
        "micro": args.micro,
    }
    print(json.dumps(info))
    rows = []
    for shape in args.shapes:
        for variant in args.variants:
            try:
                row = measure(shape, variant, args)
            except Exception as e:  # one failing variant should not hide the others' figures
                row = {"shape": shape, "variant": variant, "error": f"{type(e).__name__}: {e}"[:400]}
                gc.collect()
                if not args.cpu:
                    torch.cuda.empty_cache()
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(f"\n{'shape':<14} {'variant':<16} {'trainable':>12} {'peak GiB':>9} {'step s':>8} {'tok/s':>9}")
    for r in rows:
        if "error" in r:
            print(f"{r['shape']:<14} {r['variant']:<16} error: {r['error'][:80]}")
            continue
        print(
            f"{r['shape']:<14} {r['variant']:<16} {r['trainable']:>12,} {r['peak_mib'] / 1024:>9.2f} "
            f"{r['best_s']:>8.3f} {r['tokens_per_s']:>9,}"
        )
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"info": info, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
