"""Outside reference: TRL's `GRPOTrainer` on a single-turn variant of an agentrl environment.

`.venv/bin/python experiments/learning/trl_reference.py --seed 0 --out runs/learning/tiny-KEY/trl/seed0.json`

The single-turn variant: the prompt is the task's story with an instruction to reply with
`<answer>N</answer>` and no tools; the reward is the environment's own scorer (`env.score`) applied to
the last `<answer>` in the completion (0 when there is none). Same model as the study, same training
budget (steps × batch_size completions, in groups of G), the same learning rate, clip-higher bounds
(0.2 / 0.28), token-mean loss, no KL term, weight decay and gradient clipping as the study's config.
Held-out avg@k, pass@k and maj@k come from k seeded samples on the first `eval.tasks` test tasks,
before and after training, and the training wall time is measured around `trainer.train()`.

TRL is an optional dependency (`pip install "agentrl[experiments]"`, keeping your torch). If it cannot be
imported or fails, the script writes `{"status": "error", "error": ...}` to --out and exits 1, so the
report says so instead of showing a number.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

SYSTEM = (
    "Solve the problem without tools. Reply with the final answer only, written as "
    "<answer>N</answer>, where N is a number."
)


def single_turn_messages(prompt: str) -> list[dict[str, str]]:
    """The single-turn chat: the instruction, then the task's story."""
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}]


def completion_text(completion: Any) -> str:
    """TRL passes conversational completions as message lists and plain ones as strings."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list):
        return "".join(str(m.get("content", "")) for m in completion if isinstance(m, dict))
    return str(completion)


def score_completion(env: Any, task: Any, text: str) -> tuple[float, str | None]:
    """(reward, normalised answer) with the environment's own scorer; no answer scores 0."""
    from agentrl.envs.answers import normalize_text
    from agentrl.tools.base import parse_action

    answer = parse_action(text).answer
    if answer is None:
        return 0.0, None
    try:
        r = float(env.score(task, answer))
    except Exception:
        r = 0.0
    return (min(max(r, 0.0), 1.0) if math.isfinite(r) else 0.0), normalize_text(answer)


def summarise_samples(
    rewards: Sequence[Sequence[float]], answers: Sequence[Sequence[str | None]], k: int
) -> dict[str, float]:
    """avg@k, pass@k and maj@k from k samples per task (the metrics agentrl.evaluate reports)."""
    from agentrl.algo.metrics import maj_at_k, pass_at_k

    n = np.array([len(r) for r in rewards])
    c = np.array([sum(1 for x in r if x >= 1.0) for r in rewards])
    return {
        "k": k,
        "avg": float(np.mean([np.mean(r) for r in rewards])),
        "pass": float(np.mean(pass_at_k(n, c, k))),
        "maj": float(
            np.mean(
                [maj_at_k(list(a), [x >= 1.0 for x in r], k) for a, r in zip(answers, rewards, strict=True)]
            )
        ),
    }


def grpo_arguments(
    c: dict[str, Any],
    *,
    batch: int,
    group: int,
    steps: int,
    lr: float,
    completion_len: int,
    seed: int,
    **extra: Any,
) -> dict[str, Any]:
    """`GRPOConfig` arguments that match the study's arms (sampling, optimiser, clip bounds 0.2/0.28,
    token-mean `dapo` loss, no KL, one optimiser step per batch); both TRL references use them,
    `extra` adds or overrides their own (output folder, device, logging, tool rounds)."""
    return {
        "per_device_train_batch_size": batch,
        "gradient_accumulation_steps": 1,
        "steps_per_generation": 1,
        "num_generations": group,
        "max_completion_length": completion_len,
        "max_steps": steps,
        "learning_rate": lr,
        "lr_scheduler_type": "constant",
        "warmup_steps": 0,
        "weight_decay": float(c.get("optim.weight_decay", 0.01)),
        "max_grad_norm": float(c.get("optim.grad_clip", 1.0)),
        "temperature": float(c.get("rollout.temperature", 1.0)),
        "top_p": float(c.get("rollout.top_p", 1.0)),
        "beta": 0.0,
        "epsilon": 0.2,
        "epsilon_high": 0.28,
        "loss_type": "dapo",
        "scale_rewards": "group",
        "bf16": False,
        "report_to": "none",
        "save_strategy": "no",
        "disable_tqdm": True,
        "seed": seed,
        "data_seed": seed,
        "shuffle_dataset": False,
        "dataloader_num_workers": 0,
        **extra,
    }


