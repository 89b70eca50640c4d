"""Run the learning study: `.venv/bin/python experiments/learning/run.py [--quick] [--model M] [--only ARM/ENV]`.

One command trains every (arm, env, seed) in `config.yaml` that has not finished yet, runs the TRL
reference, and regenerates `results.json`, `results.md`, the PNG plots and the generated section of
`README.md`. Runs go in-process through `agentrl.trainer.Trainer`, one directory each under
`run_root/<model>/`; a run with a `summary.json` is skipped, and one that was killed resumes from its
last checkpoint, so the study can be stopped and restarted at any point (`--report-only` just rebuilds
the report from whatever has finished).
"""

from __future__ import annotations

import argparse
import copy
import fnmatch
import json
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


@dataclass(frozen=True)
class Job:
    """One training run: an arm on an environment with one seed and one model."""

    arm: str
    env: str
    seed: int
    model: str
    model_tag: str
    run_root: str
    name: str
    overrides: list[str] = field(default_factory=list)
    main: bool = True  # part of the main grid (False: the optional smollm2 block)

    @property
    def run_dir(self) -> Path:
        return Path(self.run_root) / self.name


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Nested dict update (the quick block only names what it changes)."""
    out = copy.deepcopy(base)
    for k, v in update.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_study_config(path: Path, quick: bool = False) -> dict[str, Any]:
    """The study config, with the `quick:` block applied for smoke runs.

    In quick mode `common` is replaced, not merged: the smoke budget must not inherit the full one.
    """
    cfg = yaml.safe_load(path.read_text())
    quick_block = cfg.pop("quick", {}) or {}
    if quick:
        common = quick_block.pop("common", None)
        cfg = deep_merge(cfg, quick_block)
        if common is not None:
            cfg["common"] = common
        cfg["quick"] = True
    else:
        cfg["quick"] = False
    return cfg


def model_tag(model: str) -> str:
    """A directory-safe name for a model: `tiny-<recipe key>`, `org--name`, or a local path's last part.

    The tiny model is named by its build recipe, so a changed recipe never resumes or skips runs made
    with the old weights.
    """
    from agentrl.models import TINY_MODELS

    if model in TINY_MODELS:
        return f"tiny-{TINY_MODELS[model].key()}"
    local = Path(model).exists() or model.startswith(("/", "."))
    name = (Path(model).name or "model") if local else model.replace("/", "--")
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def env_short(env_id: str) -> str:
    """`agentrl/Calculator-v0` -> `calculator`, used in run names and tables."""
    return env_id.split("/")[-1].split("-")[0].lower()


def _override_strings(d: dict[str, Any]) -> list[str]:
    # JSON is valid YAML, and agentrl.config parses override values as YAML.
    return [f"{k}={json.dumps(v)}" for k, v in d.items()]


def build_jobs(
    cfg: dict[str, Any],
    *,
    model: str | None = None,
    device: str | None = None,
    smollm2: bool = False,
) -> list[Job]:
    """Every run of the study (main grid, plus the smollm2 block when asked), in a fixed order.

    With the default `tiny`, an env listed in `env_models` trains that embedded model instead (`tiny`
    is warm-started for Calculator-v0 only); any other model (`--model`) runs on every env.
    """
    main_model = str(model or cfg["model"])
    dev = str(device or cfg.get("device", "cpu"))
    env_models = (cfg.get("env_models") or {}) if main_model == "tiny" else {}
    blocks: list[tuple[str, list[str], list[str], list[int], dict[str, Any]]] = [
        (main_model, list(cfg["arms"]), list(cfg["envs"]), list(cfg["seeds"]), {})
    ]
    if smollm2 and cfg.get("smollm2"):
        s = cfg["smollm2"]
        blocks.append(
            (s["model"], list(s["arms"]), list(s["envs"]), list(s["seeds"]), s.get("overrides", {}))
        )
    jobs: list[Job] = []
    for block, (block_model, arms, envs, seeds, extra) in enumerate(blocks):
        # seed-major within an env: a study stopped part-way has every arm at the same seeds
        for env in envs:
            mdl = str(env_models.get(env, block_model)) if block == 0 else block_model
            tag = model_tag(mdl)
            root = str(Path(cfg["run_root"]) / tag)
            for seed in seeds:
                for arm in arms:
                    name = f"{env_short(env)}-{arm}-s{seed}"
                    ov: dict[str, Any] = dict(cfg.get("common", {}))
                    ov.update((cfg.get("env_overrides") or {}).get(env, {}))
                    ov.update(extra)
                    ov.update(cfg["arms"][arm])
                    ov.update(
                        {
                            "name": name,
                            "run_root": root,
                            "seed": int(seed),
                            "env.id": env,
                            "model.name": mdl,
                            "model.device": dev,
                        }
                    )
                    jobs.append(
                        Job(arm, env, int(seed), mdl, tag, root, name, _override_strings(ov), block == 0)
                    )
    return jobs


def resolve(job: Job) -> Any:
    """The job's TrainConfig (validates every override before any model is loaded)."""
    from agentrl.config import load_config
    from agentrl.train_config import TrainConfig

    return load_config(TrainConfig, None, job.overrides)


def check_equal_budget(jobs: list[Job]) -> dict[str, int]:
    """Training samples per run (steps × batch_size) must be equal across arms for a model and env."""
    budgets: dict[str, dict[str, int]] = {}
    for j in jobs:
        c = resolve(j)
        budgets.setdefault(f"{j.model_tag}/{env_short(j.env)}", {})[j.arm] = c.steps * c.rollout.batch_size
    out: dict[str, int] = {}
    for key, b in budgets.items():
        values = set(b.values())
        if len(values) != 1:
            raise SystemExit(f"learning study: unequal sample budgets for {key}: {b}")
        out[key] = values.pop()
    return out


