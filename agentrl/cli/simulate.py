"""`agentrl simulate`: the rollout scheduler on simulated episodes, in virtual time.

Three ways in: a named preset (`--preset`), a study described by options or a YAML/TOML file
(`--tool-trace calls.csv --column latency_s --batch-size 64 ...`, `--study FILE`), or a finished
run's measured timings (`--from-run runs/NAME`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from agentrl.rollout.presets import ARM_KINDS, PRESETS, get_preset

# option dest -> study setting (same name unless listed)
_STUDY_OPTIONS = (
    "tool",
    "tool_trace",
    "column",
    "generation",
    "generation_trace",
    "generation_column",
    "duration",
    "duration_trace",
    "duration_column",
    "turns",
    "turns_trace",
    "turns_column",
    "batch_size",
    "group_size",
    "regime",
    "max_staleness",
    "learner_s",
    "arms",
    "name",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_argument_group("what to simulate (one of)")
    src.add_argument(
        "--preset", default=None, help=f"a named study: {', '.join(PRESETS)} (default paper-fig5)"
    )
    src.add_argument(
        "--study", type=Path, default=None, help="a YAML or TOML study file (keys as these options)"
    )
    src.add_argument(
        "--from-run", type=Path, default=None, help="a finished run directory: replay its timings"
    )
    lat = parser.add_argument_group(
        "latency (a model spec: seconds, kind:key=value,... e.g. lognormal:median=2,sigma=0.5, or {kind: ...})"
    )
    lat.add_argument("--tool", default=None, help="tool-call latency model, per turn")
    lat.add_argument(
        "--tool-trace", default=None, help="tool-call durations from a .csv / .jsonl / .txt trace"
    )
    lat.add_argument("--column", default=None, help="the tool trace's column or field (default latency_s)")
    lat.add_argument("--generation", default=None, help="generation latency model, per turn")
    lat.add_argument("--generation-trace", default=None, help="generation durations per turn from a trace")
    lat.add_argument("--generation-column", default=None)
    lat.add_argument("--duration", default=None, help="whole-episode latency model (instead of per turn)")
    lat.add_argument("--duration-trace", default=None, help="whole-episode durations from a trace")
    lat.add_argument("--duration-column", default=None)
    lat.add_argument("--turns", default=None, help="turns per episode: N or a range A-B (default 1)")
    lat.add_argument("--turns-trace", default=None, help="turns per episode resampled from a trace")
    lat.add_argument("--turns-column", default=None)
    sch = parser.add_argument_group("scheduling")
    sch.add_argument("--batch-size", type=int, default=None, help="trajectories per batch (default 64)")
    sch.add_argument("--group-size", type=int, default=None, help="GRPO group size (default 8)")
    sch.add_argument("--max-concurrency", type=int, default=None, help="generation slots (default unlimited)")
    sch.add_argument(
        "--overprovision", type=float, default=None, help="sync: launch k x the batch (default 1)"
    )
    sch.add_argument("--regime", choices=("sync", "async"), default=None, help="default sync")
    sch.add_argument("--max-staleness", type=int, default=None, help="async staleness bound (default 1)")
    sch.add_argument("--learner-s", default=None, help="learner seconds per step: a number or a model spec")
    sch.add_argument(
        "--arms",
        default=None,
        help=f"comma-separated arms, first is the reference (default spo,grpo); from {', '.join(ARM_KINDS)}",
    )
    run = parser.add_argument_group("repetitions and output")
    run.add_argument("--seeds", type=int, default=None, help="seeded repetitions per arm (default 100)")
    run.add_argument("--seed0", type=int, default=0, help="first seed")
    run.add_argument("--batches", type=int, default=None, help="batches per seed and arm")
    run.add_argument("--warmup", type=int, default=None, help="batches left out of the figures")
    run.add_argument(
        "--independent",
        action="store_true",
        help="independent draws per arm instead of common random numbers",
    )
    run.add_argument("--name", default=None, help="study name (file names of the outputs)")
    run.add_argument("--out", type=Path, default=None, help="JSON result (default runs/simulate/<name>.json)")
    run.add_argument("--no-plot", action="store_true", help="do not write the PNG next to the JSON")
    run.add_argument("--json", action="store_true", help="print the JSON result instead of the table")
    run.add_argument("--list", action="store_true", help="list presets and exit")


def _study_settings(args: argparse.Namespace) -> dict[str, Any]:
    st: dict[str, Any] = {}
    if args.study is not None:
        from agentrl.simulate import load_study_file

        st.update(load_study_file(args.study))
    for key in _STUDY_OPTIONS:
        v = getattr(args, key)
        if v is not None:
            st[key] = v
    for key in ("max_concurrency", "overprovision", "seeds", "batches", "warmup"):
        v = getattr(args, key)
        if v is not None:
            st[key] = v
    if args.seed0:
        st["seed0"] = args.seed0
    if args.independent:
        st["common_random_numbers"] = False
    ls = st.get("learner_s")
    if isinstance(ls, str):
        with contextlib.suppress(ValueError):  # otherwise a model spec
            st["learner_s"] = float(ls)
    return st


def _uses_study_options(args: argparse.Namespace) -> bool:
    return args.study is not None or any(
        getattr(args, k) is not None for k in _STUDY_OPTIONS if k not in ("name", "arms")
    )


def _write(res: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(res, indent=1, default=str))
    tmp.replace(out)  # atomic: a crash never leaves half a result behind


def run(args: argparse.Namespace) -> int:
    if args.list:
        for p in PRESETS.values():
            print(f"{p.name:<20} {p.description}")
        return 0
    try:
        if args.from_run is not None:
            return _from_run(args)
        from agentrl.simulate import build_study, format_report, plot_study, simulate

        if _uses_study_options(args):
            if args.preset is not None:
                raise ValueError(
                    "give --preset or study options (--study, --tool..., --duration...), not both"
                )
            preset, st = build_study(_study_settings(args), where=str(args.study or "agentrl simulate"))
            res = simulate(preset, int(st["seeds"]), seed0=int(st["seed0"]))
        else:
            preset = get_preset(args.preset or "paper-fig5")
            if args.max_concurrency is not None:
                preset = preset.with_overrides(max_concurrency=args.max_concurrency)
            if args.overprovision is not None:
                preset = replace(
                    preset,
                    arms=tuple(
                        replace(a, config=replace(a.config, overprovision=args.overprovision))
                        if a.config.regime == "sync"
                        else a
                        for a in preset.arms
                    ),
                )
            if args.independent:
                preset = replace(preset, common_random_numbers=False)
            res = simulate(
                preset, args.seeds or 100, seed0=args.seed0, batches=args.batches, warmup=args.warmup
            )
    except (KeyError, ValueError) as e:
        print(f"agentrl simulate: {e.args[0] if e.args else e}", file=sys.stderr)
        return 2
    out = args.out if args.out is not None else Path("runs") / "simulate" / f"{preset.name}.json"
    _write(res, out)
    png = None if args.no_plot else plot_study(res, out.with_suffix(".png"))
    if args.json:
        print(json.dumps(res, indent=1, default=str))
    else:
        print(format_report(res))
        print(f"\nwrote {out}" + (f" and {png}" if png else ""))
    return 0


def _from_run(args: argparse.Namespace) -> int:
    from agentrl.whatif import format_what_if, read_run, what_if

    if args.preset is not None or _uses_study_options(args):
        raise ValueError("--from-run takes its settings from the run; drop --preset and the study options")
    res = what_if(read_run(args.from_run), seeds=args.seeds or 30, batches=args.batches, seed0=args.seed0)
    out = (
        args.out if args.out is not None else Path("runs") / "simulate" / f"{args.from_run.name}-what-if.json"
    )
    _write(res, out)
    if args.json:
        print(json.dumps(res, indent=1, default=str))
    else:
        print(format_what_if(res))
        print(f"\nwrote {out}")
    return 0
