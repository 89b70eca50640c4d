"""Algorithms as objects: the registry, each formula pinned by hand-computed vectors, and SPO's state."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pytest
import torch

from agentrl.algo.advantage import grpo, normalise, rloo
from agentrl.algo.divergence import ReplayDivergence, response_mask
from agentrl.algo.loss import aggregate
from agentrl.algo.value_tracker import ValueTracker
from agentrl.algorithms import ALGORITHMS, Algorithm, AlgorithmContext, get_algorithm, register_algorithm
from agentrl.learner import UpdateStats
from agentrl.train_config import AlgoConfig
from agentrl.types import Trajectory


def traj(pid: str, reward: float, group: int | None = None, n_model: int = 2, version: int = 0) -> Trajectory:
    ids = [1, 2, 3] + [4] * n_model + [5]
    mask = [0, 0, 0] + [1] * n_model + [0]
    return Trajectory(
        prompt_id=pid,
        token_ids=ids,
        loss_mask=mask,
        logprobs=[-0.5 * m for m in mask],
        reward=reward,
        group_id=group,
        policy_version=version,
        prompt_len=3,
    )


def build(name: str, **cfg: object) -> Algorithm:
    return get_algorithm(name)(AlgorithmContext(AlgoConfig(name=name, **cfg), ["p0", "p1", "p2"], seed=0))  # type: ignore[arg-type]


def test_registry_lists_the_bundled_algorithms_and_suggests_on_typos() -> None:
    assert {"spo", "grpo", "rloo", "drgrpo", "no_baseline"} <= set(ALGORITHMS)
    assert get_algorithm("rloo").mode == "group" and get_algorithm("spo").mode == "stream"
    with pytest.raises(ValueError, match=r"unknown algorithm 'grop'; did you mean 'grpo'\?"):
        get_algorithm("grop")
    with pytest.raises(ValueError, match="already registered"):
        register_algorithm("grpo")(type("Other", (Algorithm,), {"advantages": lambda self, b: None}))


def test_a_new_algorithm_is_one_class_and_one_registry_entry() -> None:
    from agentrl.algo.advantage import no_baseline

    @register_algorithm("test-constant-baseline")
    class Half(Algorithm):
        def advantages(self, batch: Sequence[Trajectory]):  # type: ignore[no-untyped-def]
            return no_baseline([t.reward - 0.5 for t in batch], normalize=False)

    try:
        algo = build("test-constant-baseline")
        np.testing.assert_allclose(
            algo.advantages([traj("p0", 1.0), traj("p1", 0.0)]).advantages, [0.5, -0.5]
        )
        assert algo.group_size == 1 and algo.make_sampler().sample(2)
    finally:
        del ALGORITHMS["test-constant-baseline"]


def test_rloo_hand_computed() -> None:
    # group 0: rewards 1, 0, 0, 1 -> each baseline is the mean of the other three
    # group 1: rewards 1, 0 -> baselines 0 and 1; group 2: all equal -> 0
    r = [1, 0, 0, 1, 1, 0, 0.5, 0.5]
    g = [0, 0, 0, 0, 1, 1, 2, 2]
    want = [1 - 1 / 3, 0 - 2 / 3, 0 - 2 / 3, 1 - 1 / 3, 1.0, -1.0, 0.0, 0.0]
    res = rloo(r, g)
    np.testing.assert_allclose(res.advantages, want)
    # the identity A = G/(G-1) (r - mean_G)
    np.testing.assert_allclose(res.advantages[:4], 4 / 3 * (np.array(r[:4]) - 0.5))
    assert res.diagnostics.frac_degenerate_groups == pytest.approx(1 / 3)
    algo = build("rloo", group_size=4)
    batch = [traj(f"p{gi}", ri, gi) for ri, gi in zip(r, g, strict=True)]
    np.testing.assert_allclose(algo.advantages(batch).advantages, want)
    assert algo.group_size == 4 and algo.loss_aggregation() == {}


def test_drgrpo_no_std_scaling_and_a_constant_normaliser() -> None:
    r, g = [1.0, 0.0, 0.0, 0.0], [0, 0, 0, 0]
    algo = build("drgrpo", group_size=4, norm_tokens=100)
    np.testing.assert_allclose(
        algo.advantages([traj("p0", x, 0) for x in r]).advantages, [0.75, -0.25, -0.25, -0.25]
    )
    np.testing.assert_allclose(grpo(r, g).advantages, np.array([0.75, -0.25, -0.25, -0.25]) / (0.5 + 1e-6))
    assert algo.loss_aggregation() == {"aggregation": "constant", "norm_tokens": 100.0}
    default = get_algorithm("drgrpo")(AlgorithmContext(AlgoConfig(name="drgrpo"), ["p0"], max_tokens=768))
    assert default.loss_aggregation()["norm_tokens"] == 768.0
    # constant aggregation: token sums / (sequences x constant), whatever each sequence's length
    values = torch.tensor([[1.0, 1.0, 0.0], [2.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    assert float(aggregate(values, mask, "constant", norm_tokens=10)) == pytest.approx((2 + 2) / (2 * 10))
    assert float(aggregate(values, mask, "token-mean")) == pytest.approx(4 / 3)


def test_batch_normalisation_ddof_hand_computed() -> None:
    a = np.array([1.0, 0.0, 0.0, 0.0])
    np.testing.assert_allclose(normalise(a, ddof=0, eps=0), (a - 0.25) / np.sqrt(0.1875))
    np.testing.assert_allclose(normalise(a, ddof=1, eps=0), (a - 0.25) / np.sqrt(0.25))
    # token measure, weights 1:3 -> mean .25 over tokens; unbiased with reliability weights
    w = np.array([1.0, 3.0])
    x = np.array([1.0, 0.0])
    p = w / w.sum()
    var0 = float(np.dot(p, (x - 0.25) ** 2))
    np.testing.assert_allclose(
        normalise(x, centring="token", token_counts=w, eps=0, ddof=0), (x - 0.25) / np.sqrt(var0)
    )
    var1 = var0 / (1 - np.dot(p, p))
    np.testing.assert_allclose(
        normalise(x, centring="token", token_counts=w, eps=0, ddof=1), (x - 0.25) / np.sqrt(var1)
    )


def stats(kl: float, steps: int = 1) -> UpdateStats:
    return UpdateStats(kl=kl, optimizer_steps=steps)


def test_spo_owns_tracker_divergence_and_odometer_and_round_trips() -> None:
    algo = build("spo", offline_prompts=2, offline_n0=2)
    assert algo.offline_init_request() == (["p0", "p1"], 2)
    algo.init_offline({"p0": [1.0, 0.0], "p1": [0.0, 0.0]})
    assert algo.tracker.value("p0") == pytest.approx(0.5)  # type: ignore[attr-defined]
    assert algo.tracker.value("p1") == pytest.approx(0.5 / 3)  # (0 + .5)/(2 + 1)  # type: ignore[attr-defined]
    batch = [traj("p0", 1.0), traj("p1", 0.0), traj("p2", 1.0)]
    res = algo.advantages(batch)
    raw = np.array([1 - 0.5, 0 - 0.5 / 3, 1 - 0.5])  # p2 unseen: prior (.5, .5)
    np.testing.assert_allclose(res.advantages, (raw - raw.mean()) / (raw.std() + 1e-8))
    m = algo.after_update(batch, stats(0.01), version=1)
    assert {"tracker/rho_mean", "tracker/n_eff_mean", "tracker/d_mean", "tracker/revisits"} <= set(m)
    assert m["tracker/revisits"] == 0 and "tracker/d_odometer_mean" not in m  # nothing to compare yet
    assert algo.odometer.total == pytest.approx(0.01)  # type: ignore[attr-defined]
    clone = build("spo", offline_prompts=2, offline_n0=2)
    clone.load_state_dict(algo.state_dict())
    assert clone.state_dict()["tracker"]["prompt_ids"] == algo.state_dict()["tracker"]["prompt_ids"]
    np.testing.assert_allclose(
        clone.tracker.values(["p0", "p1", "p2"]), algo.tracker.values(["p0", "p1", "p2"])
    )  # type: ignore[attr-defined]
    assert clone.odometer.total == pytest.approx(0.01)  # type: ignore[attr-defined]
    # GRPO keeps no tracker: nothing to checkpoint, no tracker metrics
    g = build("grpo", group_size=2)
    assert g.state_dict() == {} and g.after_update(batch, stats(0.01), 1) == {}


def test_odometer_scale_multiplies_d() -> None:
    a, b = build("spo", odometer_scale=1.0), build("spo", odometer_scale=4.0)
    for algo in (a, b):
        algo.advantages([traj("p0", 1.0)])
        algo.after_update([traj("p0", 1.0)], stats(0.02), version=1)
        algo.advantages([traj("p0", 0.0, version=1)])
    ma = a.after_update([traj("p0", 0.0)], stats(0.0), 2)
    mb = b.after_update([traj("p0", 0.0)], stats(0.0), 2)
    assert ma["tracker/d_mean"] == pytest.approx(0.02) and mb["tracker/d_mean"] == pytest.approx(0.08)
    # at a revisit both estimators are logged: D as used, and the unscaled odometer beside it
    assert mb["tracker/d_revisit_mean"] == pytest.approx(0.08) and mb[
        "tracker/d_odometer_mean"
    ] == pytest.approx(0.02)


class FakeScorer:
    """Re-scores every token at a fixed log-prob that the test moves, like a policy update would."""

    def __init__(self) -> None:
        self.level = -1.0
        self.calls = 0

    def __call__(self, trajs: Sequence[Trajectory]) -> list[np.ndarray]:
        self.calls += 1
        return [np.full(len(t.token_ids), self.level) for t in trajs]


def test_replay_recipe_mode_hand_computed() -> None:
    """First visit D = 0 (rho_max); D measured against the trainer's re-score right after the update,
    over the whole response (tool tokens too)."""
    scorer = FakeScorer()
    cfg = AlgoConfig(
        divergence="replay", replay_first_visit="rho_max", replay_mask="response", replay_reference="rescored"
    )
    algo = get_algorithm("spo")(AlgorithmContext(cfg, ["p0"], score=scorer))
    first = [traj("p0", 1.0)]
    algo.advantages(first)
    assert algo.after_update(first, stats(0.0), 1)["tracker/rho_mean"] == pytest.approx(0.96)  # D = 0
    assert scorer.calls == 1  # the post-update re-score of the batch
    div = algo.divergence  # type: ignore[attr-defined]
    assert isinstance(div, ReplayDivergence)
    stored = div._last["p0"]
    assert stored.loss_mask == response_mask(first[0]) == [0, 0, 0, 1, 1, 1]
    assert stored.logprobs == [-1.0] * 6
    scorer.level = -1.03  # the policy moved: every response token's log-prob changed by 0.03
    algo.advantages([traj("p0", 0.0)])
    m = algo.after_update([traj("p0", 0.0)], stats(0.0), 2)
    assert m["tracker/d_mean"] == pytest.approx(0.03)
    assert m["tracker/rho_mean"] == pytest.approx(max(0.875, min(0.96, 2 ** (-0.03 / 0.06))))


def test_replay_agentrl_mode_uses_sampling_logprobs_and_rho_min_first() -> None:
    scorer = FakeScorer()
    algo = get_algorithm("spo")(AlgorithmContext(AlgoConfig(divergence="replay"), ["p0"], score=scorer))
    algo.advantages([traj("p0", 1.0)])
    assert algo.after_update([traj("p0", 1.0)], stats(0.0), 1)["tracker/rho_mean"] == pytest.approx(0.875)
    scorer.level = -0.5  # equal to the sampling log-probs on model tokens: D = 0
    algo.advantages([traj("p0", 1.0)])
    m = algo.after_update([traj("p0", 1.0)], stats(0.0), 2)
    assert m["tracker/d_mean"] == pytest.approx(0.0) and m["tracker/rho_mean"] == pytest.approx(0.96)


def test_replay_needs_a_scorer() -> None:
    with pytest.raises(ValueError, match="replay"):
        get_algorithm("spo")(AlgorithmContext(AlgoConfig(divergence="replay"), ["p0"]))


def test_tracker_histogram_covers_visited_prompts_only() -> None:
    algo = build("spo")
    algo.init_offline({"p0": [1.0], "p1": [0.0], "p2": [1.0]})
    algo.advantages([traj("p1", 1.0)])
    assert len(algo.tracker_values()) == 1  # type: ignore[attr-defined]
    assert ValueTracker().rho(math.inf) == pytest.approx(0.875)
