"""Seeded latency models, and a wrapper that makes any environment slow in a controlled way.

Every model draws from a `numpy.random.Generator` that the caller owns, so one seed fixes a run.
Waiting goes through `asyncio.sleep` only, so the same code runs on a real or a virtual-time loop.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class LatencyModel(Protocol):
    """A distribution of delays in seconds."""

    def sample(self, rng: np.random.Generator) -> float: ...

    def mean(self) -> float: ...


async def wait(model: LatencyModel | None, rng: np.random.Generator) -> float:
    """Sleep for one draw of `model` and return the delay (0 when there is no model)."""
    if model is None:
        return 0.0
    delay = model.sample(rng)
    if delay > 0:
        await asyncio.sleep(delay)
    return delay


@dataclass(frozen=True)
class Constant:
    seconds: float

    def __post_init__(self) -> None:
        if self.seconds < 0:
            raise ValueError(f"Constant latency must be >= 0, got {self.seconds}")

    def sample(self, rng: np.random.Generator) -> float:
        return self.seconds

    def mean(self) -> float:
        return self.seconds


@dataclass(frozen=True)
class Uniform:
    low: float
    high: float

    def __post_init__(self) -> None:
        if not 0 <= self.low <= self.high:
            raise ValueError(f"Uniform latency needs 0 <= low <= high, got {self.low}, {self.high}")

    def sample(self, rng: np.random.Generator) -> float:
        return float(rng.uniform(self.low, self.high))

    def mean(self) -> float:
        return (self.low + self.high) / 2


@dataclass(frozen=True)
class LogNormal:
    """Parameterised by its median (e^mu) and sigma, which is how latencies are usually quoted."""

    median: float
    sigma: float
    shift: float = 0.0
    cap: float | None = None

    def __post_init__(self) -> None:
        if self.median <= 0 or self.sigma < 0 or self.shift < 0:
            raise ValueError(f"LogNormal needs median > 0, sigma >= 0, shift >= 0, got {self}")

    def sample(self, rng: np.random.Generator) -> float:
        x = self.shift + float(rng.lognormal(math.log(self.median), self.sigma))
        return min(x, self.cap) if self.cap is not None else x

    def mean(self) -> float:
        return self.shift + self.median * math.exp(self.sigma**2 / 2)


@dataclass(frozen=True)
class Pareto:
    """Heavy tail: P(X > x) = (scale / x)^alpha for x >= scale. alpha <= 1 has an infinite mean."""

    scale: float
    alpha: float
    cap: float | None = None

    def __post_init__(self) -> None:
        if self.scale <= 0 or self.alpha <= 0:
            raise ValueError(f"Pareto needs scale > 0 and alpha > 0, got {self}")

    def sample(self, rng: np.random.Generator) -> float:
        x = self.scale * (1.0 + float(rng.pareto(self.alpha)))
        return min(x, self.cap) if self.cap is not None else x

    def mean(self) -> float:
        if self.cap is not None:
            # E[min(X, c)] = ∫_0^c P(X > x) dx, in closed form.
            a, s, c = self.alpha, self.scale, self.cap
            if c <= s:
                return c
            tail = s * math.log(c / s) if a == 1 else s**a * (c ** (1 - a) - s ** (1 - a)) / (1 - a)
            return s + tail
        return math.inf if self.alpha <= 1 else self.alpha * self.scale / (self.alpha - 1)


@dataclass(frozen=True)
class Mixture:
    """Weighted mixture; `Mixture.straggler(body, tail, p)` is the common body-plus-stragglers case."""

    components: tuple[LatencyModel, ...]
    weights: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.components) != len(self.weights) or not self.components:
            raise ValueError("Mixture needs one weight per component and at least one component")
        if any(w < 0 for w in self.weights) or not math.isclose(sum(self.weights), 1.0, abs_tol=1e-9):
            raise ValueError(f"Mixture weights must be >= 0 and sum to 1, got {self.weights}")

    @classmethod
    def straggler(cls, body: LatencyModel, tail: LatencyModel, p: float) -> Mixture:
        if not 0 <= p <= 1:
            raise ValueError(f"straggler probability must be in [0, 1], got {p}")
        return cls((body, tail), (1.0 - p, p))

    def sample(self, rng: np.random.Generator) -> float:
        i = int(rng.choice(len(self.components), p=np.asarray(self.weights)))
        return self.components[i].sample(rng)

    def mean(self) -> float:
        return sum(w * c.mean() for c, w in zip(self.components, self.weights, strict=True))


@dataclass(frozen=True)
class Empirical:
    """Resamples recorded latencies (seconds), e.g. from a production trace."""

    samples: tuple[float, ...]
    source: str = ""

    def __post_init__(self) -> None:
        if not self.samples:
            raise ValueError("Empirical latency needs at least one recorded sample")
        if any(not math.isfinite(s) or s < 0 for s in self.samples):
            raise ValueError("Empirical latency samples must be finite and >= 0")

    @classmethod
    def from_trace(cls, path: str | Path, column: str | None = None) -> Empirical:
        """Load a trace with `load_trace` (a `.csv` with a header, `.jsonl` records, or one number per line)."""
        return cls(tuple(load_trace(path, column)), source=str(path))

    def __repr__(self) -> str:  # a trace can hold thousands of samples: summarise, never list them
        x = np.asarray(self.samples)
        src = f" from {Path(self.source).name}" if self.source else ""
        return (
            f"Empirical({x.size} samples{src}: mean {x.mean():.3g} s, p50 {np.median(x):.3g} s, "
            f"p95 {np.percentile(x, 95):.3g} s, max {x.max():.3g} s)"
        )

    def sample(self, rng: np.random.Generator) -> float:
        return self.samples[int(rng.integers(len(self.samples)))]

    def mean(self) -> float:
        return float(np.mean(self.samples))


DEFAULT_TRACE_COLUMN = "latency_s"


def load_trace(path: str | Path, column: str | None = None) -> list[float]:
    """Durations in seconds from a trace file; every problem is a one-line `ValueError` naming the
    file and the row or field.

    - `.csv` (or any other suffix) with a header row: the values of `column`. Without `column`,
      `latency_s` if the header has it, else the only column. Lines starting with `#` are comments.
    - a file of bare numbers, one per line (no header): those numbers; `column` must then be unset.
    - `.jsonl`: field `column` (default `latency_s`) of every record.

    Values must be finite numbers >= 0, and the file must hold at least one.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: trace file not found")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: cannot read the trace: {e}") from None
    values: list[float] = []
    if path.suffix == ".jsonl":
        field_ = column or DEFAULT_TRACE_COLUMN
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                raise ValueError(f"{path}:{lineno}: not a JSON record") from None
            if not isinstance(rec, dict) or field_ not in rec:
                raise ValueError(f"{path}:{lineno}: no field {field_!r}")
            values.append(_duration(rec[field_], f"{path}:{lineno}: field {field_!r}"))
    else:
        rows = [
            (lineno, ln.strip())
            for lineno, ln in enumerate(text.splitlines(), 1)
            if ln.strip() and not ln.lstrip().startswith("#")
        ]
        idx = 0
        where = "value"
        if rows and not _is_number(rows[0][1].split(",")[0]):
            header = [h.strip() for h in rows[0][1].split(",")]
            if column is None:
                column = (
                    DEFAULT_TRACE_COLUMN if DEFAULT_TRACE_COLUMN in header or len(header) != 1 else header[0]
                )
            if column not in header:
                raise ValueError(
                    f"{path}: no column {column!r} in header {','.join(header)} (choose one with --column)"
                )
            idx = header.index(column)
            where = f"column {column!r}"
            rows = rows[1:]
        elif column is not None and rows:
            raise ValueError(f"{path}: no header row, so there is no column {column!r}")
        for lineno, ln in rows:
            cells = ln.split(",")
            if idx >= len(cells):
                raise ValueError(f"{path}:{lineno}: row has no {where}")
            values.append(_duration(cells[idx].strip(), f"{path}:{lineno}: {where}"))
    if not values:
        raise ValueError(f"{path}: the trace is empty (no durations)")
    return values


