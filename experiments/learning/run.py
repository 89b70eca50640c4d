"""Run the learning study: `.venv/bin/python experiments/learning/run.py [--round 2] [--quick] [--only ARM/ENV]`.

One command trains every (arm, env, seed) in `config.yaml` that has not finished yet, runs the TRL
reference, and regenerates `results.json`, `results.md`, the PNG plots and the generated section of
`README.md`. Runs go in-process through `agentrl.trainer.Trainer`, one directory each under
`run_root/<model>/`; a run with a `summary.json` is skipped, and one that was killed resumes from its
last checkpoint, so the study can be stopped and restarted at any point (`--report-only` just rebuilds
the report from whatever has finished). `--round 2` runs the second round (`config.yaml`'s `round2:`
block: its own run root, report folder and README section, so the first round's results stay as they are),
and after its grid a curves phase: the run's own held-out evaluation of each finished run's intermediate
checkpoints (`curves:` block), cached per (run, step) in a JSON file, so the phase resumes where it
stopped, `--report-only` never re-evaluates, and `--workers N` processes share it (`--curves-only`: only
this phase, then the report).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import fcntl
import fnmatch
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
from report import checkpoint_samples, curve_steps  # noqa: E402  (the study's own module)


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
    preset: str | None = None  # a settings file under agentrl/presets/ applied before the overrides

    @property
    def run_dir(self) -> Path:
        return Path(self.run_root) / self.name


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Nested dict update (the quick block only names what it changes)."""
    out = copy.deepcopy(base)
    for k, v in update.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_study_config(path: Path, quick: bool = False, round_: int = 1) -> dict[str, Any]:
    """The study config, with the `quick:` block applied for smoke runs.

    Round 2 takes the `round2:` block's top-level keys in place of the first round's (a shallow
    replacement: its `arms`, `common`, `seeds` ... never mix with round 1's); keys it does not name
    (`simulated_time`, `paper`) are shared. In quick mode `common` is replaced, not merged: the smoke
    budget must not inherit the full one.
    """
    cfg = yaml.safe_load(path.read_text())
    round2 = cfg.pop("round2", None)
    if round_ == 2:
        if not round2:
            raise SystemExit(f"learning study: {path} has no round2: block")
        cfg.pop("quick", None)
        cfg.pop("smollm2", None)
        cfg = {**cfg, **copy.deepcopy(round2)}
    elif round_ != 1:
        raise SystemExit(f"learning study: --round must be 1 or 2, got {round_}")
    cfg["round"] = round_
    quick_block = cfg.pop("quick", {}) or {}
    if quick and not quick_block:
        raise SystemExit(f"learning study: round {round_} of {path} has no quick: block")
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
                    arm_ov = dict(cfg["arms"][arm])
                    preset = arm_ov.pop("preset", None)
                    ov.update(arm_ov)
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
                    if block == 0 and cfg.get("budget_samples"):
                        ov["steps"] = steps_for_budget(int(cfg["budget_samples"]), preset, ov)
                    jobs.append(
                        Job(
                            arm,
                            env,
                            int(seed),
                            mdl,
                            tag,
                            root,
                            name,
                            _override_strings(ov),
                            block == 0,
                            preset,
                        )
                    )
    return jobs


def preset_path(name: str | None) -> Path | None:
    """A preset shipped with agentrl (`spo-recipe`) or a settings file path."""
    if name is None:
        return None
    from agentrl.cli.train import _config_path

    p = _config_path(name)
    if not p.is_file():
        raise SystemExit(f"learning study: preset {name!r} is neither a shipped preset nor a file")
    return p


def offline_samples(c: Any) -> int:
    """Samples the algorithm spends before step 1 (SPO's offline tracker pass): prompts × offline_n0.

    The pass covers the first `algo.offline_prompts` train prompts, or all of them, and never more than
    `env.train_prompts` (training sees only those).
    """
    a = c.algo
    if a.name != "spo" or not a.offline_init:
        return 0
    limits = [x for x in (a.offline_prompts, c.env.train_prompts) if x]
    if limits:
        n = min(limits)
    else:
        import gymnasium

        import agentrl.envs  # noqa: F401  (registers the envs)

        env = gymnasium.make(c.env.id, **c.env.kwargs).unwrapped
        n = len(env.task_ids("train"))
        env.close()
    return int(n) * int(a.offline_n0)


