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
`latest` replaced (write to a temporary file, then `os.replace`). Folders are deleted by first renaming
them to a `.tmp-` name, so a step folder is always either whole or absent. `latest_checkpoint` trusts
the pointer; `latest_intact_checkpoint` (what resume uses) also verifies the files and falls back to
the newest checkpoint that loads.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sys
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

LATEST = "latest"
_STEP_RE = re.compile(r"^step_(\d+)$")


class NoIntactCheckpoint(FileNotFoundError):
    """A checkpoint folder holds checkpoints, but none of them loads."""


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
        _remove(final)
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
            _remove(p)
    clean_stale(root)


def _remove(path: Path) -> None:
    """Delete a step folder so that a kill midway leaves a `.tmp-` leftover, never a half folder."""
    doomed = path.with_name(f"{path.name}.tmp-del-{os.getpid()}")
    os.replace(path, doomed)
    _fsync_dir(path.parent)
    shutil.rmtree(doomed, ignore_errors=True)


def clean_stale(root: str | Path) -> list[str]:
    """Remove the `*.tmp-*` leftovers of writers killed mid-checkpoint; returns their names."""
    root = Path(root)
    if not root.is_dir():
        return []
    gone = []
    for p in root.iterdir():
        if ".tmp-" in p.name:
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
            gone.append(p.name)
    return gone


def step_folders(root: str | Path) -> list[Path]:
    """The complete checkpoint folders under `root`, newest first (temporary leftovers excluded)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if _STEP_RE.match(p.name) and p.is_dir()]
    return sorted(found, key=lambda p: int(_STEP_RE.match(p.name).group(1)), reverse=True)  # type: ignore[union-attr]


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


def _short(e: BaseException) -> str:
    text = (str(e).strip().splitlines() or [""])[0]
    text = f"{type(e).__name__}: {text}" if text else type(e).__name__
    return text if len(text) <= 120 else text[:117] + "..."


def checkpoint_problem(path: str | Path) -> str | None:
    """Why the checkpoint at `path` would not load (e.g. "state.pt: truncated ..."), or None if intact.

    Cheap: `state.pt` is opened memory-mapped (its zip directory and pickle are read, not its tensors)
    and each `*.safetensors` file's header is parsed and checked against the file's size.
    """
    from safetensors import safe_open

    path = Path(path)
    state = path / "state.pt"
    if not state.is_file():
        return "state.pt is missing"
    try:
        with zipfile.ZipFile(state):
            pass
        torch.load(state, map_location="cpu", weights_only=False, mmap=True)
    except Exception as e:
        return f"state.pt: {_short(e)}"
    weights = sorted(path.glob("*.safetensors"))
    if (path / "config.json").is_file() and not weights and not list(path.glob("pytorch_model*.bin")):
        return "model weights are missing"
    for f in weights:
        try:
            with safe_open(str(f), framework="pt") as st:
                for key in st.keys():  # noqa: SIM118 (safe_open is not iterable)
                    st.get_slice(key).get_shape()
        except Exception as e:
            return f"{f.name}: {_short(e)}"
    return None


def latest_intact_checkpoint(root: str | Path, warn: Callable[[str], None] | None = None) -> Path | None:
    """The newest checkpoint that loads: the one `latest` names, else the newest older one.

    Skipping any (or an unreadable pointer) is reported in one line through `warn` (default: stderr),
    e.g. "checkpoint step_000004 is unreadable (state.pt: ...); resuming from step_000003". Returns
    None when `root` holds no checkpoint at all; raises `NoIntactCheckpoint` when it holds some but
    none of them loads.
    """
    root = Path(root)
    folders = step_folders(root)
    pointer = root / LATEST
    candidates, problems = folders, []
    if pointer.is_file():
        name = pointer.read_bytes()[:64].decode(errors="replace").strip()
        m = _STEP_RE.match(name)
        if m is None:
            problems.append(f"{LATEST} names no checkpoint ({name[:20]!r})")
        else:
            # Folders newer than the pointer were renamed into place by a writer killed before it
            # could update `latest`; the pointer stays the authority.
            candidates = [p for p in folders if int(_STEP_RE.match(p.name).group(1)) <= int(m.group(1))]  # type: ignore[union-attr]
            if not (root / name).is_dir():
                problems.append(f"{LATEST} names {name}, but {name}/state.pt is missing")
    elif folders:
        problems.append(f"{LATEST} is missing")
    if not candidates and not problems:
        return None
    for path in candidates:
        problem = checkpoint_problem(path)
        if problem is None:
            if problems:
                (warn or _stderr)(f"{'; '.join(problems)}; resuming from {path.name}")
            return path
        problems.append(f"checkpoint {path.name} is unreadable ({problem})")
    raise NoIntactCheckpoint(f"no intact checkpoint in {root}: {'; '.join(problems)}")


def _stderr(message: str) -> None:
    print(f"[agentrl] {message}", file=sys.stderr)


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
