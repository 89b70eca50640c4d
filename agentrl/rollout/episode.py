"""One agent-environment episode as a token-exact `Trajectory`, and the runner the scheduler calls.

The loop renders the opening messages and tool schemas with the model's chat template, then
alternates `policy.generate` (sampled ids and log-probs appended with mask 1) and `env.astep(text)`
(tool and env messages appended, tokenised incrementally, with mask 0) until the env terminates, the
turn budget or the token budget runs out. Timings come from `loop.time()` so the loop also runs on a
virtual clock.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from agentrl.chat import ChatFormat
from agentrl.policy.base import Policy, PolicyError, PolicyTimeoutError, PolicyUnavailableError
from agentrl.types import SamplingParams, Status, Trajectory, Turn

__all__ = ["EpisodeRunner", "PromptRef", "chat_format_for", "parse_prompt_id", "run_episode"]


@dataclass(frozen=True, slots=True)
class PromptRef:
    """Where a prompt id points: the env's short name, the split and the task id within it."""

    env: str
    split: str
    task_id: str

    @property
    def reset_options(self) -> dict[str, str]:
        return {"task_id": self.task_id, "split": self.split}


def parse_prompt_id(prompt_id: str) -> PromptRef:
    """Map `"<env>/<split>/<task>"` (e.g. `"calculator/train/00042"`) to reset options.

    The env's `reset` info reports the same string as `info["prompt_id"]`; the task id is everything
    after the second slash, so task ids may themselves contain slashes.
    """
    parts = prompt_id.split("/", 2)
    if len(parts) != 3 or not all(parts):
        raise ValueError(f"prompt id {prompt_id!r} is not of the form '<env>/<split>/<task_id>'")
    return PromptRef(*parts)


_FORMATS: dict[int, tuple[Any, ChatFormat]] = {}


def chat_format_for(tokenizer: Any) -> ChatFormat:
    """One cached `ChatFormat` per tokenizer object (its template probes are not free)."""
    if isinstance(tokenizer, ChatFormat):
        return tokenizer
    entry = _FORMATS.get(id(tokenizer))
    if entry is None or entry[0] is not tokenizer:
        entry = (tokenizer, ChatFormat(tokenizer))
        _FORMATS[id(tokenizer)] = entry
    return entry[1]


class _Builder:
    """Accumulates tokens, mask and log-probs in lockstep."""

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.mask: list[int] = []
        self.logprobs: list[float] = []

    def model(self, ids: list[int], logprobs: list[float]) -> None:
        if len(ids) != len(logprobs):
            raise PolicyError(f"policy returned {len(ids)} token ids but {len(logprobs)} log-probs")
        self.ids += ids
        self.mask += [1] * len(ids)
        self.logprobs += [float(x) for x in logprobs]

    def context(self, ids: list[int]) -> None:
        self.ids += ids
        self.mask += [0] * len(ids)
        self.logprobs += [0.0] * len(ids)


