"""Advantage estimators against hand-computed numbers."""

from __future__ import annotations

import numpy as np
import pytest

from agentrl.algo.advantage import compute_advantages, grpo, no_baseline, normalise, spo


def test_spo_batch_normalisation_hand_computed() -> None:
    res = spo([1, 0, 1, 0], [0.5, 0.5, 0.25, 0.75])
    raw = np.array([0.5, -0.5, 0.75, -0.75])  # mean 0
    std = np.sqrt((0.25 + 0.25 + 0.5625 + 0.5625) / 4)  # .637377
    np.testing.assert_allclose(res.advantages, raw / (std + 1e-8), rtol=1e-12)
    d = res.diagnostics
    assert d.raw_variance == pytest.approx(0.40625)
    assert d.raw_mean == 0.0
    assert d.frac_degenerate_groups is None


def test_normalisation_removes_mean_and_scale() -> None:
    res = spo([1, 1, 0], [0.2, 0.4, 0.9])
    raw = np.array([0.8, 0.6, -0.9])
    expected = (raw - raw.mean()) / (raw.std() + 1e-8)
    np.testing.assert_allclose(res.advantages, expected)
    assert res.advantages.mean() == pytest.approx(0.0, abs=1e-12)
    assert res.advantages.std() == pytest.approx(1.0, abs=1e-7)
    np.testing.assert_allclose(spo([1, 1, 0], [0.2, 0.4, 0.9], normalize=False).advantages, raw)


def test_single_sample_batch_gives_zero_not_nan() -> None:
    assert spo([1.0], [0.3]).advantages.tolist() == [0.0]


def test_token_measure_centring_hand_computed() -> None:
    # raw [1, 0] with token counts [3, 1]: weighted mean .75, weighted std sqrt(.1875)
    out = normalise(np.array([1.0, 0.0]), centring="token", token_counts=[3, 1])
    np.testing.assert_allclose(out, [0.25 / np.sqrt(0.1875), -0.75 / np.sqrt(0.1875)], rtol=1e-7)
    assert np.dot([0.75, 0.25], out) == pytest.approx(0.0, abs=1e-12)  # centred under the token measure
    with pytest.raises(ValueError, match="token_counts"):
        normalise(np.array([1.0, 0.0]), centring="token")


def test_grpo_hand_computed_and_degenerate_group_zero() -> None:
    res = grpo([1, 0, 0, 0, 1, 1, 1, 1], [0, 0, 0, 0, 1, 1, 1, 1])
    # group 0: mean .25, centred [.75, -.25, -.25, -.25], unbiased std .5
    np.testing.assert_allclose(res.advantages[:4], np.array([0.75, -0.25, -0.25, -0.25]) / (0.5 + 1e-6))
    assert res.advantages[4:].tolist() == [0.0, 0.0, 0.0, 0.0]
    assert res.diagnostics.frac_degenerate_groups == 0.5
    assert res.diagnostics.frac_samples_in_degenerate_groups == 0.5
    np.testing.assert_allclose(
        grpo([1, 0, 0, 0], ["a"] * 4, scale_std=False).advantages, [0.75, -0.25, -0.25, -0.25]
    )


def test_grpo_all_equal_and_singleton_groups() -> None:
    res = grpo([0.3, 0.3, 0.3, 1.0], ["g", "g", "g", "solo"])
    assert res.advantages.tolist() == [0.0, 0.0, 0.0, 0.0]
    assert res.diagnostics.frac_degenerate_groups == 1.0


def test_no_baseline_and_near_zero_diagnostics() -> None:
    res = no_baseline([1, 0, 0, 1])
    np.testing.assert_allclose(res.advantages, [1, -1, -1, 1], rtol=1e-7)
    d = spo([0.5, 0.5, 0.5, 1.0], [0.5, 0.49995, 0.49, 0.5]).diagnostics  # raw [0, 5e-5, .01, .5]
    assert d.frac_near_zero_1e4 == 0.5
    assert d.frac_near_zero_0_02 == 0.75
    g = spo([1, 1, 0, 1], [0.5] * 4, group_ids=["a", "a", "b", "b"]).diagnostics
    assert g.frac_degenerate_groups == 0.5


def test_dispatch_and_errors() -> None:
    np.testing.assert_allclose(
        compute_advantages("spo", [1, 0], baselines=[0.5, 0.5]).advantages, spo([1, 0], [0.5, 0.5]).advantages
    )
    with pytest.raises(ValueError, match="baselines"):
        compute_advantages("spo", [1, 0])
    with pytest.raises(ValueError, match="group_ids"):
        compute_advantages("grpo", [1, 0])
    with pytest.raises(ValueError, match="unknown"):
        compute_advantages("ppo", [1, 0])
    with pytest.raises(ValueError, match="finite"):
        spo([np.nan], [0.5])
    with pytest.raises(ValueError, match="length"):
        spo([1, 0], [0.5])
