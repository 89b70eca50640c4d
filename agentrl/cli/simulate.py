"""`agentrl simulate`: the rollout scheduler on simulated episodes, in virtual time."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from agentrl.rollout.presets import PRESETS, get_preset
from agentrl.simulate import format_report, simulate


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="paper-fig5", help=f"one of: {', '.join(PRESETS)}")
    parser.add_argument("--seeds", type=int, default=100, help="number of seeded repetitions (default 100)")
    parser.add_argument("--seed0", type=int, default=0, help="first seed")
    parser.add_argument(
        "--batches", type=int, default=None, help="batches per seed and arm (default: preset's)"
    )
    parser.add_argument(
        "--max-concurrency", type=int, default=None, help="override generation slots in every arm"
    )
    parser.add_argument("--overprovision", type=float, default=None, help="override k in sync arms")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where to write the full JSON result (default: runs/simulate/<preset>.json)",
    )
    parser.add_argument("--list", action="store_true", help="list presets and exit")


def run(args: argparse.Namespace) -> int:
    if args.list:
        for p in PRESETS.values():
            print(f"{p.name:<20} {p.description}")
        return 0
    try:
        preset = get_preset(args.preset)
        overrides: dict[str, Any] = {}
        if args.max_concurrency is not None:
            overrides["max_concurrency"] = args.max_concurrency
        preset = preset.with_overrides(**overrides)
        if args.overprovision is not None:
            from dataclasses import replace

            preset = replace(
                preset,
                arms=tuple(
                    replace(a, config=replace(a.config, overprovision=args.overprovision))
                    if a.config.regime == "sync"
                    else a
                    for a in preset.arms
                ),
            )
        res = simulate(preset, args.seeds, seed0=args.seed0, batches=args.batches)
    except (KeyError, ValueError) as e:
        print(f"agentrl simulate: {e.args[0] if e.args else e}", file=sys.stderr)
        return 2
    print(format_report(res))
    out = args.out if args.out is not None else Path("runs") / "simulate" / f"{preset.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(res, indent=1, default=str))
    tmp.replace(out)  # atomic: a crash never leaves half a result behind
    print(f"\nwrote {out}")
    return 0
