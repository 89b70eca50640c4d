"""Divergence estimators: the KL odometer and replay re-scoring."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pytest

from agentrl.algo.divergence import (
    KLOdometer,
    OdometerDivergence,
    ReplayDivergence,
    make_divergence,
    mean_abs_logprob_change,
)
from agentrl.algo.value_tracker import ValueTracker
from agentrl.types import Trajectory


def test_odometer_readings_per_version() -> None:
    o = KLOdometer()
    o.record(0.01)  # version 1
    o.record(-0.5)  # a negative estimate does not run the odometer back
    o.record(0.02, version=5)
    assert o.total == pytest.approx(0.03)
    assert o.reading(0) == 0.0
    assert o.reading(1) == pytest.approx(0.01)
    assert o.reading(4) == pytest.approx(0.01)  # latest recorded version <= 4 is 2
    assert o.reading(99) == pytest.approx(0.03)
    with pytest.raises(ValueError, match="increase"):
        o.record(0.1, version=5)
    with pytest.raises(ValueError, match="finite"):
        o.record(math.nan)
    p = KLOdometer()
    p.load_state_dict(o.state_dict())
    assert p.state_dict() == o.state_dict()


def test_odometer_divergence_drives_the_tracker() -> None:
    t = ValueTracker()
    div = OdometerDivergence(t)
    div.update_tracker(["a"], [1.0], policy_versions=[0])  # D = 0 at version 0
    assert t.counts("a") == pytest.approx((1.48, 0.48))
    div.odometer.record(0.004)  # version 1: D = .004 -> rho = 2^(-.004/.06)
    div.odometer.record(0.002)  # version 2
    np.testing.assert_allclose(div.estimate(["a", "b"], [2, 1]), [0.006, 0.004])
    div.update_tracker(["a"], [0.0], policy_versions=[2])
    rho = 2 ** (-0.006 / 0.06)
    assert t.counts("a") == pytest.approx((rho * 1.48, rho * 0.48 + 1))
    assert t.last_version(["a"]).tolist() == [2]


def _traj(pid: str, lps: Sequence[float], mask: Sequence[int]) -> Trajectory:
    return Trajectory(
        prompt_id=pid, token_ids=list(range(len(lps))), loss_mask=list(mask), logprobs=list(lps)
    )


def test_replay_divergence_with_fake_scorer() -> None:
    shift = {"a": 0.1, "b": 0.3}

    def score(trajs: Sequence[Trajectory]) -> list[np.ndarray]:
        return [np.asarray(t.logprobs) - shift[t.prompt_id] * np.arange(len(t.logprobs)) for t in trajs]

    t = ValueTracker()
    rep = ReplayDivergence(t, score)
    assert rep.estimate(["a"]).tolist() == [math.inf]
    rep.update_tracker(["a"], [1.0], trajectories=[_traj("a", [0.0, -1.0, -2.0], [0, 1, 1])])
    assert t.counts("a") == pytest.approx((0.875 * 0.5 + 1, 0.875 * 0.5))  # unseen -> rho_min
    rep.remember([_traj("b", [0.0, -1.0], [0, 1])])
    # a: |0.1*1|, |0.1*2| on masked tokens -> .15; b: .3
    np.testing.assert_allclose(rep.estimate(["a", "b", "a"]), [0.15, 0.3, 0.15])
    state = rep.state_dict()
    rep2 = make_divergence("replay", t, score_fn=score)
    rep2.load_state_dict(state)
    np.testing.assert_allclose(rep2.estimate(["a", "b"]), [0.15, 0.3])


def test_mean_abs_change_and_factory_errors() -> None:
    assert mean_abs_logprob_change(np.array([0.0, -1.0]), np.array([5.0, -1.5]), np.array([0, 1])) == 0.5
    assert mean_abs_logprob_change(np.zeros(2), np.ones(2), np.zeros(2)) == 0.0
    with pytest.raises(ValueError, match="score_fn"):
        make_divergence("replay", ValueTracker())
    with pytest.raises(ValueError, match="unknown"):
        make_divergence("l2", ValueTracker())
    assert make_divergence("odometer", ValueTracker()).name == "odometer"
