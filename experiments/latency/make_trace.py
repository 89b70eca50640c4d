"""Write the SYNTHETIC tool-call latency trace shipped with the latency study (deterministic).

No production trace could be shipped, so this one is made up, from a stated recipe, to look like
one: per-call latencies of four tools with the shapes tool latencies usually have (a lognormal
body, occasional retries that roughly double a call, rare hard timeouts, and a heavy-tailed HTTP
tool). It exists so that the `Empirical.from_trace` path is exercised on a realistic, lumpy
distribution; it is not evidence about any real system.

    .venv/bin/python experiments/latency/make_trace.py  # rewrites traces/tool_calls_synthetic.csv
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

TRACE = Path(__file__).resolve().parent / "traces" / "tool_calls_synthetic.csv"
SEED = 20260917
N_CALLS = 5000

# tool: (share of calls, lognormal median s, sigma, retry probability, timeout probability, timeout s)
TOOLS: dict[str, tuple[float, float, float, float, float, float]] = {
    "calculator": (0.35, 0.04, 0.5, 0.00, 0.000, 0.0),
    "search": (0.30, 0.9, 0.6, 0.03, 0.002, 30.0),
    "python": (0.25, 2.5, 0.9, 0.02, 0.010, 60.0),
    "http": (0.10, 1.4, 0.8, 0.08, 0.020, 120.0),
}
HTTP_PARETO_ALPHA = 1.3  # extra heavy tail on the http tool: 5% of its calls add Pareto(2 s, 1.3) s


def make_rows(seed: int = SEED, n: int = N_CALLS) -> list[tuple[int, str, float]]:
    rng = np.random.default_rng(seed)
    names = list(TOOLS)
    shares = np.array([TOOLS[t][0] for t in names])
    which = rng.choice(len(names), size=n, p=shares / shares.sum())
    rows = []
    for i, k in enumerate(which.tolist()):
        name = names[k]
        _, median, sigma, p_retry, p_timeout, timeout_s = TOOLS[name]
        x = float(rng.lognormal(np.log(median), sigma))
        if rng.random() < p_retry:  # a retried call pays a backoff and a second attempt
            x += 1.0 + float(rng.lognormal(np.log(median), sigma))
        if name == "http" and rng.random() < 0.05:
            x += 2.0 * (1.0 + float(rng.pareto(HTTP_PARETO_ALPHA)))
        if rng.random() < p_timeout:
            x = timeout_s
        if timeout_s:
            x = min(x, timeout_s)
        rows.append((i, name, round(x, 4)))
    return rows


def write_trace(path: Path = TRACE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        f"# SYNTHETIC trace: made up by experiments/latency/make_trace.py (seed {SEED}), not measured.",
        "# Per-call tool latencies in seconds; see make_trace.py for the exact recipe.",
        "call_id,tool,latency_s",
    ]
    lines += [f"{i},{t},{x}" for i, t, x in make_rows()]
    path.write_text("\n".join(lines) + "\n")
    return path


if __name__ == "__main__":
    print(f"wrote {write_trace()}")
