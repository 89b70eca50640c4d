"""LoRA fine-tuning with PEFT: wrap a causal LM, save and load its adapter, merge it into the base.

`wrap(model, cfg)` injects LoRA layers into `model` in place and freezes the base weights, so the
learner (which optimises the parameters that require gradients), the HF policy and the prefix-sharing
forward all keep using the same `transformers` module; the returned `PeftModel` is what saves the
adapter. Checkpoints hold `adapter_config.json` + `adapter_model.safetensors` and the tokenizer, not
the base weights; the base model is the run's `model.name`.

Target modules follow PEFT's rules: `all-linear` (every linear layer but the output head), or names
that match a module's full name or its last components (`q_proj` matches `model.layers.0.self_attn.q_proj`).
A target list that matches nothing is refused with one line that lists the model's linear layers.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"

__all__ = [
    "ADAPTER_CONFIG",
    "ADAPTER_WEIGHTS",
    "adapter_base",
    "check_targets",
    "check_targets_from_config",
    "dropout_active",
    "is_adapter_dir",
    "linear_module_names",
    "load_adapter",
    "load_merged",
    "lora_config",
    "merge",
    "save_adapter",
    "targets",
    "wrap",
]


def _peft() -> Any:
    try:
        import peft
    except ModuleNotFoundError:
        raise ValueError(
            "model.lora_rank: LoRA needs the peft package: pip install 'agentrl[lora]'"
        ) from None
    return peft


def targets(names: Sequence[str]) -> str | list[str]:
    """PEFT's `target_modules` from the config's list: `["all-linear"]` is the string `all-linear`."""
    names = list(names)
    return "all-linear" if names == ["all-linear"] else names


def lora_config(rank: int, alpha: float | None, dropout: float, target_modules: Sequence[str]) -> Any:
    """The `peft.LoraConfig` of these settings (alpha None: 2 × rank)."""
    peft = _peft()
    return peft.LoraConfig(
        r=rank,
        lora_alpha=float(alpha if alpha is not None else 2 * rank),
        lora_dropout=dropout,
        target_modules=targets(target_modules),
        task_type="CAUSAL_LM",
        bias="none",
    )


def _is_linear(module: torch.nn.Module) -> bool:
    if isinstance(module, torch.nn.Linear):
        return True
    return type(module).__name__ == "Conv1D"  # GPT-2 style projections, which PEFT also adapts


def linear_module_names(model: torch.nn.Module) -> list[str]:
    """The distinct last names of the model's linear layers, the output head excluded, in order."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    seen: dict[str, None] = {}
    for name, module in model.named_modules():
        if name and _is_linear(module) and module is not head:
            seen.setdefault(name.rsplit(".", 1)[-1], None)
    return list(seen)


def check_targets(model: torch.nn.Module, target_modules: Sequence[str]) -> None:
    """Raise a one-line ValueError naming `model.lora_target_modules` if a target matches no module of
    `model` (PEFT itself only refuses a list of which nothing matches; a typo would go unnoticed)."""
    linear = linear_module_names(model)
    wanted = targets(target_modules)
    if wanted == "all-linear":
        if not linear:
            raise ValueError("model.lora_target_modules: all-linear, but the model has no linear layers")
        return
    from peft.tuners.tuners_utils import check_target_module_exists

    names = [n for n, _ in model.named_modules() if n]
    unmatched = [
        t
        for t in target_modules
        if not any(check_target_module_exists(lora_config(1, None, 0.0, [t]), n) for n in names)
    ]
    if unmatched:
        raise ValueError(
            f"model.lora_target_modules: no module of the model matches {', '.join(unmatched)}; "
            f"its linear layers are {', '.join(linear) or '(none)'} (or use all-linear)"
        )


def check_targets_from_config(source: str | Path, target_modules: Sequence[str]) -> bool:
    """`check_targets` on a model built on the meta device from `source`'s config.json (no weights
    are read); returns False when no config is available locally (the check then runs at build)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    _peft()
    try:
        config = AutoConfig.from_pretrained(str(source), local_files_only=True)
    except (OSError, ValueError):
        return False
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    check_targets(model, target_modules)
    return True


def wrap(
    model: torch.nn.Module,
    rank: int,
    alpha: float | None = None,
    dropout: float = 0.0,
    target_modules: Sequence[str] = ("all-linear",),
) -> Any:
    """Inject a fresh LoRA adapter into `model` (in place; base weights frozen); returns the PeftModel.

    The adapter's B matrices start at zero, so the wrapped model computes exactly what the base did.
    """
    peft = _peft()
    check_targets(model, target_modules)
    return peft.get_peft_model(model, lora_config(rank, alpha, dropout, target_modules))


def load_adapter(model: torch.nn.Module, adapter_dir: str | Path, trainable: bool = True) -> Any:
    """Inject a saved adapter into `model` (in place); returns the PeftModel."""
    peft = _peft()
    return peft.PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=trainable)


def save_adapter(peft_model: Any, out: str | Path) -> Path:
    """Write only the adapter: `adapter_config.json` and `adapter_model.safetensors`."""
    out = Path(out)
    peft_model.save_pretrained(str(out), safe_serialization=True)
    return out


def merge(peft_model: Any) -> torch.nn.Module:
    """Fold the adapter into the base weights; returns the plain `transformers` model."""
    return peft_model.merge_and_unload()


def is_adapter_dir(path: str | Path) -> bool:
    return (Path(path) / ADAPTER_CONFIG).is_file()


def adapter_base(path: str | Path) -> str | None:
    """The base model an adapter directory names (`base_model_name_or_path`), if any."""
    try:
        data = json.loads((Path(path) / ADAPTER_CONFIG).read_text())
    except (OSError, ValueError):
        return None
    base = data.get("base_model_name_or_path")
    return str(base) if base else None


def load_merged(
    base: str,
    adapter_dir: str | Path,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> tuple[Any, Any]:
    """(merged model, tokenizer): `base` loaded with `agentrl.models.load_model`, the adapter folded in.
    The tokenizer is the adapter directory's when it has one (checkpoints save it), else the base's."""
    from transformers import AutoTokenizer

    from agentrl.models import load_model

    model, tokenizer = load_model(base, device=device, dtype=dtype)
    merged = merge(load_adapter(model, adapter_dir, trainable=False))
    if any((Path(adapter_dir) / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")):
        tokenizer = AutoTokenizer.from_pretrained(str(adapter_dir))
    return merged.eval(), tokenizer


@contextmanager
def dropout_active(model: torch.nn.Module) -> Iterator[None]:
    """Put the adapter's dropout layers (only those) in training mode for the duration, e.g. a
    learner update; the rest of the model stays in eval mode, as the learner expects."""
    drops = [
        m
        for name, m in model.named_modules()
        if ".lora_dropout." in f".{name}." and isinstance(m, torch.nn.Dropout) and m.p > 0
    ]
    for m in drops:
        m.train()
    try:
        yield
    finally:
        for m in drops:
            m.eval()
