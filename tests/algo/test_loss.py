"""PPO-clip loss pieces against hand-computed numbers."""

from __future__ import annotations

import math

import pytest
import torch

from agentrl.algo.loss import (
    ClipConfig,
    aggregate,
    entropy_from_logits,
    kl_k3,
    ppo_clip_token_losses,
    token_logprobs,
)


def test_clip_higher_and_dual_clip_hand_computed() -> None:
    ratio = torch.tensor([1.5, 0.5, 0.5, 20.0, 1.1])
    adv = torch.tensor([1.0, 1.0, -1.0, -1.0, 1.0])
    lp = torch.log(ratio)
    loss, r, clipped = ppo_clip_token_losses(lp, torch.zeros(5), adv, ClipConfig(0.2, 0.28, 10.0))
    torch.testing.assert_close(r, ratio)
    # 1.5*1 capped at 1.28; .5*1 unclipped; .5*-1 -> clip(.5)=.8 -> loss .8; 20*-1 -> 20 capped at 10
    torch.testing.assert_close(loss, torch.tensor([-1.28, -0.5, 0.8, 10.0, -1.1]))
    assert clipped.tolist() == [True, False, True, True, False]
    no_dual, _, _ = ppo_clip_token_losses(lp, torch.zeros(5), adv, ClipConfig(0.2, 0.28, None))
    assert no_dual[3].item() == pytest.approx(20.0)


def test_gradient_at_ratio_one_is_policy_gradient() -> None:
    lp = torch.tensor([-0.7, -1.2], requires_grad=True)
    loss, _, _ = ppo_clip_token_losses(lp, lp.detach(), torch.tensor([2.0, -3.0]))
    loss.sum().backward()
    torch.testing.assert_close(lp.grad, torch.tensor([-2.0, 3.0]))


def test_aggregation_modes() -> None:
    v = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]])
    m = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    assert aggregate(v, m, "token-mean").item() == pytest.approx(10 / 4)
    assert aggregate(v, m, "seq-mean").item() == pytest.approx((2 + 4) / 2)
    assert aggregate(v, m, "token-mean", num_tokens=8).item() == pytest.approx(10 / 8)
    assert aggregate(v, m, "seq-mean", num_seqs=4).item() == pytest.approx(6 / 4)
    with pytest.raises(ValueError, match="aggregation"):
        aggregate(v, m, "sum")  # type: ignore[arg-type]


def test_kl_k3_and_logprob_helpers() -> None:
    k = kl_k3(torch.tensor([math.log(0.5)]), torch.tensor([math.log(0.25)]))
    assert k.item() == pytest.approx(-0.5 + math.log(2))
    assert kl_k3(torch.tensor([-1.0]), torch.tensor([-1.0])).item() == 0.0
    logits = torch.tensor([[[0.0, math.log(3.0)]]])
    assert token_logprobs(logits, torch.tensor([[1]])).item() == pytest.approx(math.log(0.75))
    assert token_logprobs(logits, torch.tensor([[1]]), temperature=2.0).item() == pytest.approx(
        math.log(math.sqrt(3) / (1 + math.sqrt(3)))
    )
    assert entropy_from_logits(torch.zeros(1, 1, 4)).item() == pytest.approx(math.log(4))
    with pytest.raises(ValueError, match="dual_clip"):
        ClipConfig(dual_clip=0.5)
