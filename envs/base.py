"""`ToolEnv`: a Gymnasium environment where the action is model text and tools answer it.

One episode: reset picks a task and returns the opening chat messages; each step takes one assistant
turn, runs its tool calls concurrently, and returns the tool results as new messages; an
`<answer>...</answer>` ends the episode with the outcome reward. Everything a model can get wrong
becomes an error observation, so nothing it writes can raise out of `step`.

The async twins `areset`/`astep` are the real implementation, because the rollout scheduler runs
hundreds of episodes on one event loop; the sync Gymnasium methods run them with `asyncio.run`.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import logging
import string
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import gymnasium
import numpy as np
from gymnasium.utils import seeding

from agentrl.envs.answers import answers_match
from agentrl.envs.latency import LatencyProfile, from_spec, wait
from agentrl.envs.shaping import Shaping, TurnOutcome, resolve_shaping
from agentrl.tools.base import ParsedAction, Tool, ToolBox, ToolCall, ToolResult, clip, shorten
from agentrl.tools.formats import ToolFormat, get_tool_format
from agentrl.tools.function import build_tools

log = logging.getLogger(__name__)

MAX_OBS_CHARS = 1 << 17  # one step's observation (and its messages together), notes included
MAX_ACTION_CHARS = 1 << 17  # longer actions are refused unparsed, with an error observation
MAX_TOOL_MESSAGE_CHARS = 16_000
MAX_FEEDBACK_CHARS = 4_000
_TOOL_WRAP = "<tool_response>\n{}\n</tool_response>"
_LATENCY_STREAM = 0x1A7E  # spawn key that separates the latency stream from the task stream

_T = TypeVar("_T")
Message = dict[str, Any]


class TextSpace(gymnasium.spaces.Text):
    """A `Text` space that contains any Unicode string up to `max_length` characters.

    Model output and tool results can hold any character, and a literal all-of-Unicode charset would
    cost megabytes per environment; so membership checks only the type and length, while `sample`
    draws from printable ASCII plus a few non-ASCII letters.
    """

    SAMPLE_CHARSET = string.printable + "éüñßøçπ→€中文—"

    def __init__(self, max_length: int, seed: int | np.random.Generator | None = None) -> None:
        super().__init__(max_length=max_length, min_length=0, charset=self.SAMPLE_CHARSET, seed=seed)

    def contains(self, x: Any) -> bool:
        return isinstance(x, str) and self.min_length <= len(x) <= self.max_length

    def __repr__(self) -> str:
        return f"TextSpace(max_length={self.max_length})"


@dataclass(frozen=True)
class Task:
    """One prompt. `answer` is what `score` compares against; `data` is what the expert needs."""

    id: str
    prompt: str
    answer: Any
    difficulty: int = 1
    data: Mapping[str, Any] = field(default_factory=dict)


_TASK_CACHE: dict[tuple[type, str], tuple[list[Task], dict[str, int]]] = {}


def _run_sync(make: Callable[[], Coroutine[Any, Any, _T]], what: str) -> _T:
    """Run an async twin from sync code; refuse inside a running loop, where it would deadlock."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make())
    raise RuntimeError(
        f"ToolEnv.{what}() was called while an asyncio event loop is running in this thread; "
        f"use `await env.a{what}(...)` instead (on a gymnasium.make() env: `env.unwrapped.a{what}`)."
    )


