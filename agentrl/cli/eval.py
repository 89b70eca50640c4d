"""`agentrl eval`: held-out avg@k, pass@k and maj@k of a checkpoint, a run or a model."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentrl.evaluate import EvalResult, evaluate

if TYPE_CHECKING:
    from agentrl.train_config import TrainConfig

# ---- `agentrl eval` ---------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group()
    src.add_argument(
        "--checkpoint", help="a checkpoint directory (runs/NAME/checkpoints/step_N) or a run directory"
    )
    src.add_argument(
        "--model",
        default=None,
        help="tiny | tiny-random-init | tiny-python | tiny-search | smollm2-135m | a local path or HF id (default: tiny)",
    )
    p.add_argument(
        "--env",
        default=None,
        help="a registered gymnasium id (default: the run's own env, else Calculator-v0)",
    )
    p.add_argument(
        "--tasks", type=int, default=None, help="first N test tasks (default: the run's, else 100)"
    )
    p.add_argument("--k", type=int, default=None, help="samples per task (default: the run's, else 1)")
    p.add_argument("--ks", default=None, help="comma-separated k' <= k for pass@k' and maj@k' (default: 1,k)")
    p.add_argument(
        "--temperature",
        type=float,
        default=None,
        help="default: the run's, else 0 (greedy) if k == 1, else 0.6",
    )
    p.add_argument(
        "--top-p", type=float, default=None, help="default: the run's, else 1.0 if k == 1, else 0.95"
    )
    p.add_argument("--max-new-tokens", type=int, default=None, help="default: the run's, else 96")
    p.add_argument(
        "--seed",
        type=int,
        default=None,
        help="default: 0 (a run's checkpoint with nothing overridden: the run's own seed)",
    )
    p.add_argument("--json", dest="json_out", default=None, help="write the result as JSON to this file")


def resolve_checkpoint(path: str, command: str = "agentrl eval") -> Path:
    """A checkpoint directory from a checkpoint, checkpoints or run directory: the newest intact
    checkpoint of a run (a broken newer one is skipped with a one-line note)."""
    from agentrl.checkpoint import NoIntactCheckpoint, latest_intact_checkpoint, step_folders

    p = Path(path)
    if (p / "checkpoints").is_dir():
        p = p / "checkpoints"
    if (p / "latest").is_file() or step_folders(p):
        try:
            found = latest_intact_checkpoint(p)
        except NoIntactCheckpoint as e:
            raise SystemExit(f"{command}: {e}") from None
        if found is not None:
            return found
    if not any((p / f).is_file() for f in ("config.json", "adapter_config.json")):
        raise SystemExit(f"{command}: {path} is not a checkpoint or run directory (no config.json)")
    return p


def run_config(checkpoint: Path) -> dict | None:
    """The training config of the run a checkpoint belongs to (runs/NAME/config.yaml), if any."""
    import yaml

    for d in (checkpoint, *checkpoint.parents[:3]):
        if (d / "config.yaml").is_file() and (d / "checkpoints").is_dir():
            return yaml.safe_load((d / "config.yaml").read_text())
    return None


def base_model_of(ckpt: Path) -> str:
    """The base model a LoRA checkpoint was trained on: the run's `model.name`, else the adapter's."""
    from agentrl.lora import adapter_base

    trained = run_config(ckpt) or {}
    base = (trained.get("model") or {}).get("name") or adapter_base(ckpt)
    if not base:
        raise ValueError(f"--checkpoint {ckpt}: cannot tell the base model (no run config.yaml)")
    return str(base)


def load_checkpoint_model(ckpt: Path, device: str) -> tuple[Any, Any, str]:
    """(model, tokenizer, description) of a checkpoint: a full model, or a LoRA adapter folded into
    the base model it was trained on."""
    from agentrl.lora import is_adapter_dir, load_merged
    from agentrl.models import load_model

    if is_adapter_dir(ckpt):
        base = base_model_of(ckpt)
        model, tok = load_merged(base, ckpt, device=device)
        return model, tok, f"{ckpt} (LoRA adapter on {base})"
    model, tok = load_model(str(ckpt), device=device)
    return model, tok, str(ckpt)


def _as_the_run_did(args: argparse.Namespace, ckpt: Path) -> TrainConfig | None:
    """The run's own config when a run's checkpoint is evaluated with nothing overridden: then the
    run's held-out evaluation itself is repeated (`Trainer.evaluate_checkpoint`), so the figures are
    exactly the ones the run reported for that checkpoint."""
    from agentrl.config import load_config
    from agentrl.train_config import TrainConfig

    given = (
        args.env,
        args.tasks,
        args.k,
        args.ks,
        args.temperature,
        args.top_p,
        args.max_new_tokens,
        args.seed,
    )
    if any(v is not None for v in given):
        return None
    run_dir = next(
        (
            d
            for d in (ckpt, *ckpt.parents[:3])
            if (d / "config.yaml").is_file() and (d / "checkpoints").is_dir()
        ),
        None,
    )
    if run_dir is None or not (ckpt / "state.pt").is_file():
        return None
    cfg = load_config(TrainConfig, run_dir / "config.yaml")
    if cfg.model.backend != "hf":
        return None
    return dataclasses.replace(cfg, run_root=str(run_dir.parent), name=run_dir.name, progress=False)


def run(args: argparse.Namespace) -> int:
    import torch

    import agentrl.envs  # noqa: F401  (registers the bundled envs)
    from agentrl.chat import ChatFormat, resolve_tool_format
    from agentrl.models import load_model
    from agentrl.policy.hf import HFPolicy

    if (args.k is not None and args.k < 1) or (args.tasks is not None and args.tasks < 1):
        raise SystemExit("agentrl eval: --k and --tasks must be >= 1")
    ckpt = resolve_checkpoint(args.checkpoint) if args.checkpoint else None
    own = _as_the_run_did(args, ckpt) if ckpt else None
    if own is not None:
        from agentrl.trainer import Trainer

        e = own.eval
        print(
            f"checkpoint: {ckpt}\nthe run's own evaluation: env {own.env.id}, {e.tasks} test tasks × k={e.k}, "
            f"temperature {e.temperature}, top_p {e.top_p}, max_new_tokens {own.rollout.max_new_tokens}, "
            f"seed {own.seed} (pass --tasks, --k, --temperature, ... to evaluate otherwise)"
        )
        result = Trainer(own).evaluate_checkpoint(ckpt)
        return _report(result, str(ckpt), own.env.id, args.json_out)
    source = str(ckpt) if ckpt else (args.model or "tiny")
    trained = run_config(ckpt) if ckpt else None
    # Unset options take the run's evaluation settings (its `eval:` block), else the defaults.
    run_eval = (trained or {}).get("eval") or {}
    k = args.k if args.k is not None else int(run_eval.get("k") or 1)
    tasks = args.tasks if args.tasks is not None else int(run_eval.get("tasks") or 100)
    seed = args.seed if args.seed is not None else 0
    # A run's checkpoint is evaluated on the run's own env, lengths and tool format unless told otherwise.
    env_cfg = (trained or {}).get("env", {})
    rollout = (trained or {}).get("rollout", {})
    env_id = args.env or env_cfg.get("id") or "agentrl/Calculator-v0"
    same_env = trained is not None and env_id == env_cfg.get("id")
    env_kwargs = dict(env_cfg.get("kwargs") or {}) if same_env else {}
    if same_env and env_cfg.get("latency") is not None:
        env_kwargs["latency"] = env_cfg["latency"]
    max_new_tokens = args.max_new_tokens or rollout.get("max_new_tokens") or 96
    temperature = (
        args.temperature
        if args.temperature is not None
        else float(run_eval.get("temperature", 0.0 if k == 1 else 0.6))
    )
    top_p = args.top_p if args.top_p is not None else float(run_eval.get("top_p", 1.0 if k == 1 else 0.95))
    ks = [int(x) for x in args.ks.split(",")] if args.ks else None
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if ckpt is not None:
        try:
            model, tok, source = load_checkpoint_model(ckpt, device)
        except ValueError as e:
            raise SystemExit(f"agentrl eval: {str(e).splitlines()[0]}") from None
    else:
        model, tok = load_model(source, device=device)
    setting = ((trained or {}).get("model") or {}).get("tool_format", "auto")
    chat = ChatFormat(tok, tool_format=resolve_tool_format(setting, tok))
    if chat.tool_format != "hermes":
        env_kwargs["tool_format"] = chat.tool_format
    print(
        f"model: {source}\nenv: {env_id}{' (the run' + chr(39) + 's)' if same_env else ''}, "
        f"max_new_tokens {max_new_tokens}, temperature {temperature}, top_p {top_p}, "
        f"tool format {chat.tool_format}"
    )

    async def go() -> EvalResult:
        policy = HFPolicy(model, tok, seed=seed, max_batch_size=64)
        try:
            return await evaluate(
                policy,
                chat,
                env_id,
                tasks=tasks,
                k=k,
                ks=ks,
                temperature=temperature,
                top_p=top_p,
                max_new_tokens=max_new_tokens,
                max_tokens=int(rollout.get("max_tokens") or 1024),
                max_turns=env_cfg.get("max_turns") if same_env else None,
                env_kwargs=env_kwargs,
                seed=seed,
            )
        finally:
            await policy.aclose()

    return _report(asyncio.run(go()), source, env_id, args.json_out)


def _report(result: EvalResult, source: str, env_id: str, json_out: str | None) -> int:
    print(result.table())
    if json_out:
        Path(json_out).write_text(json.dumps({"model": source, "env": env_id, **result.as_dict()}, indent=2))
        print(f"wrote {json_out}")
    return 0
