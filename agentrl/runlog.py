"""A run's record: `metrics.jsonl` (one JSON object per step, append-only) plus TensorBoard events,
and Weights & Biases or trackio when asked (`log.wandb=true`, `log.trackio=true`; each needs its
package, and `WANDB_MODE=offline` keeps wandb on the disk).

JSONL is the source of truth: plots and experiment tables are made from it, and a resumed run
truncates records past the checkpoint's step so no step is ever counted twice.
"""

from __future__ import annotations

import importlib
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
    def __init__(
        self,
        run_dir: str | Path,
        tensorboard: bool = True,
        *,
        wandb: bool = False,
        trackio: bool = False,
        project: str = "agentrl",
        config: Mapping[str, Any] | None = None,
    ) -> None:
        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "metrics.jsonl"
        self._file = open(self.path, "a", buffering=1)  # noqa: SIM115 - lives as long as the run
        self._tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.dir / "tb"))
        self._trackers: list[Any] = []  # wandb / trackio runs, each with .log(dict, step=) and .finish()
        for wanted, module in ((wandb, "wandb"), (trackio, "trackio")):
            if not wanted:
                continue
            try:
                lib = importlib.import_module(module)
            except ImportError:
                raise ImportError(
                    f"log.{module}=true needs the {module} package: pip install {module}"
                ) from None
            kwargs: dict[str, Any] = {"project": project, "name": self.dir.name, "config": dict(config or {})}
            if module == "wandb":
                kwargs["dir"] = str(self.dir)
            self._trackers.append(lib.init(**kwargs))

    def truncate_after(self, step: int, final_key: str | None = None) -> None:
        """Drop records with step > `step` here and in the run's `rollouts.jsonl` (used on resume,
        before writing new ones), so no step is counted twice. Rows at `step` itself that hold
        `final_key` (a final evaluation the resumed run will repeat) go too."""
        self._file.close()
        truncate_jsonl(self.path, step, drop_at_step=final_key)
        truncate_jsonl(self.dir / "rollouts.jsonl", step)
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
        if self._trackers:
            scalars = {k: s for k, v in record.items() if (s := _scalar(v)) is not None}
            for run in self._trackers:
                run.log(scalars, step=step)

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()
        for run in self._trackers:
            run.finish()
        self._trackers = []

    def __enter__(self) -> RunLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def truncate_jsonl(path: Path, step: int, drop_at_step: str | None = None) -> None:
    """Keep the rows of a JSONL file whose `step` is <= `step` (atomically; a torn last line goes);
    rows at `step` that hold the key `drop_at_step` go too."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line torn by a kill
        s = int(row.get("step", -1))
        if s > step or (drop_at_step is not None and s == step and drop_at_step in row):
            continue
        kept.append(line)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text("".join(k + "\n" for k in kept))
    tmp.replace(path)


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