async def run_episode(
    env: Any,
    policy: Policy,
    tokenizer: Any = None,
    *,
    prompt_id: str | None = None,
    task_id: str | None = None,
    split: str | None = None,
    seed: int | None = None,
    params: SamplingParams | None = None,
    max_turns: int | None = None,
    max_tokens: int = 4096,
    policy_version: int | None = None,
    gen_timeout: float | None = 300.0,
    env_timeout: float | None = 120.0,
    episode_id: int = -1,
    group_id: int | None = None,
) -> Trajectory:
    """Play one episode and return its trajectory; failures become a status, never an exception.

    Select the task by `prompt_id` (see `parse_prompt_id`) or by `task_id`/`split`. `max_turns`
    caps the env's own turn budget, `max_tokens` the whole trajectory length. `params.seed`, when
    set, seeds turn `t` with `seed + t` so an episode replays exactly. Env exceptions give status
    `env_error`; a missed deadline of the policy or the env gives `timeout`.
    Cancellation propagates.

    `policy_version` on the result is the oldest weight version that sampled any of its tokens
    (the argument is only the fallback when no token was sampled); per-turn versions are in
    `info["policy_versions"]`.
    """
    loop = asyncio.get_running_loop()
    params = params or SamplingParams()
    chat = chat_format_for(tokenizer if tokenizer is not None else policy.tokenizer)
    options: dict[str, str] = {}
    if prompt_id is not None:
        options = parse_prompt_id(prompt_id).reset_options
    if task_id is not None:
        options["task_id"] = task_id
    if split is not None:
        options["split"] = split
    traj = Trajectory(
        prompt_id=prompt_id or "",
        policy_version=policy_version if policy_version is not None else policy.version,
        episode_id=episode_id,
        group_id=group_id,
        started_at=loop.time(),
    )
    out = _Builder()
    versions: list[int] = []
    finish: list[str] = []

    def finalize(status: Status, error: str | None = None) -> Trajectory:
        traj.token_ids, traj.loss_mask, traj.logprobs = out.ids, out.mask, out.logprobs
        traj.status, traj.error = status, error
        if versions:
            traj.policy_version = min(versions)
        traj.info.update(policy_versions=versions, finish_reasons=finish, num_turns=len(traj.turns))
        traj.finished_at = loop.time()
        return traj

    try:
        async with asyncio.timeout(env_timeout):
            _, info = await env.areset(seed=seed, options=options or None)
    except TimeoutError:
        return finalize(Status.TIMEOUT, f"env reset missed its {env_timeout:g} s deadline")
    except Exception as e:
        return finalize(Status.ENV_ERROR, f"env reset failed: {type(e).__name__}: {e}")
    env_prompt_id = info.get("prompt_id")
    if prompt_id is not None and env_prompt_id is not None and env_prompt_id != prompt_id:
        return finalize(
            Status.ENV_ERROR, f"env reset to {env_prompt_id!r} but prompt {prompt_id!r} was asked for"
        )
    traj.prompt_id = prompt_id or env_prompt_id or ""
    traj.info.update(task_id=info.get("task_id"), split=info.get("split"))
    tools = info.get("tools") or None
    history: list[dict[str, Any]] = [dict(m) for m in info["messages"]]
    budgets = [int(x) for x in (max_turns, info.get("max_turns")) if x is not None]
    turn_budget = min(budgets) if budgets else 1_000_000

    out.context(chat.prompt_ids(history, tools))
    traj.prompt_len = len(out.ids)
    if traj.prompt_len >= max_tokens:
        return finalize(Status.TRUNCATED, f"prompt has {traj.prompt_len} tokens, max_tokens={max_tokens}")

    for turn_idx in range(turn_budget):
        turn = Turn()
        traj.turns.append(turn)
        room = max_tokens - len(out.ids)
        turn_params = replace(
            params,
            max_new_tokens=min(params.max_new_tokens, room),
            seed=None if params.seed is None else params.seed + turn_idx,
        )
        t0 = turn.gen_at = loop.time()
        try:
            async with asyncio.timeout(gen_timeout):
                gen = await policy.generate(out.ids, turn_params)
        except (TimeoutError, PolicyTimeoutError) as e:
            turn.gen_s = loop.time() - t0
            return finalize(Status.TIMEOUT, f"generation missed its deadline: {e or gen_timeout}")
        except PolicyUnavailableError as e:
            turn.gen_s = loop.time() - t0
            return finalize(Status.TIMEOUT, f"policy unavailable: {e}")
        turn.gen_s = loop.time() - t0
        out.model(list(gen.token_ids), list(gen.logprobs))
        versions.append(gen.policy_version)
        finish.append(gen.finish_reason)
        turn.n_model_tokens = len(gen.token_ids)
        text = gen.text or chat.tokenizer.decode(gen.token_ids, skip_special_tokens=True)
        eot = chat.end_of_turn_ids(gen.token_ids)

        if gen.finish_reason == "length" and len(out.ids) >= max_tokens:
            return finalize(Status.TRUNCATED, None)

        t1 = loop.time()
        try:
            async with asyncio.timeout(env_timeout):
                _, reward, terminated, truncated, step_info = await env.astep(text)
        except TimeoutError:
            turn.tool_s = loop.time() - t1
            return finalize(Status.TIMEOUT, f"env step missed its {env_timeout:g} s deadline")
        except Exception as e:
            turn.tool_s = loop.time() - t1
            return finalize(Status.ENV_ERROR, f"env step failed: {type(e).__name__}: {e}")
        turn.tool_s = loop.time() - t1
        results = step_info.get("tool_results") or ()
        turn.tool_calls = len(results)
        turn.tool_wait_s = max(
            (float(r.get("wait_s") or 0.0) for r in results if isinstance(r, dict)), default=0.0
        )
        errors = sum(1 for r in results if isinstance(r, dict) and not r.get("ok", True))
        if errors:
            traj.info["tool_errors"] = traj.info.get("tool_errors", 0) + errors
        if isinstance(step_info.get("shaping"), int | float):  # an env's optional shaping reward
            traj.info["shaping"] = traj.info.get("shaping", 0.0) + float(step_info["shaping"])
        out.context(eot)
        turn.n_env_tokens = len(eot)
        traj.reward = float(reward)
        if terminated or truncated:
            for key in ("answer", "correct"):
                if key in step_info:
                    traj.info[key] = step_info[key]
            return finalize(Status.OK if terminated else Status.TRUNCATED)

        new_messages = [dict(m) for m in step_info.get("messages") or ()]
        obs_ids = chat.observation_ids(history, text, new_messages, tools)
        if len(out.ids) + len(obs_ids) >= max_tokens:
            return finalize(Status.TRUNCATED, None)
        out.context(obs_ids)
        turn.n_env_tokens += len(obs_ids)
        history += [{"role": "assistant", "content": text}, *new_messages]

    return finalize(Status.TRUNCATED, None)


