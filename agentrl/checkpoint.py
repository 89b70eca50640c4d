"""Atomic checkpoints: a crash (even `kill -9`) mid-write never corrupts the last good one.

Layout under a run directory:

    checkpoints/step_000040/   model weights (safetensors) + tokenizer + state.pt
    checkpoints/latest         the name of the newest complete checkpoint

A checkpoint is written into `step_000040.tmp-<pid>/`, fsynced, renamed into place, and only then is
`latest` replaced (write to a temporary file, then `os.replace`). Readers trust only `latest`.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
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
    for p in tmp.iterdir():  # weights written by libraries may not be fsynced
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
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
