"""Prompt samplers: weights by hand, chi-square against the weights, determinism, checkpointing."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from scipy.stats import chisquare

from agentrl.algo.sampler import PrioritizedSampler, UniformSampler, make_sampler
from agentrl.algo.value_tracker import ValueTracker

POOL = [f"p{i:02d}" for i in range(20)]


def _tracker() -> ValueTracker:
    """Prompt i gets offline value i/8 (clipped to 8 samples), unknown ones keep the prior."""
    t = ValueTracker()
    for i, pid in enumerate(POOL[:16]):
        s = i % 9
        t.init_offline(pid, [1] * s + [0] * (8 - s))
    return t


def test_weights_hand_computed() -> None:
    t = ValueTracker(init_smoothing=0.0)  # v0 = s/n
    t.init_offline("half", [1, 0])  # v = .5, N = 8
    t.init_offline("zero", [0, 0])  # v = 0
    t.init_offline("three8", [1, 1, 1, 0, 0, 0, 0, 0])  # v = 3/8
    s = PrioritizedSampler(t, ["half", "zero", "three8", "unseen"], eps=0.05)
    np.testing.assert_allclose(s.weights(), [0.55, 0.05, np.sqrt(15 / 64) + 0.05, 0.55])
    g = PrioritizedSampler(t, ["half", "zero", "unseen"], eps=0.05, gamma=1.0)
    # N_eff = 8 for the offline prompts, 1 (the prior's) for the unseen one
    np.testing.assert_allclose(g.weights(), [0.5 / 8 + 0.05, 0.05, 0.5 + 0.05])


def test_with_replacement_matches_weights_chi_square() -> None:
    t = _tracker()
    s = PrioritizedSampler(t, POOL, seed=123, replace=True)
    n = 40_000
    draws = s.sample(n)
    counts = np.array([draws.count(p) for p in POOL])
    expected = s.probabilities() * n
    assert chisquare(counts, expected).pvalue > 0.01


def test_without_replacement_first_draw_follows_weights() -> None:
    t = _tracker()
    s = PrioritizedSampler(t, POOL, seed=7, replace=False)
    firsts = []
    for _ in range(4000):
        batch = s.sample(5)
        assert len(set(batch)) == 5
        firsts.append(batch[0])
    counts = np.array([firsts.count(p) for p in POOL])
    assert chisquare(counts, s.probabilities() * len(firsts)).pvalue > 0.01


def test_deterministic_for_a_seed_and_resumable() -> None:
    t = _tracker()
    a = PrioritizedSampler(t, POOL, seed=5)
    b = PrioritizedSampler(t, POOL, seed=5)
    assert a.sample(8) == b.sample(8)
    state = pickle.loads(pickle.dumps(a.state_dict()))
    nxt = a.sample(8)
    c = PrioritizedSampler(t, POOL, seed=999)
    c.load_state_dict(state)
    assert c.sample(8) == nxt
    assert PrioritizedSampler(t, POOL, seed=6).sample(8) != nxt


def test_sampler_follows_tracker_changes_and_reloads() -> None:
    t = ValueTracker(init_smoothing=0.0)  # v0 = s/n
    s = PrioritizedSampler(t, ["a", "b"], eps=0.05)
    np.testing.assert_allclose(s.weights(), [0.55, 0.55])
    t.init_offline("a", [1, 1])  # v = 1 -> weight eps only
    np.testing.assert_allclose(s.weights(), [0.05, 0.55])
    other = ValueTracker(init_smoothing=0.0)
    other.init_offline("b", [0, 0])
    t.load_state_dict(other.state_dict())  # indices change meaning: the cache must refresh
    np.testing.assert_allclose(s.weights(), [0.55, 0.05])


def test_uniform_sampler() -> None:
    s = UniformSampler(POOL, seed=3)
    batch = s.sample(20)
    assert sorted(batch) == POOL
    state = s.state_dict()
    nxt = s.sample(6)
    u = UniformSampler(POOL, seed=0)
    u.load_state_dict(state)
    assert u.sample(6) == nxt
    r = UniformSampler(POOL, seed=4, replace=True)
    draws = r.sample(20_000)
    counts = np.array([draws.count(p) for p in POOL])
    assert chisquare(counts).pvalue > 0.01


def test_errors() -> None:
    t = ValueTracker()
    with pytest.raises(ValueError, match="distinct"):
        PrioritizedSampler(t, ["a", "b"]).sample(3)
    with pytest.raises(ValueError, match="duplicate"):
        UniformSampler(["a", "a"])
    with pytest.raises(ValueError, match="empty"):
        UniformSampler([])
    with pytest.raises(ValueError, match="eps"):
        PrioritizedSampler(t, ["a"], eps=0.0)
    state = UniformSampler(["a", "b"]).state_dict()
    with pytest.raises(ValueError, match="different prompt pool"):
        UniformSampler(["a", "c"]).load_state_dict(state)
    with pytest.raises(ValueError, match="uniform"):
        PrioritizedSampler(t, ["a", "b"]).load_state_dict(state)
    with pytest.raises(ValueError, match="ValueTracker"):
        make_sampler("prioritized", ["a"])
    assert isinstance(make_sampler("uniform", ["a"]), UniformSampler)
    assert PrioritizedSampler(t, ["a", "b"]).sample(2) in (["a", "b"], ["b", "a"])


def test_recipe_smoothing_keeps_unsolved_prompts_in_play() -> None:
    """Add-1/2: a prompt solved 0 of 8 times starts at 1/18, so it is drawn by its sqrt(v(1-v)) too."""
    t = ValueTracker()  # init_smoothing = 0.5, the reference recipe's
    t.init_offline("zero", [0] * 8)  # v0 = 0.5 / 9
    t.init_offline("all", [1] * 8)  # v0 = 8.5 / 9
    s = PrioritizedSampler(t, ["zero", "all"], eps=0.05)
    v = 0.5 / 9
    np.testing.assert_allclose(s.weights(), [np.sqrt(v * (1 - v)) + 0.05] * 2)
    raw = ValueTracker(init_smoothing=0.0)
    raw.init_offline("zero", [0] * 8)
    ratio = s.weights()[0] / PrioritizedSampler(raw, ["zero"], eps=0.05).weights()[0]
    assert ratio == pytest.approx((np.sqrt(v * (1 - v)) + 0.05) / 0.05)  # about 5.6x more often