EnvFactory = Callable[[str], Any]


class EpisodeRunner:
    """The scheduler's episode runner: an async callable `(prompt_id, policy_version) -> Trajectory`.

    `env_factory(env_name)` makes an env for the first part of a prompt id (e.g. `"calculator"`);
    pass a mapping `{env_name: gymnasium id or zero-argument factory}` or a single gymnasium id to
    have one made for you. Env instances are pooled and reused, one episode at a time each.
    Episode `n` (in launch order) gets its env-reset and sampling seeds from `seed` and `n` through
    numpy's SeedSequence, so a run replays and no two episodes share a sampling seed.
    """

    def __init__(
        self,
        env_factory: EnvFactory | Mapping[str, str | Callable[[], Any]] | str,
        policy: Policy,
        *,
        tokenizer: Any = None,
        params: SamplingParams | None = None,
        max_turns: int | None = None,
        max_tokens: int = 4096,
        gen_timeout: float | None = 300.0,
        env_timeout: float | None = 120.0,
        seed: int = 0,
    ) -> None:
        self.env_factory = _as_factory(env_factory)
        self.policy = policy
        self.tokenizer = tokenizer if tokenizer is not None else policy.tokenizer
        self.params = params or SamplingParams()
        self.max_turns = max_turns
        self.max_tokens = max_tokens
        self.gen_timeout = gen_timeout
        self.env_timeout = env_timeout
        self.seed = seed
        self._counter = itertools.count()
        self._pool: dict[str, list[Any]] = defaultdict(list)

    def _episode_seed(self, n: int) -> int:
        return int(np.random.SeedSequence([self.seed, n]).generate_state(1, dtype=np.uint32)[0])

    async def __call__(
        self, prompt_id: str, policy_version: int | None = None, group_id: int | None = None
    ) -> Trajectory:
        ref = parse_prompt_id(prompt_id)
        n = next(self._counter)
        pool = self._pool[ref.env]
        env = pool.pop() if pool else self.env_factory(ref.env)
        seed = self._episode_seed(n)
        try:
            return await run_episode(
                env,
                self.policy,
                self.tokenizer,
                prompt_id=prompt_id,
                seed=seed,
                params=replace(self.params, seed=seed),
                max_turns=self.max_turns,
                max_tokens=self.max_tokens,
                policy_version=policy_version,
                gen_timeout=self.gen_timeout,
                env_timeout=self.env_timeout,
                episode_id=n,
                group_id=group_id,
            )
        finally:
            pool.append(env)

    async def aclose(self) -> None:
        for envs in self._pool.values():
            for env in envs:
                close = getattr(env, "close", None)
                if close is not None:
                    close()
        self._pool.clear()


def _as_factory(spec: EnvFactory | Mapping[str, str | Callable[[], Any]] | str) -> EnvFactory:
    import gymnasium

    def make(entry: str | Callable[[], Any]) -> Any:
        env = gymnasium.make(entry) if isinstance(entry, str) else entry()
        # gymnasium's wrappers do not forward the async twins; the env applies its own limits.
        return env if hasattr(env, "astep") else env.unwrapped

    if isinstance(spec, str):
        return lambda _name: make(spec)
    if isinstance(spec, Mapping):
        table = dict(spec)

        def from_table(name: str) -> Any:
            if name not in table:
                raise KeyError(
                    f"no environment for prompt ids starting with {name!r}; known: {sorted(table)}"
                )
            return make(table[name])

        return from_table
    return spec
