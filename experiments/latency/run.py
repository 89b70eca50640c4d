"""Run the whole latency study: `.venv/bin/python experiments/latency/run.py [--quick] [--out DIR]`.

Builds the job list from `config.yaml`, runs it over `workers` processes (every job is the real
`RolloutScheduler` on a virtual-time loop), then writes `results.json`, `results.md` and the PNG
plots into the output folder (default: this folder; `--quick` defaults to a temporary-style
`quick/` subfolder so a smoke run never overwrites the real results).
"""

from __future__ import annotations

import argparse
import copy
import multiprocessing as mp
import sys
import time
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from jobs import run_job  # noqa: E402
from latency_study import async_arms, paper_arms  # noqa: E402


def _with_p(profile: dict[str, Any], p: float) -> dict[str, Any]:
    prof = copy.deepcopy(profile)
    prof["duration"]["p"] = p
    return prof


def _resolve_paths(spec: Any, base: Path) -> Any:
    """Trace paths in the config are relative to the config file."""
    if isinstance(spec, dict):
        out = {k: _resolve_paths(v, base) for k, v in spec.items()}
        if out.get("kind") == "empirical" and "path" in out:
            out["path"] = str((base / out["path"]).resolve())
        return out
    if isinstance(spec, list):
        return [_resolve_paths(v, base) for v in spec]
    return spec


def quick_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """Seconds-long smoke version: a few seeds, two points per sweep, a short training run."""
    q = copy.deepcopy(cfg)
    q["reproduction"].update(seeds=20, literal_seeds=10)
    sw = q["sweeps"]
    sw["seeds"] = 8
    for key in ("straggler_p", "batch_size", "overprovision"):
        sw[key] = sw[key][:2]
    sw["lognormal"]["sigma"] = sw["lognormal"]["sigma"][:2]
    sw["pareto"]["alpha"] = sw["pareto"]["alpha"][-2:]
    sw["group_size"]["values"] = sw["group_size"]["values"][:2]
    sw["slots"].update(values=sw["slots"]["values"][-2:], seeds=4, batches=4, warmup=2)
    bl = q["baselines"]
    bl["learner_step_s"] = bl["learner_step_s"][:1]
    bl["sync"].update(seeds=6, batches=3, warmup=1, deadlines=[200.0])
    bl["async"].update(seeds=4, batches=6, warmup=2)
    q["agentic"].update(seeds=4)
    q["agentic"]["slots"].update(seeds=2, batches=4, warmup=2)
    q["training"].update(seeds=1, batches=12, n_prompts=128)
    q["realtime"].update(scale=5000.0, batches=1)
    return q


