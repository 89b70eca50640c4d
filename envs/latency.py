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
    def from_trace(cls, path: str | Path, column: str = "latency_s") -> Empirical:
        """Load a trace: a `.csv` with a `column` header, `.jsonl` records, or one number per line."""
        path = Path(path)
        text = path.read_text()
        values: list[float] = []
        if path.suffix == ".jsonl":
            for lineno, line in enumerate(text.splitlines(), 1):
                if line.strip():
                    try:
                        values.append(float(json.loads(line)[column]))
                    except (KeyError, ValueError, TypeError) as e:
                        raise ValueError(f"{path}:{lineno}: expected a number in field {column!r}") from e
        else:
            lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
            idx = 0
            if lines and not _is_number(lines[0].split(",")[0]):
                header = [h.strip() for h in lines[0].split(",")]
                if column not in header:
                    raise ValueError(f"{path}: no column {column!r} in header {header}")
                idx = header.index(column)
                lines = lines[1:]
            for lineno, ln in enumerate(lines, 2):
                try:
                    values.append(float(ln.split(",")[idx]))
                except (ValueError, IndexError) as e:
                    raise ValueError(f"{path}:{lineno}: cannot read a latency from {ln!r}") from e
        return cls(tuple(values), source=str(path))

    def sample(self, rng: np.random.Generator) -> float:
        return self.samples[int(rng.integers(len(self.samples)))]

    def mean(self) -> float:
        return float(np.mean(self.samples))


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
            return Empirical.from_trace(kw["path"], kw.get("column", "latency_s"))
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
    "wait",
)
