"""The `agentrl train` configuration: one dataclass per concern, all overridable as `section.key=value`.

Defaults are the README's main job: SPO on `agentrl/Calculator-v0` with the `tiny` model on CPU,
sized to finish in minutes on 2 cores. The paper's settings (spo-algorithm.md §5) differ in batch
size, learning rate and lengths, and are what `experiments/` and GPU users set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass
class ModelConfig:
    # tiny | tiny-random-init | tiny-python | tiny-search | smollm2-135m | <hf id or local path>
    name: str = "tiny"
    backend: Literal["hf", "openai", "vllm"] = "hf"
    endpoints: list[str] = field(default_factory=list)  # openai backend: base URLs of vLLM servers
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    request_timeout: float = 60.0
    prefix_cache_mb: float = 256.0  # hf backend: KV store for multi-turn prefixes (0: off)

    def __post_init__(self) -> None:
        if self.prefix_cache_mb < 0:
            raise ValueError(f"prefix_cache_mb must be >= 0, got {self.prefix_cache_mb}")


@dataclass
class EnvConfig:
    id: str = "agentrl/Calculator-v0"
    kwargs: dict[str, Any] = field(default_factory=dict)
    latency: dict[str, Any] | None = None  # a latency spec (agentrl.envs.latency.from_spec) per tool call
    max_turns: int | None = None
    train_prompts: int | None = None  # use only the first N train tasks (None: all)


@dataclass
class AlgoConfig:
    name: Literal["spo", "grpo", "no_baseline"] = "spo"
    group_size: int = 8  # GRPO only
    grpo_scale_std: bool = True
    token_centring: bool = False  # SPO++ token-measure centring of the advantage
    rho_min: float = 0.875
    rho_max: float = 0.96
    d_half: float = 0.06
    divergence: Literal["odometer", "replay"] = "odometer"
    prioritized: bool = True  # SPO prompt sampling by sqrt(v(1-v)) + eps; GRPO samples uniformly
    sampler_eps: float = 0.05
    sampler_gamma: float = 0.0
    offline_init: bool = True
    offline_n0: int = 8
    offline_prompts: int | None = 64  # tracker init on the first N train prompts (None: all)

    def __post_init__(self) -> None:
        if self.group_size < 2:
            raise ValueError(f"group_size must be >= 2, got {self.group_size}")
        if not 0 < self.rho_min <= self.rho_max < 1:
            raise ValueError(f"need 0 < rho_min <= rho_max < 1, got {self.rho_min}, {self.rho_max}")


@dataclass
class RolloutConfig:
    batch_size: int = 128  # trajectories per update (GRPO: a multiple of group_size)
    max_concurrency: int = 128
    regime: Literal["sync", "async"] = "sync"
    max_staleness: int = 1
    overprovision: float = 1.0
    episode_timeout: float = 120.0
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 96  # per model turn
    max_tokens: int = 768  # whole trajectory

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.max_concurrency < 1:
            raise ValueError("batch_size and max_concurrency must be >= 1")


@dataclass
class OptimConfig:
    lr: float = 5e-5
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW
    eps: float = 1e-8  # AdamW; larger values damp the steps of parameters with near-zero gradients
    grad_clip: float = 1.0
    warmup_steps: int = 0
    mini_batches: int = 2
    epochs: int = 1
    micro_batch_size: int = 16  # rows per forward/backward; gradients accumulate up to a mini-batch

    def __post_init__(self) -> None:
        for name in ("mini_batches", "epochs", "micro_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {list(self.betas)}")
        if not self.eps > 0:
            raise ValueError(f"eps must be > 0, got {self.eps}")


@dataclass
class LossConfig:
    clip_low: float = 0.2
    clip_high: float = 0.28
    dual_clip: float | None = 10.0
    aggregation: Literal["token-mean", "seq-mean"] = "token-mean"
    # Weight of the sampled tokens' entropy in the objective: > 0 rewards exploration, < 0 sharpens
    # the policy towards its mode (entropy minimisation); 0 is the paper's loss.
    entropy_coef: float = 0.0


@dataclass
class EvalConfig:
    every: int = 0  # steps between evaluations (0: only before and after training)
    tasks: int = 100  # held-out test tasks
    k: int = 4  # samples per task; success is avg@k
    temperature: float = 1.0  # the rollout temperature; 0 = greedy
    top_p: float = 1.0


@dataclass
class TrainConfig:
    name: str = "calculator-spo"
    seed: int = 0
    steps: int = 25
    run_root: str = "runs"
    checkpoint_every: int = 10
    keep_checkpoints: int = 3
    progress: bool = True
    model: ModelConfig = field(default_factory=ModelConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise ValueError(f"steps must be >= 0, got {self.steps}")
        if self.algo.name == "grpo" and self.rollout.batch_size % self.algo.group_size:
            raise ValueError(
                f"rollout.batch_size ({self.rollout.batch_size}) must be a multiple of "
                f"algo.group_size ({self.algo.group_size}) for GRPO"
            )