def build_jobs(cfg: dict[str, Any]) -> list[dict[str, Any]]:
    P = cfg["profiles"]
    s0 = cfg.get("seed0", 0)
    jobs: list[dict[str, Any]] = []
    rep = cfg["reproduction"]
    jobs.append(
        {
            "id": "reproduction/fig5",
            "kind": "reproduction",
            "profile": P["fig5"],
            "seeds": rep["seeds"],
            "seed0": s0,
            "paper": rep["paper_speedup"],
            "straggler_p": P["fig5"]["duration"]["p"],
        }
    )
    jobs.append(
        {
            "id": "reproduction/fig5_literal",
            "kind": "reproduction",
            "profile": P["fig5_literal"],
            "seeds": rep["literal_seeds"],
            "seed0": s0,
            "paper": rep["paper_speedup"],
            "straggler_p": P["fig5_literal"]["duration"]["p"],
            "order_check": False,
        }
    )

    sw = cfg["sweeps"]
    n = sw["seeds"]

    def point(sweep: str, x: Any, profile: dict[str, Any], arms: list[dict[str, Any]], **kw: Any) -> None:
        jobs.append(
            {
                "id": f"sweep/{sweep}/{x}",
                "kind": "compare",
                "sweep": sweep,
                "x": x,
                "profile": profile,
                "arms": arms,
                "seeds": kw.pop("seeds", n),
                "seed0": s0,
                **kw,
            }
        )

    for p in sw["straggler_p"]:
        point("straggler_p", p, _with_p(P["fig5"], p), paper_arms())
    ln = sw["lognormal"]
    for s in ln["sigma"]:
        point(
            "lognormal_sigma",
            s,
            {"duration": {"kind": "lognormal", "median": ln["median"], "sigma": s}},
            paper_arms(),
        )
    pa = sw["pareto"]
    for a in pa["alpha"]:
        point(
            "pareto_alpha",
            a,
            {"duration": {"kind": "pareto", "scale": pa["scale"], "alpha": a, "cap": pa["cap"]}},
            paper_arms(),
        )
    gs = sw["group_size"]
    for g in gs["values"]:
        point("group_size", g, P["fig5"], paper_arms(batch=gs["batch"], group=g))
    for b in sw["batch_size"]:
        point("batch_size", b, P["fig5"], paper_arms(batch=b))
    for k in sw["overprovision"]:
        point("overprovision", k, P["fig5"], paper_arms(overprovision=k))
    sl = sw["slots"]
    for c in sl["values"]:
        arms = [dict(a, name=a["name"] + "-sync") for a in paper_arms(slots=c)]
        arms += [dict(a, name=a["name"] + "-async") for a in async_arms(24, 8, c, sl["staleness"])]
        point(
            "slots",
            c,
            P["fig5"],
            arms,
            seeds=sl["seeds"],
            batches=sl["batches"],
            warmup=sl.get("warmup", 0),
            learner_step_s=sl["learner_step_s"],
            ratios=[
                ("grpo-sync", "spo-sync"),
                ("grpo-async", "spo-async"),
                ("spo-sync", "spo-async"),
                ("grpo-sync", "spo-async"),
            ],
        )

    bl = cfg["baselines"]
    bs, ba = bl["sync"], bl["async"]
    grpo = {"mode": "group", "batch_size": 24, "group_size": 8, "overprovision": 2.0}
    sync_arms = paper_arms()
    for d in bs["deadlines"]:
        sync_arms.append(
            {"name": f"grpo-drop@{d:g}", **grpo, "group_deadline": d, "straggler_policy": "drop"}
        )
        sync_arms.append(
            {
                "name": f"grpo-partial@{d:g}",
                **grpo,
                "group_deadline": d,
                "straggler_policy": "partial",
                "min_group_size": bs["partial_min_group"],
            }
        )
    async_arm_list = paper_arms()
    for S in ba["staleness"]:
        spo_a, grpo_a = async_arms(24, 8, None, S)
        async_arm_list += [dict(spo_a, name=f"spo-async(S={S})"), dict(grpo_a, name=f"grpo-async(S={S})")]
    if ba.get("drop_stale_slots"):
        c = ba["drop_stale_slots"]
        spo_d = async_arms(24, 8, c, 1)[0]
        async_arm_list.append(
            dict(spo_d, name=f"spo-async(S=1, {c} slots, drop stale)", admission="none", stale_policy="drop")
        )

    def ratios_for(arms: list[dict[str, Any]]) -> list[tuple[str, str]]:
        names = [a["name"] for a in arms]
        return [("grpo", x) for x in names if x != "grpo"] + [
            (x, "spo") for x in names if x not in ("spo", "grpo")
        ]

    for ls in bl["learner_step_s"]:
        for regime, arms_, b in (("sync", sync_arms, bs), ("async", async_arm_list, ba)):
            jobs.append(
                {
                    "id": f"baselines/{regime}/learner{ls:g}",
                    "kind": "compare",
                    "profile": P["fig5"],
                    "arms": arms_,
                    "seeds": b["seeds"],
                    "seed0": s0,
                    "batches": b["batches"],
                    "warmup": b.get("warmup", 0),
                    "learner_step_s": ls,
                    "ratios": ratios_for(arms_),
                }
            )

    ag = cfg["agentic"]
    for name in ("multiturn_mixture", "multiturn_trace"):
        jobs.append(
            {
                "id": f"agentic/{name}/paper",
                "kind": "compare",
                "profile": P[name],
                "arms": paper_arms(),
                "seeds": ag["seeds"],
                "seed0": s0,
                "batches": ag["paper_batches"],
            }
        )
        a = ag["slots"]
        arms = [
            dict(x, name=x["name"] + "-sync")
            for x in paper_arms(batch=a["batch"], group=a["group"], slots=a["slots"])
        ]
        arms += [
            dict(x, name=x["name"] + "-async")
            for x in async_arms(a["batch"], a["group"], a["slots"], a["staleness"])
        ]
        jobs.append(
            {
                "id": f"agentic/{name}/slots",
                "kind": "compare",
                "profile": P[name],
                "arms": arms,
                "seeds": a["seeds"],
                "seed0": s0,
                "batches": a["batches"],
                "warmup": a.get("warmup", 0),
                "learner_step_s": a["learner_step_s"],
                "ratios": [
                    ("grpo-sync", "spo-sync"),
                    ("grpo-async", "spo-async"),
                    ("grpo-sync", "spo-async"),
                ],
            }
        )

    tr = cfg["training"]
    B, G, C = tr["batch_size"], tr["group_size"], tr["async_slots"]
    t_arms = [
        {"name": "grpo", "algo": "grpo", "mode": "group", "group_size": G, "batch_size": B},
        {
            "name": "grpo-2x",
            "algo": "grpo",
            "mode": "group",
            "group_size": G,
            "batch_size": B,
            "overprovision": 2.0,
        },
        {"name": "spo", "algo": "spo", "mode": "stream", "batch_size": B},
        {"name": "spo-2x", "algo": "spo", "mode": "stream", "batch_size": B, "overprovision": 2.0},
        {
            "name": "spo-async(S=1)",
            "algo": "spo",
            "mode": "stream",
            "batch_size": B,
            "regime": "async",
            "max_staleness": 1,
            "max_concurrency": C,
        },
        {
            "name": "spo-async(S=4)",
            "algo": "spo",
            "mode": "stream",
            "batch_size": B,
            "regime": "async",
            "max_staleness": 4,
            "max_concurrency": C,
        },
    ]
    prof = dict(P["fig5"], prompt_slowness_sigma=tr["prompt_slowness_sigma"])
    for arm in t_arms:
        jobs.append(
            {
                "id": f"training/{arm['name']}",
                "kind": "training",
                "arm": arm,
                "profile": prof,
                **{
                    k: tr[k]
                    for k in (
                        "seeds",
                        "batches",
                        "n_prompts",
                        "learner_step_s",
                        "target",
                        "lr_prompt",
                        "lr_shared",
                        "n0",
                        "rewards",
                    )
                },
                "seed0": s0,
            }
        )
    crn = bool(cfg.get("common_random_numbers", False))
    for job in jobs:
        job["common_random_numbers"] = crn
    return jobs