def _duration(raw: Any, where: str) -> float:
    try:
        x = float(raw)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: {raw!r} is not a number") from None
    if not math.isfinite(x) or x < 0:
        raise ValueError(f"{where}: durations must be finite and >= 0, got {raw!r}")
    return x


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def from_spec(spec: LatencyModel | Mapping[str, Any] | float | int | None) -> LatencyModel | None:
    """Build a model from a config value.

    Accepts a number (constant), None, a model, or a mapping with `kind` in
    constant | uniform | lognormal | pareto | mixture | straggler | empirical.
    """
    if spec is None or (isinstance(spec, LatencyModel) and not isinstance(spec, Mapping)):
        return spec  # type: ignore[return-value]
    if isinstance(spec, int | float):
        return Constant(float(spec))
    if not isinstance(spec, Mapping):
        raise TypeError(f"cannot build a latency model from {spec!r}")
    kw = dict(spec)
    kind = kw.pop("kind", None)
    if kind == "constant":
        return Constant(**kw)
    if kind == "uniform":
        return Uniform(**kw)
    if kind == "lognormal":
        return LogNormal(**kw)
    if kind == "pareto":
        return Pareto(**kw)
    if kind == "mixture":
        comps = tuple(_required(from_spec(c)) for c in kw.pop("components"))
        return Mixture(comps, tuple(float(w) for w in kw.pop("weights")))
    if kind == "straggler":
        return Mixture.straggler(
            _required(from_spec(kw["body"])), _required(from_spec(kw["tail"])), float(kw["p"])
        )
    if kind == "empirical":
        if "path" in kw:
            return Empirical.from_trace(kw["path"], kw.get("column"))
        return Empirical(tuple(float(x) for x in kw["samples"]))
    raise ValueError(
        f"unknown latency kind {kind!r}; expected constant, uniform, lognormal, pareto, mixture, straggler or empirical"
    )


def _required(m: LatencyModel | None) -> LatencyModel:
    if m is None:
        raise ValueError("a mixture component cannot be None")
    return m


@dataclass
class LatencyProfile:
    """Where an environment spends time: once per `step`, and once per tool call inside a step."""

    step: LatencyModel | None = None
    tool: LatencyModel | None = None
    per_tool: dict[str, LatencyModel] = field(default_factory=dict)

    def for_tool(self, name: str) -> LatencyModel | None:
        return self.per_tool.get(name, self.tool)


def describe(model: LatencyModel | None) -> str:
    return "none" if model is None else repr(model)


__all__: Sequence[str] = (
    "Constant",
    "Empirical",
    "LatencyModel",
    "LatencyProfile",
    "LogNormal",
    "Mixture",
    "Pareto",
    "Uniform",
    "describe",
    "from_spec",
    "load_trace",
    "wait",
)
