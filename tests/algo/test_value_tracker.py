"""ValueTracker: formulas pinned to hand-computed numbers, plus properties and checkpointing."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentrl.algo.value_tracker import ValueTracker


def test_unknown_prompt_uses_prior() -> None:
    t = ValueTracker()
    assert t.value("x") == 0.5
    assert t.n_eff("x") == 1.0
    assert "x" not in t  # reading does not create state


def test_beta_update_hand_computed() -> None:
    t = ValueTracker()
    # D = 0 -> rho = clip(1, .875, .96) = .96; alpha = .96*.5 + 1 = 1.48, beta = .96*.5 = .48
    assert t.update("x", 1.0, 0.0) == 0.5
    assert t.counts("x") == pytest.approx((1.48, 0.48))
    assert t.value("x") == pytest.approx(1.48 / 1.96)
    # D = d_half -> 2^-1 = .5, clipped to .875; alpha = 1.295, beta = .42 + 1 = 1.42
    before = t.update("x", 0.0, 0.06)
    assert before == pytest.approx(1.48 / 1.96)
    assert t.counts("x") == pytest.approx((1.295, 1.42))
    assert t.n_eff("x") == pytest.approx(2.715)
    assert t.visits("x") == 2


def test_equivalent_to_adaptive_moving_average() -> None:
    rng = np.random.default_rng(0)
    t = ValueTracker()
    v, n = 0.5, 1.0
    for _ in range(200):
        r = float(rng.uniform())  # non-binary rewards too
        d = float(rng.exponential(0.01))
        rho = t.rho(d)
        eta = 1.0 / (rho * n + 1.0)
        v = v + eta * (r - v)
        n = rho * n + 1.0
        t.update("x", r, d)
        assert t.value("x") == pytest.approx(v, rel=1e-12, abs=1e-12)
        assert t.n_eff("x") == pytest.approx(n, rel=1e-12)


def test_rho_clipping_both_bounds_and_interior() -> None:
    t = ValueTracker(rho_min=0.875, rho_max=0.96, d_half=0.06)
    assert t.rho(0.0) == 0.96  # 2^0 = 1 clipped down
    assert t.rho(0.003) == 0.96  # 2^-0.05 = .9659 clipped down
    assert t.rho(0.006) == pytest.approx(2**-0.1)  # .93303, inside the bounds
    assert t.rho(0.06) == 0.875  # .5 clipped up
    assert t.rho(math.inf) == 0.875
    np.testing.assert_allclose(t.rho(np.array([0.0, 0.006, 1.0])), [0.96, 2**-0.1, 0.875])


@pytest.mark.parametrize("d, rho", [(0.0, 0.96), (0.006, 2**-0.1), (1.0, 0.875)])
def test_steady_state_n_eff(d: float, rho: float) -> None:
    t = ValueTracker()
    for i in range(600):
        t.update("x", float(i % 2), d)
    assert t.n_eff("x") == pytest.approx(1.0 / (1.0 - rho), rel=1e-9)


def test_offline_init_hand_computed() -> None:
    t = ValueTracker(rho_min=0.875, init_smoothing=0.0)
    t.init_offline("x", [1, 1, 0, 0, 0, 0, 0, 1])  # v0 = 3/8, N0 = 1/(1-.875) = 8
    assert t.counts("x") == pytest.approx((3.0, 5.0))
    assert t.value("x") == pytest.approx(0.375)
    assert t.n_eff("x") == pytest.approx(8.0)
    assert t.visits("x") == 0


def test_global_mean_prior() -> None:
    t = ValueTracker(prior="global_mean", prior_strength=2.0, init_smoothing=0.0)
    assert t.value("new") == 0.5
    t.init_offline_batch(["a", "b"], [[1, 1, 1, 1], [1, 0, 0, 0]])  # means 1.0 and .25
    assert t.value("new") == pytest.approx(0.625)
    assert t.n_eff("new") == pytest.approx(2.0)


def test_update_batch_equals_sequential_updates_with_repeats() -> None:
    rng = np.random.default_rng(1)
    ids = [f"p{int(i)}" for i in rng.integers(0, 5, size=40)]
    rewards = rng.uniform(size=40)
    divs = rng.exponential(0.01, size=40)
    a, b = ValueTracker(), ValueTracker()
    seq = np.array([a.update(p, r, d) for p, r, d in zip(ids, rewards, divs, strict=True)])
    bat = b.update_batch(ids, rewards, divs)
    np.testing.assert_array_equal(seq, bat)
    for p in set(ids):
        assert a.counts(p) == b.counts(p)


def test_odometer_mode_derives_divergence_from_last_visit() -> None:
    t = ValueTracker()
    t.update("x", 1.0, odometer=0.0, policy_version=0)  # D = |0 - 0| = 0 -> rho .96
    assert t.counts("x") == pytest.approx((1.48, 0.48))
    t.update("x", 1.0, odometer=0.5, policy_version=3)  # D = .5 -> rho .875
    assert t.counts("x") == pytest.approx((0.875 * 1.48 + 1, 0.875 * 0.48))
    assert t.last_odometer(["x", "never"]).tolist() == [0.5, 0.0]
    assert t.last_version(["x"]).tolist() == [3]
    # Repeats within one batch see the reading left by the earlier occurrence: D = 0.
    t2 = ValueTracker()
    t2.update_batch(["y", "y"], [1.0, 1.0], odometer=[1.0, 1.0])
    a1 = 0.875 * 0.5 + 1  # first: D = 1 from the initial reading 0
    assert t2.counts("y")[0] == pytest.approx(0.96 * a1 + 1)


def test_bad_inputs_are_rejected() -> None:
    t = ValueTracker()
    with pytest.raises(ValueError, match="rewards must lie in"):
        t.update("x", 1.5, 0.0)
    with pytest.raises(ValueError, match="finite"):
        t.update("x", math.nan, 0.0)
    with pytest.raises(ValueError, match="divergences"):
        t.update("x", 1.0, -0.1)
    with pytest.raises(ValueError, match="odometer"):
        t.update("x", 1.0)
    with pytest.raises(ValueError, match="rho_min"):
        ValueTracker(rho_min=0.99, rho_max=0.9)
    with pytest.raises(ValueError, match="at least one reward"):
        t.init_offline("x", [])
    assert "x" not in t  # failed calls left no state


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(0.0, 1.0),
            st.one_of(st.floats(0.0, 1e6), st.just(math.inf)),
        ),
        min_size=1,
        max_size=120,
    ),
    st.booleans(),
)
def test_value_in_unit_interval_and_n_eff_bounded(seq: list[tuple[float, float]], offline: bool) -> None:
    t = ValueTracker()
    if offline:
        t.init_offline("x", [1, 0, 0])
    n_init = t.n_eff("x")
    bound = max(n_init, 1.0 / (1.0 - t.rho_max))
    for r, d in seq:
        t.update("x", r, d)
        v = t.value("x")
        assert 0.0 <= v <= 1.0
        assert 0.0 < t.n_eff("x") <= bound + 1e-9


def test_state_dict_round_trip_is_bit_exact() -> None:
    rng = np.random.default_rng(2)
    t = ValueTracker(prior="global_mean", d_half=0.05)
    ids = [f"task/{i}" for i in range(50)]
    for _ in range(10):
        batch = list(rng.choice(ids, size=16))
        t.update_batch(
            batch, rng.integers(0, 2, 16), rng.exponential(0.02, 16), odometer=rng.uniform(size=16)
        )
    blob = pickle.dumps(t.state_dict())
    u = ValueTracker()
    u.load_state_dict(pickle.loads(blob))
    s1, s2 = t.state_dict(), u.state_dict()
    assert s1["config"] == s2["config"] and s1["prompt_ids"] == s2["prompt_ids"]
    for k in ("alpha", "beta", "last_odometer", "last_version", "visits"):
        np.testing.assert_array_equal(s1[k], s2[k])
    # ... and both evolve identically afterwards.
    more = list(rng.choice([*ids, "fresh"], size=16))
    r, d = rng.integers(0, 2, 16), rng.exponential(0.02, 16)
    np.testing.assert_array_equal(t.update_batch(more, r, d), u.update_batch(more, r, d))


def test_load_rejects_inconsistent_state() -> None:
    t = ValueTracker()
    t.update("x", 1.0, 0.0)
    state = t.state_dict()
    state["alpha"] = state["alpha"][:0]
    u = ValueTracker()
    u.update("keep", 1.0, 0.0)
    with pytest.raises(ValueError, match="alpha"):
        u.load_state_dict(state)
    assert "keep" in u  # untouched


def test_state_is_under_100_bytes_per_prompt() -> None:
    n = 100_000
    t = ValueTracker()
    ids = [f"calculator/train/{i:06d}" for i in range(n)]
    t.update_batch(ids, np.ones(n), np.zeros(n), odometer=np.zeros(n), policy_versions=np.ones(n, dtype=int))
    size = len(pickle.dumps(t.state_dict(), protocol=pickle.HIGHEST_PROTOCOL))
    assert size / n < 100, f"{size / n:.1f} bytes per prompt"


@pytest.mark.parametrize(
    ("c", "rewards", "v0"),
    [
        (0.5, [1, 1, 0, 0, 0, 0, 0, 1], 3.5 / 9),
        (0.5, [0] * 8, 0.5 / 9),
        (1.0, [1, 0], 2 / 4),
        (0.5, [0.25, 0.75, 1.0], 2.5 / 4),
    ],
)
def test_offline_init_smoothing_hand_computed(c: float, rewards: list[float], v0: float) -> None:
    """v0 = (s + c) / (n + 2c) with the same N0 = 1/(1 - rho_min) = 8."""
    t = ValueTracker(rho_min=0.875, init_smoothing=c)
    t.init_offline("x", rewards)
    assert t.value("x") == pytest.approx(v0)
    assert t.counts("x") == pytest.approx((8 * v0, 8 * (1 - v0)))
    assert t.n_eff("x") == pytest.approx(8.0)
    u = ValueTracker.from_state_dict(t.state_dict())
    assert u.init_smoothing == c and u.value("x") == pytest.approx(v0)
    with pytest.raises(ValueError, match="init_smoothing"):
        ValueTracker(init_smoothing=-1.0)
