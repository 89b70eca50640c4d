"""The one configuration vocabulary: a dataclass per concern, loaded from YAML or TOML and overridden as
`section.key=value`. `agentrl train`, the learner, the rollout scheduler, evaluation and the simulator
all take these same classes; every default is written once, here.

Defaults are the README's main job: SPO on `agentrl/Calculator-v0` with the `tiny` model on CPU, sized
to finish in minutes on 2 cores. The SPO paper's settings differ in batch size, learning rate and
lengths (`docs/spo.md`); the `spo-recipe` preset (`--config spo-recipe`) reproduces the reference
recipe's choices.

Each `__post_init__` checks its fields and raises `ValueError("field: what is wrong")`; the loader
turns that into one line that names the whole dotted key (`optim.lr: must be a finite number > 0`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal


def _finite(name: str, value: float, *, low: float | None = None, strict: bool = True) -> None:
    """`name: must be a finite number > low` (or >= with strict=False)."""
    ok = isinstance(value, int | float) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if strict else value >= low
    if not ok:
        bound = "" if low is None else f" {'>' if strict else '>='} {low:g}"
        raise ValueError(f"{name}: must be a finite number{bound}, got {value!r}")


def _at_least(name: str, value: int | None, low: int, *, none_ok: bool = False) -> None:
    if value is None and none_ok:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name}: must be an integer >= {low}{' or null' if none_ok else ''}, got {value!r}")


@dataclass
class ModelConfig:
    # tiny | tiny-random-init | tiny-python | tiny-search | smollm2-135m | <hf id or local path>
    name: str = "tiny"
    backend: Literal["hf", "openai", "vllm"] = "hf"
    endpoints: list[str] = field(default_factory=list)  # openai backend: base URLs of vLLM servers
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    # the weights' dtype; auto: float32 (on a GPU the learner computes in bf16 over them, see
    # learner.mixed_precision); bfloat16 weights lose most AdamW steps at RL learning rates
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    request_timeout: float = 60.0
    prefix_cache_mb: float = 256.0  # hf backend: KV store for multi-turn prefixes (0: off)
    # how the model writes tool calls: auto (detected from the chat template) | hermes | llama3 |
    # mistral | json; the env parses and the prompt describes the same format
    tool_format: str = "auto"
    # LoRA (PEFT): rank 0 fine-tunes every weight; rank > 0 trains only an adapter on the target
    # modules (`all-linear`: every linear layer but the output head; or names such as q_proj,v_proj)
    lora_rank: int = 0
    lora_alpha: float | None = None  # the adapter's scale is alpha / rank; None: 2 × rank
    lora_dropout: float = 0.0  # on the adapter's input, in the learner's forwards only
    lora_target_modules: list[str] = field(default_factory=lambda: ["all-linear"])

    def __post_init__(self) -> None:
        from agentrl.chat import TOOL_FORMAT_SETTINGS

        if self.tool_format not in TOOL_FORMAT_SETTINGS:
            raise ValueError(
                f"tool_format: must be one of {', '.join(TOOL_FORMAT_SETTINGS)}, got {self.tool_format!r}"
            )
        if not self.name:
            raise ValueError("name: must name a model (tiny, smollm2-135m, an HF id or a local path)")
        _finite("request_timeout", self.request_timeout, low=0)
        _finite("prefix_cache_mb", self.prefix_cache_mb, low=0, strict=False)
        _at_least("lora_rank", self.lora_rank, 0)
        if self.lora_alpha is not None:
            _finite("lora_alpha", self.lora_alpha, low=0)
        _finite("lora_dropout", self.lora_dropout, low=0, strict=False)
        if self.lora_dropout >= 1:
            raise ValueError(f"lora_dropout: must be in [0, 1), got {self.lora_dropout!r}")
        if not self.lora_target_modules or not all(
            isinstance(t, str) and t.strip() for t in self.lora_target_modules
        ):
            raise ValueError(
                "lora_target_modules: must name at least one module (all-linear, or e.g. q_proj,v_proj), "
                f"got {self.lora_target_modules!r}"
            )
        if "all-linear" in self.lora_target_modules and len(self.lora_target_modules) > 1:
            raise ValueError("lora_target_modules: all-linear stands alone; drop the other names")


@dataclass
class EnvConfig:
    id: str = "agentrl/Calculator-v0"  # a registered id, or `module:namespace/Name-v0` (imports module)
    kwargs: dict[str, Any] = field(default_factory=dict)  # passed to gymnasium.make
    path: str | None = None  # a task file or dataset for data envs (agentrl/Dataset-v0): kwargs["path"]
    latency: dict[str, Any] | None = None  # a latency spec (agentrl.envs.latency.from_spec) per tool call
    max_turns: int | None = None  # None: the env's own budget
    train_prompts: int | None = None  # use only the first N train tasks (None: all)
    # where the envs (and their tools) run: in this process, or in `workers` Ray actors (agentrl[ray])
    backend: Literal["process", "ray"] = "process"
    workers: int = 1  # ray: env worker actors
    ray_address: str | None = None  # ray: HOST:6379 or ray://HOST:10001 of a running cluster (None: local)

    def __post_init__(self) -> None:
        _at_least("max_turns", self.max_turns, 1, none_ok=True)
        _at_least("train_prompts", self.train_prompts, 1, none_ok=True)
        _at_least("workers", self.workers, 1)
        if self.backend != "ray" and (self.workers != 1 or self.ray_address):
            raise ValueError("workers: env.workers and env.ray_address are for env.backend=ray")


@dataclass
class AlgoConfig:
    """Settings of the algorithm named by `name` (see `agentrl.algorithms`); each reads its own."""

    name: str = "spo"  # spo | grpo | rloo | drgrpo | no_baseline | any registered name
    # group algorithms (grpo, rloo, drgrpo): samples per prompt
    group_size: int = 8
    grpo_scale_std: bool = True  # grpo: divide by the group's std (drgrpo never does)
    # batch normalisation of advantages (spo, no_baseline): ddof of the std (0: population, 1: unbiased)
    adv_std_ddof: int = 0
    token_centring: bool = False  # spo, no_baseline: centre under the token measure (SPO++)
    # spo: the value tracker
    rho_min: float = 0.875
    rho_max: float = 0.96
    d_half: float = 0.06
    divergence: Literal["odometer", "replay"] = "odometer"
    # odometer D = odometer_scale · (summed per-update KL). A KL is second order in the change of
    # log-probs, replay's D first order: 7 makes the two give the same mean ρ on the default job
    # (measured: README, "Differences from the reference recipe"); 1 is the raw odometer
    odometer_scale: float = 7.0
    # replay D: which tokens (model tokens, or the whole response incl. tool tokens), against what
    # (the sampling log-probs, or the trainer's re-score right after the update), and D at a first visit
    replay_mask: Literal["model", "response"] = "model"
    replay_reference: Literal["sampling", "rescored"] = "sampling"
    replay_first_visit: Literal["rho_min", "rho_max"] = "rho_min"
    prioritized: bool = True  # spo: sample prompts by sqrt(v(1-v)) + eps
    sampler_eps: float = 0.05
    sampler_gamma: float = 0.0
    offline_init: bool = True
    offline_n0: int = 8
    offline_prompts: int | None = 64  # tracker init on the first N train prompts (None: all)
    init_smoothing: float = 0.5  # offline init v0 = (s + c) / (n + 2c); 0.5 is the recipe's add-1/2
    # drgrpo: the constant that divides each sequence's summed token loss (None: rollout.max_tokens)
    norm_tokens: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # settings for algorithms registered outside agentrl

    def __post_init__(self) -> None:
        _at_least("group_size", self.group_size, 2)
        if not 0 < self.rho_min <= self.rho_max < 1:
            raise ValueError(f"rho_min: need 0 < rho_min <= rho_max < 1, got {self.rho_min}, {self.rho_max}")
        _finite("d_half", self.d_half, low=0)
        _finite("odometer_scale", self.odometer_scale, low=0)
        _finite("sampler_eps", self.sampler_eps, low=0, strict=False)
        _finite("sampler_gamma", self.sampler_gamma, low=0, strict=False)
        _finite("init_smoothing", self.init_smoothing, low=0, strict=False)
        if self.adv_std_ddof not in (0, 1):
            raise ValueError(f"adv_std_ddof: must be 0 or 1, got {self.adv_std_ddof!r}")
        _at_least("offline_n0", self.offline_n0, 1)
        _at_least("offline_prompts", self.offline_prompts, 1, none_ok=True)
        _at_least("norm_tokens", self.norm_tokens, 1, none_ok=True)


@dataclass
class SchedulerConfig:
    """How to launch and keep episodes. `validate()` runs on construction and names bad fields."""

    mode: str = "stream"  # "stream" (SPO) | "group" (GRPO)
    batch_size: int = 32  # B trajectories per batch
    group_size: int = 8  # G, group mode only
    max_concurrency: int | None = None  # generation slots; None = unlimited
    regime: str = "sync"  # "sync" | "async"
    overprovision: float = 1.0  # sync: launch k·B/G units per round, keep the first B/G
    max_staleness: int | None = None  # async admission bound, in policy versions
    stale_policy: str = "drop"  # over-stale at batch time: "drop" (and requeue prompt) | "keep"
    admission: str = "pace"  # async: "pace" launches to honour max_staleness; "none" relies on stale_policy
    max_buffered_batches: int | None = (
        None  # async back-pressure: stop launching while this many batches wait
    )
    episode_timeout: float | None = None  # seconds; a timed-out episode is recorded, not raised
    group_deadline: float | None = None  # seconds from a group's launch; needs straggler_policy
    straggler_policy: str = "wait"  # "wait" | "drop" (whole group) | "partial" (finished members)
    min_group_size: int | None = None  # fewest trainable members a unit may keep; default 2 (group), 1
    max_retries: int = 1  # relaunches of a failed episode's prompt (same group)
    watchdog_s: float | None = 1800.0  # stop if nothing finishes for this long while work is pending
    max_consecutive_failures: int | None = 100
    shutdown_timeout: float = 10.0  # real/virtual seconds aclose() waits for cancelled episodes
    bias_window: int = 4096  # most recent ended episodes the bias metric looks at

    def __post_init__(self) -> None:
        self.validate()

    @property
    def unit_size(self) -> int:
        return self.group_size if self.mode == "group" else 1

    @property
    def units_per_batch(self) -> int:
        return self.batch_size // self.unit_size

    @property
    def min_unit(self) -> int:
        if self.min_group_size is not None:
            return self.min_group_size
        return min(2, self.unit_size)

    def validate(self) -> None:
        def bad(msg: str) -> None:
            raise ValueError(msg)

        if self.mode not in ("stream", "group"):
            bad(f"mode: must be 'stream' or 'group', got {self.mode!r}")
        if self.regime not in ("sync", "async"):
            bad(f"regime: must be 'sync' or 'async', got {self.regime!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            bad(f"batch_size: must be a positive int, got {self.batch_size!r}")
        if self.mode == "group":
            if not isinstance(self.group_size, int) or self.group_size < 2:
                bad(f"group_size: must be an int >= 2 in group mode, got {self.group_size!r}")
            if self.batch_size % self.group_size:
                bad(f"batch_size: {self.batch_size} is not a multiple of group_size {self.group_size}")
        if self.max_concurrency is not None and (
            not isinstance(self.max_concurrency, int) or self.max_concurrency < 1
        ):
            bad(f"max_concurrency: must be None (unlimited) or an int >= 1, got {self.max_concurrency!r}")
        if not (isinstance(self.overprovision, int | float) and self.overprovision >= 1):
            bad(f"overprovision: must be a number >= 1, got {self.overprovision!r}")
        if self.regime == "async" and self.overprovision != 1:
            bad(
                "overprovision applies to the sync regime (launch k x a batch, keep the first); async keeps slots busy"
            )
        if self.max_staleness is not None and (
            not isinstance(self.max_staleness, int) or self.max_staleness < 0
        ):
            bad(f"max_staleness: must be None or an int >= 0, got {self.max_staleness!r}")
        if self.admission not in ("pace", "none"):
            bad(f"admission: must be 'pace' or 'none', got {self.admission!r}")
        if (
            self.regime == "async"
            and self.max_concurrency is None
            and (self.max_staleness is None or self.admission == "none")
        ):
            bad(
                "the async regime needs max_concurrency, or max_staleness with admission='pace'; else it launches without bound"
            )
        if self.max_buffered_batches is not None and self.max_buffered_batches < 1:
            bad(f"max_buffered_batches: must be None or >= 1, got {self.max_buffered_batches!r}")
        if self.stale_policy not in ("drop", "keep"):
            bad(f"stale_policy: must be 'drop' or 'keep', got {self.stale_policy!r}")
        for name in ("episode_timeout", "group_deadline", "watchdog_s"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, int | float) and v > 0 and math.isfinite(v)):
                bad(f"{name}: must be None or a positive number of seconds, got {v!r}")
        if self.straggler_policy not in ("wait", "drop", "partial"):
            bad(f"straggler_policy: must be 'wait', 'drop' or 'partial', got {self.straggler_policy!r}")
        if self.group_deadline is not None and self.mode != "group":
            bad("group_deadline applies to group mode; use episode_timeout in stream mode")
        if (self.group_deadline is None) != (self.straggler_policy == "wait"):
            bad(
                "straggler_policy 'drop'/'partial' needs a group_deadline, and 'wait' takes none "
                f"(got straggler_policy={self.straggler_policy!r}, group_deadline={self.group_deadline!r})"
            )
        if self.min_group_size is not None and not 1 <= self.min_group_size <= self.unit_size:
            bad(f"min_group_size: must be in [1, {self.unit_size}], got {self.min_group_size!r}")
        if not isinstance(self.max_retries, int) or self.max_retries < 0:
            bad(f"max_retries: must be an int >= 0, got {self.max_retries!r}")
        if self.max_consecutive_failures is not None and self.max_consecutive_failures < 1:
            bad(f"max_consecutive_failures: must be None or >= 1, got {self.max_consecutive_failures!r}")
        if self.shutdown_timeout <= 0:
            bad(f"shutdown_timeout: must be > 0, got {self.shutdown_timeout!r}")
        if self.bias_window < 1:
            bad(f"bias_window: must be >= 1, got {self.bias_window!r}")


@dataclass
class RolloutConfig(SchedulerConfig):
    """The scheduler's settings (inherited, with training defaults) plus how to sample.

    `mode` and `group_size` are set from the algorithm (`algo.name`, `algo.group_size`).
    """

    batch_size: int = 128  # trajectories per update (group algorithms: a multiple of algo.group_size)
    max_concurrency: int | None = 128  # generation slots
    max_staleness: int | None = 1  # async regime only: policy versions a trajectory may lag
    episode_timeout: float | None = 120.0
    watchdog_s: float | None = 600.0
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 96  # per model turn
    max_tokens: int = 768  # whole trajectory

    def __post_init__(self) -> None:
        super().__post_init__()
        _finite("temperature", self.temperature, low=0, strict=False)
        if not (isinstance(self.top_p, int | float) and 0 < self.top_p <= 1):
            raise ValueError(f"top_p: must be in (0, 1], got {self.top_p!r}")
        _at_least("max_new_tokens", self.max_new_tokens, 1)
        _at_least("max_tokens", self.max_tokens, 2)


@dataclass
class OptimConfig:
    """AdamW (decoupled weight decay on matrices only), global grad-norm clipping, optional warmup."""

    lr: float = 5e-5
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8  # larger values damp the steps of parameters with near-zero gradients
    grad_clip: float | None = 1.0
    warmup_steps: int = 0  # linear warmup over this many optimizer steps (0: constant lr)
    mini_batches: int = 2  # optimizer steps per update (one per mini-batch)
    epochs: int = 1  # passes over the batch per update
    micro_batch_size: int = 16  # rows per forward/backward; gradients accumulate up to a mini-batch

    def __post_init__(self) -> None:
        _finite("lr", self.lr, low=0)
        _finite("weight_decay", self.weight_decay, low=0, strict=False)
        for name in ("mini_batches", "epochs", "micro_batch_size"):
            _at_least(name, getattr(self, name), 1)
        _at_least("warmup_steps", self.warmup_steps, 0)
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"betas: must be two numbers in [0, 1), got {list(self.betas)}")
        _finite("eps", self.eps, low=0)
        if self.grad_clip is not None:
            _finite("grad_clip", self.grad_clip, low=0)


@dataclass
class LossConfig:
    """The PPO-clip loss; defaults are the paper's (clip-higher 0.2/0.28, dual-clip 10, token-mean)."""

    clip_low: float = 0.2
    clip_high: float = 0.28
    dual_clip: float | None = 10.0
    # token-mean: sum over the mini-batch's tokens / their count; seq-mean: mean of per-sequence
    # token means; constant: each sequence's token sum / a constant (Dr. GRPO; set by the algorithm)
    aggregation: Literal["token-mean", "seq-mean", "constant"] = "token-mean"
    # Weight of the sampled tokens' entropy in the objective: > 0 rewards exploration, < 0 sharpens
    # the policy towards its mode (entropy minimisation); 0 is the paper's loss.
    entropy_coef: float = 0.0
    kl_coef: float = 0.0  # k3 penalty towards the sampling policy; 0 = the paper's "no KL term"
    measure_kl: bool = True  # measure KL(before ‖ after) each update (feeds the SPO odometer)
    # "sampling": KL(π_sampling ‖ π_new); "pre_update": KL(π_before_this_update ‖ π_new), which
    # excludes staleness and sampler/trainer mismatch (an extra forward pass unless one mini-batch)
    kl_reference: Literal["sampling", "pre_update"] = "sampling"
    kl_max_sequences: int | None = None  # measure the KL on at most this many trajectories
    grad_sync: Literal["auto", "wrapper", "learner"] = "auto"
    # Run the prompt head a micro-batch's rows share once (`agentrl.prefix`); same loss, less compute
    share_prefix: bool = True

    def __post_init__(self) -> None:
        for name, options in (
            ("aggregation", ("token-mean", "seq-mean", "constant")),
            ("kl_reference", ("sampling", "pre_update")),
            ("grad_sync", ("auto", "wrapper", "learner")),
        ):
            if getattr(self, name) not in options:
                raise ValueError(f"{name}: must be one of {', '.join(options)}, got {getattr(self, name)!r}")
        _finite("clip_low", self.clip_low, low=0, strict=False)
        if self.clip_low >= 1:
            raise ValueError(f"clip_low: must be < 1, got {self.clip_low}")
        _finite("clip_high", self.clip_high, low=0, strict=False)
        if self.dual_clip is not None and not (math.isfinite(self.dual_clip) and self.dual_clip > 1):
            raise ValueError(f"dual_clip: must be > 1 or null, got {self.dual_clip!r}")
        _finite("entropy_coef", self.entropy_coef)
        _finite("kl_coef", self.kl_coef, low=0, strict=False)
        _at_least("kl_max_sequences", self.kl_max_sequences, 1, none_ok=True)


