"""Real-time throughput of SPO (sync and async) against GRPO, next to the planner's predictions.

Starts one vLLM CPU server serving `tiny` (as the integration tests start it), then, per arm and
repeat, runs a short `agentrl train --backend openai` job on one of two agentic envs:

- `--env calculator` (default): the calculator env with a declared heavy-tailed per-step latency;
- `--env python_math`: PythonMath, whose tool runs the model's code in the bubblewrap sandbox, so
  the tool latency is the sandbox's real run time (nothing declared on top). `tiny` is warm-started
  on the env's expert first (`agentrl sft`, into `results/python_math/runs/sft-tiny`, built once)
  so that it writes python tool calls, and vLLM serves that model.

For every run it records:

- the planner's prediction *before* the run, from the declared latency models only
  (`agentrl simulate` with the run's batch size, slots and regime; the generation time per turn
  and the learner time per step come from a calibration run made first, never from the run itself,
  and for the sandbox env so do the tool seconds per turn and the turns per episode, declared as
  traces written by the calibration);
- the measured figures (`measure`): trajectories/s and time per step over steps 2+, the server's
  idle share (no generation request in flight) and the learner's idle share (waiting for a batch);
- the planner's re-prediction from the run itself (`agentrl simulate --from-run`).

Everything lands in `experiments/throughput/results/` (one JSON per run, plus the run dirs);
`report.py` turns it into the README and the plots.

    .venv/bin/python experiments/throughput/run.py --repeats 3 --steps 6
    .venv/bin/python experiments/throughput/run.py --env python_math --repeats 3 --steps 6
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
VLLM_PYTHON = Path(os.environ.get("AGENTRL_VLLM_PYTHON", str(ROOT / ".vllm-venv" / "bin" / "python")))
AGENTRL = Path(sys.executable).with_name("agentrl")

# the declared tool latency: one lognormal draw per env step (median 0.4 s, mean 0.66 s, p99 4 s)
LATENCY = {"step": {"kind": "lognormal", "median": 0.4, "sigma": 1.0}}
# per env: the gymnasium id, the latency declared on top of it (None: only the tools' own), the model
# (None: `tiny`; "sft": `tiny` warm-started on the env's expert), tokens per turn and per episode
ENVS: dict[str, dict[str, Any]] = {
    "calculator": {
        "id": "agentrl/Calculator-v0",
        "latency": LATENCY,
        "model": None,
        "max_new_tokens": 32,
        "max_tokens": 1400,
        "out": HERE / "results",
    },
    "python_math": {
        "id": "agentrl/PythonMath-v0",
        "latency": None,
        "model": "sft",
        "max_new_tokens": 160,  # the expert's programs are 60-130 tokens of `tiny`'s tokenizer
        "max_tokens": 2048,
        "out": HERE / "results" / "python_math",
    },
}
SLOTS = 8  # the study's slot count; other counts check the planner's slot what-ifs
ARMS: dict[str, dict[str, Any]] = {
    "spo-sync": {"algo": "spo", "regime": "sync"},
    "spo-async": {"algo": "spo", "regime": "async"},
    "grpo-sync": {"algo": "grpo", "regime": "sync"},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def vllm_server(model_dir: Path, log: Path, ready_timeout: float = 300.0) -> Iterator[str]:
    """A vLLM OpenAI server on CPU serving `tiny`, started as the integration tests start it."""
    import httpx

    port = free_port()
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "VLLM_SERVER_DEV_MODE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "VLLM_LOGGING_LEVEL": "WARNING",
    }
    cmd = [
        str(VLLM_PYTHON), "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(model_dir), "--served-model-name", "tiny", "--dtype", "float32",
        "--host", "127.0.0.1", "--port", str(port), "--max-model-len", "4096",
        "--logprobs-mode", "processed_logprobs", "--no-enable-chunked-prefill",
        "--max-num-batched-tokens", "4096", "--enforce-eager", "--disable-log-stats",
    ]  # fmt: skip
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"vLLM server exited with {proc.returncode}; see {log}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"vLLM server not ready after {ready_timeout:g} s; see {log}")
            time.sleep(1.0)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def rel(p: Path) -> Path:
    """`p` relative to the repository root when it is inside it (no machine paths in the results)."""
    try:
        return p.resolve().relative_to(ROOT)
    except ValueError:
        return p


def train_args(
    arm: str,
    *,
    url: str,
    name: str,
    run_root: Path,
    seed: int,
    a: argparse.Namespace,
    model: Path | str = "tiny",
) -> list[str]:
    spec = ARMS[arm]
    env = ENVS[getattr(a, "env", "calculator")]
    latency = [f"env.latency={json.dumps(env['latency'])}"] if env["latency"] else []
    return [
        "train", "--backend", "openai", "--model", str(model),
        f'model.endpoints=["{url}"]', f"run_root={run_root}", f"name={name}", f"seed={seed}",
        f"steps={a.steps}", "progress=false", "checkpoint_every=1000",
        f"algo.name={spec['algo']}", f"algo.group_size={a.group_size}", "algo.offline_init=false",
        f"rollout.regime={spec['regime']}", "rollout.max_staleness=1",
        f"rollout.batch_size={a.batch_size}", f"rollout.max_concurrency={a.slots}",
        f"rollout.max_new_tokens={a.max_new_tokens}", f"rollout.max_tokens={env['max_tokens']}",
        f"env.id={env['id']}", f"env.max_turns={a.max_turns}", *latency, "env.train_prompts=200",
        "eval.tasks=1", "eval.k=1", "optim.mini_batches=1",
    ]  # fmt: skip


def simulate_args(arm: str, *, a: argparse.Namespace, cal: dict[str, Any]) -> list[str]:
    """`agentrl simulate` on the declared models: the tool latency as declared (or, for the sandbox,
    as the calibration run's trace of tool seconds per turn), the rest calibrated."""
    spec = ARMS[arm]
    env = ENVS[getattr(a, "env", "calculator")]
    if env["latency"]:
        tool = ["--tool", "lognormal:median={median},sigma={sigma}".format(**env["latency"]["step"])]
    else:
        tool = ["--tool-trace", cal["tool_trace"], "--column", "tool_s"]
    turns = (
        ["--turns-trace", cal["turns_trace"], "--turns-column", "turns"]
        if cal.get("turns_trace")
        else ["--turns", cal["turns"]]
    )
    return [
        "simulate", *tool, "--generation", cal["generation"], *turns,
        "--batch-size", str(a.batch_size), "--group-size", str(a.group_size),
        "--max-concurrency", str(a.slots), "--regime", spec["regime"], "--max-staleness", "1",
        "--learner-s", cal["learner"], "--arms", spec["algo"], "--seeds", str(a.sim_seeds),
        "--batches", str(max(a.steps, 6)), "--warmup", "1", "--json", "--no-plot",
    ]  # fmt: skip


def agentrl(args: list[str], log: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    with open(log, "a") as f:
        f.write(f"$ agentrl {' '.join(args)}\n")
    p = subprocess.run([str(AGENTRL), *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    with open(log, "a") as f:
        f.write(p.stdout[-20000:] + p.stderr[-20000:] + f"\n(rc {p.returncode})\n")
    if p.returncode != 0:
        raise RuntimeError(f"agentrl {args[0]} failed (rc {p.returncode}); see {log}")
    return p


# ---- measuring a finished run -------------------------------------------------------------------


def union_length(intervals: list[tuple[float, float]], lo: float, hi: float) -> float:
    """Seconds of [lo, hi] covered by at least one interval."""
    total, end = 0.0, lo
    for s, e in sorted((max(s, lo), min(e, hi)) for s, e in intervals):
        if e <= s:
            continue
        if s > end:
            total += e - s
            end = e
        elif e > end:
            total += e - end
            end = e
    return total


def measure(run_dir: Path) -> dict[str, Any]:
    """Trajectories/s and time per step over steps 2+, the server's and the learner's idle shares."""
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
    steps = [r for r in rows if "time/step_s" in r]
    ro = [json.loads(x) for x in (run_dir / "rollouts.jsonl").read_text().splitlines() if x.strip()]
    steady = steps[1:] if len(steps) > 1 else steps
    n = sum(1 for r in ro if r["step"] >= int(steady[0]["step"]))
    wall = sum(r["time/step_s"] for r in steady)
    learner = sum(r["time/learner_s"] + r.get("time/sync_s", 0.0) for r in steady)
    # the steady window on the episodes' clock: from the end of step 1's batch to the last batch
    ends = {}
    for r in ro:
        ends[r["step"]] = max(ends.get(r["step"], -np.inf), r["finished_at"])
    first = int(steady[0]["step"])
    lo = ends.get(first - 1, min(r["started_at"] for r in ro))
    hi = max(ends.values())
    gens = []
    for r in ro:
        clock = r["started_at"]
        for t in r["turns"]:
            s = t.get("gen_at", clock)
            gens.append((s, s + t["gen_s"]))
            clock = s + t["gen_s"] + t["tool_s"]
    busy = union_length(gens, lo, hi)
    return {
        "steps": len(steps),
        "trajectories": n,
        "trajectories_per_s": n / wall,
        "time_per_step_s": wall / len(steady),
        "learner_idle_share": 1.0 - learner / wall,
        "server_idle_share": 1.0 - busy / (hi - lo) if hi > lo else float("nan"),
        "gen_s_per_turn": float(np.mean([t["gen_s"] for r in ro for t in r["turns"]])),
        "turns_mean": float(np.mean([len(r["turns"]) for r in ro])),
        "tool_s_per_turn": float(np.mean([t["tool_s"] for r in ro for t in r["turns"]])),
        "tool_calls_per_episode": float(
            np.mean([sum(t.get("tool_calls", 0) for t in r["turns"]) for r in ro])
        ),
        # the env step of a turn that called a tool (for the sandbox: queueing for it plus its run)
        "tool_call_turn_s": float(np.mean(calls))
        if (calls := [t["tool_s"] for r in ro for t in r["turns"] if t.get("tool_calls")])
        else float("nan"),
        "reward_mean": float(np.mean([r.get("reward", 0.0) for r in ro])),
        # of the tool time, the share queued behind the tool's concurrency cap (None: not recorded)
        "tool_wait_share": (
            sum(t["tool_wait_s"] for r in ro for t in r["turns"])
            / max(sum(t["tool_s"] for r in ro for t in r["turns"]), 1e-12)
            if all("tool_wait_s" in t for r in ro for t in r["turns"])
            else None
        ),
        "learner_side_s": float(
            np.mean([r["time/step_s"] - r.get("rollout/assembly_s", 0.0) for r in steady])
        ),
    }


def calibration(run_dir: Path, traces: Path | None = None) -> dict[str, Any]:
    """The declared-model simulation's generation, learner and turn settings, from a calibration run.

    With `traces` (a folder), also the run's tool seconds of every turn (`tool_trace.csv`, column
    `tool_s`; answer turns included, since the simulator draws a tool time for every turn) and its
    turns per episode (`turns_trace.csv`, column `turns`), declared as traces.
    """
    m = measure(run_dir)
    ro = [json.loads(x) for x in (run_dir / "rollouts.jsonl").read_text().splitlines() if x.strip()]
    turns = [len(r["turns"]) for r in ro]
    cal: dict[str, Any] = {
        "generation": f"{m['gen_s_per_turn']:.4f}",
        "learner": f"{m['learner_side_s']:.4f}",
        "turns": f"{min(turns)}-{max(turns)}" if min(turns) < max(turns) else str(turns[0]),
    }
    if traces is None:
        return cal
    tool_trace, turns_trace = traces / "tool_trace.csv", traces / "turns_trace.csv"
    with open(tool_trace, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", "turn", "tool_calls", "tool_s"])
        for r in ro:
            for i, t in enumerate(r["turns"]):
                w.writerow([r["step"], i, t.get("tool_calls", 0), f"{t['tool_s']:.6f}"])
    with open(turns_trace, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["turns"])
        w.writerows([n] for n in turns)
    calls = np.array([t["tool_s"] for r in ro for t in r["turns"] if t.get("tool_calls")])
    cal |= {
        "tool_trace": str(rel(tool_trace)),
        "turns_trace": str(rel(turns_trace)),
        "tool_s_per_turn": round(m["tool_s_per_turn"], 4),
        "tool_calls_per_episode": round(m["tool_calls_per_episode"], 3),
        "tool_call_turn_s": {
            "n": int(calls.size),
            "mean": round(float(calls.mean()), 4) if calls.size else None,
            "p50": round(float(np.median(calls)), 4) if calls.size else None,
            "p95": round(float(np.percentile(calls, 95)), 4) if calls.size else None,
        },
    }
    return cal


def sandbox_alone(n: int = 20) -> dict[str, Any]:
    """Seconds of one sandboxed python call on its own (the expert's programs of warm-up tasks, one
    at a time), and proof that the sandbox is bubblewrap, not the unsandboxed fallback."""
    import gymnasium as gym

    import agentrl  # noqa: F401  (registers the envs)
    from agentrl.tools.python_sandbox import PythonTool

    tool = PythonTool()  # refuses to start without a working bubblewrap (no unsafe_local here)
    if tool.bwrap is None:
        raise RuntimeError("PythonTool has no bubblewrap sandbox")
    env = gym.make("agentrl/PythonMath-v0").unwrapped
    secs, ok = [], 0
    for i in range(n):
        env.reset(seed=i, options={"split": "warmup"})
        code = env.task.data["code"]
        t0 = time.perf_counter()
        res = asyncio.run(tool.execute(code))
        secs.append(time.perf_counter() - t0)
        ok += res.returncode == 0
    x = np.array(secs)
    return {
        "bwrap": tool.bwrap,
        "seccomp": tool.seccomp,
        "calls": n,
        "ok": ok,
        "mean_s": round(float(x.mean()), 4),
        "p50_s": round(float(np.median(x)), 4),
        "p95_s": round(float(np.percentile(x, 95)), 4),
    }


def sft_model(out: Path, log: Path, timeout: float) -> Path:
    """`tiny` warm-started on PythonMath's expert (the project's own stage), built once."""
    d = out / "runs" / "sft-tiny"
    if not (d / "config.json").is_file():
        agentrl(["sft", "--env", ENVS["python_math"]["id"], "--model", "tiny", "--out", str(d)], log, timeout)
    return d


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", choices=list(ENVS), default="calculator")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--group-size", type=int, default=4)
    p.add_argument(
        "--slots",
        type=int,
        default=SLOTS,
        help=f"other than {SLOTS}: runs go to <out>/slotsN, same calibration",
    )
    p.add_argument("--max-turns", type=int, default=3)
    p.add_argument("--max-new-tokens", type=int, help="per turn (default: 32 calculator, 160 python_math)")
    p.add_argument("--sim-seeds", type=int, default=30)
    p.add_argument("--arms", default=",".join(ARMS), help="a subset of the arms, e.g. spo-async")
    p.add_argument("--endpoint", help="use this running server instead of starting one")
    p.add_argument("--out", type=Path, help="results folder (default: results/, results/python_math/)")
    p.add_argument("--run-timeout", type=float, default=600.0)
    a = p.parse_args(argv)
    env = ENVS[a.env]
    a.max_new_tokens = a.max_new_tokens or env["max_new_tokens"]
    base = a.out or env["out"]  # the model, the calibration run and the declared traces live here
    a.out = base if a.slots == SLOTS else base / f"slots{a.slots}"
    arms = [x.strip() for x in a.arms.split(",") if x.strip()]
    bad = [x for x in arms if x not in ARMS]
    if bad:
        p.error(f"unknown arm(s) {bad}; known: {list(ARMS)}")
    a.out.mkdir(parents=True, exist_ok=True)
    run_root = a.out / "runs"
    log = a.out / "log.txt"
    cal_dir = base / "runs" / "calibration"
    if a.slots != SLOTS and not (cal_dir / "rollouts.jsonl").is_file():
        p.error(f"--slots {a.slots}: run the {SLOTS}-slot study first (it makes the calibration run)")
    from agentrl.models import model_path

    model: Path | str = "tiny"
    served = model_path("tiny")
    if env["model"] == "sft":
        model = served = sft_model(base, log, 3600)
    server = contextlib.nullcontext(a.endpoint) if a.endpoint else vllm_server(served, a.out / "vllm.log")
    settings = ("env", "steps", "batch_size", "group_size", "slots", "max_turns", "max_new_tokens")
    with server as url:
        if not (cal_dir / "rollouts.jsonl").is_file():
            agentrl(
                train_args(
                    "spo-sync", url=url, name="calibration", run_root=base / "runs", seed=99, a=a, model=model
                ),
                log,
                a.run_timeout,
            )
        cal = calibration(cal_dir, traces=None if env["latency"] else base)
        if not env["latency"]:  # measured once, with the calibration run
            old = base / "calibration.json"
            prev = json.loads(old.read_text()).get("sandbox_alone") if old.is_file() else None
            cal["sandbox_alone"] = prev or sandbox_alone()
        (base / "calibration.json").write_text(json.dumps(cal, indent=1))
        for rep in range(a.repeats):
            for arm in arms:
                name = f"{arm}-r{rep}"
                dest = a.out / f"{name}.json"
                if dest.exists():
                    continue
                sim = json.loads(agentrl(simulate_args(arm, a=a, cal=cal), log, 300).stdout)
                declared = sim["arms"][ARMS[arm]["algo"]]
                t0 = time.time()
                agentrl(
                    train_args(arm, url=url, name=name, run_root=run_root, seed=rep, a=a, model=model),
                    log,
                    a.run_timeout,
                )
                wall = time.time() - t0
                run_dir = rel(run_root / name)
                wi_out = a.out / f"{name}-what-if.json"
                agentrl(
                    [
                        "simulate",
                        "--from-run",
                        str(run_dir),
                        "--seeds",
                        str(a.sim_seeds),
                        "--out",
                        str(wi_out),
                    ],
                    log,
                    600,
                )
                wi = json.loads(wi_out.read_text())
                rec = {
                    "arm": arm,
                    "repeat": rep,
                    "settings": {k: getattr(a, k) for k in settings},
                    "latency": env["latency"] or {"tool": "the bubblewrap sandbox's own run time"},
                    "calibration": cal,
                    "process_wall_s": wall,
                    "load_avg_1m": os.getloadavg()[0],
                    "measured": measure(run_dir),
                    "declared": {
                        "trajectories_per_s": declared["trajectories_per_s"],
                        "pooled_trajectories_per_s": declared.get("trainer_trajectories_per_s"),
                        "time_per_step_s": declared["time_per_batch"],
                    },
                    "from_run": {
                        "trajectories_per_s": wi["scenarios"][0]["trajectories_per_s"],
                        "pooled_trajectories_per_s": wi["scenarios"][0]["pooled_trajectories_per_s"],
                        "time_per_step_s": wi["scenarios"][0]["time_per_step_s"],
                        "server": wi["server"],
                        "tool_capacity": wi.get("tool_capacity"),
                        "measured_by_whatif": wi["measured"]["trajectories_per_s"],
                    },
                }
                dest.write_text(json.dumps(rec, indent=1))
                print(
                    f"{name}: measured {rec['measured']['trajectories_per_s']:.3f} traj/s, declared "
                    f"{declared['trajectories_per_s']['median']:.3f}, "
                    f"from-run {wi['scenarios'][0]['trajectories_per_s']['median']:.3f}",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
