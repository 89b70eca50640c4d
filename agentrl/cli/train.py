"""`agentrl train`: command-line flags, config loading, and the run's summary line."""

from __future__ import annotations

import argparse
from dataclasses import replace

from agentrl.config import ConfigError, load_config
from agentrl.train_config import TrainConfig
from agentrl.trainer import Trainer

# ---- `agentrl train` ----------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="a YAML or TOML file of settings (see agentrl/train_config.py)")
    p.add_argument("--algo", choices=["spo", "grpo", "no_baseline"], help="shorthand for algo.name=")
    p.add_argument("--env", help="any registered gymnasium id (shorthand for env.id=)")
    p.add_argument("--model", help="tiny | smollm2-135m | HF id or path (shorthand for model.name=)")
    p.add_argument("--backend", choices=["hf", "openai", "vllm"], help="shorthand for model.backend=")
    p.add_argument("--regime", choices=["sync", "async"], help="shorthand for rollout.regime=")
    p.add_argument("--resume", action="store_true", help="continue from the run's latest checkpoint")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value", help="dotted config overrides")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    overrides = list(args.overrides)
    for flag, key in (
        ("algo", "algo.name"),
        ("env", "env.id"),
        ("model", "model.name"),
        ("backend", "model.backend"),
        ("regime", "rollout.regime"),
    ):
        value = getattr(args, flag, None)
        if value is not None:
            overrides.append(f"{key}={value}")
    cfg = load_config(TrainConfig, args.config, overrides)
    if args.algo and not any(o.startswith("name=") for o in args.overrides) and cfg.name == TrainConfig.name:
        env_short = cfg.env.id.split("/")[-1].split("-")[0].lower()
        cfg = replace(cfg, name=f"{env_short}-{cfg.algo.name}")
    return cfg


def run(args: argparse.Namespace) -> int:
    try:
        cfg = config_from_args(args)
    except ConfigError as e:
        raise SystemExit(f"agentrl train: {e}") from None
    result = Trainer(cfg, resume=args.resume).run()
    b, af = result.eval_before, result.eval_after
    print(f"\nrun: {result.run_dir}  ({result.steps} steps, {result.seconds / 60:.1f} min)")
    if b is not None and af is not None:
        print(
            f"held-out success on {cfg.env.id}: before {b.success:.3f} -> after {af.success:.3f} "
            f"({(af.success - b.success) * 100:+.1f} points, {af.tasks} test tasks)"
        )
    return 0