@dataclass
class LearnerConfig:
    """How the learner runs on several processes (`torchrun`, or `agentrl train --nproc-per-node N`).

    One process uses `activation_checkpointing` and `mixed_precision`; the rest applies when the
    world size is > 1.
    """

    def bf16_compute(self, device: Any, world: int = 1) -> bool:
        """Whether the learner computes in bf16 over fp32 weights on `device` with `world` ranks."""
        if self.mixed_precision == "auto":
            return torch_device_type(device) == "cuda" and (world == 1 or self.strategy == "fsdp")
        return self.mixed_precision == "bf16"

    strategy: Literal["fsdp", "ddp"] = "fsdp"  # FSDP2 (`fully_shard`: sharded weights) or DDP (replicas)
    dist_backend: Literal["auto", "gloo", "nccl"] = "auto"  # auto: NCCL on CUDA, gloo on CPU
    # bf16 forward/backward over fp32 master weights (FSDP2's mixed precision on several ranks,
    # autocast on one); auto: bf16 on CUDA (not with ddp on several ranks), none on CPU
    mixed_precision: Literal["auto", "none", "bf16"] = "auto"
    activation_checkpointing: bool = (
        False  # recompute each layer in backward (the module trains in train mode)
    )
    dist_timeout_s: float = 3600.0  # collectives' deadline (ranks > 0 wait this long for a batch)

    def __post_init__(self) -> None:
        for name, options in (
            ("strategy", ("fsdp", "ddp")),
            ("dist_backend", ("auto", "gloo", "nccl")),
            ("mixed_precision", ("auto", "none", "bf16")),
        ):
            if getattr(self, name) not in options:
                raise ValueError(f"{name}: must be one of {', '.join(options)}, got {getattr(self, name)!r}")
        _finite("dist_timeout_s", self.dist_timeout_s, low=0)
        if self.mixed_precision == "bf16" and self.strategy != "fsdp":
            raise ValueError(
                "mixed_precision: needs strategy=fsdp (with ddp, load the model in bf16: model.dtype=bfloat16)"
            )