class ToolEnv(gymnasium.Env[str, str]):
    """Subclass it: set `tools`, implement `load_tasks(split)`, and optionally `score` and `expert_action`.

    Class attributes a subclass sets:
      name: prefix of prompt ids ("calculator" gives "calculator/train/00042").
      tools: Tool instances (shared by every env of the class), zero-argument factories (a Tool
        class works) called once per env, plain functions with type hints (see `function_tool`),
        or toolsets such as `MCPToolset`; override `make_tools` when tools need the task data.
      instructions: one or two sentences of task-specific guidance for the system prompt.
      max_turns: default turn budget (assistant turns per episode).
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["ansi"], "render_fps": 4}
    name: ClassVar[str] = "toolenv"
    tools: ClassVar[Sequence[Tool | Callable[[], Tool]]] = ()
    instructions: ClassVar[str] = ""
    max_turns: int = 8
    splits: ClassVar[tuple[str, ...]] = ("train", "test")

    def __init__(
        self,
        split: str = "train",
        max_turns: int | None = None,
        latency: LatencyProfile | Mapping[str, Any] | None = None,
        seed: int | None = None,
        render_mode: str | None = None,
        tools: Sequence[Any] | None = None,
        tool_format: str = "hermes",
        shaping: Shaping | str | None = None,
    ) -> None:
        """`latency` is a `LatencyProfile` or its config form {"step": spec, "tool": spec,
        "per_tool": {name: spec}} with `latency.from_spec` specs; `tools` replaces the class's tools
        (e.g. a shared or stubbed instance; plain functions and toolsets are accepted too);
        `tool_format` is the tool-call format the model writes and the env parses
        (`agentrl.tools.formats`: hermes, llama3, mistral, json); `shaping` turns on the
        reward-shaping hook (see `shaping_reward`)."""
        self.call_format: ToolFormat = get_tool_format(tool_format)
        self.tool_format = self.call_format.name
        if split not in self.splits:
            raise ValueError(f"{type(self).__name__}: unknown split {split!r}; expected one of {self.splits}")
        if max_turns is not None and max_turns < 1:
            raise ValueError(f"max_turns must be >= 1, got {max_turns}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(
                f"render_mode must be one of {self.metadata['render_modes']}, got {render_mode!r}"
            )
        self.split = split
        self.episode_split = split
        self.max_turns = int(max_turns if max_turns is not None else type(self).max_turns)
        self.latency = as_profile(latency)
        self.render_mode = render_mode
        self.toolbox = ToolBox(list(tools) if tools is not None else self.make_tools())
        self.shaping = resolve_shaping(shaping)
        self.shaping_total = 0.0
        self.observation_space = TextSpace(MAX_OBS_CHARS)
        self.action_space = TextSpace(MAX_ACTION_CHARS)
        self.messages: list[Message] = []
        self.task: Task | None = None
        self.turn = 0
        self.done = False
        self._latency_rng = self._make_latency_rng(seed)
        if seed is not None:
            self._np_random, self._np_random_seed = seeding.np_random(seed)

    # ---- what a subclass provides -------------------------------------------------------------

    def load_tasks(self, split: str) -> Sequence[Task]:
        """Return the tasks of `split`, deterministically (same list every call and every run)."""
        raise NotImplementedError(f"{type(self).__name__} must implement load_tasks(split)")

    def score(self, task: Task, answer: str) -> float:
        """Outcome reward in [0, 1]; the default compares numbers as numbers and text as text."""
        return float(answers_match(answer, task.answer))

    async def ascore(self, task: Task, answer: str) -> float:
        """`score`'s async twin, which `astep` awaits: override it when scoring awaits the outside
        world (a grader service, a sandboxed checker), so it runs on the episode's own loop."""
        return self.score(task, answer)

    def expert_action(self) -> str:
        """The scripted expert's next action, computed from `self.messages` (tool results included)."""
        raise NotImplementedError(f"{type(self).__name__} has no scripted expert")

    def format_tool_call(self, name: str, arguments: Mapping[str, Any]) -> str:
        """A call written in this env's tool-call format (for experts and tests)."""
        return self.call_format.format_call(name, arguments)

    def make_tools(self) -> list[Tool]:
        return build_tools(type(self).tools)

    def system_prompt(self) -> str:
        names = ", ".join(self.toolbox.tools) or "none"
        lines = [
            "You solve the user's task step by step using tools.",
            f"Available tools: {names}.",
            self.call_format.instruction(),
            "When you know the final answer, write it as <answer>...</answer>, which ends the episode.",
            f"You have at most {self.max_turns} turns.",
        ]
        if self.instructions:
            lines.insert(1, self.instructions)
        return "\n".join(lines)

    # ---- tasks ------------------------------------------------------------------------------

    def tasks(self, split: str | None = None) -> list[Task]:
        return self._split_tasks(split or self.split)[0]

    def task_ids(self, split: str | None = None) -> list[str]:
        return [t.id for t in self.tasks(split)]

    def prompt_id(self, task: Task, split: str | None = None) -> str:
        return f"{self.name}/{split or self.split}/{task.id}"

    def get_task(self, task_id: str | int, split: str | None = None) -> tuple[Task, str]:
        """Find a task by id ("00042"), index (42) or full prompt id ("calculator/test/00042")."""
        split = split or self.split
        if isinstance(task_id, str) and task_id.count("/") == 2:
            prefix, split, task_id = task_id.split("/")
            if prefix != self.name:
                raise ValueError(f"prompt id {prefix}/... does not belong to environment {self.name!r}")
        tasks, index = self._split_tasks(split)
        if isinstance(task_id, int | np.integer) and not isinstance(task_id, bool):
            if not 0 <= task_id < len(tasks):
                raise ValueError(
                    f"task index {task_id} out of range for split {split!r} ({len(tasks)} tasks)"
                )
            return tasks[int(task_id)], split
        if task_id not in index:
            raise ValueError(
                f"unknown task_id {task_id!r} in split {split!r} of {self.name}; "
                f"ids look like {tasks[0].id!r} (see env.task_ids(split))"
            )
        return tasks[index[task_id]], split

    def _split_tasks(self, split: str) -> tuple[list[Task], dict[str, int]]:
        if split not in self.splits:
            raise ValueError(f"{self.name}: unknown split {split!r}; expected one of {self.splits}")
        key = (type(self), split)
        if key not in _TASK_CACHE:
            tasks = list(self.load_tasks(split))
            if not tasks:
                raise ValueError(f"{self.name}: split {split!r} has no tasks")
            index = {t.id: i for i, t in enumerate(tasks)}
            if len(index) != len(tasks):
                raise ValueError(f"{self.name}: duplicate task ids in split {split!r}")
            _TASK_CACHE[key] = (tasks, index)
        return _TASK_CACHE[key]

    # ---- seeding ----------------------------------------------------------------------------

    @staticmethod
    def _make_latency_rng(seed: int | None) -> np.random.Generator:
        if seed is None:
            return np.random.default_rng()
        return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_LATENCY_STREAM,)))

    # ---- the Gymnasium API ------------------------------------------------------------------

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[str, dict[str, Any]]:
        return _run_sync(lambda: self.areset(seed=seed, options=options), "reset")

    def step(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        return _run_sync(lambda: self.astep(action), "step")

    async def areset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[str, dict[str, Any]]:
        """Start an episode. options: `task_id` (id, index or prompt id) and `split`."""
        super().reset(seed=seed)
        if seed is not None:
            self._latency_rng = self._make_latency_rng(seed)
        opts = dict(options or {})
        unknown = set(opts) - {"task_id", "split"}
        if unknown:
            raise ValueError(f"unknown reset option(s) {sorted(unknown)}; expected 'task_id' and/or 'split'")
        split = opts.get("split") or self.split
        if opts.get("task_id") is not None:
            self.task, split = self.get_task(opts["task_id"], split)
        else:
            tasks = self.tasks(split)
            self.task = tasks[int(self.np_random.integers(len(tasks)))]
        self.episode_split = split
        self.shaping_total = 0.0
        self.turn = 0
        self.done = False
        self.messages = [
            {"role": "system", "content": self.system_prompt()},
            {"role": "user", "content": self.task.prompt},
        ]
        info = {
            "prompt_id": self.prompt_id(self.task, split),
            "task_id": self.task.id,
            "split": split,
            "difficulty": self.task.difficulty,
            "tools": self.toolbox.schemas(),
            "max_turns": self.max_turns,
            "messages": self.messages,
        }
        return self.task.prompt, copy.deepcopy(info)

    async def astep(self, action: str) -> tuple[str, float, bool, bool, dict[str, Any]]:
        """One assistant turn. Malformed text gets an error observation; it never raises."""
        if self.task is None:
            raise RuntimeError("call reset()/areset() before step()/astep()")
        if self.done:
            raise RuntimeError("the episode is over; call reset()/areset() to start a new one")
        text = action if isinstance(action, str) else ""
        self.turn += 1
        self.messages.append({"role": "assistant", "content": text})
        step_delay = await wait(self.latency.step, self._latency_rng)

        parsed = self._parse(action)
        reward, terminated = 0.0, False
        new: list[Message] = []
        results: list[ToolResult] = []
        tool_delays: list[float] = []
        info: dict[str, Any] = {"prompt_id": self.prompt_id(self.task, self.episode_split), "turn": self.turn}
        if parsed is not None and parsed.answer is not None:
            terminated = True
            reward = await self._safe_score(self.task, parsed.answer, info)
            info["answer"] = parsed.answer
            info["correct"] = reward >= 1.0
        else:
            if parsed is not None and parsed.tool_calls:
                pairs = await asyncio.gather(*(self._call_tool(c) for c in parsed.tool_calls))
                results = [r for r, _ in pairs]
                tool_delays = [d for _, d in pairs]
                new.extend(
                    {"role": "tool", "name": r.name, "content": clip(r.content, MAX_TOOL_MESSAGE_CHARS)}
                    for r in results
                )
            feedback = self._format_feedback(action, parsed)
            if feedback:
                new.append({"role": "user", "content": clip(feedback, MAX_FEEDBACK_CHARS)})
            new = self._fit_observation(new)
        truncated = not terminated and self.turn >= self.max_turns
        if truncated:
            info["answer"] = None
            info["correct"] = False
        self.done = terminated or truncated
        self.messages.extend(new)
        info["messages"] = new
        info["tool_results"] = [
            {
                "name": r.name,
                "ok": r.ok,
                "error_kind": r.error_kind,
                "content": m["content"],
                "wait_s": r.wait_s,
            }
            for r, m in zip(results, new, strict=False)
        ]
        info["latency"] = {"step": step_delay, "tools": tool_delays}
        self._apply_shaping(
            TurnOutcome(self.turn, text, parsed, results, reward, terminated, truncated), info
        )
        obs = self._render_observation(new)
        return obs, reward, terminated, truncated, copy.deepcopy(info)

    # ---- reward shaping ---------------------------------------------------------------------

    def shaping_reward(self, turn: TurnOutcome) -> float | None:
        """Shaping reward for one turn, or None when shaping is off (the default).

        Set `shaping=` ("format", "tool_calls", an import path `module:function`, or a callable taking
        a `TurnOutcome`) or override this. The step's reward stays the scorer's; the shaping value is
        reported as `info["shaping"]`, with the episode's running sum in `info["shaping_total"]`,
        for a trainer to log and, if it wants, add to the outcome reward.
        """
        return None if self.shaping is None else float(self.shaping(turn))

    def _apply_shaping(self, turn: TurnOutcome, info: dict[str, Any]) -> None:
        try:
            value = self.shaping_reward(turn)
        except Exception as e:  # like a scorer bug: visible, never fatal
            log.warning("%s shaping failed: %s", type(self).__name__, e)
            info["shaping_error"] = f"{type(e).__name__}: {e}"
            return
        if value is None:
            return
        self.shaping_total += value
        info["shaping"] = value
        info["shaping_total"] = self.shaping_total

    def close(self) -> None:
        """Close tools that hold resources (an MCP server process); idempotent."""
        for tool in self.toolbox.tools.values():
            close = getattr(tool, "close", None)
            if callable(close):
                close()
        super().close()

    # ---- helpers ----------------------------------------------------------------------------

    def toolbox_for(self, task: Task) -> ToolBox:
        """The tools an episode of `task` calls: the env's own unless a task brings its world along."""
        return self.toolbox

    def _parse(self, action: Any) -> ParsedAction | None:
        """The action parsed in the env's tool-call format; never raises (None for a non-text action)."""
        if not isinstance(action, str):
            return None
        limit = self.action_space.max_length
        if len(action) > limit:
            return ParsedAction(
                text="",
                errors=[
                    f"your reply has {len(action):,} characters, over the limit of {limit:,}; it was not read"
                ],
            )
        try:
            return self.call_format.parse(action)
        except Exception as e:  # a parser bug must not end the episode; the model is told, the log says why
            log.warning(
                "%s: parsing an action failed: %s: %s", type(self).__name__, type(e).__name__, shorten(e)
            )
            return ParsedAction(text=action, errors=[f"your reply could not be parsed ({type(e).__name__})"])

    async def _call_tool(self, call: ToolCall) -> tuple[ToolResult, float]:
        name = shorten(call.name)
        delay = await wait(self.latency.for_tool(call.name), self._latency_rng)
        assert self.task is not None
        try:
            result = await self.toolbox_for(self.task).call(call)
        except Exception as e:  # a custom toolbox or tool that raises becomes an error result
            result = ToolResult(
                name, f"Error: {name} failed: {type(e).__name__}: {shorten(e, 2_000)}", False, "exception"
            )
        if not isinstance(result, ToolResult):
            result = ToolResult(
                name, f"Error: {name} returned {type(result).__name__}, not a ToolResult", False, "exception"
            )
        elif not isinstance(result.content, str) or len(result.name) > len(name):
            result = dataclasses.replace(result, name=shorten(result.name), content=str(result.content))
        return result, delay

    async def _safe_score(self, task: Task, answer: str, info: dict[str, Any]) -> float:
        try:
            value = float(await self.ascore(task, answer))
        except Exception as e:  # a scoring bug must not end a training run; it is logged and visible
            log.warning("%s.score failed on %r: %s", type(self).__name__, answer[:200], e)
            info["score_error"] = f"{type(e).__name__}: {e}"
            return 0.0
        if not 0.0 <= value <= 1.0 or value != value:
            info["score_error"] = f"score {value!r} outside [0, 1]; clipped"
            value = 0.0 if value != value else min(max(value, 0.0), 1.0)
        return value

    def _format_feedback(self, action: Any, parsed: ParsedAction | None) -> str:
        hint = self.call_format.hint()
        if parsed is None:
            return f"Error: the action must be text, got {type(action).__name__}. {hint}"
        problems = list(parsed.errors)
        if not parsed.tool_calls and not problems:
            problems.append("your reply contained no tool call and no answer")
        if not problems:
            return ""
        return "Error: " + "; ".join(problems) + ". " + hint

    @staticmethod
    def _fit_observation(messages: list[Message]) -> list[Message]:
        """Cut message contents, in order, so the rendered observation stays within `MAX_OBS_CHARS`."""
        left = MAX_OBS_CHARS
        out: list[Message] = []
        for m in messages:
            wrapper = len(_TOOL_WRAP.format("")) if m["role"] == "tool" else 0
            room = max(left - wrapper - (1 if out else 0), 0)
            out.append({**m, "content": clip(m["content"], room)})
            left -= wrapper + (1 if len(out) > 1 else 0) + len(out[-1]["content"])
        return out

    @staticmethod
    def _render_observation(messages: Sequence[Message]) -> str:
        parts = [_TOOL_WRAP.format(m["content"]) if m["role"] == "tool" else m["content"] for m in messages]
        return clip("\n".join(parts), MAX_OBS_CHARS)

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        return "\n\n".join(
            f"[{m['role']}{':' + m['name'] if 'name' in m else ''}] {m['content']}" for m in self.messages
        )

    # ---- helpers for experts ----------------------------------------------------------------

    def tool_outputs(self, name: str | None = None) -> list[str]:
        """Contents of the tool messages so far (optionally of one tool), oldest first."""
        return [
            m["content"]
            for m in self.messages
            if m["role"] == "tool" and (name is None or m.get("name") == name)
        ]


def as_profile(latency: LatencyProfile | Mapping[str, Any] | None) -> LatencyProfile:
    """Accept a profile, or a config mapping with `step`, `tool` and `per_tool` latency specs."""
    if latency is None:
        return LatencyProfile()
    if isinstance(latency, LatencyProfile):
        return latency
    if not isinstance(latency, Mapping):
        raise TypeError(f"latency must be a LatencyProfile or a mapping, got {type(latency).__name__}")
    unknown = set(latency) - {"step", "tool", "per_tool"}
    if unknown:
        raise ValueError(f"unknown latency key(s) {sorted(unknown)}; expected step, tool, per_tool")
    per_tool = {name: from_spec(spec) for name, spec in dict(latency.get("per_tool") or {}).items()}
    return LatencyProfile(
        step=from_spec(latency.get("step")),
        tool=from_spec(latency.get("tool")),
        per_tool={k: v for k, v in per_tool.items() if v is not None},
    )


def unwrap(env: gymnasium.Env[Any, Any]) -> ToolEnv:
    """The `ToolEnv` under any Gymnasium wrappers (they do not forward `areset`/`astep`)."""
    inner = env.unwrapped
    if not isinstance(inner, ToolEnv):
        raise TypeError(f"expected a ToolEnv (possibly wrapped), got {type(inner).__name__}")
    return inner
