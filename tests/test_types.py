from __future__ import annotations

import pytest

from agentrl import SamplingParams, Status, Trajectory


def test_trajectory_lengths_must_agree() -> None:
    with pytest.raises(ValueError, match="equal length"):
        Trajectory("p", token_ids=[1, 2], loss_mask=[0], logprobs=[0.0, 0.0])


def test_trajectory_counts() -> None:
    t = Trajectory("p", [1, 2, 3], [0, 1, 1], [0.0, -0.5, -0.1], started_at=1.0, finished_at=3.5)
    assert t.num_tokens == 3 and t.num_model_tokens == 2 and t.duration == 2.5


def test_status_trainable() -> None:
    assert Status.OK.trainable and Status.TRUNCATED.trainable
    assert not Status.TIMEOUT.trainable and Status("env_error") is Status.ENV_ERROR


@pytest.mark.parametrize("kw", [{"temperature": -1}, {"top_p": 0}, {"max_new_tokens": 0}])
def test_sampling_params_validate(kw: dict) -> None:
    with pytest.raises(ValueError):
        SamplingParams(**kw)