def job_cost(job: dict[str, Any]) -> float:
    """Rough relative CPU cost of a job (episode-batches simulated), only used to order the queue."""
    if job["kind"] == "reproduction":
        return 4.0 * job["seeds"] * (2 if job.get("order_check", True) else 1)
    if job["kind"] == "training":
        arm = job["arm"]
        return 2.0 * job["seeds"] * job["batches"] * arm["batch_size"] / 24 * arm.get("overprovision", 1.0)
    arms = job.get("arms", [])
    width = max((a.get("batch_size", 24) * a.get("overprovision", 1.0) for a in arms), default=48) / 24
    multiturn = 3.0 if "turns" in job.get("profile", {}) else 1.0
    return job["seeds"] * job.get("batches", 1) * len(arms) * width * multiturn


def realtime_job(cfg: dict[str, Any]) -> dict[str, Any]:
    rt = cfg["realtime"]
    d = copy.deepcopy(cfg["profiles"]["fig5"])
    for part in ("body", "tail"):
        d["duration"][part]["low"] /= rt["scale"]
        d["duration"][part]["high"] /= rt["scale"]
    return {
        "id": "check/realtime",
        "kind": "realtime",
        "profile": d,
        "batches": rt["batches"],
        "seed": rt["seed"],
    }


def run_all(
    cfg: dict[str, Any], workers: int, log: Any = print, only: list[str] | None = None
) -> dict[str, Any]:
    jobs = build_jobs(cfg)
    if only:
        jobs = [j for j in jobs if any(j["id"].startswith(p) for p in only)]
    results: dict[str, Any] = {}
    t0 = time.perf_counter()
    # Longest first, so the workers finish together.
    order = sorted(jobs, key=job_cost, reverse=True)
    if workers > 1:
        with mp.get_context("fork").Pool(workers) as pool:
            for jid, res in pool.imap_unordered(run_job, order):
                results[jid] = res
                log(f"  [{time.perf_counter() - t0:6.1f} s] {jid}")
    else:
        for job in order:
            jid, res = run_job(job)
            results[jid] = res
            log(f"  [{time.perf_counter() - t0:6.1f} s] {jid}")
    if only and not any("check/realtime".startswith(p) for p in only):
        return results
    # Alone at the end: real sleeping must not compete with the simulation workers for the CPU.
    jid, res = run_job(realtime_job(cfg))
    results[jid] = res
    log(f"  [{time.perf_counter() - t0:6.1f} s] {jid}")
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=HERE / "config.yaml")
    ap.add_argument("--quick", action="store_true", help="seconds-long smoke run (tiny seeds and sweeps)")
    ap.add_argument(
        "--out", type=Path, default=None, help="output folder (default: next to the config; --quick: quick/)"
    )
    ap.add_argument("--workers", type=int, default=None, help="processes (default: config's `workers`)")
    ap.add_argument(
        "--only",
        default=None,
        help="comma-separated job id prefixes (e.g. reproduction/): rerun those jobs only and merge them "
        "into the output folder's existing results.json",
    )
    args = ap.parse_args(argv)
    raw = yaml.safe_load(args.config.read_text())
    cfg = _resolve_paths(raw, args.config.resolve().parent)
    if args.quick:
        cfg = quick_config(cfg)
    out = args.out or (args.config.resolve().parent / ("quick" if args.quick else ""))
    out.mkdir(parents=True, exist_ok=True)
    workers = args.workers or int(cfg.get("workers", 1))
    t0 = time.perf_counter()
    only = [p for p in args.only.split(",") if p] if args.only else None
    n_jobs = sum(1 for j in build_jobs(cfg) if not only or any(j["id"].startswith(p) for p in only))
    print(f"latency study: {n_jobs} jobs on {workers} process(es){' (quick)' if args.quick else ''}")
    results = run_all(cfg, workers, only=only)
    wall = time.perf_counter() - t0
    if only:
        import json

        prev = json.loads((out / "results.json").read_text())
        results = {**prev["results"], **results}
        print(
            f"reran the jobs under {', '.join(only)} in {wall:.1f} s and merged them into {out}/results.json"
        )
        wall = float(prev.get("wall_s", wall))

    from latency_report import write_outputs

    write_outputs(out, cfg, raw, results, wall=wall, quick=args.quick)
    print(f"wrote {out}/results.json, results.md and plots" + ("" if only else f" in {wall:.1f} s"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
