"""`agentrl` command line: each subcommand lives in its own module and is imported only when used."""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> (module, help). Each module defines `add_arguments(parser)` and `run(args) -> int`.
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("agentrl.cli.train", "train a tool-using agent with SPO, GRPO, RLOO, Dr. GRPO or no-baseline"),
    "eval": ("agentrl.cli.eval", "held-out avg@k, pass@k and maj@k of a checkpoint or model"),
    "plot": ("agentrl.cli.plot", "overlay runs' metrics (reward, KL, entropy, ...) on the same axes"),
    "envs": ("agentrl.cli.envs", "list the registered environments with their tools and task counts"),
    "rollouts": (
        "agentrl.cli.rollouts",
        "run episodes with a checkpoint or model and write them as chat-message JSONL",
    ),
    "simulate": ("agentrl.cli.simulate", "run the rollout scheduler on simulated episodes in virtual time"),
    "sft": ("agentrl.cli.sft", "warm-start a model on an env's demonstrations (its expert or a JSONL file)"),
    "serve": (
        "agentrl.cli.serve",
        "start N local vLLM servers for the openai backend and print their endpoints",
    ),
    "export": (
        "agentrl.cli.export",
        "write a checkpoint as a model directory (--merge folds a LoRA adapter in)",
    ),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="agentrl", description=__doc__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_)
        p.set_defaults(_module=module)
        importlib.import_module(module).add_arguments(p)
    args, extra = parser.parse_known_args(argv)
    # `key=value` overrides may come before and after flags (`train a=1 --algo rloo b=2`)
    if (
        extra
        and isinstance(getattr(args, "overrides", None), list)
        and all("=" in e and not e.startswith("-") for e in extra)
    ):
        args.overrides += extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command is None:
        parser.print_help()
        return 2
    return int(importlib.import_module(args._module).run(args) or 0)


def console_main(argv: list[str] | None = None) -> int:
    """The `agentrl` command: a user error (a `SystemExit` carrying its one-line message) goes to
    stderr and exits 2, as argparse's usage errors do; a clean run exits 0."""
    try:
        return main(argv)
    except SystemExit as e:
        if isinstance(e.code, str):
            print(e.code, file=sys.stderr)
            return 2
        raise
