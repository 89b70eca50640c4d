"""`agentrl envs`: the registered tool-use environments, with their tools and task counts."""

from __future__ import annotations

import argparse
from typing import Any


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--all", action="store_true", help="also list study envs and non-ToolEnv registrations")


def describe(env_id: str) -> dict[str, Any] | None:
    import gymnasium

    from agentrl.envs.base import ToolEnv

    env = gymnasium.make(env_id).unwrapped
    try:
        if not isinstance(env, ToolEnv):
            return None
        return {
            "id": env_id,
            "tools": list(env.toolbox.tools),
            "train": len(env.task_ids("train")),
            "test": len(env.task_ids("test")),
            "max_turns": env.max_turns,
        }
    finally:
        env.close()


def run(args: argparse.Namespace) -> int:
    import gymnasium

    from agentrl.envs import BUNDLED_ENVS

    ids = sorted(BUNDLED_ENVS)
    if args.all:
        ids += sorted(
            i for i in gymnasium.registry if i not in BUNDLED_ENVS and "/" in i and not i.startswith("gym")
        )
    print(f"{'id':<28} {'tools':<20} {'train':>6} {'test':>5} {'turns':>5}")
    for env_id in ids:
        try:
            d = describe(env_id)
        except Exception as e:  # one broken third-party env must not hide the rest
            print(f"{env_id:<28} (cannot be built: {type(e).__name__}: {e})")
            continue
        if d is not None:
            print(
                f"{d['id']:<28} {','.join(d['tools']):<20} {d['train']:>6} {d['test']:>5} {d['max_turns']:>5}"
            )
    return 0
