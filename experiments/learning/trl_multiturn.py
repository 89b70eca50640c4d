"""Outside reference, round 2: TRL's `GRPOTrainer` on its multi-turn tool path, on an agentrl env.

`.venv/bin/python experiments/learning/trl_multiturn.py --round 2 --seed 0 --out runs/learning-r2/tiny-KEY/trl/seed0.json`

TRL runs the episodes itself (`environment_factory`): each rollout gets an environment object whose
public methods are the env's tools (here `calculator`, computing with the env's own calculator code);
TRL renders the chat with the tool schema, parses the model's `<tool_call>` blocks, calls the tool,
appends the result as a tool message and generates again, up to `max_turns − 1` tool rounds. The
reward is the env's own scorer on the last `<answer>` of the conversation. The prompt is the env's
system prompt and task, as in agentrl's episodes.

Two adaptations are needed for this model and they are the only ones: the tiny model's chat template
renders an assistant message's `content` only, so TRL's check `supports_tool_calling` rejects it; the
script extends it to render `tool_calls` in the model's own format (`<tool_call>{json}</tool_call>`, the
text it was trained to write), and sets TRL's Qwen-style response parser (`<tool_call>` blocks, which
is that format). Same model, train prompts, sample budget (steps × batch completions in groups of G),
learning rate, clip bounds, token-mean loss and no KL as the study's GRPO arm. Held-out scores come from
`agentrl.evaluate` on the trained weights, the same harness and settings as every arm.

On failure the script writes `{"status": "error", "error": <last line>}` to --out and exits 1, so the
report shows the failure instead of a number.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

# The tiny template's assistant branch, extended to write tool calls the way the model writes them.
_ASSISTANT_PLAIN = "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}"
_ASSISTANT_TOOLS = (
    "{{- '<|im_start|>' + message.role + '\\n' + (message.content or '') }}"
    "{%- if message.tool_calls %}{%- for tc in message.tool_calls %}"
    "{%- set f = tc.function if tc.function is defined else tc %}"
    '{{- \'<tool_call>{"name": "\' + f.name + \'", "arguments": \' + '
    "(f.arguments if f.arguments is string else (f.arguments | tojson)) + '}</tool_call>' }}"
    "{%- endfor %}{%- endif %}{{- '<|im_end|>\\n' }}"
)


def tool_calling_template(template: str) -> str:
    """The model's chat template with assistant `tool_calls` rendered in its own `<tool_call>` format."""
    if _ASSISTANT_PLAIN not in template:
        raise ValueError("the model's chat template is not the tiny model's; cannot add tool-call rendering")
    return template.replace(_ASSISTANT_PLAIN, _ASSISTANT_TOOLS)


def make_environment_class(env: Any) -> type:
    """A TRL environment: `reset` plus one method per tool (here the calculator), run with agentrl's code."""
    from agentrl.tools.base import ToolError
    from agentrl.tools.calculator import evaluate, format_number

    class CalculatorToolEnv:
        def reset(self, **_: Any) -> None:
            return None

        def calculator(self, expression: str) -> str:
            """Evaluate an arithmetic expression exactly. Use numbers, + - * / // % ** and parentheses, and the functions sqrt, abs, round, min, max, floor, ceil, factorial, gcd, lcm (constants pi, e). Example: (12.5 * 4 - 3) / 2. Returns the result as a number.

            Args:
                expression: The arithmetic expression, e.g. 3 * (4 + 5) / 2
            """
            try:
                return format_number(evaluate(str(expression)))
            except (ToolError, ValueError, ZeroDivisionError, OverflowError) as e:
                return f"error: {e}"

    return CalculatorToolEnv


