"""`agentrl train`: sampler → scheduler → episodes → learner → weight sync, with checkpoints that resume exactly.

One step = one batch from the scheduler, one advantage computation, one PPO update, one weight sync.
Everything a resumed run needs (weights, optimizer, ValueTracker, sampler and RNG states, the KL
odometer, step counters and the prompts that were in flight) is in every checkpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import json
import math
import random
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agentrl.algo.advantage import AdvantageResult, grpo, no_baseline, spo
from agentrl.algo.divergence import make_divergence
from agentrl.algo.sampler import PrioritizedSampler, UniformSampler
from agentrl.algo.value_tracker import ValueTracker
from agentrl.checkpoint import latest_checkpoint, load_state, save_checkpoint
from agentrl.config import ConfigError, save_config, to_dict
from agentrl.evaluate import EvalResult, evaluate
from agentrl.runlog import RunLog
from agentrl.train_config import TrainConfig
from agentrl.types import SamplingParams, Trajectory


class ResumeSampler:
    """Hands out prompts that were in flight at the checkpoint first, then defers to the real sampler."""

    def __init__(self, inner: UniformSampler | PrioritizedSampler, first: Sequence[str] = ()) -> None:
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
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


class Trainer:
    def __init__(self, config: TrainConfig, *, resume: bool = False) -> None:
        self.cfg = config
        self.resume = resume
        self.run_dir = Path(config.run_root) / config.name
        self.ckpt_dir = self.run_dir / "checkpoints"

    # ---- construction ---------------------------------------------------------------------------

    def _make_env(self, split: str = "train") -> Any:
        import gymnasium

        import agentrl.envs  # noqa: F401  (registers the bundled envs)

        kw = dict(self.cfg.env.kwargs)
        if self.cfg.env.latency is not None:
            kw["latency"] = self.cfg.env.latency
        if self.cfg.env.max_turns is not None:
            kw["max_turns"] = self.cfg.env.max_turns
        return gymnasium.make(self.cfg.env.id, split=split, **kw).unwrapped

    def _sampling(self) -> SamplingParams:
        r = self.cfg.rollout
        return SamplingParams(temperature=r.temperature, top_p=r.top_p, max_new_tokens=r.max_new_tokens)

    def _make_policy(self, model: Any, tokenizer: Any) -> Any:
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
                max_batch_size=max(self.cfg.rollout.max_concurrency, 1),
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
            )
        if m.backend == "vllm":
            from agentrl.policy.vllm import VLLMPolicy

            return VLLMPolicy(str(self._model_source), tokenizer=tokenizer, seed=self.cfg.seed)
        raise ConfigError(f"model.backend: unknown backend {m.backend!r}")

    async def _sync_policy(self, policy: Any, model: Any, version: int, ckpt: Path | None) -> None:
        """Give the policy the learner's new weights."""
        backend = self.cfg.model.backend
        if backend == "hf":
            shared = getattr(policy, "model", None) is model
            await policy.sync_weights(version, None if shared else model.state_dict())
        else:
            # Servers reload from disk: the policy writes the learner's weights (tied head spelled
            # out, which a reload needs) under `weights_dir`, unless a saved directory is given.
            await policy.sync_weights(version, ckpt if ckpt is not None else model.state_dict())

    # ---- offline tracker initialisation ---------------------------------------------------------

    def _offline_cache_path(self, prompt_ids: Sequence[str]) -> Path:
        from agentrl.models import cache_dir

        a, r = self.cfg.algo, self.cfg.rollout
        key = json.dumps(
            {
                "model": str(self._model_source),
                "env": self.cfg.env.id,
                "env_kwargs": self.cfg.env.kwargs,
                "max_turns": self.cfg.env.max_turns,
                "n0": a.offline_n0,
                "prompts": hashlib.sha256("\n".join(prompt_ids).encode()).hexdigest(),
                "sampling": [r.temperature, r.top_p, r.max_new_tokens, r.max_tokens],
                "seed": self.cfg.seed,
            },
            sort_keys=True,
        )
        return cache_dir() / "offline_init" / (hashlib.sha256(key.encode()).hexdigest()[:16] + ".json")

    async def _offline_init(
        self, runner: Any, tracker: ValueTracker, prompt_ids: Sequence[str]
    ) -> dict[str, Any]:
        """n0 samples per prompt from the initial policy; cached on disk and reused by later runs."""
        path = self._offline_cache_path(prompt_ids)
        if path.is_file():
            rewards = json.loads(path.read_text())["rewards"]
            source = "cache"
        else:
            n0, sem = self.cfg.algo.offline_n0, asyncio.Semaphore(self.cfg.rollout.max_concurrency)

            async def one(pid: str) -> float:
                async with sem:
                    t = await runner(pid, 0)
                    return float(t.reward) if t.status.trainable else 0.0

            flat = await asyncio.gather(*(one(p) for p in prompt_ids for _ in range(n0)))
            rewards = {p: flat[i * n0 : (i + 1) * n0] for i, p in enumerate(prompt_ids)}
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"rewards": rewards}))
            tmp.replace(path)
            source = "computed"
        tracker.init_offline_batch(list(rewards), [np.asarray(v, dtype=np.float64) for v in rewards.values()])
        mean = float(np.mean([np.mean(v) for v in rewards.values()])) if rewards else 0.0
        return {"source": source, "path": str(path), "prompts": len(rewards), "mean_success": mean}

    # ---- the run ---------------------------------------------------------------------------------

    def run(self) -> TrainResult:
        return asyncio.run(self.arun())

    async def arun(self) -> TrainResult:
        from agentrl.learner import Learner, LossConfig, OptimizerConfig
        from agentrl.models import EMBEDDED_MODELS, load_model, model_path
        from agentrl.rollout.episode import EpisodeRunner
        from agentrl.rollout.scheduler import RolloutScheduler, SchedulerConfig

        cfg = self.cfg
        t_start = time.perf_counter()
        resume_from = latest_checkpoint(self.ckpt_dir) if self.resume else None
        if self.resume and resume_from is None:
            print(f"[agentrl] --resume: no checkpoint in {self.ckpt_dir}; starting fresh")
        if resume_from is None and self.ckpt_dir.exists() and any(self.ckpt_dir.iterdir()):
            raise SystemExit(
                f"agentrl train: {self.run_dir} already holds checkpoints; pass --resume to continue it "
                f"or choose another name= (nothing was overwritten)"
            )
        self.run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, self.run_dir / "config.yaml")

        random.seed(cfg.seed)
        np.random.seed(cfg.seed % 2**32)
        torch.manual_seed(cfg.seed)
        device = _device(cfg.model.device)
        dtype = _dtype(cfg.model.dtype, device)
        # Off the loop: a first use builds the embedded model, which runs its own event loop.
        self._model_source = (
            await asyncio.to_thread(model_path, cfg.model.name)
            if cfg.model.name in EMBEDDED_MODELS
            else cfg.model.name
        )
        model, tokenizer = await asyncio.to_thread(
            load_model, str(resume_from or self._model_source), device=device, dtype=dtype
        )

        probe = self._make_env("train")
        env_name = probe.name
        train_ids = probe.task_ids("train")
        if cfg.env.train_prompts is not None:
            train_ids = train_ids[: cfg.env.train_prompts]
        probe.close()
        prompt_ids = [f"{env_name}/train/{t}" for t in train_ids]

        a = cfg.algo
        tracker = ValueTracker(rho_min=a.rho_min, rho_max=a.rho_max, d_half=a.d_half)
        opt = OptimizerConfig(
            lr=cfg.optim.lr,
            weight_decay=cfg.optim.weight_decay,
            betas=(float(cfg.optim.betas[0]), float(cfg.optim.betas[1])),
            eps=cfg.optim.eps,
            grad_clip=cfg.optim.grad_clip,
            scheduler="warmup" if cfg.optim.warmup_steps else "constant",
            warmup_steps=cfg.optim.warmup_steps,
        )
        loss = LossConfig(
            clip_low=cfg.loss.clip_low,
            clip_high=cfg.loss.clip_high,
            dual_clip=cfg.loss.dual_clip,
            aggregation=cfg.loss.aggregation,
            entropy_coef=cfg.loss.entropy_coef,
            num_minibatches=cfg.optim.mini_batches,
            epochs=cfg.optim.epochs,
            micro_batch_size=cfg.optim.micro_batch_size,
            temperature=cfg.rollout.temperature if cfg.rollout.temperature > 0 else 1.0,
        )
        policy = self._make_policy(model, tokenizer)
        learner = Learner(model, opt, loss, device=device, pad_id=getattr(policy, "pad_id", 0))
        model.eval()  # no dropout in rollouts; the learner's forward passes do not need train mode either

        from agentrl.learner import compute_logprobs

        divergence = make_divergence(
            a.divergence,
            tracker,
            score_fn=lambda trajs: compute_logprobs(model, trajs, pad_id=learner.pad_id),
        )
        inner_sampler: UniformSampler | PrioritizedSampler
        if a.name == "spo" and a.prioritized:
            inner_sampler = PrioritizedSampler(
                tracker, prompt_ids, eps=a.sampler_eps, gamma=a.sampler_gamma, seed=cfg.seed
            )
        else:
            inner_sampler = UniformSampler(prompt_ids, seed=cfg.seed)

        step = 0
        history: list[dict[str, Any]] = []
        eval_before: EvalResult | None = None
        in_flight: list[str] = []
        log = RunLog(self.run_dir)
        if resume_from is not None:
            state = load_state(resume_from)
            learner.load_state_dict(state["learner"])
            tracker.load_state_dict(state["tracker"])
            inner_sampler.load_state_dict(state["sampler"]["inner"])
            divergence.load_state_dict(state["divergence"])
            _set_rng_state(state["rng"])
            step = int(state["step"])
            in_flight = list(state["sampler"]["first"]) + list(state.get("in_flight", []))
            eval_before = EvalResult(**state["eval_before"]) if state.get("eval_before") else None
            log.truncate_after(step)
            print(f"[agentrl] resumed {self.run_dir.name} at step {step} from {resume_from}")
        sampler = ResumeSampler(inner_sampler, in_flight)
        if resume_from is not None and cfg.model.backend != "hf":
            await self._sync_policy(policy, model, step, None)  # servers still run the base weights

        def make_runner(seed: int) -> EpisodeRunner:
            return EpisodeRunner(
                lambda _name: self._make_env("train"),
                policy,
                tokenizer=tokenizer,
                params=self._sampling(),
                max_turns=cfg.env.max_turns,
                max_tokens=cfg.rollout.max_tokens,
                seed=seed,
                gen_timeout=cfg.model.request_timeout,
            )

        # Episode seeds depend on (seed, step at start) so a resumed run does not replay early episodes.
        runner = make_runner(int(np.random.SeedSequence([cfg.seed, step]).generate_state(1)[0]))

        async def run_eval(tag: str) -> EvalResult:
            e = cfg.eval
            res = await evaluate(
                policy,
                tokenizer,
                cfg.env.id,
                tasks=e.tasks,
                k=e.k,
                temperature=e.temperature,
                top_p=e.top_p,
                max_new_tokens=cfg.rollout.max_new_tokens,
                max_tokens=cfg.rollout.max_tokens,
                max_turns=cfg.env.max_turns,
                env_kwargs=cfg.env.kwargs,
                concurrency=cfg.rollout.max_concurrency,
                seed=cfg.seed + 7919,
            )
            print(f"[agentrl] eval ({tag}, step {step}): success {res.success:.3f} on {res.tasks} test tasks")
            return res

        offline: dict[str, Any] | None = None
        eval_after: EvalResult | None = None
        pbar = None
        try:
            if resume_from is None:
                if a.offline_init and a.name == "spo":
                    n = a.offline_prompts
                    # its own episode seeds, so training samples the same episodes whether the
                    # tracker init was computed here or read from the cache
                    init_runner = make_runner(
                        int(np.random.SeedSequence([cfg.seed, _OFFLINE_INIT_KEY]).generate_state(1)[0])
                    )
                    try:
                        offline = await self._offline_init(
                            init_runner, tracker, prompt_ids[:n] if n else prompt_ids
                        )
                    finally:
                        await init_runner.aclose()
                    print(
                        f"[agentrl] offline tracker init ({offline['source']}): {offline['prompts']} prompts × "
                        f"{a.offline_n0}, mean success {offline['mean_success']:.3f}"
                    )
                eval_before = await run_eval("before")
                log.log(0, {"eval/success": eval_before.success, **_eval_fields(eval_before)})

            sched_cfg = SchedulerConfig(
                mode="group" if a.name == "grpo" else "stream",
                batch_size=cfg.rollout.batch_size,
                group_size=a.group_size,
                max_concurrency=cfg.rollout.max_concurrency,
                regime=cfg.rollout.regime,
                overprovision=cfg.rollout.overprovision,
                max_staleness=cfg.rollout.max_staleness if cfg.rollout.regime == "async" else None,
                episode_timeout=cfg.rollout.episode_timeout,
                watchdog_s=max(600.0, 5 * cfg.rollout.episode_timeout),
            )
            if cfg.progress:
                from tqdm.auto import tqdm

                pbar = tqdm(total=cfg.steps, initial=step, desc=cfg.name, unit="step", dynamic_ncols=True)
            t_batch = time.perf_counter()
            async with RolloutScheduler(sampler, runner, sched_cfg) as sched:
                sched.set_policy_version(step)
                if step < cfg.steps:
                    async for batch in sched.batches():
                        row = await self._train_step(batch, learner, tracker, divergence, policy, model, step)
                        step += 1
                        await self._sync_policy(policy, model, step, None)
                        sched.set_policy_version(step)
                        row["time/step_s"] = time.perf_counter() - t_batch
                        if cfg.eval.every and step % cfg.eval.every == 0 and step < cfg.steps:
                            res = await run_eval(f"step {step}")
                            row.update({"eval/success": res.success, **_eval_fields(res)})
                        log.log(step, row)
                        history.append({"step": step, **row})
                        if pbar is not None:
                            pbar.update(1)
                            pbar.set_postfix(
                                reward=f"{row['reward_mean']:.2f}",
                                eval=f"{row.get('eval/success', float('nan')):.2f}",
                                traj_s=f"{row.get('rollout/trajectories_per_s', 0):.1f}",
                            )
                        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                            in_flight = [e["prompt_id"] for e in sched.running_episodes()]
                            self._checkpoint(
                                step,
                                model,
                                tokenizer,
                                learner,
                                tracker,
                                sampler,
                                divergence,
                                eval_before,
                                in_flight,
                            )
                        t_batch = time.perf_counter()
                        if step >= cfg.steps:
                            break
            if pbar is not None:
                pbar.close()
                pbar = None
            eval_after = await run_eval("after")
            log.log(step, {"eval/success": eval_after.success, **_eval_fields(eval_after)})
        finally:
            if pbar is not None:
                pbar.close()
            log.close()
            with contextlib.suppress(Exception):
                await runner.aclose()
            await policy.aclose()

        from agentrl.plots import plot_run

        plot_run(self.run_dir, tracker_values=tracker.values(prompt_ids))
        summary = {
            "steps": step,
            "seconds": time.perf_counter() - t_start,
            "eval_before": eval_before.as_dict() if eval_before else None,
            "eval_after": eval_after.as_dict() if eval_after else None,
            "offline_init": offline,
        }
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        return TrainResult(self.run_dir, step, eval_before, eval_after, summary["seconds"], history)

    async def _train_step(
        self,
        batch: Any,
        learner: Any,
        tracker: ValueTracker,
        divergence: Any,
        policy: Any,
        model: Any,
        step: int,
    ) -> dict[str, Any]:
        a = self.cfg.algo
        trajs: list[Trajectory] = [t for t in batch.trajectories if t.status.trainable and any(t.loss_mask)]
        row: dict[str, Any] = {"batch/size": len(batch.trajectories), "batch/trainable": len(trajs)}
        row["batch/failures"] = len(batch.failures)
        if not trajs:
            row["reward_mean"] = 0.0
            return row
        rewards = np.array([t.reward for t in trajs], dtype=np.float64)
        pids = [t.prompt_id for t in trajs]
        versions = np.array([t.policy_version for t in trajs], dtype=np.int64)
        # ρ as a diagnostic; only the odometer gives it for free (replay would re-score the batch twice).
        rho = tracker.rho(divergence.estimate(pids, versions)) if a.divergence == "odometer" else None
        # The tracker is updated for every algorithm (its values are a diagnostic for GRPO), but only
        # SPO uses the baselines it returns.
        baselines = divergence.update_tracker(pids, rewards, versions, trajs)
        result: AdvantageResult
        if a.name == "spo":
            centring = "token" if a.token_centring else "trajectory"
            counts = [t.num_model_tokens for t in trajs]
            # no group ids: a prompt drawn once is a one-sample "group", so the degenerate-group
            # diagnostics would read ~1.0 and mean nothing for a stream without groups
            result = spo(rewards, baselines, centring=centring, token_counts=counts)
        elif a.name == "grpo":
            result = grpo(rewards, [t.group_id for t in trajs], scale_std=a.grpo_scale_std)
        else:
            result = no_baseline(rewards)
        shared = getattr(policy, "model", None) is model
        lock = policy.exclusive() if shared and hasattr(policy, "exclusive") else contextlib.nullcontext()
        async with lock:
            stats = await asyncio.to_thread(learner.update, trajs, result.advantages)
        if hasattr(divergence, "odometer"):
            kl = stats.kl if math.isfinite(stats.kl) else 0.0
            divergence.odometer.record(kl, version=step + 1)
        row.update(
            {
                "reward_mean": float(rewards.mean()),
                "tracker/value_mean": float(np.mean(tracker.values(pids))),
                "tracker/n_eff_mean": float(np.mean(tracker.n_effs(pids))),
                "tracker/baseline_mean": float(np.mean(baselines)),
                **{f"adv/{k}": v for k, v in result.diagnostics.as_dict().items() if _is_num(v)},
                **{f"learner/{k}": v for k, v in stats.as_dict().items() if _is_num(v)},
                "tokens/model_mean": float(np.mean([t.num_model_tokens for t in trajs])),
                "episode/turns_mean": float(np.mean([len(t.turns) for t in trajs])),
            }
        )
        if rho is not None:
            row["tracker/rho_mean"] = float(np.mean(rho))
        m = batch.metrics
        for name in (
            "assembly_s",
            "trajectories_per_s",
            "tokens_per_s",
            "slot_utilisation",
            "queue_wait_mean",
        ):
            v = getattr(m, name, None)
            if _is_num(v):
                row[f"rollout/{name}"] = float(v)
        return row

    def _checkpoint(
        self,
        step: int,
        model: Any,
        tokenizer: Any,
        learner: Any,
        tracker: ValueTracker,
        sampler: ResumeSampler,
        divergence: Any,
        eval_before: EvalResult | None,
        in_flight: list[str],
    ) -> Path:
        state = {
            "step": step,
            "config": to_dict(self.cfg),
            "learner": learner.state_dict(include_model=False),
            "tracker": tracker.state_dict(),
            "sampler": sampler.state_dict(),
            "divergence": divergence.state_dict(),
            "rng": _rng_state(),
            "in_flight": in_flight,
            "eval_before": eval_before.as_dict() if eval_before else None,
        }

        def write_model(d: Path) -> None:
            model.save_pretrained(d, safe_serialization=True)
            tokenizer.save_pretrained(d)

        return save_checkpoint(self.ckpt_dir, step, state, write_model, keep=self.cfg.keep_checkpoints)


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _eval_fields(r: EvalResult) -> dict[str, float]:
    out = {f"eval/pass@{k}": v for k, v in r.pass_at.items()}
    out.update({f"eval/maj@{k}": v for k, v in r.maj_at.items()})
    return out
