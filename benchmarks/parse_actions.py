"""Tool-call parsing time for 1 KB, 128 KB and 1 MB actions, per format and shape, and time per MB.

Parsing must be linear in the action length: the env parses on the event loop that runs every
episode, and an action may be as long as the env's `action_space` allows (128 KB). The shapes are
the hostile ones (an opening tag repeated, deep brackets, escaped quotes) and the ordinary one (a
long JSON call). The last two columns are the time per MB at 128 KB and at 1 MB: equal for a
linear parser, 8x apart for a quadratic one. Run: `.venv/bin/python benchmarks/parse_actions.py [--formats hermes,json]`.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

from agentrl.tools.formats import TOOL_FORMATS, get_tool_format

SIZES = {"1 KB": 1 << 10, "128 KB": 1 << 17, "1 MB": 1 << 20}


def _repeat(piece: str, n: int) -> str:
    return (piece * (n // len(piece) + 1))[:n]


def _long_json(fmt: str, n: int) -> str:
    call = get_tool_format(fmt).format_call("search", {"query": "x"})
    return call.replace('"x"', json.dumps("q" * max(n - len(call), 1)))


SHAPES: dict[str, Callable[[str, int], str]] = {
    "repeated open tag": lambda fmt, n: _repeat(
        {"hermes": "<tool_call>", "mistral": "[TOOL_CALLS]"}.get(fmt, '{"name": '), n
    ),
    "deep brackets": lambda fmt, n: "<tool_call>" + "[" * (n - 23) + "</tool_call>",
    "deep braces": lambda fmt, n: '{"name": "f", "arguments": ' + "{" * (n - 27),
    "escaped quotes": lambda fmt, n: '<tool_call>{"name": "' + _repeat('\\"', n - 35) + "</tool_call>",
    "many small calls": lambda fmt, n: _repeat(get_tool_format(fmt).format_call("f", {"a": 1}) + " ", n),
    "long JSON call": _long_json,
}


def best_of(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--formats", default=",".join(TOOL_FORMATS), help="comma-separated format names")
    ap.add_argument("--repeats", type=int, default=3, help="best of this many runs per cell")
    args = ap.parse_args()
    header = f"{'format':8} {'shape':18} " + " ".join(f"{k:>9}" for k in SIZES)
    header += f" {'ms/MB@128K':>11} {'ms/MB@1M':>9}"
    print(header)
    print("-" * len(header))
    worst_ratio, slowest = 0.0, 0.0
    for name in args.formats.split(","):
        fmt = get_tool_format(name)
        for shape, make in SHAPES.items():
            row = {}
            for label, n in SIZES.items():
                text = make(name, n)
                row[label] = best_of(lambda text=text, fmt=fmt: fmt.parse(text), args.repeats)
            per_mb_small, per_mb_large = row["128 KB"] * 8e3, row["1 MB"] * 1e3
            slowest = max(slowest, per_mb_large)
            if row["1 MB"] > 0.02:  # below ~20 ms, timer and allocator noise dominate the ratio
                worst_ratio = max(worst_ratio, per_mb_large / per_mb_small)
            cells = " ".join(f"{row[k] * 1e3:7.2f}ms" for k in SIZES)
            print(f"{name:8} {shape:18} {cells} {per_mb_small:11.1f} {per_mb_large:9.1f}")
    print(f"\nslowest: {slowest:.0f} ms per MB. Time per MB at 1 MB is at most {worst_ratio:.2f}x its value")
    print("at 128 KB (cells over 20 ms; a linear parser gives ~1x, a quadratic one 8x).")


if __name__ == "__main__":
    main()
