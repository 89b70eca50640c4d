"""Latency models: seeded, with the documented means, and parseable from config."""

from __future__ import annotations

import asyncio
import math

import numpy as np
import pytest

from agentrl.envs import latency as L


def draws(model: L.LatencyModel, n: int = 40_000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.array([model.sample(rng) for _ in range(n)])


@pytest.mark.parametrize(
    "model",
    [
        L.Constant(1.5),
        L.Uniform(1.0, 3.0),
        L.LogNormal(median=2.0, sigma=0.5),
        L.LogNormal(median=1.0, sigma=0.3, shift=0.5, cap=None),
        L.Pareto(scale=1.0, alpha=3.0),
        L.Pareto(scale=1.0, alpha=1.5, cap=10.0),
        L.Pareto(scale=1.0, alpha=1.0, cap=10.0),
        L.Mixture.straggler(L.Uniform(60, 135), L.Uniform(400, 555), 0.125),
        L.Empirical((1.0, 2.0, 4.0)),
    ],
)
def test_sample_mean_matches_closed_form(model: L.LatencyModel) -> None:
    x = draws(model)
    assert (x >= 0).all()
    assert x.mean() == pytest.approx(model.mean(), rel=0.03)


def test_same_seed_same_draws_and_different_seed_differs() -> None:
    m = L.Mixture.straggler(L.LogNormal(1.0, 0.5), L.Pareto(5.0, 1.2, cap=100.0), 0.2)
    assert np.array_equal(draws(m, 100, seed=7), draws(m, 100, seed=7))
    assert not np.array_equal(draws(m, 100, seed=7), draws(m, 100, seed=8))


def test_lognormal_median_is_the_parameter() -> None:
    assert np.median(draws(L.LogNormal(median=3.0, sigma=1.0))) == pytest.approx(3.0, rel=0.03)


def test_uncapped_heavy_pareto_has_infinite_mean() -> None:
    assert math.isinf(L.Pareto(1.0, 0.9).mean())


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: L.Constant(-1), ">= 0"),
        (lambda: L.Uniform(3, 1), "low <= high"),
        (lambda: L.LogNormal(0, 1), "median > 0"),
        (lambda: L.Pareto(1, 0), "alpha > 0"),
        (lambda: L.Mixture((L.Constant(1),), (0.5,)), "sum to 1"),
        (lambda: L.Mixture.straggler(L.Constant(1), L.Constant(2), 1.5), "[0, 1]"),
        (lambda: L.Empirical(()), "at least one"),
        (lambda: L.from_spec({"kind": "gamma"}), "unknown latency kind"),
    ],
)
def test_bad_parameters_get_clear_errors(factory, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        factory()


def test_from_spec_builds_every_kind(tmp_path) -> None:
    trace = tmp_path / "trace.csv"
    trace.write_text("ts,latency_s\n0,1.0\n1,3.0\n")
    spec = {
        "kind": "mixture",
        "weights": [0.5, 0.3, 0.2],
        "components": [
            2.0,
            {
                "kind": "straggler",
                "body": {"kind": "uniform", "low": 1, "high": 2},
                "tail": {"kind": "pareto", "scale": 5, "alpha": 2},
                "p": 0.1,
            },
            {"kind": "empirical", "path": str(trace)},
        ],
    }
    m = L.from_spec(spec)
    assert isinstance(m, L.Mixture)
    assert isinstance(m.components[0], L.Constant)
    assert m.components[2].samples == (1.0, 3.0)
    assert L.from_spec(None) is None
    assert L.from_spec(m) is m


def test_trace_formats(tmp_path) -> None:
    (tmp_path / "a.txt").write_text("# seconds\n0.5\n1.5\n")
    (tmp_path / "b.jsonl").write_text('{"latency_s": 2}\n{"latency_s": 4}\n')
    (tmp_path / "c.csv").write_text("latency_s\n1\noops\n")
    assert L.Empirical.from_trace(tmp_path / "a.txt").samples == (0.5, 1.5)
    assert L.Empirical.from_trace(tmp_path / "b.jsonl").mean() == 3.0
    with pytest.raises(ValueError, match=r"c\.csv:3"):
        L.Empirical.from_trace(tmp_path / "c.csv")


async def test_wait_sleeps_through_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []

    async def fake_sleep(d: float) -> None:
        slept.append(d)

    monkeypatch.setattr(asyncio, "sleep", fake_sleep)
    rng = np.random.default_rng(0)
    assert await L.wait(L.Constant(2.5), rng) == 2.5
    assert await L.wait(None, rng) == 0.0
    assert slept == [2.5]


def test_profile_per_tool_overrides_default() -> None:
    p = L.LatencyProfile(tool=L.Constant(1), per_tool={"python": L.Constant(5)})
    assert p.for_tool("python") == L.Constant(5)
    assert p.for_tool("search") == L.Constant(1)
