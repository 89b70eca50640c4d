"""`agentrl plot runs/A runs/B ...`: overlay runs' metrics on the same axes, one PNG per panel."""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

from agentrl.config import ConfigError, load_file


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="+", help="run directories (each holds metrics.jsonl)")
    p.add_argument("--out", default=None, help="output folder (default: runs/plots-<first>-vs-<last>)")
    p.add_argument("--labels", default=None, help="comma-separated legend names, one per run")


def run(args: argparse.Namespace) -> int:
    from agentrl.algorithms import get_algorithm
    from agentrl.plots import plot_runs

    dirs = [Path(r) for r in args.runs]
    panels: list = []
    for d in dirs:
        if not (d / "metrics.jsonl").is_file():
            raise SystemExit(f"agentrl plot: {d / 'metrics.jsonl'}: no such file (not a run directory)")
        try:
            algo = (
                load_file(d / "config.yaml").get("algo", {}).get("name")
                if (d / "config.yaml").is_file()
                else None
            )
        except ConfigError as e:
            raise SystemExit(f"agentrl plot: {e}") from None
        if algo:
            # an algorithm registered elsewhere still gets the common panels
            with contextlib.suppress(ValueError):
                panels += [p for p in get_algorithm(algo).panels if p not in panels]
    labels = args.labels.split(",") if args.labels else None
    if labels is not None and len(labels) != len(dirs):
        raise SystemExit(f"agentrl plot: --labels has {len(labels)} names for {len(dirs)} runs")
    out = Path(args.out) if args.out else dirs[0].parent / f"plots-{dirs[0].name}-vs-{dirs[-1].name}"
    written = plot_runs(dirs, out, panels, labels)
    print(f"wrote {len(written)} plots to {out}")
    return 0
