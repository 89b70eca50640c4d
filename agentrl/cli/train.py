"""`agentrl train`: flags and overrides → a checked `TrainConfig` → `Trainer`, and the summary line.

Everything a user can get wrong is checked here, before a model loads or a run folder is made: each
problem ends the command with one line that names the field or file, and exit status 2.

`--resume` continues a run from its own saved `config.yaml`: only the overrides given on the command
line change it, and a different env, model or algorithm is refused.

`--nproc-per-node N` (with `--nnodes M --node-rank R --rdzv-endpoint HOST:PORT` across machines)
checks the config for that world size, then re-launches the command under torchrun
(`python -m torch.distributed.run ... -m agentrl.cli train ...`); see `agentrl.distributed`.
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

from agentrl.config import ConfigError, from_dict, load_config, load_file, to_dict
from agentrl.train_config import ModelConfig, TrainConfig, default_run_name

PRESETS_DIR = Path(__file__).resolve().parent.parent / "presets"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        help="a YAML or TOML file of settings, or a preset shipped with agentrl: "
        + ", ".join(sorted(f.stem for f in PRESETS_DIR.glob("*.yaml"))),
    )
    p.add_argument("--algo", help="shorthand for algo.name= (spo, grpo, rloo, drgrpo, no_baseline, ...)")
    p.add_argument("--env", help="a registered gymnasium id, or module:Id to import module first")
    p.add_argument("--model", help="tiny | smollm2-135m | a model directory | an HF id (model.name=)")
    p.add_argument("--backend", choices=["hf", "openai", "vllm"], help="shorthand for model.backend=")
    p.add_argument("--regime", choices=["sync", "async"], help="shorthand for rollout.regime=")
    p.add_argument("--resume", action="store_true", help="continue run name=NAME from its latest checkpoint")
    g = p.add_argument_group("several processes (re-launches under torchrun)")
    g.add_argument("--nproc-per-node", type=int, metavar="N", help="learner ranks on this machine (GPUs)")
    g.add_argument("--nnodes", type=int, default=1, metavar="M", help="machines in the run (default 1)")
    g.add_argument("--node-rank", type=int, default=0, metavar="R", help="this machine's rank, 0..M-1")
    g.add_argument(
        "--rdzv-endpoint", metavar="HOST:PORT", help="node 0's address and a free port (several machines)"
    )
    p.add_argument("overrides", nargs="*", metavar="key.sub=value", help="dotted config overrides")


def _config_path(name: str) -> Path:
    preset = PRESETS_DIR / f"{name}.yaml"
    if not Path(name).exists() and preset.is_file():
        return preset
    return Path(name)


def _overrides(args: argparse.Namespace) -> list[str]:
    overrides = list(args.overrides)
    for flag, key in (
        ("algo", "algo.name"),
        ("env", "env.id"),
        ("model", "model.name"),
        ("backend", "model.backend"),
        ("regime", "rollout.regime"),
    ):
        value = getattr(args, flag, None)
        if value is not None:
            overrides.append(f"{key}={value}")
    return overrides


def _world_size(args: argparse.Namespace) -> int:
    """The ranks this command will run with: torchrun's WORLD_SIZE, or the launcher flags'."""
    from agentrl.distributed import launched_world_size

    if _under_torchrun() or not getattr(args, "nproc_per_node", None):
        return launched_world_size()
    return int(args.nproc_per_node) * int(args.nnodes)


def _under_torchrun() -> bool:
    return "TORCHELASTIC_RUN_ID" in os.environ or "LOCAL_RANK" in os.environ


def _check_launch(args: argparse.Namespace) -> None:
    n, m, r = getattr(args, "nproc_per_node", None), getattr(args, "nnodes", 1), getattr(args, "node_rank", 0)
    if n is not None and n < 1:
        raise ConfigError(f"--nproc-per-node: must be >= 1, got {n}")
    if m < 1:
        raise ConfigError(f"--nnodes: must be >= 1, got {m}")
    if not 0 <= r < m:
        raise ConfigError(f"--node-rank: must be in 0..{m - 1}, got {r}")
    if m > 1 and not getattr(args, "rdzv_endpoint", None):
        raise ConfigError("--rdzv-endpoint: several machines need node 0's HOST:PORT")
    if m > 1 and n is None:
        raise ConfigError("--nnodes: give --nproc-per-node too (ranks per machine)")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The run's config from flags, file and overrides; raises ConfigError (one line) on any problem."""
    from agentrl.distributed import check_world

    _check_launch(args)
    overrides = _overrides(args)
    path = _config_path(args.config) if args.config else None
    if getattr(args, "resume", False):
        cfg = _resumed_config(path, overrides)
    else:
        cfg = load_config(TrainConfig, path, overrides)
        if not cfg.name:
            cfg = replace(cfg, name=_fresh_name(cfg))
    check(cfg)
    check_world(cfg, _world_size(args))
    return cfg