def counting_reward(env: Any, by_id: dict[str, Any]) -> tuple[Any, dict[str, int]]:
    """A TRL reward function scoring each completion's answer with the env's own scorer, and the
    count of completions it has scored (the sample budget actually spent)."""
    seen = {"completions": 0}

    def reward(completions: list[Any], task_id: list[str], **_: Any) -> list[float]:
        seen["completions"] += len(completions)
        return [
            score_completion(env, by_id[t], completion_text(x))[0]
            for x, t in zip(completions, task_id, strict=True)
        ]

    return reward, seen


def evaluate_single_turn(
    model: Any,
    tokenizer: Any,
    env: Any,
    tasks: Sequence[Any],
    *,
    k: int,
    temperature: float,
    top_p: float,
    max_new_tokens: int,
    seed: int,
) -> dict[str, float]:
    """k seeded samples per held-out task through `model.generate`, scored like training."""
    import torch

    torch.manual_seed(seed)
    model.eval()
    rewards: list[list[float]] = []
    answers: list[list[str | None]] = []
    device = next(model.parameters()).device
    sample = temperature > 0
    for task in tasks:
        ids = tokenizer.apply_chat_template(
            single_turn_messages(task.prompt),
            add_generation_prompt=True,
            return_tensors="pt",
            return_dict=True,
        )
        ids = {k_: v.to(device) for k_, v in ids.items()}
        with torch.no_grad():
            out = model.generate(
                **ids,
                do_sample=sample,
                temperature=temperature if sample else None,
                top_p=top_p if sample else None,
                max_new_tokens=max_new_tokens,
                num_return_sequences=k,
                pad_token_id=tokenizer.pad_token_id,
            )
        texts = tokenizer.batch_decode(out[:, ids["input_ids"].shape[1] :], skip_special_tokens=True)
        scored = [score_completion(env, task, t) for t in texts]
        rewards.append([s[0] for s in scored])
        answers.append([s[1] for s in scored])
    return summarise_samples(rewards, answers, k)


