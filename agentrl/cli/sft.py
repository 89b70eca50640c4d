"""`agentrl sft`: warm-start a model on an env's demonstrations (its scripted expert or a JSONL file)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--env", required=True, help="a registered gymnasium id, or module:Id to import it first")
    p.add_argument(
        "--model", default="tiny", help="tiny | smollm2-135m | a local path or HF id (default: tiny)"
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument("--demos", help="a JSONL file of chat transcripts, one {'messages': [...]} a line")
    src.add_argument(
        "--expert", type=int, default=1000, help="episodes of the env's expert_action() (default: 1000)"
    )
    p.add_argument("--split", help="split the expert plays (default: warmup if the env has one, else train)")
    p.add_argument("--steps", type=int, default=150, help="optimizer steps (default: 150)")
    p.add_argument("--batch-size", type=int, default=16, help="demonstrations a step (default: 16)")
    p.add_argument("--lr", type=float, default=None, help="default: 1e-3 below 10M parameters, else 5e-5")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-tasks", type=int, default=50, help="held-out test tasks before/after (0: skip)")
    p.add_argument("--max-new-tokens", type=int, default=96, help="per turn, in the held-out evaluation")
    p.add_argument("--keep-failed", action="store_true", help="train on demonstrations with reward 0 too")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")
    p.add_argument("--out", help="output model directory (default: runs/sft-ENV-MODEL)")


def default_out(env: str, model: str) -> Path:
    def slug(s: str) -> str:
        return re.sub(r"[^a-z0-9]+", "-", s.split(":")[-1].split("/")[-1].lower()).strip("-")

    return Path("runs") / f"sft-{slug(env)}-{slug(model.rstrip('/'))}"


def run(args: argparse.Namespace) -> int:
    import torch

    from agentrl.models import load_model
    from agentrl.sft import SFTConfig, gather_demonstrations, warm_start

    try:
        cfg = SFTConfig(
            env=args.env,
            demos=args.demos,
            expert=args.expert,
            split=args.split,
            steps=args.steps,
            batch_size=args.batch_size,
            lr=args.lr,
            seed=args.seed,
            eval_tasks=args.eval_tasks,
            max_new_tokens=args.max_new_tokens,
            keep_failed=args.keep_failed,
        )
        device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
        out = Path(args.out) if args.out else default_out(args.env, args.model)
        demos = gather_demonstrations(cfg)  # bad demos or env fail here, before the model loads
        seen = demos[1].get("test_tasks_in_demos")
        if seen and cfg.eval_tasks:
            print(
                f"note: {len(seen)} of the demos are test-split tasks of {cfg.env}; the held-out "
                "evaluation skips them (write demos from another split, e.g. agentrl rollouts --split train)"
            )
        model, tokenizer = load_model(args.model, device=device)
        record = warm_start(model, tokenizer, cfg, out, model_name=args.model, demos=demos)
    except ValueError as e:
        raise SystemExit(f"agentrl sft: {e}") from None
    d, ho = record["demos"], record["held_out"]
    print(f"\nmodel: {out}  ({record['steps']} steps, {record['seconds']['total'] / 60:.1f} min)")
    print(
        f"demos: {d['count']} from {d['source']} ({d['skipped_failed']} failed skipped), "
        f"{d['tokens_per_demo']:.0f} tokens each; loss {record['loss']['first']:.3f} -> "
        f"{record['loss']['final']:.3f}; {record['tokens_per_s']:.0f} tokens/s"
    )
    if ho["before"] is not None and ho["after"] is not None:
        b, a = ho["before"], ho["after"]
        print(
            f"held-out success on {cfg.env} ({ho['tasks']} test tasks): sampled {b['sampled']:.3f} -> "
            f"{a['sampled']:.3f}, greedy {b['greedy']:.3f} -> {a['greedy']:.3f}"
        )
    print(f"next: agentrl train --env {cfg.env} --model {out}")
    return 0