def _fresh_name(cfg: TrainConfig) -> str:
    """`<env>-<algo>-<timestamp>`, with a counter if that folder exists: a new run never reuses one."""
    base = default_run_name(cfg.env.id, cfg.algo.name, time.strftime("%Y%m%d-%H%M%S"))
    name, i = base, 1
    while (Path(cfg.run_root) / name).exists():
        i += 1
        name = f"{base}-{i}"
    return name


def _resumed_config(path: Path | None, overrides: list[str]) -> TrainConfig:
    """The run's saved config, then the file and overrides given now; identity fields may not change."""
    given = load_config(TrainConfig, path, overrides)  # validates the overrides' keys and values
    if not given.name:
        raise ConfigError("name: --resume needs the run's name (name=NAME)")
    saved_path = Path(given.run_root) / given.name / "config.yaml"
    if not saved_path.is_file():
        raise ConfigError(f"{saved_path}: no such run to resume (start it without --resume)")
    saved = from_dict(TrainConfig, load_file(saved_path))
    cfg = load_config(TrainConfig, path, overrides, base=to_dict(saved))
    for key in ("env.id", "model.name", "model.lora_rank", "algo.name"):
        section, field = key.split(".")
        old, new = getattr(getattr(saved, section), field), getattr(getattr(cfg, section), field)
        if old != new:
            raise ConfigError(
                f"{key}: run {given.name} was trained with {old!r}; --resume cannot change it to {new!r} "
                "(start a new run instead)"
            )
    return cfg


def check(cfg: TrainConfig) -> None:
    """Cross-field and outside-world checks that need no model: algorithm, env, model, backend."""
    from agentrl.algorithms import get_algorithm

    try:
        algo = get_algorithm(cfg.algo.name)
    except ValueError as e:
        raise ConfigError(f"algo.name: {e}") from None
    if algo.mode == "group" and cfg.rollout.batch_size % cfg.algo.group_size:
        raise ConfigError(
            f"rollout.batch_size ({cfg.rollout.batch_size}) must be a multiple of algo.group_size "
            f"({cfg.algo.group_size}) for {cfg.algo.name}"
        )
    per_batch = math.ceil(cfg.rollout.batch_size / (cfg.algo.group_size if algo.mode == "group" else 1))
    per_round = math.ceil(per_batch * cfg.rollout.overprovision)
    if cfg.env.train_prompts is not None and cfg.env.train_prompts < per_round:
        raise ConfigError(
            f"env.train_prompts ({cfg.env.train_prompts}) is smaller than the distinct prompts one batch "
            f"draws ({per_round}); raise it or lower rollout.batch_size"
        )
    _check_env(cfg.env.id)
    _check_model(cfg.model.name)
    if cfg.env.backend == "ray":
        _check_ray(cfg.env.ray_address)
    if cfg.model.backend == "openai" and not cfg.model.endpoints:
        raise ConfigError(
            "model.endpoints: the openai backend needs at least one server URL (model.endpoints=[...])"
        )
    _check_lora(cfg.model)


def _check_lora(m: ModelConfig) -> None:
    """LoRA targets against the model's module names, from its config.json on the meta device (no
    weights read). An embedded model not built yet is checked at build, right after it loads."""
    if not m.lora_rank:
        return
    if m.backend == "vllm":
        raise ConfigError(
            "model.lora_rank: the in-process vllm backend does not load adapters; use backend hf or openai"
        )
    from agentrl.lora import check_targets_from_config
    from agentrl.models import EMBEDDED_MODELS, TINY_MODELS, cache_dir

    source: Path | str = m.name
    if m.name in EMBEDDED_MODELS:  # where `model_path` caches it (without building it here)
        key = f"tiny-{TINY_MODELS[m.name].key()}" if m.name in TINY_MODELS else m.name
        source = cache_dir() / "models" / key
        if not (source / "config.json").is_file():
            return
    try:
        check_targets_from_config(source, m.lora_target_modules)
    except ValueError as e:
        raise ConfigError(str(e).splitlines()[0]) from None


