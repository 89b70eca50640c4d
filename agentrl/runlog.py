"""A run's record: `metrics.jsonl` (one JSON object per step, append-only) plus TensorBoard events.

JSONL is the source of truth: plots and experiment tables are made from it, and a resumed run
truncates records past the checkpoint's step so no step is ever counted twice.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any


def _scalar(v: Any) -> float | None:
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, int | float) and math.isfinite(v):
        return float(v)
    return None


class RunLog:
    def __init__(self, run_dir: str | Path, tensorboard: bool = True) -> None:
        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "metrics.jsonl"
        self._file = open(self.path, "a", buffering=1)  # noqa: SIM115 - lives as long as the run
        self._tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.dir / "tb"))

    def truncate_after(self, step: int) -> None:
        """Drop records with step > `step` (used on resume, before writing new ones)."""
        self._file.close()
        kept = [r for r in read_metrics(self.path) if int(r.get("step", -1)) <= step]
        tmp = self.path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
        tmp.replace(self.path)
        self._file = open(self.path, "a", buffering=1)  # noqa: SIM115

    def log(self, step: int, record: Mapping[str, Any]) -> None:
        row = {"step": step, **record}
        self._file.write(json.dumps(row, default=_json_default) + "\n")
        if self._tb is not None:
            for k, v in record.items():
                s = _scalar(v)
                if s is not None:
                    self._tb.add_scalar(k, s, step)
            self._tb.flush()

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()

    def __enter__(self) -> RunLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _json_default(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    if hasattr(o, "item"):
        return o.item()
    return str(o)


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Read a metrics.jsonl, tolerating a torn last line from a killed writer."""
    return list(iter_metrics(path))


def iter_metrics(path: str | Path) -> Iterator[dict[str, Any]]:
    path = Path(path)
    if not path.exists():
        return
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError:
            continue
