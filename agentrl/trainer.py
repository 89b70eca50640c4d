"""The training pipeline: build the components, resume, then loop.

    build   env probe → prompts; model + tokenizer; policy; learner; algorithm (+ its sampler)
    resume  weights, optimizer, algorithm state, sampler and RNG states, step, prompts in flight
    loop    sample → schedule → advantages → update → sync → log → checkpoint

One step = one batch from the scheduler, one `algorithm.advantages`, one `learner.update`, one weight
sync and one `algorithm.after_update`. The trainer knows no algorithm by name: everything specific
to SPO, GRPO, RLOO, ... lives in `agentrl.algorithms`. Every checkpoint holds what an exact resume
needs (tested with a real `kill -9`).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import hashlib
import json
import math
import random
import shutil
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agentrl.algorithms import Algorithm, AlgorithmContext, get_algorithm
from agentrl.chat import ChatFormat, resolve_tool_format
from agentrl.checkpoint import (
    LATEST,
    SHARDED,
    NoIntactCheckpoint,
    clean_stale,
    latest_intact_checkpoint,
    load_sharded,
    load_state,
    save_checkpoint,
    save_sharded,
    step_folders,
)
from agentrl.config import ConfigError, save_config, to_dict
from agentrl.distributed import (
    DistContext,
    enable_activation_checkpointing,
    full_state_dict,
    init_distributed,
    is_fsdp,
    load_full_optimizer_state,
    wrap_model,
)
from agentrl.evaluate import EvalResult, evaluate
from agentrl.learner import Learner, UpdateStats
from agentrl.lora import dropout_active as lora_dropout_active
from agentrl.policy.base import Policy
from agentrl.rollout.episode import EpisodeRunner
from agentrl.rollout.scheduler import Batch, RolloutScheduler
from agentrl.runlog import RunLog
from agentrl.train_config import TrainConfig
from agentrl.types import SamplingParams, Trajectory


class ResumeSampler:
    """Hands out prompts that were in flight at the checkpoint first, then defers to the real sampler."""

    def __init__(self, inner: Any, first: Sequence[str] = ()) -> None:
        self.inner = inner
        self.first: deque[str] = deque(first)

    def sample(self, n: int) -> list[str]:
        out = [self.first.popleft() for _ in range(min(n, len(self.first)))]
        if len(out) < n:
            out += self.inner.sample(n - len(out))
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"inner": self.inner.state_dict(), "first": list(self.first)}


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    eval_before: EvalResult | None
    eval_after: EvalResult | None
    seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)


# The episode-seed key of the tracker initialisation's runner (training's keys are step numbers).
_OFFLINE_INIT_KEY = 2**32 - 1


def _rng_state() -> dict[str, Any]:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def _set_rng_state(s: dict[str, Any]) -> None:
    random.setstate(s["python"])
    np.random.set_state(s["numpy"])
    torch.set_rng_state(s["torch"])


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _dtype(name: str, device: torch.device) -> torch.dtype:
    """The weights' dtype. auto is float32 everywhere: AdamW steps at RL learning rates are far
    below bf16's resolution, so bf16 weights barely move (measured: at lr 1e-6 on smollm2-135m,
    0.4% of bf16 weights changed in an update against 97% in float32). On a GPU the learner computes
    in bf16 over these fp32 weights (`learner.mixed_precision=auto`)."""
    if name == "auto":
        return torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def _weights_fp32(model: torch.nn.Module) -> bool:
    return all(p.dtype == torch.float32 for p in model.parameters() if p.requires_grad)


def env_kwargs(cfg: TrainConfig, tool_format: str = "hermes") -> dict[str, Any]:
    """gymnasium.make keyword arguments of the configured env (the tool format only where not the default,
    so envs with their own constructor signature keep working)."""
    kw = dict(cfg.env.kwargs)
    if cfg.env.path is not None:
        kw["path"] = cfg.env.path
    if tool_format != "hermes":
        kw["tool_format"] = tool_format
    return kw


def make_env(cfg: TrainConfig, split: str = "train", tool_format: str = "hermes") -> Any:
    """The configured env (unwrapped ToolEnv); `module:Id` ids import their module first."""
    import gymnasium

    import agentrl.envs  # noqa: F401  (registers the bundled envs)

    kw = env_kwargs(cfg, tool_format)
    if cfg.env.latency is not None:
        kw["latency"] = cfg.env.latency
    if cfg.env.max_turns is not None:
        kw["max_turns"] = cfg.env.max_turns
    return gymnasium.make(cfg.env.id, split=split, **kw).unwrapped


class Trainer:
    """`Trainer(config).run()` trains; `resume=True` continues the run's latest intact checkpoint."""

    def __init__(self, config: TrainConfig, *, resume: bool = False) -> None:
        if not config.name:
            raise ConfigError("name: a Trainer needs a run name (the CLI derives one)")
        self.cfg = config
        self.resume = resume
        self.run_dir = Path(config.run_root) / config.name
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.step = 0
        self.eval_before: EvalResult | None = None
        self.dist: DistContext | None = None  # set by build() when torchrun started several ranks
        self.adapter: Any = None  # the PeftModel of a LoRA run (model.lora_rank > 0)

    # ---- build ------------------------------------------------------------------------------------

    def _sampling(self) -> SamplingParams:
        r = self.cfg.rollout
        return SamplingParams(temperature=r.temperature, top_p=r.top_p, max_new_tokens=r.max_new_tokens)

    def _make_policy(self, model: Any, tokenizer: Any) -> Policy:
        m = self.cfg.model
        if m.backend == "hf":
            from agentrl.policy.hf import HFPolicy

            # Sync regime: the policy shares the learner's module (no copy, no weight transfer).
            # Async regime: generation overlaps training, so the policy needs its own copy.
            gen_model = model if self.cfg.rollout.regime == "sync" else copy.deepcopy(model)
            return HFPolicy(
                gen_model,
                tokenizer,
                seed=self.cfg.seed,
                max_batch_size=max(self.cfg.rollout.max_concurrency or 1, 1),
                timeout=m.request_timeout,
                prefix_cache_mb=m.prefix_cache_mb,
            )
        if m.backend == "openai":
            from agentrl.policy.openai import OpenAIPolicy

            if not m.endpoints:
                raise ConfigError("model.endpoints: the openai backend needs at least one server URL")
            return OpenAIPolicy(
                list(m.endpoints),
                tokenizer=tokenizer,
                timeout=m.request_timeout,
                seed=self.cfg.seed,
                weights_dir=self.run_dir / "policy_weights",  # the servers read each step's weights here
                weight_sync="lora" if m.lora_rank else "reload",  # LoRA: hot-load only the adapter
            )
        if m.backend == "vllm":
            from agentrl.policy.vllm import VLLMPolicy

            return VLLMPolicy(str(self._model_source), tokenizer=tokenizer, seed=self.cfg.seed)
        raise ConfigError(f"model.backend: unknown backend {m.backend!r}")

    def _env_factory(self) -> Any:
        """Training envs in process, or (env.backend=ray) from one pool of Ray env workers."""
        make = functools.partial(make_env, self.cfg, "train", self.chat.tool_format)
        if self.cfg.env.backend != "ray":
            return lambda _name: make()
        if getattr(self, "env_pool", None) is None:
            from agentrl.rollout.ray_envs import RayEnvPool, SameEnv

            e = self.cfg.env
            self.env_pool = RayEnvPool(SameEnv(make), workers=e.workers, address=e.ray_address)
        return self.env_pool

    def _make_runner(self, seed: int) -> EpisodeRunner:
        cfg = self.cfg
        return EpisodeRunner(
            self._env_factory(),
            self.policy,
            tokenizer=self.chat,
            params=self._sampling(),
            max_turns=cfg.env.max_turns,
            max_tokens=cfg.rollout.max_tokens,
            seed=seed,
            gen_timeout=cfg.model.request_timeout,
        )

    async def build(self) -> Path | None:
        """Load the model, build policy, learner and algorithm; returns the checkpoint to resume from."""
        from agentrl.models import EMBEDDED_MODELS, load_model, model_path

        cfg = self.cfg
        self.dist = init_distributed(cfg)  # None for one process
        resume_from = self._find_resume_point() if self._is_main else None
        if self._is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.run_dir / "config.yaml")

        random.seed(cfg.seed)
        np.random.seed(cfg.seed % 2**32)
        torch.manual_seed(cfg.seed)
        device = self.dist.device if self.dist is not None else _device(cfg.model.device)
        if self._is_main:
            # Off the loop: a first use builds the embedded model, which runs its own event loop.
            self._model_source = (
                await asyncio.to_thread(model_path, cfg.model.name)
                if cfg.model.name in EMBEDDED_MODELS
                else cfg.model.name
            )
        if self.dist is not None:  # rank 0's answers, on every rank
            resume_from, self._model_source = self.dist.broadcast(
                (resume_from, self._model_source) if self.dist.is_main else None
            )
        dtype = _dtype(cfg.model.dtype, device)
        full_ckpt = resume_from if not cfg.model.lora_rank else None  # a LoRA checkpoint is an adapter
        self.model, self.tokenizer = await asyncio.to_thread(
            load_model, str(full_ckpt or self._model_source), device=device, dtype=dtype
        )
        self.adapter = self._wrap_lora(resume_from)
        train_module = self._train_module()
        if not self._is_main:
            self.learner = self._make_learner(train_module, device)
            return resume_from

        # the model's tool-call format: the prompt describes it, the env parses it
        self.chat = ChatFormat(
            self.tokenizer, tool_format=resolve_tool_format(cfg.model.tool_format, self.tokenizer)
        )
        print(
            f"[agentrl] tool calls: {self.chat.tool_format} format, tools rendered by "
            f"{'the chat template' if self.chat.tools_rendering == 'native' else 'a system-prompt preamble'}"
        )
        probe = make_env(cfg, "train", self.chat.tool_format)
        train_ids = probe.task_ids("train")
        if cfg.env.train_prompts is not None:
            train_ids = train_ids[: cfg.env.train_prompts]
        self.prompt_ids = [f"{probe.name}/train/{t}" for t in train_ids]
        probe.close()

        self.policy = self._make_policy(self.model, self.tokenizer)
        self.learner = self._make_learner(train_module, device)
        self.model.eval()  # no dropout in rollouts; the learner's forwards need no train mode either
        if cfg.learner.activation_checkpointing:
            self.learner.model.train()  # transformers checkpoints layers in train mode only
        self.algorithm: Algorithm = get_algorithm(cfg.algo.name)(
            AlgorithmContext(
                config=cfg.algo,
                prompt_ids=self.prompt_ids,
                seed=cfg.seed,
                score=self.learner.score,  # at the rollout temperature, as the samples were drawn
                max_tokens=cfg.rollout.max_tokens,
            )
        )
        self.inner_sampler = self.algorithm.make_sampler()
        self.log = RunLog(
            self.run_dir,
            tensorboard=cfg.log.tensorboard,
            wandb=cfg.log.wandb,
            trackio=cfg.log.trackio,
            project=cfg.log.project,
            config=to_dict(cfg),
        )
        if resume_from is None:  # from step 0: drop the records of an earlier try that left no checkpoint
            self.log.truncate_after(-1)
        return resume_from

    def _lora_dropout(self) -> contextlib.AbstractContextManager[Any]:
        return lora_dropout_active(self.model) if self.adapter is not None else contextlib.nullcontext()

    def _make_learner(self, train_module: torch.nn.Module, device: torch.device) -> Learner:
        cfg = self.cfg
        return Learner(
            train_module,
            cfg.optim,
            cfg.loss,
            temperature=cfg.rollout.temperature if cfg.rollout.temperature > 0 else 1.0,
            device=device,
            pad_id=int(getattr(self.tokenizer, "pad_token_id", None) or 0),
            process_group=torch.distributed.group.WORLD if self.dist is not None else None,
            score_model=self.model if self.dist is not None else None,
            # one process: bf16 autocast over fp32 weights (several ranks: FSDP2's own policy)
            autocast=torch.bfloat16
            if self.dist is None and cfg.learner.bf16_compute(device) and _weights_fp32(train_module)
            else None,
        )

    def _wrap_lora(self, resume_from: Path | None) -> Any:
        """LoRA runs: inject the adapter (fresh, or the checkpoint's) into `self.model`, in place."""
        m = self.cfg.model
        if not m.lora_rank:
            return None
        from agentrl import lora

        try:
            if resume_from is not None:
                return lora.load_adapter(self.model, resume_from)
            return lora.wrap(self.model, m.lora_rank, m.lora_alpha, m.lora_dropout, m.lora_target_modules)
        except ValueError as e:
            raise ConfigError(str(e).splitlines()[0]) from None

    def _find_resume_point(self) -> Path | None:
        """The checkpoint to resume from, or None to start from step 0.

        Only complete step folders count: the `.tmp-` leftovers of a writer killed mid-checkpoint
        (and a `latest` pointer with no folder behind it) are cleaned once the start is decided.
        """
        if not self.resume:
            if step_folders(self.ckpt_dir):
                raise SystemExit(
                    f"agentrl train: {self.run_dir} already holds checkpoints; pass --resume to continue "
                    f"it or choose another name= (nothing was overwritten)"
                )
            clean_stale(self.ckpt_dir)
            (self.ckpt_dir / LATEST).unlink(missing_ok=True)
            return None
        try:
            found = latest_intact_checkpoint(self.ckpt_dir, lambda m: print(f"[agentrl] {m}"))
        except NoIntactCheckpoint as e:
            raise SystemExit(f"agentrl train: --resume: {e}") from None
        clean_stale(self.ckpt_dir)
        if found is None:  # killed before its first checkpoint was complete: nothing to lose
            print(f"[agentrl] {self.run_dir.name} has no complete checkpoint yet; starting it from step 0")
        return found

    # ---- resume -----------------------------------------------------------------------------------

    def restore(self, ckpt: Path) -> list[str]:
        """Load a checkpoint's state into the built components; returns the prompts that were in flight."""
        state = load_state(ckpt)
        self._restore_learner(ckpt, state["learner"])
        algo_state = state.get("algorithm")
        if algo_state is None:  # checkpoints written before algorithms were objects
            algo_state = {"tracker": state["tracker"], "divergence": state["divergence"]}
        self.algorithm.load_state_dict(algo_state)
        self.inner_sampler.load_state_dict(state["sampler"]["inner"])
        _set_rng_state(state["rng"])
        self.step = int(state["step"])
        self.eval_before = EvalResult(**state["eval_before"]) if state.get("eval_before") else None
        self.log.truncate_after(self.step, final_key="eval/final")
        print(f"[agentrl] resumed {self.run_dir.name} at step {self.step} from {ckpt}")
        return list(state["sampler"]["first"]) + list(state.get("in_flight", []))

    def _checkpoint(self, in_flight: list[str]) -> Path:
        state = {
            "step": self.step,
            "config": to_dict(self.cfg),
            "learner": self.learner.state_dict(include_model=False, include_optimizer=self.dist is None),
            "algorithm": self.algorithm.state_dict(),
            "sampler": self.sampler.state_dict(),
            "rng": _rng_state(),
            "in_flight": in_flight,
            "eval_before": self.eval_before.as_dict() if self.eval_before else None,
        }

        def write_model(d: Path) -> None:
            if self.adapter is not None:  # LoRA: the adapter only; the base is the run's model.name
                self.adapter.save_pretrained(d, safe_serialization=True)
            else:
                self.model.save_pretrained(d, safe_serialization=True)
            self.tokenizer.save_pretrained(d)
            if self.dist is not None:
                self._save_shards(d / SHARDED)

        return save_checkpoint(self.ckpt_dir, self.step, state, write_model, keep=self.cfg.keep_checkpoints)

    # ---- the offline pass some algorithms start from ----------------------------------------------

    def _offline_cache_path(self, prompt_ids: Sequence[str], n: int) -> Path:
        from agentrl.models import cache_dir

        cfg, r = self.cfg, self.cfg.rollout
        key = json.dumps(
            {
                "model": str(self._model_source),
                "env": cfg.env.id,
                "env_kwargs": env_kwargs(cfg, self.chat.tool_format),
                "max_turns": cfg.env.max_turns,
                "n0": n,
                "prompts": hashlib.sha256("\n".join(prompt_ids).encode()).hexdigest(),
                "sampling": [r.temperature, r.top_p, r.max_new_tokens, r.max_tokens],
                "seed": cfg.seed,
            },
            sort_keys=True,
        )
        return cache_dir() / "offline_init" / (hashlib.sha256(key.encode()).hexdigest()[:16] + ".json")

    async def _offline_pass(self) -> dict[str, Any] | None:
        """n samples per prompt from the initial policy, if the algorithm asks; cached on disk."""
        request = self.algorithm.offline_init_request()
        if request is None:
            return None
        prompt_ids, n = request
        path = self._offline_cache_path(prompt_ids, n)
        if path.is_file():
            rewards = json.loads(path.read_text())["rewards"]
            source = "cache"
        else:
            # its own episode seeds, so training samples the same episodes whether the offline pass
            # was computed here or read from the cache
            runner = self._make_runner(
                int(np.random.SeedSequence([self.cfg.seed, _OFFLINE_INIT_KEY]).generate_state(1)[0])
            )
            sem = asyncio.Semaphore(self.cfg.rollout.max_concurrency or 64)

            async def one(pid: str) -> float:
                async with sem:
                    t = await runner(pid, 0)
                    return float(t.reward) if t.status.trainable else 0.0

            try:
                flat = await asyncio.gather(*(one(p) for p in prompt_ids for _ in range(n)))
            finally:
                await runner.aclose()
            rewards = {p: flat[i * n : (i + 1) * n] for i, p in enumerate(prompt_ids)}
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"rewards": rewards}))
            tmp.replace(path)
            source = "computed"
        self.algorithm.init_offline(rewards)
        mean = float(np.mean([np.mean(v) for v in rewards.values()])) if rewards else 0.0
        print(f"[agentrl] offline init ({source}): {len(rewards)} prompts × {n}, mean success {mean:.3f}")
        return {"source": source, "path": str(path), "prompts": len(rewards), "mean_success": mean}

    # ---- the loop ---------------------------------------------------------------------------------

    async def _eval(self, tag: str) -> EvalResult:
        cfg, e = self.cfg, self.cfg.eval
        res = await evaluate(
            self.policy,
            self.chat,
            cfg.env.id,
            tasks=e.tasks,
            k=e.k,
            temperature=e.temperature,
            top_p=e.top_p,
            max_new_tokens=cfg.rollout.max_new_tokens,
            max_tokens=cfg.rollout.max_tokens,
            max_turns=cfg.env.max_turns,
            env_kwargs=env_kwargs(cfg, self.chat.tool_format),
            concurrency=cfg.rollout.max_concurrency or 64,
            seed=cfg.seed + 7919,
        )
        print(
            f"[agentrl] eval ({tag}, step {self.step}): success {res.success:.3f} on {res.tasks} test tasks"
        )
        return res

    def evaluate_checkpoint(self, checkpoint: str | Path) -> EvalResult:
        """The run's own held-out evaluation (the one it makes before and after training, and every
        `eval.every` steps) of one of its checkpoints: the same test tasks, k, sampling, turn budget,
        policy settings and seed. Loads the checkpoint's weights only; trains nothing, writes nothing."""
        return asyncio.run(self._aevaluate_checkpoint(Path(checkpoint)))

    async def _aevaluate_checkpoint(self, ckpt: Path) -> EvalResult:
        from agentrl.models import EMBEDDED_MODELS, load_model, model_path

        cfg = self.cfg
        if cfg.model.backend != "hf":
            raise ConfigError(
                f"model.backend: evaluate_checkpoint loads weights in process (hf), not {cfg.model.backend!r}"
            )
        if not (ckpt / "state.pt").is_file():
            raise FileNotFoundError(f"{ckpt}: not a checkpoint (no state.pt)")
        device = _device(cfg.model.device)
        dtype = _dtype(cfg.model.dtype, device)
        if cfg.model.lora_rank:  # an adapter checkpoint: the base model, then the adapter into it
            base = (
                await asyncio.to_thread(model_path, cfg.model.name)
                if cfg.model.name in EMBEDDED_MODELS
                else cfg.model.name
            )
            self.model, self.tokenizer = await asyncio.to_thread(
                load_model, str(base), device=device, dtype=dtype
            )
            self.adapter = self._wrap_lora(ckpt)
        else:
            self.model, self.tokenizer = await asyncio.to_thread(
                load_model, str(ckpt), device=device, dtype=dtype
            )
        self.model.eval()
        self.chat = ChatFormat(
            self.tokenizer, tool_format=resolve_tool_format(cfg.model.tool_format, self.tokenizer)
        )
        self.step = int(load_state(ckpt).get("step", 0))
        self.policy = self._make_policy(self.model, self.tokenizer)
        try:
            return await self._eval(f"checkpoint {ckpt.name}")
        finally:
            await self.policy.aclose()

    async def _sync(self) -> float:
        """Give the policy the learner's new weights; returns the seconds it took."""
        t0 = time.perf_counter()
        shared = getattr(self.policy, "model", None) is self.model
        # A policy that shares the learner's module needs only the version; servers reload from disk.
        await self.policy.sync_weights(self.step, None if shared else self._policy_weights())
        self._prune_adapters()
        return time.perf_counter() - t0

    def _policy_weights(self) -> Any:
        """What a policy that does not share the module loads: the state dict, or for LoRA on
        servers, a directory holding only this step's adapter (hot-loaded by name)."""
        if self.adapter is None or self.cfg.model.backend != "openai":
            return self.model.state_dict()
        # a fresh directory each time (a resumed run writes the same step again)
        out = self.run_dir / "policy_weights" / f"adapter_{self.step:06d}_{time.time_ns():x}"
        self.adapter.save_pretrained(out, safe_serialization=True)
        self._served_adapter = out
        return out

    def _prune_adapters(self) -> None:
        """Remove the adapters written for earlier steps (the servers hold the current one)."""
        current = getattr(self, "_served_adapter", None)
        if current is None:
            return
        for p in current.parent.glob("adapter_*"):
            if p != current:
                shutil.rmtree(p, ignore_errors=True)

    async def _train_step(self, batch: Batch) -> dict[str, Any]:
        """advantages → update → after_update, for one batch; returns the step's metrics row."""
        trajs = [t for t in batch.trajectories if t.status.trainable and any(t.loss_mask)]
        row: dict[str, Any] = {
            "batch/size": len(batch.trajectories),
            "batch/trainable": len(trajs),
            "batch/failures": len(batch.failures),
        }
        if not trajs:
            row["reward_mean"] = 0.0
            return row
        result = self.algorithm.advantages(trajs)
        shared = getattr(self.policy, "model", None) is self.model
        exclusive = getattr(self.policy, "exclusive", None)
        lock = exclusive() if shared and exclusive is not None else contextlib.nullcontext()
        t0 = time.perf_counter()
        async with lock:
            with (
                self._lora_dropout()
            ):  # LoRA dropout (model.lora_dropout) acts in the learner's forwards only
                stats: UpdateStats = await asyncio.to_thread(
                    self._update, trajs, result.advantages, self.algorithm.loss_aggregation()
                )
        row["time/learner_s"] = time.perf_counter() - t0
        row.update(self.algorithm.after_update(trajs, stats, self.step + 1))
        row.update(_batch_metrics(trajs, result.diagnostics.as_dict(), stats, batch))
        return row

    async def arun(self) -> TrainResult:
        cfg = self.cfg
        t_start = time.perf_counter()
        resume_from = await self.build()
        if not self._is_main:
            return self._follow(resume_from, t_start)
        in_flight = self.restore(resume_from) if resume_from is not None else []
        self.sampler = ResumeSampler(self.inner_sampler, in_flight)
        if resume_from is not None and cfg.model.backend != "hf":
            await self.policy.sync_weights(self.step, self._policy_weights())  # servers run base weights
        # Episode seeds depend on (seed, step at start) so a resumed run does not replay early episodes.
        runner = self._make_runner(int(np.random.SeedSequence([cfg.seed, self.step]).generate_state(1)[0]))
        sched_cfg = replace(cfg.rollout, mode=self.algorithm.mode, group_size=self.algorithm.group_size)
        history: list[dict[str, Any]] = []
        offline: dict[str, Any] | None = None
        eval_after: EvalResult | None = None
        pbar = None
        rollouts = open(self.run_dir / "rollouts.jsonl", "a", buffering=1)  # noqa: SIM115, ASYNC230
        try:
            if resume_from is None:
                offline = await self._offline_pass()
                self.eval_before = await self._eval("before")
                self.log.log(0, {"eval/success": self.eval_before.success, **_eval_fields(self.eval_before)})
            if cfg.progress:
                from tqdm.auto import tqdm

                pbar = tqdm(
                    total=cfg.steps, initial=self.step, desc=cfg.name, unit="step", dynamic_ncols=True
                )
            t_batch = time.perf_counter()
            async with RolloutScheduler(self.sampler, runner, sched_cfg) as sched:
                sched.set_policy_version(self.step)
                async for batch in sched.batches() if self.step < cfg.steps else _no_batches():
                    row = await self._train_step(batch)
                    self.step += 1
                    _write_rollouts(rollouts, self.step, batch.trajectories)
                    row["time/sync_s"] = await self._sync()
                    sched.set_policy_version(self.step)
                    row["time/step_s"] = time.perf_counter() - t_batch
                    if cfg.eval.every and self.step % cfg.eval.every == 0 and self.step < cfg.steps:
                        res = await self._eval(f"step {self.step}")
                        row.update({"eval/success": res.success, **_eval_fields(res)})
                    self.log.log(self.step, row)
                    history.append({"step": self.step, **row})
                    if pbar is not None:
                        pbar.update(1)
                        pbar.set_postfix(
                            reward=f"{row['reward_mean']:.2f}",
                            traj_s=f"{row.get('rollout/trajectories_per_s', 0):.1f}",
                        )
                    if self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps:
                        self._checkpoint([e["prompt_id"] for e in sched.running_episodes()])
                    t_batch = time.perf_counter()
                    if self.step >= cfg.steps:
                        break
            self._release_ranks()
            if pbar is not None:
                pbar.close()
                pbar = None
            eval_after = await self._eval("after")
            final = {"eval/final": 1.0, "eval/success": eval_after.success, **_eval_fields(eval_after)}
            self.log.log(self.step, final)
        finally:
            if pbar is not None:
                pbar.close()
            rollouts.close()
            self.log.close()
            with contextlib.suppress(Exception):
                await runner.aclose()
            if getattr(self, "env_pool", None) is not None:
                self.env_pool.shutdown()
            await self.policy.aclose()
            if self.dist is not None:
                self.dist.close()

        from agentrl.plots import plot_run

        visited = getattr(self.algorithm, "tracker_values", None)
        plot_run(self.run_dir, panels=self.algorithm.panels, tracker_values=visited() if visited else None)
        summary = {
            "steps": self.step,
            "seconds": time.perf_counter() - t_start,
            "eval_before": self.eval_before.as_dict() if self.eval_before else None,
            "eval_after": eval_after.as_dict() if eval_after else None,
            "offline_init": offline,
            "tool_format": self.chat.tool_format,
            "tools_rendering": self.chat.tools_rendering,
        }
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        return TrainResult(self.run_dir, self.step, self.eval_before, eval_after, summary["seconds"], history)

    def run(self) -> TrainResult:
        return asyncio.run(self.arun())

    # ---- several ranks: rank 0 coordinates, every rank trains on its share of each batch -----------

    @property
    def _is_main(self) -> bool:
        return self.dist is None or self.dist.is_main

    def _train_module(self) -> torch.nn.Module:
        """The module the learner trains: `self.model` on one process; on several ranks the model
        wrapped by FSDP2 or DDP, and on rank 0 `self.model` an unwrapped full copy (generation,
        evaluation, model files): the DDP replica itself, or a copy that FSDP2 refreshes each update."""
        lc = self.cfg.learner
        if lc.activation_checkpointing:
            enable_activation_checkpointing(self.model)
        if self.dist is None:
            return self.model
        full = copy.deepcopy(self.model) if lc.strategy == "fsdp" and self.dist.is_main else self.model
        wrapped = wrap_model(self.model, self.dist, lc)
        self.model = full
        return wrapped

    def _update(self, trajs: list[Trajectory], advantages: Any, aggregation: dict[str, Any]) -> UpdateStats:
        if self.dist is None:
            return self.learner.update(trajs, advantages, **aggregation)
        self.dist.broadcast(("update", trajs, np.asarray(advantages), aggregation))
        return self._collective_update(trajs, advantages, aggregation)

    def _collective_update(
        self, trajs: list[Trajectory], advantages: Any, aggregation: dict[str, Any]
    ) -> UpdateStats:
        """Every rank: its share of the batch's update, then rank 0's full copy takes the new weights."""
        stats = self.learner.update(trajs, advantages, shard=True, **aggregation)
        if is_fsdp(self.learner.model):
            full = full_state_dict(self.learner.model)  # a collective; only rank 0 receives the weights
            if self._is_main:
                self.model.load_state_dict(full)
        return stats

    def _save_shards(self, path: Path) -> None:
        assert self.dist is not None
        self.dist.broadcast(("save", str(path)))
        save_sharded(path, self.learner.model, self.learner.optimizer)
        self.dist.barrier()  # every rank's shard is on disk before rank 0 renames the folder

    def _restore_learner(self, ckpt: Path, learner_state: dict[str, Any]) -> None:
        """Every rank: optimizer, scheduler and counters, from sharded or one-process checkpoints."""
        if (ckpt / SHARDED).is_dir():  # written by several ranks: DCP reshards to this world size
            self.learner.load_state_dict(learner_state)
            load_sharded(ckpt / SHARDED, self.learner.model, self.learner.optimizer)
        elif self.dist is not None:  # a one-process checkpoint, now on several ranks
            self.learner.load_state_dict({k: v for k, v in learner_state.items() if k != "optimizer"})
            load_full_optimizer_state(self.learner.model, self.learner.optimizer, learner_state["optimizer"])
        else:
            self.learner.load_state_dict(learner_state)

    def _release_ranks(self) -> None:
        if self.dist is not None:
            self.dist.broadcast(("stop",))

    def _follow(self, resume_from: Path | None, t_start: float) -> TrainResult:
        """Ranks > 0: restore the learner, then run each update and checkpoint shard rank 0 asks for."""
        assert self.dist is not None
        if resume_from is not None:
            state = load_state(resume_from)
            self._restore_learner(resume_from, state["learner"])
            self.step = int(state["step"])
        try:
            while True:
                msg = self.dist.broadcast()
                if msg[0] == "update":
                    with self._lora_dropout():  # as on rank 0: LoRA dropout in the learner's forwards
                        self._collective_update(*msg[1:])
                    self.step += 1
                elif msg[0] == "save":
                    save_sharded(msg[1], self.learner.model, self.learner.optimizer)
                    self.dist.barrier()
                else:
                    break
        finally:
            self.dist.close()
        return TrainResult(self.run_dir, self.step, None, None, time.perf_counter() - t_start)