def _check_env(env_id: str) -> None:
    import gymnasium

    import agentrl.envs  # noqa: F401  (registers the bundled envs)

    try:
        if ":" in env_id:  # gymnasium's `module:Id` form: importing the module registers the env
            module, _, env_id = env_id.partition(":")
            importlib.import_module(module)
        gymnasium.spec(env_id)
    except ModuleNotFoundError as e:
        raise ConfigError(f"env.id: cannot import {e.name!r} for {env_id!r}") from None
    except gymnasium.error.Error as e:
        raise ConfigError(f"env.id: {str(e).splitlines()[0]}") from None


def _check_ray(address: str | None) -> None:
    """Ray is installed and, for a remote cluster, something answers at its address within 5 s."""
    import importlib.util

    from agentrl.rollout.ray_envs import check_ray_address

    if importlib.util.find_spec("ray") is None:
        raise ConfigError("env.backend: ray is not installed; pip install 'agentrl[ray]'")
    try:
        check_ray_address(address, timeout=5.0)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def _check_model(name: str) -> None:
    from agentrl.models import EMBEDDED_MODELS

    if name in EMBEDDED_MODELS:
        return
    path = Path(name)
    if path.exists():
        if not (path / "config.json").is_file():
            raise ConfigError(f"model.name: {path} has no config.json (not a saved model directory)")
        if not any(
            (path / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")
        ):
            raise ConfigError(
                f"model.name: {path} has no tokenizer (tokenizer.json or tokenizer_config.json)"
            )
        return
    if name.count("/") != 1:
        raise ConfigError(
            f"model.name: unknown model {name!r}; use one of {', '.join(EMBEDDED_MODELS)}, a model "
            "directory, or a Hugging Face id like org/name"
        )
    from huggingface_hub import try_to_load_from_cache

    if not isinstance(try_to_load_from_cache(name, "config.json"), str):
        raise ConfigError(
            f"model.name: {name!r} is not in the local Hugging Face cache and nothing is downloaded "
            "during training; fetch it first (huggingface-cli download) or pass a model directory"
        )


def run(args: argparse.Namespace) -> int:
    from agentrl.trainer import Trainer

    try:
        cfg = config_from_args(args)
    except ConfigError as e:
        raise SystemExit(f"agentrl train: {e}") from None
    if getattr(args, "nproc_per_node", None) and not _under_torchrun() and _world_size(args) > 1:
        os.execv(sys.executable, _torchrun_argv(args, cfg))
    result = Trainer(cfg, resume=args.resume).run()
    if int(os.environ.get("RANK", "0")) != 0:
        return 0  # rank 0 reports
    b, af = result.eval_before, result.eval_after
    print(f"\nrun: {result.run_dir}  ({result.steps} steps, {result.seconds / 60:.1f} min)")
    if b is not None and af is not None:
        print(
            f"held-out success on {cfg.env.id}: before {b.success:.3f} -> after {af.success:.3f} "
            f"({(af.success - b.success) * 100:+.1f} points, {af.tasks} test tasks)"
        )
    return 0


def _torchrun_argv(args: argparse.Namespace, cfg: TrainConfig) -> list[str]:
    """This command under torchrun: every rank gets the same flags, overrides and run name."""
    launch = ["--nproc-per-node", str(args.nproc_per_node)]
    if args.nnodes > 1:
        launch += ["--nnodes", str(args.nnodes), "--node-rank", str(args.node_rank)]
        launch += ["--rdzv-endpoint", args.rdzv_endpoint]
    else:
        launch += ["--standalone"]
    train = ["--config", args.config] if args.config else []
    train += ["--resume"] if args.resume else []
    train += [*_overrides(args), f"name={cfg.name}"]
    return [sys.executable, "-m", "torch.distributed.run", *launch, "-m", "agentrl.cli", "train", *train]
