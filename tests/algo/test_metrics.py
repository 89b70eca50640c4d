"""avg@k, unbiased pass@k and maj@k."""

from __future__ import annotations

import math

import numpy as np
import pytest

from agentrl.algo.metrics import avg_at_k, maj_at_k, majority_vote, pass_at_k


def test_pass_at_k_matches_combinatorial_formula() -> None:
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - 3 / 10)
    assert pass_at_k(4, 0, 1) == 0.0
    assert pass_at_k(4, 4, 2) == 1.0
    for n in range(1, 12):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert pass_at_k(n, c, k) == pytest.approx(
                    1 - math.comb(n - c, k) / math.comb(n, k), abs=1e-12
                )
    np.testing.assert_allclose(pass_at_k(np.array([5, 4]), np.array([2, 0]), 2), [0.7, 0.0])
    assert 0.0 < pass_at_k(5000, 3, 32) < 1.0  # no overflow
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 4)
    with pytest.raises(ValueError):
        pass_at_k(3, 4, 1)


def test_avg_at_k() -> None:
    assert avg_at_k([1, 0, 1, 1]) == 0.75
    with pytest.raises(ValueError):
        avg_at_k([])


def test_maj_at_k_with_deterministic_ties() -> None:
    answers = ["a", "b", "b", "a", None, None, None]
    assert majority_vote(answers) == "a"  # 2-2 tie: "a" appeared first
    assert maj_at_k(answers, [1, 0, 0, 1, 0, 0, 0]) == 1.0
    assert maj_at_k(["x", "y", "y"], [1, 0, 0]) == 0.0
    assert maj_at_k(["x", "y", "y"], [1, 0, 0], k=1) == 1.0
    assert maj_at_k([None, None], [0, 0]) == 0.0
    with pytest.raises(ValueError):
        maj_at_k(["a"], [1, 0])