async def _no_batches() -> Any:
    return
    yield  # an empty async generator: a run already at its last step only evaluates


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _batch_metrics(
    trajs: Sequence[Trajectory], diagnostics: dict[str, Any], stats: UpdateStats, batch: Batch
) -> dict[str, float]:
    """What every algorithm's run logs: rewards, advantages, the update, episodes and throughput."""
    n = len(trajs)
    statuses = [t.status.value for t in batch.trajectories]
    turns = [t for tr in trajs for t in tr.turns]
    row: dict[str, float] = {
        "reward_mean": float(np.mean([t.reward for t in trajs])),
        **{f"adv/{k}": v for k, v in diagnostics.items() if _is_num(v)},
        **{f"learner/{k}": v for k, v in stats.as_dict().items() if _is_num(v)},
        "tokens/model_mean": float(np.mean([t.num_model_tokens for t in trajs])),
        "episode/turns_mean": float(np.mean([len(t.turns) for t in trajs])),
        "episode/truncated_frac": statuses.count("truncated") / max(len(statuses), 1),
        "episode/tool_error_frac": float(np.mean([bool(t.info.get("tool_errors")) for t in trajs]))
        if n
        else 0.0,
        "time/gen_s_mean": float(np.mean([t.gen_s for t in turns])) if turns else 0.0,
        "time/tool_s_mean": float(np.mean([t.tool_s for t in turns])) if turns else 0.0,
    }
    shaping = [float(t.info["shaping"]) for t in trajs if _is_num(t.info.get("shaping"))]
    if shaping:
        row["reward/shaping_mean"] = float(np.mean(shaping))
    m = batch.metrics
    for name in ("assembly_s", "trajectories_per_s", "tokens_per_s", "slot_utilisation", "queue_wait_mean"):
        v = getattr(m, name, None)
        if _is_num(v):
            row[f"rollout/{name}"] = float(v)
    return row


