"""Learner throughput on CPU: agentrl's `Learner.update` vs TRL's `GRPOTrainer`, same model and batch.

Both sides train a ~10M-parameter Qwen2-style causal LM built from config (no hub downloads) on
`batch` sequences of `prompt_len + completion_len` tokens, loss on the completion tokens only.

What each figure times:
- agentrl: one `Learner.update` call (forward + backward + AdamW step; with `+KL` also the
  post-update no-grad forward that measures the per-token KL). Rollouts are prepared beforehand.
- TRL train-only: one trainer step (on_step_begin → on_step_end) minus the time spent in
  `_generate_and_score_completions` (generation + reward scoring); leaves TRL's forward, backward,
  optimizer step and Trainer bookkeeping.
- TRL full step: the same step with generation included, for reference.
Tokens/s counts every non-padding token in the batch (prompt + completion), per optimizer step.
Best (min time) and median over the timed steps, after warm-up steps; on a shared machine the best
is the steadier figure. TRL runs with gradient checkpointing off (its
default is on) and beta = 0, so neither side runs a reference model.

Run: .venv/bin/python benchmarks/learner_throughput.py [--steps 8] [--threads 1] [--skip-trl]
TRL is a benchmark-only dependency: .venv/bin/pip install torch==<yours> trl accelerate datasets
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
import warnings
from typing import Any

import numpy as np
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from agentrl.learner import Learner, compute_logprobs
from agentrl.train_config import LossConfig, OptimConfig
from agentrl.types import Trajectory

VOCAB = 4096
N_SPECIAL = 3  # <pad>=0, <eos>=1, <unk>=2


def build_model(seed: int = 0) -> Qwen2ForCausalLM:
    torch.manual_seed(seed)
    cfg = Qwen2Config(
        vocab_size=VOCAB,
        hidden_size=256,
        intermediate_size=768,
        num_hidden_layers=11,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=None,
    )
    return Qwen2ForCausalLM(cfg)


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def bench_agentrl(args: argparse.Namespace, measure_kl: bool) -> list[float]:
    model = build_model()
    rng = np.random.default_rng(0)
    n = args.prompt_len + args.completion_len
    trajs = [
        Trajectory(
            prompt_id=f"p{i // args.group}",
            token_ids=[int(x) for x in rng.integers(N_SPECIAL, VOCAB, size=n)],
            loss_mask=[0] * args.prompt_len + [1] * args.completion_len,
            logprobs=[0.0] * n,
        )
        for i in range(args.batch)
    ]
    for t, lp in zip(trajs, compute_logprobs(model, trajs, micro_batch_size=args.batch), strict=True):
        t.logprobs = [float(v) if m else 0.0 for v, m in zip(lp, t.loss_mask, strict=True)]
    learner = Learner(
        model,
        OptimConfig(lr=1e-6, mini_batches=1, micro_batch_size=args.batch),
        LossConfig(measure_kl=measure_kl),
    )
    times = []
    for step in range(args.warmup + args.steps):
        adv = rng.standard_normal(args.batch)
        st = learner.update(trajs, adv)
        if step >= args.warmup:
            times.append(st.seconds)
    return times


def build_tokenizer() -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<eos>": 1, "<unk>": 2} | {f"w{i}": i for i in range(N_SPECIAL, VOCAB)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with spaces
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>", padding_side="left"
    )


def bench_trl(args: argparse.Namespace) -> tuple[list[float], list[float]] | str:
    try:
        from datasets import Dataset
        from transformers import TrainerCallback
        from trl import GRPOConfig, GRPOTrainer
    except ImportError as e:
        return f"TRL not available ({e}); install trl, accelerate and datasets to compare"

    rng = np.random.default_rng(1)
    n_prompts = args.batch // args.group * (args.warmup + args.steps + 2)
    prompts = [
        " ".join(f"w{int(x)}" for x in rng.integers(N_SPECIAL, VOCAB, size=args.prompt_len))
        for _ in range(n_prompts)
    ]
    dataset = Dataset.from_dict({"prompt": prompts})

    def reward(completions: list[str], **_: Any) -> list[float]:
        return [c.split().count("w7") / args.completion_len for c in completions]

    step_times: list[float] = []
    gen_times: list[float] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, *a: Any, **k: Any) -> None:
            self.t0 = time.perf_counter()

        def on_step_end(self, *a: Any, **k: Any) -> None:
            step_times.append(time.perf_counter() - self.t0)

    with tempfile.TemporaryDirectory() as out:
        config = GRPOConfig(
            output_dir=out,
            per_device_train_batch_size=args.batch,
            num_generations=args.group,
            max_completion_length=args.completion_len,
            generation_kwargs={"min_new_tokens": args.completion_len},
            gradient_accumulation_steps=1,
            learning_rate=1e-6,
            max_steps=args.warmup + args.steps,
            gradient_checkpointing=False,
            beta=0.0,
            use_cpu=True,
            bf16=False,
            report_to="none",
            save_strategy="no",
            logging_steps=10_000,
            disable_tqdm=True,
            seed=0,
            dataloader_num_workers=0,
        )
        trainer = GRPOTrainer(
            model=build_model(),
            reward_funcs=reward,
            args=config,
            train_dataset=dataset,
            processing_class=build_tokenizer(),
            callbacks=[StepTimer()],
        )
        inner = trainer._generate_and_score_completions

        def timed(batch: Any) -> Any:
            t0 = time.perf_counter()
            out_ = inner(batch)
            gen_times.append(time.perf_counter() - t0)
            ids, mask = out_["completion_ids"], out_["completion_mask"]
            if ids.shape[1] != args.completion_len or int(mask.sum()) != args.batch * args.completion_len:
                raise RuntimeError(
                    f"TRL completions are not {args.completion_len} tokens: {tuple(ids.shape)}"
                )
            return out_

        trainer._generate_and_score_completions = timed  # type: ignore[method-assign]
        trainer.train()
    full = step_times[args.warmup :]
    train_only = [s - g for s, g in zip(step_times, gen_times, strict=True)][args.warmup :]
    return train_only, full


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=16, help="sequences per optimizer step")
    p.add_argument(
        "--group", type=int, default=4, help="TRL num_generations (prompts per step = batch/group)"
    )
    p.add_argument("--prompt-len", type=int, default=16)
    p.add_argument("--completion-len", type=int, default=48)
    p.add_argument("--steps", type=int, default=8, help="timed steps")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--skip-trl", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    logging.getLogger("transformers").setLevel(logging.ERROR)

    tokens = args.batch * (args.prompt_len + args.completion_len)
    print(
        f"model: Qwen2ForCausalLM from config, {n_params(build_model()) / 1e6:.2f}M parameters, fp32, CPU, "
        f"{args.threads} torch thread(s)"
    )
    print(
        f"batch: {args.batch} sequences x {args.prompt_len + args.completion_len} tokens "
        f"({args.prompt_len} prompt + {args.completion_len} completion) = {tokens} tokens/step; "
        f"{args.steps} timed steps after {args.warmup} warm-up"
    )
    print(
        f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs (shared machines skew timings)"
    )
    rows: list[tuple[str, list[float]]] = []
    rows.append(("agentrl Learner.update (+KL pass)", bench_agentrl(args, True)))
    rows.append(("agentrl Learner.update (no KL pass)", bench_agentrl(args, False)))
    trl_res = "skipped (--skip-trl)" if args.skip_trl else bench_trl(args)
    if isinstance(trl_res, str):
        print(trl_res)
    else:
        rows.append(("TRL GRPOTrainer step, train only", trl_res[0]))
        rows.append(("TRL GRPOTrainer step, incl. generation", trl_res[1]))
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    print(f"{'':42s} {'s/step':>16s} {'tokens/s':>16s}")
    print(f"{'':42s} {'min':>8s}{'median':>8s} {'best':>8s}{'median':>8s}")
    for name, ts in rows:
        lo, med = min(ts), statistics.median(ts)
        print(f"{name:42s} {lo:8.3f}{med:8.3f} {tokens / lo:8.0f}{tokens / med:8.0f}")
    if len(rows) == 4:
        trl = rows[2][1]
        for i in (0, 1):
            ours = rows[i][1]
            print(
                f"ratio {rows[i][0]} / TRL train-only, tokens/s: best {min(trl) / min(ours):.2f}x, "
                f"median {statistics.median(trl) / statistics.median(ours):.2f}x"
            )


if __name__ == "__main__":
    main()