@dataclass
class EvalConfig:
    every: int = 0  # steps between evaluations (0: only before and after training)
    tasks: int = 100  # held-out test tasks
    k: int = 4  # samples per task; success is avg@k
    temperature: float = 1.0  # the rollout temperature; 0 = greedy
    top_p: float = 1.0

    def __post_init__(self) -> None:
        _at_least("every", self.every, 0)
        _at_least("tasks", self.tasks, 1)
        _at_least("k", self.k, 1)
        _finite("temperature", self.temperature, low=0, strict=False)
        if not (isinstance(self.top_p, int | float) and 0 < self.top_p <= 1):
            raise ValueError(f"top_p: must be in (0, 1], got {self.top_p!r}")


@dataclass
class LogConfig:
    """Where metrics go besides `metrics.jsonl` and the PNG plots."""

    tensorboard: bool = True
    wandb: bool = False  # needs `pip install wandb`; WANDB_MODE=offline works without an account
    trackio: bool = False  # needs `pip install trackio`
    project: str = "agentrl"  # wandb / trackio project


@dataclass
class TrainConfig:
    name: str = ""  # run name; empty: <env>-<algo>-<timestamp>, so runs never share a folder
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
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    log: LogConfig = field(default_factory=LogConfig)

    def __post_init__(self) -> None:
        _at_least("steps", self.steps, 0)
        _at_least("checkpoint_every", self.checkpoint_every, 1)
        _at_least("keep_checkpoints", self.keep_checkpoints, 1)
        if "/" in self.name or self.name in (".", ".."):
            raise ValueError(f"name: must be a plain folder name, got {self.name!r}")


def default_run_name(env_id: str, algo: str, stamp: str) -> str:
    """`calculator-spo-20261204-101500`: env short name, algorithm, and a timestamp."""
    env_short = env_id.split(":")[-1].split("/")[-1].split("-v")[0].lower() or "env"
    return f"{env_short}-{algo}-{stamp}"


def torch_device_type(device: Any) -> str:
    """ "cuda" or "cpu" (or another type) of a torch.device or a device string."""
    return getattr(device, "type", None) or str(device).split(":")[0]
