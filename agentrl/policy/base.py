"""The `Policy` protocol every generation backend implements, and the errors they raise.

A policy is token-in/token-out: `generate` takes the prompt as token ids and returns the ids it
sampled with the log-prob of each under the distribution it sampled from, so an episode never has
to re-tokenise text. Log-prob convention, shared by all backends: log-softmax of logits / temperature
over the full vocabulary (top-p/top-k truncation is applied when sampling but not folded into the
reported log-prob); at temperature 0 (greedy) the temperature-1 log-prob is reported.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from agentrl.types import Generation, SamplingParams

if TYPE_CHECKING:
    import torch

WeightsSource = Mapping[str, "torch.Tensor"] | str | Path | None


class PolicyError(RuntimeError):
    """A generation backend failed in a way the episode cannot fix."""


class PolicyTimeoutError(PolicyError, TimeoutError):
    """A generation request missed its deadline (after any retries)."""


class PolicyUnavailableError(PolicyError):
    """No endpoint could serve the request: every server is down or keeps failing."""


@runtime_checkable
class Policy(Protocol):
    """What the episode loop and the trainer need from a generation backend."""

    version: int
    """The weight version that new generations are sampled with."""

    tokenizer: Any
    """The Hugging Face tokenizer whose ids `generate` consumes and returns (None for fake policies)."""

    async def generate(self, prompt_ids: Sequence[int], params: SamplingParams) -> Generation:
        """Sample one continuation of `prompt_ids`; raises PolicyTimeoutError past the deadline."""
        ...

    async def sync_weights(self, version: int, weights: WeightsSource = None) -> None:
        """Switch to new weights (a state dict or a saved checkpoint directory) and set `version`."""
        ...

    async def aclose(self) -> None:
        """Release threads, connections and servers; idempotent."""
        ...


def check_prompt(prompt_ids: Sequence[int], vocab_size: int | None = None) -> list[int]:
    """Validate a prompt early with a clear message instead of a deep framework error."""
    ids = list(prompt_ids)
    if not ids:
        raise ValueError("prompt_ids is empty; a policy needs at least one prompt token")
    if vocab_size is not None:
        bad = [i for i in ids if not 0 <= int(i) < vocab_size]
        if bad:
            raise ValueError(f"prompt_ids contain ids outside the vocabulary [0, {vocab_size}): {bad[:5]}")
    return ids


def cpu_tensors(weights: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict ready for `safetensors.save_file`: on the CPU, contiguous, and with tensors that
    share storage (tied embeddings) copied apart, which safetensors refuses to save otherwise."""
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, tensor in weights.items():
        t = tensor.detach().to("cpu").contiguous()
        ptr = t.untyped_storage().data_ptr()
        if ptr in seen:
            t = t.clone()
        seen.add(ptr)
        out[name] = t
    return out


def untie_for_reload(path: Path) -> dict[str, torch.Tensor] | None:
    """The weights of a `save_pretrained` directory with a tied LM head spelled out, or None when the
    directory can be reloaded as it is.

    `save_pretrained` leaves `lm_head.weight` out of tied models, and vLLM's in-place reload then keeps
    the server's old head while the embedding changes (its layer-wise reload unties them). A reload
    must therefore carry `lm_head.weight` explicitly.
    """
    import json

    config = path / "config.json"
    if not config.is_file():
        return None
    cfg = json.loads(config.read_text())
    tied = cfg.get("tie_word_embeddings", (cfg.get("text_config") or {}).get("tie_word_embeddings", False))
    files = sorted(path.glob("*.safetensors"))
    if not tied or not files:
        return None
    from safetensors import safe_open

    names: set[str] = set()
    for f in files:
        with safe_open(str(f), framework="pt") as fh:
            names.update(fh.keys())
    embed = next((n for n in sorted(names) if n.endswith("embed_tokens.weight")), None)
    if "lm_head.weight" in names or embed is None:
        return None
    state = load_weights_dir(path)
    state["lm_head.weight"] = state[embed].clone()
    return state


def load_weights_dir(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a `save_pretrained` directory's weights (safetensors, sharded or not, or a .bin)."""
    path = Path(path)
    import torch

    if path.is_file():
        files = [path]
    else:
        files = sorted(path.glob("*.safetensors")) or sorted(path.glob("pytorch_model*.bin"))
    if not files:
        raise FileNotFoundError(f"no *.safetensors or pytorch_model*.bin weights found in {path}")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        if f.suffix == ".safetensors":
            from safetensors.torch import load_file

            state.update(load_file(str(f)))
        else:
            state.update(torch.load(f, map_location="cpu", weights_only=True))
    return state