def steps_for_budget(budget: int, preset: str | None, ov: dict[str, Any]) -> int:
    """Training steps that make steps × batch_size + offline samples equal `budget`; else an error."""
    from agentrl.config import load_config
    from agentrl.train_config import TrainConfig

    c = load_config(TrainConfig, preset_path(preset), _override_strings({**ov, "steps": 1}))
    left = budget - offline_samples(c)
    b = c.rollout.batch_size
    if left < b or left % b:
        raise SystemExit(
            f"learning study: budget_samples {budget} minus {offline_samples(c)} offline samples is not a "
            f"positive multiple of rollout.batch_size {b} (arm {ov.get('algo.name')}, preset {preset})"
        )
    return left // b


def resolve(job: Job) -> Any:
    """The job's TrainConfig (validates every override before any model is loaded)."""
    from agentrl.config import load_config
    from agentrl.train_config import TrainConfig

    return load_config(TrainConfig, preset_path(job.preset), job.overrides)


def job_budget(job: Job, count_offline: bool) -> int:
    """A run's sample budget: steps × batch_size, plus the offline pass's samples when they count."""
    c = resolve(job)
    return c.steps * c.rollout.batch_size + (offline_samples(c) if count_offline else 0)


def check_equal_budget(jobs: list[Job], count_offline: bool = False) -> dict[str, int]:
    """Samples per run must be equal across arms for a model and env.

    Round 1 counts training samples (steps × batch_size; SPO's offline pass is listed beside them);
    round 2 (`count_offline`) counts every sampled trajectory, the offline pass included, and gives the
    SPO arms fewer steps to match. Every trajectory of a batch counts, so GRPO's samples in degenerate
    groups (zero advantage) are spent like any other.
    """
    budgets: dict[str, dict[str, int]] = {}
    for j in jobs:
        budgets.setdefault(f"{j.model_tag}/{env_short(j.env)}", {})[j.arm] = job_budget(j, count_offline)
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
    would be appended to; its directory is removed and the run starts again. A lock file beside the
    run directory lets several run.py processes share one grid: a run another process is training is
    skipped ("busy").
    """

    run_dir = job.run_dir
    if (run_dir / "summary.json").is_file():
        return "done"
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = open(run_dir.parent / f".{job.name}.lock", "w")  # noqa: SIM115  (held for the whole run)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        return "busy"  # another run.py process is training it
    try:
        if (run_dir / "summary.json").is_file():
            return "done"
        return _train(job, run_dir, log)
    finally:
        fcntl.flock(lock, fcntl.LOCK_UN)
        lock.close()


def _train(job: Job, run_dir: Path, log: Any) -> str:
    from agentrl.checkpoint import latest_checkpoint
    from agentrl.trainer import Trainer

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


# ---- held-out curves ---------------------------------------------------------------------------------


def weights_fingerprint(ckpt: Path) -> str:
    """A short hash of a checkpoint's weight files: a cached evaluation of other weights is redone."""
    h = hashlib.sha256()
    for f in sorted(ckpt.glob("*.safetensors")):
        h.update(f.name.encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


class CurveCache:
    """Held-out evaluations of intermediate checkpoints, one entry per (run, step), in one JSON file.

    `{"runs": {"<model tag>/<run name>": {"<step>": entry}}}`. Several processes share it: each entry is
    claimed with a lock file (`claim`), and every write re-reads the file under a second lock, merges its
    entry and replaces the file atomically, so a killed process loses at most the evaluation in hand.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.lock_dir = self.path.parent / f".{self.path.stem}-locks"

    def load(self) -> dict[str, dict[str, Any]]:
        if not self.path.is_file():
            return {}
        try:
            data = json.loads(self.path.read_text())
        except json.JSONDecodeError as e:
            raise SystemExit(f"learning study: {self.path}: not valid JSON ({e})") from None
        return dict(data.get("runs") or {})

    def get(self, key: str, step: int) -> dict[str, Any] | None:
        return self.load().get(key, {}).get(str(step))

    def put(self, key: str, step: int, entry: dict[str, Any]) -> None:
        self.lock_dir.mkdir(parents=True, exist_ok=True)
        with open(self.lock_dir / "cache.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            runs = self.load()
            per_run = runs.setdefault(key, {})
            per_run[str(step)] = entry
            runs[key] = dict(sorted(per_run.items(), key=lambda kv: int(kv[0])))
            tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
            tmp.write_text(self.dumps(runs))
            os.replace(tmp, self.path)

    @staticmethod
    def dumps(runs: dict[str, dict[str, Any]]) -> str:
        """JSON with one line per (run, step) entry, runs and steps in order (short, stable diffs)."""
        blocks = []
        for key, per_run in sorted(runs.items()):
            lines = [
                f"   {json.dumps(str(s))}: {json.dumps(e, sort_keys=True)}"
                for s, e in sorted(per_run.items(), key=lambda kv: int(kv[0]))
            ]
            blocks.append(f"  {json.dumps(key)}: {{\n" + ",\n".join(lines) + "\n  }")
        return '{\n "runs": {\n' + ",\n".join(blocks) + "\n }\n}\n"

    @contextlib.contextmanager
    def claim(self, key: str, step: int) -> Iterator[bool]:
        """True while this process holds (run, step); False if another process is evaluating it."""
        self.lock_dir.mkdir(parents=True, exist_ok=True)
        name = re.sub(r"[^A-Za-z0-9._-]+", "--", f"{key}-{step}")
        with open(self.lock_dir / f"{name}.lock", "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


def cache_key(job: Job) -> str:
    return f"{job.model_tag}/{job.name}"


def curve_tasks(
    jobs: Sequence[Job], fractions: Sequence[float], every: int = 0
) -> list[tuple[Job, int, Path]]:
    """(job, step, checkpoint) for every intermediate point of every finished run: first the table's
    points (`fractions` of each run's steps) of all runs, then the plot's denser ones (`every` steps)."""
    from agentrl.config import load_config
    from agentrl.train_config import TrainConfig

    first: list[tuple[Job, int, Path]] = []
    then: list[tuple[Job, int, Path]] = []
    for job in jobs:
        if not (job.run_dir / "summary.json").is_file():
            continue
        c = load_config(TrainConfig, job.run_dir / "config.yaml")
        table = set(curve_steps(c.steps, fractions, c.checkpoint_every))
        for step in curve_steps(c.steps, fractions, c.checkpoint_every, every):
            ckpt = job.run_dir / "checkpoints" / f"step_{step:06d}"
            if not (ckpt / "state.pt").is_file():
                raise SystemExit(f"learning study: {job.name}: checkpoint {ckpt.name} is missing (pruned?)")
            (first if step in table else then).append((job, step, ckpt))
    return first + then


def evaluate_point(job: Job, step: int, ckpt: Path) -> dict[str, Any]:
    """One cache entry: the run's own held-out evaluation (`Trainer.evaluate_checkpoint`) at a checkpoint."""
    from agentrl.config import load_config
    from agentrl.train_config import TrainConfig
    from agentrl.trainer import Trainer

    # The run's own saved config: the settings its before/after evaluations used.
    c = load_config(TrainConfig, job.run_dir / "config.yaml")
    c = dataclasses.replace(c, run_root=str(job.run_dir.parent), progress=False)
    result = Trainer(c).evaluate_checkpoint(ckpt)
    return {
        "step": step,
        "samples": checkpoint_samples(step, c.rollout.batch_size, offline_samples(c)),
        "checkpoint": ckpt.name,
        "weights": weights_fingerprint(ckpt),
        "eval": result.as_dict(),
    }


def run_curves(
    jobs: Sequence[Job],
    fractions: Sequence[float],
    cache: CurveCache,
    every: int = 0,
    log: Any = print,
    evaluate: Any = None,
) -> dict[str, int]:
    """Evaluate every intermediate point not in the cache yet (or cached for other weights).

    `evaluate(job, step, checkpoint) -> entry` defaults to `evaluate_point` (tests pass a cheap one).
    """
    evaluate = evaluate or evaluate_point
    tasks = curve_tasks(jobs, fractions, every)
    counts = {"points": len(tasks), "cached": 0, "evaluated": 0, "busy": 0}
    t0 = time.perf_counter()
    for i, (job, step, ckpt) in enumerate(tasks, 1):
        key = cache_key(job)
        have = cache.get(key, step)
        if have is not None and have.get("weights") == weights_fingerprint(ckpt):
            counts["cached"] += 1
            continue
        with cache.claim(key, step) as mine:
            if not mine:
                counts["busy"] += 1
                continue
            have = cache.get(key, step)  # another process may have finished it meanwhile
            if have is not None and have.get("weights") == weights_fingerprint(ckpt):
                counts["cached"] += 1
                continue
            t1 = time.perf_counter()
            entry = evaluate(job, step, ckpt)
            entry["seconds"] = round(time.perf_counter() - t1, 1)
            cache.put(key, step, entry)
            counts["evaluated"] += 1
            log(
                f"  [{time.perf_counter() - t0:7.0f} s] curves {i}/{len(tasks)} {job.name} step {step} "
                f"({entry['samples']} samples): avg@k {entry['eval']['avg_at_k']:.3f}, {entry['seconds']:.0f} s"
            )
    return counts


def curves_workers(args: argparse.Namespace, workers: int) -> None:
    """Run the curves phase in `workers` processes (they share the cache through its locks)."""
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--round",
        str(args.round),
        "--config",
        str(args.config),
    ]
    cmd += ["--curves-worker"]
    for pat in args.only or []:
        cmd += ["--only", pat]
    if args.seeds:
        cmd += ["--seeds", args.seeds]
    if args.model:
        cmd += ["--model", args.model]
    procs = [subprocess.Popen(cmd, cwd=REPO) for _ in range(workers)]
    rcs = [p.wait() for p in procs]
    if any(rcs):
        print(f"learning study: curves workers exited with {rcs}")


def run_trl(cfg: dict[str, Any], args: argparse.Namespace, out_dir: Path, log: Any = print) -> None:
    """One TRL reference run per seed, each in its own process (TRL/accelerate state stays out of ours)."""
    t = cfg.get("trl") or {}
    if not t.get("enabled", False):
        return
    for seed in t.get("seeds", [0]):
        out = out_dir / f"seed{seed}.json"
        if out.is_file() and json.loads(out.read_text()).get("status") == "ok":
            continue
        cmd = [sys.executable, str(HERE / t.get("script", "trl_reference.py")), "--config", str(args.config)]
        cmd += ["--seed", str(seed), "--out", str(out), "--round", str(cfg.get("round", 1))]
        if args.quick:
            cmd.append("--quick")
        if args.model:
            cmd += ["--model", args.model]
        if args.device:
            cmd += ["--device", args.device]
        log(f"  TRL reference, seed {seed}")
        rc = subprocess.run(cmd, cwd=REPO, timeout=float(t.get("timeout_s", 3600))).returncode
        if rc != 0:
            log(f"    TRL reference failed (exit {rc}); see {out}")


def guard_report(out: Path, jobs: Sequence[Job], run_root: str) -> None:
    """Refuse to overwrite a report built from more finished runs than are on disk now (for example
    `--report-only` on a clone without the runs): the committed results would be lost."""
    previous = out / "results.json"
    if not previous.is_file():
        return
    try:
        had = sum(1 for r in json.loads(previous.read_text()).get("runs", []) if r.get("finished"))
    except (ValueError, AttributeError):
        return
    have = sum(1 for j in jobs if (j.run_dir / "summary.json").is_file())
    if have < had:
        raise SystemExit(
            f"learning study: {previous} was built from {had} finished runs, but only {have} are under "
            f"{run_root}; not overwriting it (point run_root at the runs, or move the file away)"
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=HERE / "config.yaml")
    ap.add_argument("--round", type=int, default=1, choices=(1, 2), help="study round (2: config's round2:)")
    ap.add_argument(
        "--quick", action="store_true", help="smoke budget (config's quick: block), out to quick/"
    )
    ap.add_argument("--model", default=None, help="any model name or path (default: config's `model`)")
    ap.add_argument("--device", default=None, help="auto | cpu | cuda | cuda:N (default: config's)")
    ap.add_argument("--only", action="append", default=None, metavar="ARM/ENV", help="globs; repeatable")
    ap.add_argument("--seeds", default=None, help="only these seeds, comma-separated (e.g. 3,4)")
    ap.add_argument("--smollm2", action="store_true", help="also train the config's smollm2-135m block")
    ap.add_argument("--skip-trl", action="store_true", help="do not run the TRL reference")
    ap.add_argument("--trl-only", action="store_true", help="run only the missing TRL seeds, then the report")
    ap.add_argument("--report-only", action="store_true", help="rebuild the report from finished runs")
    ap.add_argument(
        "--curves-only",
        action="store_true",
        help="round 2: only evaluate the finished runs' intermediate checkpoints (cached), then the report",
    )
    ap.add_argument("--skip-curves", action="store_true", help="round 2: do not evaluate the curve points")
    ap.add_argument(
        "--workers", type=int, default=1, help="processes for the curves phase (they share its cache)"
    )
    ap.add_argument("--curves-worker", action="store_true", help=argparse.SUPPRESS)  # one --workers process
    ap.add_argument("--out", type=Path, default=None, help="report folder (default: here; --quick: quick/)")
    args = ap.parse_args(argv)

    cfg = load_study_config(args.config, args.quick, args.round)
    if args.model:
        cfg["model"] = args.model
    if args.device:
        cfg["device"] = args.device
    cfg["run_root"] = (
        os.path.normpath(REPO / cfg["run_root"])  # symlinks kept: results name paths inside the repository
        if not Path(cfg["run_root"]).is_absolute()
        else cfg["run_root"]
    )
    out = args.out or (HERE / "quick" if args.quick else HERE / cfg.get("out", "."))
    out.mkdir(parents=True, exist_ok=True)
    all_jobs = build_jobs(cfg, smollm2=args.smollm2)
    budgets = check_equal_budget(all_jobs, count_offline=args.round == 2)
    jobs = [] if args.trl_only else select(all_jobs, args.only)
    if args.seeds:
        keep = {int(x) for x in args.seeds.split(",")}
        jobs = [j for j in jobs if j.seed in keep]
    trl_dir = Path(cfg["run_root"]) / model_tag(cfg["model"]) / "trl"
    curves_cfg = cfg.get("curves") or {}
    cache = CurveCache(HERE / curves_cfg["cache"]) if curves_cfg.get("cache") else None
    if (args.curves_only or args.curves_worker) and cache is None:
        raise SystemExit(
            f"learning study: round {args.round} of {args.config} has no curves: block with a cache"
        )
    if args.workers < 1:
        raise SystemExit("learning study: --workers must be >= 1")
    curve_jobs = select(all_jobs, args.only)
    if args.seeds:
        curve_jobs = [j for j in curve_jobs if j.seed in {int(x) for x in args.seeds.split(",")}]
    fractions = [float(f) for f in curves_cfg.get("step_fractions", [])]
    every = int(curves_cfg.get("every", 0) or 0)
    if args.curves_worker:
        counts = run_curves(curve_jobs, fractions, cache, every)  # type: ignore[arg-type]
        print(f"learning study: curves worker done: {counts}")
        return 0

    if args.curves_only:
        jobs = []
    if not args.report_only:
        print(
            f"learning study: {len(jobs)} runs, budget {budgets} samples per run{' (quick)' if args.quick else ''}"
        )
        t0 = time.perf_counter()
        for i, job in enumerate(jobs, 1):
            print(f"  [{time.perf_counter() - t0:7.0f} s] {i}/{len(jobs)} {job.model_tag}/{job.name}")
            status = run_job(job)
            if status in ("done", "busy"):
                print(
                    f"    {'already finished' if status == 'done' else 'being trained by another process'}, skipped"
                )
        if not args.curves_only and (args.trl_only or (not args.skip_trl and not args.only)):
            trl_dir.mkdir(parents=True, exist_ok=True)
            run_trl(cfg, args, trl_dir)
        if cache is not None and not args.trl_only and not args.skip_curves:
            print(
                f"learning study: held-out curves at step fractions {fractions}"
                + (f" and every {every} steps" if every else "")
                + f", cache {cache.path.name}"
            )
            t0 = time.perf_counter()
            if args.workers > 1:
                curves_workers(args, args.workers)
            else:
                print(f"  {run_curves(curve_jobs, fractions, cache, every)}")
            print(f"  curves phase: {time.perf_counter() - t0:.0f} s")

    guard_report(out, all_jobs, cfg["run_root"])
    sys.path.insert(0, str(HERE))
    from report import write_report

    write_report(
        cfg,
        all_jobs,
        out,
        trl_dir=trl_dir,
        update_readme_file=not args.quick and args.out is None,
        readme=HERE / "README.md",
        curves=cache.load() if cache is not None else None,
    )
    print(f"wrote {out}/results.json, results.md and plots")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
