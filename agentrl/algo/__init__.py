"""Pure algorithm maths: no I/O, no scheduling."""

from agentrl.algo.advantage import (
    AdvantageDiagnostics,
    AdvantageResult,
    compute_advantages,
    grpo,
    grpo_advantages,
    no_baseline,
    no_baseline_advantages,
    normalise,
    spo,
    spo_advantages,
)
from agentrl.algo.divergence import (
    KLOdometer,
    OdometerDivergence,
    ReplayDivergence,
    make_divergence,
    mean_abs_logprob_change,
)
from agentrl.algo.loss import (
    ClipConfig,
    aggregate,
    entropy_from_logits,
    kl_k3,
    ppo_clip_token_losses,
    token_logprobs,
)
from agentrl.algo.metrics import avg_at_k, maj_at_k, majority_vote, pass_at_k
from agentrl.algo.sampler import PrioritizedSampler, UniformSampler, make_sampler
from agentrl.algo.value_tracker import ValueTracker

__all__ = [
    "AdvantageDiagnostics",
    "AdvantageResult",
    "ClipConfig",
    "KLOdometer",
    "OdometerDivergence",
    "PrioritizedSampler",
    "ReplayDivergence",
    "UniformSampler",
    "ValueTracker",
    "aggregate",
    "avg_at_k",
    "compute_advantages",
    "entropy_from_logits",
    "grpo",
    "grpo_advantages",
    "kl_k3",
    "maj_at_k",
    "majority_vote",
    "make_divergence",
    "make_sampler",
    "mean_abs_logprob_change",
    "no_baseline",
    "no_baseline_advantages",
    "normalise",
    "pass_at_k",
    "ppo_clip_token_losses",
    "spo",
    "spo_advantages",
    "token_logprobs",
]