def run(args: argparse.Namespace) -> dict[str, Any]:
    import gymnasium
    import torch
    from run import load_study_config

    import agentrl.envs  # noqa: F401  (registers the bundled envs)

    try:
        import trl
        from datasets import Dataset
        from trl import GRPOConfig, GRPOTrainer
    except ImportError as e:
        raise RuntimeError(
            f"TRL is not installed ({e}); install it without replacing torch: "
            f'.venv/bin/pip install "torch=={torch.__version__.split("+")[0]}" trl accelerate datasets'
        ) from None

    cfg = load_study_config(args.config, args.quick, args.round)
    c = cfg["common"]
    steps, batch, group = int(c["steps"]), int(c["rollout.batch_size"]), int(c.get("algo.group_size", 8))
    lr = float(c.get("optim.lr", 2e-5))
    env_id = args.env or cfg.get("trl", {}).get("env", "agentrl/Calculator-v0")
    model_name = args.model or cfg["model"]
    device = args.device or cfg.get("device", "cpu")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    eval_tasks, eval_k = int(c.get("eval.tasks", 100)), int(c.get("eval.k", 8))
    eval_t, eval_p = float(c.get("eval.temperature", 0.6)), float(c.get("eval.top_p", 0.95))
    max_new = int(c.get("rollout.max_new_tokens", 96))

    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    from agentrl.models import load_model

    t_total = time.perf_counter()
    model, tokenizer = load_model(str(model_name), device=device)
    env = gymnasium.make(env_id).unwrapped
    train_tasks = env.tasks("train")
    if c.get("env.train_prompts"):
        train_tasks = train_tasks[: int(c["env.train_prompts"])]
    test_tasks = env.tasks("test")[:eval_tasks]
    by_id = {t.id: t for t in train_tasks}

    eval_kw = {
        "k": eval_k,
        "temperature": eval_t,
        "top_p": eval_p,
        "max_new_tokens": max_new,
        "seed": args.seed + 7919,
    }
    before = evaluate_single_turn(model, tokenizer, env, test_tasks, **eval_kw)

    n_prompts = steps * batch // group
    rng = random.Random(args.seed)
    order = [rng.choice(train_tasks) for _ in range(n_prompts)]  # uniform sampling, like the study's GRPO arm
    dataset = Dataset.from_dict(
        {"prompt": [single_turn_messages(t.prompt) for t in order], "task_id": [t.id for t in order]}
    )
    reward, seen = counting_reward(env, by_id)

    with tempfile.TemporaryDirectory() as tmp:
        config = GRPOConfig(
            **grpo_arguments(
                c,
                batch=batch,
                group=group,
                steps=steps,
                lr=lr,
                completion_len=max_new,
                seed=args.seed,
                output_dir=tmp,
                use_cpu=device == "cpu",
                logging_steps=max(1, steps // 10),
            )
        )
        trainer = GRPOTrainer(
            model=model, reward_funcs=reward, args=config, train_dataset=dataset, processing_class=tokenizer
        )
        t0 = time.perf_counter()
        trainer.train()
        train_s = time.perf_counter() - t0
        history = [h for h in trainer.state.log_history if "reward" in h]
    after = evaluate_single_turn(trainer.model, tokenizer, env, test_tasks, **eval_kw)
    return {
        "status": "ok",
        "seed": args.seed,
        "trl_version": trl.__version__,
        "torch_version": torch.__version__,
        "model": str(model_name),
        "env": env_id,
        "device": device,
        "steps": steps,
        "batch_size": batch,
        "group_size": group,
        "train_samples": seen["completions"],
        "budget_samples": steps * batch,
        "eval_tasks": len(test_tasks),
        "eval_k": eval_k,
        "eval_temperature": eval_t,
        "before": before,
        "after": after,
        "train_seconds": train_s,
        "total_seconds": time.perf_counter() - t_total,
        "reward_history": [{"step": h.get("step"), "reward": h.get("reward")} for h in history],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=HERE / "config.yaml")
    ap.add_argument("--quick", action="store_true", help="the config's quick: budget")
    ap.add_argument("--round", type=int, default=1, choices=(1, 2), help="study round")
    ap.add_argument("--model", default=None, help="default: the config's model")
    ap.add_argument("--device", default=None)
    ap.add_argument("--env", default=None, help="default: the config's trl.env")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, required=True, help="JSON result (the report reads it)")
    args = ap.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    try:
        res = run(args)
    except Exception as e:
        msg = f"{type(e).__name__}: {e}"
        traceback.print_exc()
        print(f"trl_reference: failed: {msg}", file=sys.stderr)
        args.out.write_text(json.dumps({"status": "error", "seed": args.seed, "error": msg}, indent=2))
        return 1
    args.out.write_text(json.dumps(res, indent=2))
    b, a = res["before"], res["after"]
    print(
        f"TRL GRPO on single-turn {res['env']}: avg@{a['k']} {b['avg']:.3f} -> {a['avg']:.3f}, "
        f"maj@{a['k']} {b['maj']:.3f} -> {a['maj']:.3f}; {res['train_samples']} samples, train {res['train_seconds']:.1f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