def run(args: argparse.Namespace) -> dict[str, Any]:
    import gymnasium
    import torch
    import trl
    from datasets import Dataset
    from run import load_study_config
    from trl import GRPOConfig, GRPOTrainer
    from trl.chat_template_utils import qwen3_template, supports_tool_calling
    from trl_reference import counting_reward, grpo_arguments

    import agentrl.envs  # noqa: F401  (registers the bundled envs)

    cfg = load_study_config(args.config, args.quick, args.round)
    c = cfg["common"]
    budget = int(cfg.get("budget_samples") or int(c["steps"]) * int(c["rollout.batch_size"]))
    batch, group = int(c["rollout.batch_size"]), int(c.get("algo.group_size", 8))
    steps = args.max_steps or budget // batch
    lr = float(c.get("optim.lr", 5e-5))
    env_id = cfg.get("trl", {}).get("env", "agentrl/Calculator-v0")
    model_name = args.model or cfg["model"]
    eval_tasks, eval_k = args.eval_tasks or int(c.get("eval.tasks", 100)), int(c.get("eval.k", 8))
    eval_t, eval_p = float(c.get("eval.temperature", 0.6)), float(c.get("eval.top_p", 0.95))
    max_tokens = int(c.get("rollout.max_tokens", 768))

    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    from agentrl.models import load_model

    t_total = time.perf_counter()
    model, tokenizer = load_model(str(model_name), device="cpu")
    tokenizer.chat_template = tool_calling_template(tokenizer.chat_template)
    tokenizer.response_template = qwen3_template
    if not supports_tool_calling(tokenizer):
        raise RuntimeError("TRL's supports_tool_calling rejects the extended chat template")
    env = gymnasium.make(env_id).unwrapped
    max_turns = int(c.get("env.max_turns") or env.max_turns)
    train_tasks = env.tasks("train")
    if c.get("env.train_prompts"):
        train_tasks = train_tasks[: int(c["env.train_prompts"])]
    by_id = {t.id: t for t in train_tasks}
    system = env.system_prompt()

    n_prompts = steps * batch // group
    rng = random.Random(args.seed)
    order = [rng.choice(train_tasks) for _ in range(n_prompts)]  # uniform, like the study's GRPO arm
    dataset = Dataset.from_dict(
        {
            "prompt": [
                [{"role": "system", "content": system}, {"role": "user", "content": t.prompt}] for t in order
            ],
            "task_id": [t.id for t in order],
        }
    )
    reward, seen = counting_reward(env, by_id)

    Env = make_environment_class(env)
    with tempfile.TemporaryDirectory() as tmp:
        config = GRPOConfig(
            **grpo_arguments(
                c,
                batch=batch,
                group=group,
                steps=steps,
                lr=lr,
                completion_len=max_tokens,
                seed=args.seed,
                output_dir=tmp,
                use_cpu=True,
                logging_steps=1,
                max_tool_calling_iterations=max_turns - 1,
            )
        )
        trainer = GRPOTrainer(
            model=model,
            reward_funcs=reward,
            args=config,
            train_dataset=dataset,
            processing_class=tokenizer,
            environment_factory=Env,
        )
        t0 = time.perf_counter()
        trainer.train()
        train_s = time.perf_counter() - t0
        history = [h for h in trainer.state.log_history if "reward" in h]
    after = asyncio.run(
        _evaluate(trainer.model, tokenizer, env_id, c, eval_tasks, eval_k, eval_t, eval_p, args.seed)
    )
    keys = (
        "step",
        "reward",
        "frac_reward_zero_std",
        "completions/mean_length",
        "tools/call_frequency",
        "num_tokens",
    )
    return {
        "status": "ok",
        "mode": "multi-turn tools (environment_factory)",
        "seed": args.seed,
        "trl_version": trl.__version__,
        "torch_version": torch.__version__,
        "model": str(model_name),
        "env": env_id,
        "steps": steps,
        "batch_size": batch,
        "group_size": group,
        "train_samples": seen["completions"],
        "budget_samples": steps * batch,
        "eval_tasks": eval_tasks,
        "eval_k": eval_k,
        "eval_temperature": eval_t,
        "before": None,
        "after": after,
        "train_seconds": train_s,
        "total_seconds": time.perf_counter() - t_total,
        "history": [{k: h.get(k) for k in keys} for h in history],
    }


async def _evaluate(
    model: Any,
    tokenizer: Any,
    env_id: str,
    c: dict[str, Any],
    tasks: int,
    k: int,
    t: float,
    p: float,
    seed: int,
) -> dict[str, float]:
    """agentrl's own held-out evaluation of the trained weights (the same harness as every arm)."""
    from transformers import AutoTokenizer

    from agentrl.evaluate import evaluate
    from agentrl.policy.hf import HFPolicy

    # the evaluation renders with the model's own template, as the arms' evaluations do
    base_tok = AutoTokenizer.from_pretrained(tokenizer.name_or_path)
    model.eval()
    policy = HFPolicy(model, base_tok, seed=seed, max_batch_size=64)
    try:
        r = await evaluate(
            policy,
            base_tok,
            env_id,
            tasks=tasks,
            k=k,
            temperature=t,
            top_p=p,
            max_new_tokens=int(c.get("rollout.max_new_tokens", 96)),
            max_tokens=int(c.get("rollout.max_tokens", 768)),
            seed=seed + 7919,
        )
    finally:
        await policy.aclose()
    kk = max(r.pass_at)
    return {"k": r.k, "avg": r.avg_at_k, "pass": r.pass_at[kk], "maj": r.maj_at[kk]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=HERE / "config.yaml")
    ap.add_argument("--quick", action="store_true", help="the config's quick: budget")
    ap.add_argument("--round", type=int, default=2, choices=(1, 2), help="study round")
    ap.add_argument("--model", default=None, help="default: the config's model")
    ap.add_argument("--device", default=None, help="cpu only (kept for run.py's command line)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-steps", type=int, default=None, help="smoke test: train only this many steps")
    ap.add_argument("--eval-tasks", type=int, default=None, help="smoke test: evaluate only this many tasks")
    ap.add_argument("--out", type=Path, required=True, help="JSON result (the report reads it)")
    args = ap.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    try:
        res = run(args)
    except Exception as e:
        traceback.print_exc()
        msg = f"{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}"
        print(f"trl_multiturn: failed: {msg}", file=sys.stderr)
        args.out.write_text(json.dumps({"status": "error", "seed": args.seed, "error": msg}, indent=2))
        return 1
    args.out.write_text(json.dumps(res, indent=2))
    a = res["after"]
    print(
        f"TRL GRPO multi-turn on {res['env']}: avg@{a['k']} {a['avg']:.3f}, maj@{a['k']} {a['maj']:.3f}; "
        f"{res['train_samples']} samples, train {res['train_seconds']:.1f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