def _write_rollouts(f: Any, step: int, trajs: Sequence[Trajectory]) -> None:
    """One JSON row per consumed trajectory: what a latency study replays (`simulate --from-run`)."""
    for t in trajs:
        row = {
            "step": step,
            "prompt_id": t.prompt_id,
            "reward": float(t.reward),
            "status": t.status.value,
            "policy_version": t.policy_version,
            "group_id": t.group_id,
            "started_at": t.started_at,
            "finished_at": t.finished_at,
            "prompt_len": t.prompt_len,
            "turns": [
                {
                    "gen_at": u.gen_at,
                    "gen_s": u.gen_s,
                    "tool_s": u.tool_s,
                    "n_model_tokens": u.n_model_tokens,
                    "n_env_tokens": u.n_env_tokens,
                    "tool_calls": u.tool_calls,
                    "tool_wait_s": u.tool_wait_s,
                }
                for u in t.turns
            ],
        }
        f.write(json.dumps(row) + "\n")


def _eval_fields(r: EvalResult) -> dict[str, float]:
    out = {"eval/n": float(r.tasks * r.k)}
    out.update({f"eval/pass@{k}": v for k, v in r.pass_at.items()})
    out.update({f"eval/maj@{k}": v for k, v in r.maj_at.items()})
    return out
