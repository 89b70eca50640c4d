"""SPO's gradient is unbiased and lower-variance: a 2-armed bandit with a softmax policy.

The policy is held fixed, so the exact gradient of J(θ) = Σ_a π_a p_a is known in closed form:
∇J = Σ_a π_a p_a (e_a − π). Many independent "prompts" (runs) each stream rewards through the
real ValueTracker; the baseline v̂₋ is the tracker's value before each reward's update.
"""

from __future__ import annotations

import numpy as np
import torch

from agentrl.algo.advantage import no_baseline, spo
from agentrl.algo.loss import ppo_clip_token_losses
from agentrl.algo.value_tracker import ValueTracker

THETA = np.array([0.3, -0.2])
P_SUCCESS = np.array([0.8, 0.4])


def _simulate(runs: int = 2000, steps: int = 60, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    pi = np.exp(THETA) / np.exp(THETA).sum()
    tracker = ValueTracker()
    ids = [f"run{i}" for i in range(runs)]
    actions, rewards, baselines = [], [], []
    for _ in range(steps):
        a = (rng.uniform(size=runs) < pi[1]).astype(np.int64)
        r = (rng.uniform(size=runs) < P_SUCCESS[a]).astype(np.float64)
        b = tracker.update_batch(ids, r, np.zeros(runs))  # on-policy: D = 0
        actions.append(a)
        rewards.append(r)
        baselines.append(b)
    return np.concatenate(actions), np.concatenate(rewards), np.concatenate(baselines)


def test_spo_gradient_is_unbiased_and_has_lower_variance() -> None:
    pi = np.exp(THETA) / np.exp(THETA).sum()
    exact = sum(pi[a] * P_SUCCESS[a] * (np.eye(2)[a] - pi) for a in range(2))
    actions, rewards, baselines = _simulate()
    adv_spo = spo(rewards, baselines, normalize=False).advantages
    adv_raw = no_baseline(rewards, normalize=False).advantages

    # The gradient through the real loss: at ratio 1, −∇loss = mean(A ∇log π(a)).
    theta = torch.tensor(THETA, requires_grad=True)
    logp = torch.log_softmax(theta, 0)[torch.as_tensor(actions)]
    loss, _, _ = ppo_clip_token_losses(logp, logp.detach(), torch.as_tensor(adv_spo))
    loss.mean().backward()
    grad = -theta.grad.numpy()

    per_sample = adv_spo[:, None] * (np.eye(2)[actions] - pi)  # A ∇log π, per sample
    se = per_sample.std(0) / np.sqrt(len(actions))
    np.testing.assert_allclose(per_sample.mean(0), grad, rtol=1e-9)
    assert np.all(np.abs(grad - exact) < 4 * se), (grad, exact, se)

    raw_per_sample = adv_raw[:, None] * (np.eye(2)[actions] - pi)
    assert np.all(np.abs(raw_per_sample.mean(0) - exact) < 4 * raw_per_sample.std(0) / np.sqrt(len(actions)))
    var_spo = per_sample.var(0).sum()
    var_raw = raw_per_sample.var(0).sum()
    assert var_spo < 0.6 * var_raw, (var_spo, var_raw)
