"""Atomic checkpoints: a crash (even `kill -9`) mid-write never corrupts the last good one.

Layout under a run directory:

    checkpoints/step_000040/   model weights (safetensors) + tokenizer + state.pt
    checkpoints/step_000040/dcp/   several ranks: model + optimizer, sharded (torch.distributed.checkpoint)
    checkpoints/latest         the name of the newest complete checkpoint

A run on several ranks writes the model and optimizer with `torch.distributed.checkpoint` (each rank
its own shard, into the same temporary folder) and `state.pt` without the optimizer; rank 0 renames
the folder after every rank has written. DCP reshards on load, so any number of ranks (one included)
resumes it.

A checkpoint is written into `step_000040.tmp-<pid>/`, fsynced, renamed into place, and only then is
`latest` replaced (write to a temporary file, then `os.replace`). Readers trust only `latest`.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

LATEST = "latest"
_STEP_RE = re.compile(r"^step_(\d+)$")


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def save_checkpoint(
    root: str | Path,
    step: int,
    state: dict[str, Any],
    write_model: Callable[[Path], None] | None = None,
    keep: int = 3,
) -> Path:
    """Write `state` (torch-serialisable) and, via `write_model(dir)`, the model files; return the dir."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:06d}"
    tmp = root / f"{final.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    if write_model is not None:
        write_model(tmp)
    with open(tmp / "state.pt", "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    for p in sorted(tmp.rglob("*")):  # weights written by libraries may not be fsynced
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
        elif p.is_dir():
            _fsync_dir(p)
    _fsync_dir(tmp)
    if final.exists():  # re-saving the same step (e.g. after a resume): replace it
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(root)
    atomic_write_bytes(root / LATEST, final.name.encode())
    _prune(root, keep)
    return final


def _prune(root: Path, keep: int) -> None:
    steps = sorted((p for p in root.iterdir() if _STEP_RE.match(p.name)), key=lambda p: p.name)
    latest = (root / LATEST).read_text().strip() if (root / LATEST).exists() else None
    for p in steps[:-keep] if keep > 0 else []:
        if p.name != latest:
            shutil.rmtree(p, ignore_errors=True)
    for p in root.iterdir():  # leftovers of writers that died mid-checkpoint
        if ".tmp-" in p.name:
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)


def latest_checkpoint(root: str | Path) -> Path | None:
    """The newest complete checkpoint, or None if there is none yet."""
    root = Path(root)
    pointer = root / LATEST
    if not pointer.is_file():
        return None
    path = root / pointer.read_text().strip()
    if not (path / "state.pt").is_file():
        raise FileNotFoundError(f"{pointer} names {path.name}, but {path}/state.pt is missing")
    return path


def load_state(path: str | Path) -> dict[str, Any]:
    # Our own files hold numpy RNG states and plain containers, so full unpickling is needed.
    return torch.load(Path(path) / "state.pt", map_location="cpu", weights_only=False)


SHARDED = "dcp"


def save_sharded(path: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Model and optimizer state with `torch.distributed.checkpoint`; a collective on every rank."""
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_sd, optim_sd = get_state_dict(model, optimizer)
    with warnings.catch_warnings():  # one process: what no_dist asks for
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.save(
            {"model": model_sd, "optim": optim_sd}, checkpoint_id=str(path), no_dist=not dist.is_initialized()
        )


def load_sharded(path: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Load `save_sharded`'s files into a model and optimizer on any number of ranks (one included)."""
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model_sd, optim_sd = get_state_dict(model, optimizer)
    state = {"model": model_sd, "optim": optim_sd}
    with warnings.catch_warnings():  # one process reads a sharded checkpoint: what no_dist asks for
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.load(state, checkpoint_id=str(path), no_dist=not dist.is_initialized())
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