def select(jobs: list[Job], only: list[str] | None) -> list[Job]:
    """`--only ARM/ENV` filters; either side may be a glob, ENV may be the full id or its short name."""
    if not only:
        return jobs
    keep: list[Job] = []
    for j in jobs:
        for pat in only:
            arm_pat, _, env_pat = pat.partition("/") if "/" in pat else (pat, "", "*")
            env_pat = env_pat or "*"
            env_ok = fnmatch.fnmatch(j.env, env_pat) or fnmatch.fnmatch(env_short(j.env), env_pat.lower())
            env_ok = env_ok or fnmatch.fnmatch(j.env, f"*/{env_pat}")
            if fnmatch.fnmatch(j.arm, arm_pat) and env_ok:
                keep.append(j)
                break
    return keep


def run_job(job: Job, log: Any = print) -> str:
    """Train one run unless it has finished; resume it if it was killed after a checkpoint.

    A run killed before its first checkpoint has nothing to resume, and its partial metrics.jsonl
    would be appended to; its directory is removed and the run starts again.
    """
    from agentrl.checkpoint import latest_checkpoint
    from agentrl.trainer import Trainer

    run_dir = job.run_dir
    if (run_dir / "summary.json").is_file():
        return "done"
    ckpt = latest_checkpoint(run_dir / "checkpoints") if (run_dir / "checkpoints").is_dir() else None
    if ckpt is None and run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "job.json").write_text(json.dumps(asdict(job), indent=2))
    t0 = time.perf_counter()
    result = Trainer(resolve(job), resume=ckpt is not None).run()
    after = result.eval_after.success if result.eval_after else float("nan")
    log(f"    {job.name}: {result.steps} steps, avg@k after {after:.3f}, {time.perf_counter() - t0:.0f} s")
    return "resumed" if ckpt is not None else "trained"


def run_trl(cfg: dict[str, Any], args: argparse.Namespace, out_dir: Path, log: Any = print) -> None:
    """One TRL reference run per seed, each in its own process (TRL/accelerate state stays out of ours)."""
    t = cfg.get("trl") or {}
    if not t.get("enabled", False):
        return
    for seed in t.get("seeds", [0]):
        out = out_dir / f"seed{seed}.json"
        if out.is_file() and json.loads(out.read_text()).get("status") == "ok":
            continue
        cmd = [sys.executable, str(HERE / "trl_reference.py"), "--config", str(args.config)]
        cmd += ["--seed", str(seed), "--out", str(out)]
        if args.quick:
            cmd.append("--quick")
        if args.model:
            cmd += ["--model", args.model]
        if args.device:
            cmd += ["--device", args.device]
        log(f"  TRL reference, seed {seed}")
        rc = subprocess.run(cmd, cwd=REPO).returncode
        if rc != 0:
            log(f"    TRL reference failed (exit {rc}); see {out}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=HERE / "config.yaml")
    ap.add_argument(
        "--quick", action="store_true", help="smoke budget (config's quick: block), out to quick/"
    )
    ap.add_argument("--model", default=None, help="any model name or path (default: config's `model`)")
    ap.add_argument("--device", default=None, help="auto | cpu | cuda | cuda:N (default: config's)")
    ap.add_argument("--only", action="append", default=None, metavar="ARM/ENV", help="globs; repeatable")
    ap.add_argument("--smollm2", action="store_true", help="also train the config's smollm2-135m block")
    ap.add_argument("--skip-trl", action="store_true", help="do not run the TRL reference")
    ap.add_argument("--trl-only", action="store_true", help="run only the missing TRL seeds, then the report")
    ap.add_argument("--report-only", action="store_true", help="rebuild the report from finished runs")
    ap.add_argument("--out", type=Path, default=None, help="report folder (default: here; --quick: quick/)")
    args = ap.parse_args(argv)

    cfg = load_study_config(args.config, args.quick)
    if args.model:
        cfg["model"] = args.model
    if args.device:
        cfg["device"] = args.device
    cfg["run_root"] = (
        str((REPO / cfg["run_root"]).resolve())
        if not Path(cfg["run_root"]).is_absolute()
        else cfg["run_root"]
    )
    out = args.out or (HERE / "quick" if args.quick else HERE)
    out.mkdir(parents=True, exist_ok=True)
    all_jobs = build_jobs(cfg, smollm2=args.smollm2)
    budgets = check_equal_budget(all_jobs)
    jobs = [] if args.trl_only else select(all_jobs, args.only)
    trl_dir = Path(cfg["run_root"]) / model_tag(cfg["model"]) / "trl"

    if not args.report_only:
        print(
            f"learning study: {len(jobs)} runs, budget {budgets} samples per run{' (quick)' if args.quick else ''}"
        )
        t0 = time.perf_counter()
        for i, job in enumerate(jobs, 1):
            print(f"  [{time.perf_counter() - t0:7.0f} s] {i}/{len(jobs)} {job.model_tag}/{job.name}")
            status = run_job(job)
            if status == "done":
                print("    already finished, skipped")
        if args.trl_only or (not args.skip_trl and not args.only):
            trl_dir.mkdir(parents=True, exist_ok=True)
            run_trl(cfg, args, trl_dir)

    sys.path.insert(0, str(HERE))
    from report import write_report

    write_report(cfg, all_jobs, out, trl_dir=trl_dir, update_readme_file=not args.quick and args.out is None)
    print(f"wrote {out}/results.json, results.md and plots")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
