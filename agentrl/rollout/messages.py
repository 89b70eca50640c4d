"""Trajectories as OpenAI chat messages, and JSONL files of them (the schema: docs/trajectory-jsonl.md).

The model writes tool calls inline, in its tool-call format (`<tool_call>{...}</tool_call>` for Hermes,
bare JSON for Llama 3.x and plain JSON, `[TOOL_CALLS][...]` for Mistral); here each assistant turn
becomes an OpenAI assistant message whose parsed calls are `tool_calls` entries (with ids), and each
tool result a `tool` message pointing at its call by `tool_call_id`. One JSONL row per episode carries the messages,
the tool schemas, the reward, status, per-turn timings and the policy version, and is readable as a
demonstration by anything that reads OpenAI chat fine-tuning data.

Where the conversation comes from: `run_recorded_episode` (and `agentrl rollouts`) stores it in
`traj.info["messages"]` while the episode runs; for a trajectory without it, pass the `env` it ran in
and the tokenizer, and the episode is replayed: the model's turns are decoded from its token ids
and stepped through a fresh reset of the same task, which regenerates the tool results.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from agentrl.tools.base import json_spans, parse_action
from agentrl.tools.formats import MISTRAL_CALLS, ToolFormat, get_tool_format
from agentrl.types import Trajectory

# Hermes-format call blocks in assistant text (the bundled envs' default format)
TOOL_CALL_RE = re.compile(r"<tool_call>(.*?)</tool_call>", re.DOTALL)

__all__ = [
    "SCHEMA_VERSION",
    "RecordingEnv",
    "export_trajectories",
    "read_trajectory_jsonl",
    "run_recorded_episode",
    "to_openai_messages",
    "trajectory_messages",
    "trajectory_row",
]

SCHEMA_VERSION = 1
MAX_CALLS_PER_TURN = 8  # what the env's parser executes; further calls stay in the text


def _openai_call(name: str, arguments: Any, turn: int, index: int) -> dict[str, Any]:
    return {
        "id": f"call_{turn}_{index}",
        "type": "function",
        "function": {"name": name, "arguments": json.dumps(arguments, ensure_ascii=False)},
    }


def _lift_hermes(text: str, turn: int) -> tuple[str, list[dict[str, Any]]]:
    """Each `<tool_call>` block that parses becomes a call; the others stay in the text."""
    calls: list[dict[str, Any]] = []

    def lift(match: Any) -> str:
        if len(calls) >= MAX_CALLS_PER_TURN:
            return str(match.group(0))
        parsed = parse_action(match.group(0))
        if len(parsed.tool_calls) != 1 or parsed.errors:
            return str(match.group(0))
        call = parsed.tool_calls[0]
        calls.append(_openai_call(call.name, call.arguments, turn, len(calls)))
        return ""

    text = TOOL_CALL_RE.sub(lift, text)
    return (text.strip() if calls else text), calls


def _lift_other(text: str, fmt: ToolFormat, turn: int) -> tuple[str, list[dict[str, Any]]]:
    """A turn in a JSON or Mistral format: its calls are lifted only when the whole turn parses
    cleanly (as the env read it); the text left is what surrounds the calls."""
    parsed = fmt.parse(text, MAX_CALLS_PER_TURN)
    if not parsed.tool_calls or parsed.errors:
        return text, []
    calls = [_openai_call(c.name, c.arguments, turn, i) for i, c in enumerate(parsed.tool_calls)]
    if fmt.name == "mistral":
        rest = text.split(MISTRAL_CALLS)[0] if MISTRAL_CALLS in text else ""
    else:
        rest = text
        for start, end in reversed(json_spans(text)[0]):
            if '"name"' in text[start:end]:
                rest = rest[:start] + rest[end:]
    return rest.strip(), calls


def to_openai_messages(
    messages: Sequence[Mapping[str, Any]], tool_format: str | ToolFormat = "hermes"
) -> list[dict[str, Any]]:
    """Env-format messages (tool calls inline in assistant text, in `tool_format`; `tool` messages
    with a `name`) to OpenAI chat messages with `tool_calls` and `tool_call_id`. Calls that did not
    parse (bad JSON, over the per-turn limit) stay in the assistant's text, as the model wrote them."""
    fmt = get_tool_format(tool_format)
    out: list[dict[str, Any]] = []
    pending: list[dict[str, Any]] = []
    turn = 0
    for m in messages:
        role = m.get("role")
        content = m.get("content")
        if role == "assistant":
            turn += 1
            calls: list[dict[str, Any]] = []
            text = content
            if isinstance(content, str):
                lifted = (
                    _lift_hermes(content, turn) if fmt.name == "hermes" else _lift_other(content, fmt, turn)
                )
                text, calls = lifted
            msg: dict[str, Any] = {"role": "assistant", "content": text}
            if calls:
                msg["tool_calls"] = calls
            pending = list(calls)
            out.append(msg)
        elif role == "tool":
            name = m.get("name")
            match = next(
                (c for c in pending if c["function"]["name"] == name), pending[0] if pending else None
            )
            if match is not None:
                pending.remove(match)
            tool_msg: dict[str, Any] = {"role": "tool", "content": content}
            if match is not None:
                tool_msg["tool_call_id"] = match["id"]
            if name is not None:
                tool_msg["name"] = name
            out.append(tool_msg)
        else:
            out.append({"role": role, "content": content})
    return out


# ---- recording while an episode runs --------------------------------------------------------------


class RecordingEnv:
    """Wraps an env with `areset`/`astep` and keeps the whole conversation in env format."""

    def __init__(self, env: Any) -> None:
        self.env = env
        self.messages: list[dict[str, Any]] = []
        self.tools: list[dict[str, Any]] = []
        self.shaping_total: float | None = None

    async def areset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        obs, info = await self.env.areset(**kwargs)
        self.messages = [dict(m) for m in info.get("messages") or ()]
        self.tools = [dict(t) for t in info.get("tools") or ()]
        self.shaping_total = None
        return obs, info

    async def astep(self, action: str) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        result = await self.env.astep(action)
        info = result[4]
        self.messages.append({"role": "assistant", "content": action})
        self.messages += [dict(m) for m in info.get("messages") or ()]
        if "shaping_total" in info:
            self.shaping_total = float(info["shaping_total"])
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self.env, name)


async def run_recorded_episode(env: Any, policy: Any, tokenizer: Any = None, **kwargs: Any) -> Trajectory:
    """`run_episode` that also stores the conversation in `traj.info["messages"]` and the tool
    schemas in `traj.info["tools"]` (and the shaping sum, when the env reports one)."""
    from agentrl.rollout.episode import run_episode

    rec = RecordingEnv(env)
    traj = await run_episode(rec, policy, tokenizer, **kwargs)
    traj.info["messages"] = rec.messages
    traj.info["tools"] = rec.tools
    traj.info["tool_format"] = _env_format(env)
    if rec.shaping_total is not None:
        traj.info["shaping_total"] = rec.shaping_total
    return traj


# ---- from a trajectory ------------------------------------------------------------------------


def _model_turn_ids(traj: Trajectory) -> list[list[int]]:
    """The sampled ids of each turn, cut by the per-turn token counts."""
    pos, out = traj.prompt_len, []
    for turn in traj.turns:
        out.append(traj.token_ids[pos : pos + turn.n_model_tokens])
        pos += turn.n_model_tokens + turn.n_env_tokens
    return [ids for ids in out if ids]


def _replay(traj: Trajectory, tokenizer: Any, env: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    from agentrl.rollout.episode import parse_prompt_id

    if tokenizer is None:
        raise ValueError(f"trajectory {traj.prompt_id!r}: replaying it needs the tokenizer that sampled it")
    inner = getattr(env, "unwrapped", env)
    _, info = inner.reset(options=parse_prompt_id(traj.prompt_id).reset_options)
    messages = [dict(m) for m in info["messages"]]
    for ids in _model_turn_ids(traj):
        text = tokenizer.decode(ids, skip_special_tokens=True)
        messages.append({"role": "assistant", "content": text})
        _, _, terminated, truncated, step_info = inner.step(text)
        messages += [dict(m) for m in step_info.get("messages") or ()]
        if terminated or truncated:
            break
    return messages, [dict(t) for t in info.get("tools") or ()]


def _env_format(env: Any) -> str:
    """The tool-call format an env parses (Hermes for an env that does not say)."""
    inner = getattr(env, "unwrapped", env)
    fmt = getattr(inner, "call_format", None)
    return fmt.name if isinstance(fmt, ToolFormat) else "hermes"


def trajectory_messages(
    traj: Trajectory, tokenizer: Any = None, env: Any = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(OpenAI messages, tool schemas) of one episode: recorded ones if present, else a replay in `env`."""
    recorded = traj.info.get("messages")
    if recorded:
        fmt = traj.info.get("tool_format") or (_env_format(env) if env is not None else "hermes")
        return to_openai_messages(recorded, fmt), [dict(t) for t in traj.info.get("tools") or ()]
    if env is None:
        raise ValueError(
            f"trajectory {traj.prompt_id!r} (episode {traj.episode_id}) has no recorded messages; "
            "run it with run_recorded_episode, or pass env= (and the tokenizer) to replay it"
        )
    messages, tools = _replay(traj, tokenizer, env)
    return to_openai_messages(messages, _env_format(env)), tools


def trajectory_row(traj: Trajectory, tokenizer: Any = None, env: Any = None) -> dict[str, Any]:
    """One JSONL row: messages, tools, outcome, timings and provenance (docs/trajectory-jsonl.md)."""
    messages, tools = trajectory_messages(traj, tokenizer, env)
    info = traj.info
    return {
        "schema": SCHEMA_VERSION,
        "messages": messages,
        "tools": tools,
        "prompt_id": traj.prompt_id,
        "task_id": info.get("task_id"),
        "split": info.get("split"),
        "reward": float(traj.reward),
        "status": str(traj.status),
        "error": traj.error,
        "answer": info.get("answer"),
        "correct": info.get("correct"),
        "shaping_total": info.get("shaping_total"),
        "policy_version": traj.policy_version,
        "policy_versions": list(info.get("policy_versions") or []),
        "turns": [asdict(t) for t in traj.turns],
        "num_tokens": traj.num_tokens,
        "num_model_tokens": traj.num_model_tokens,
        "duration_s": traj.duration,
        "episode_id": traj.episode_id,
        "group_id": traj.group_id,
    }


def export_trajectories(
    trajs: Iterable[Trajectory], tokenizer: Any, path: str | Path, *, env: Any = None, append: bool = False
) -> int:
    """Write one JSONL row per trajectory to `path` (see `trajectory_row`); returns the row count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("a" if append else "w", encoding="utf-8") as f:
        for traj in trajs:
            f.write(json.dumps(trajectory_row(traj, tokenizer, env), ensure_ascii=False, default=str) + "\n")
            n += 1
    return n


_ROLES = {"system", "user", "assistant", "tool"}


def read_trajectory_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Read and check a trajectory (or demonstration) JSONL file; a one-line ValueError names the
    file, line and field of the first problem."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: file does not exist")
    rows: list[dict[str, Any]] = []
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}: line {line_no}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where} is not valid JSON ({e.msg})") from None
            messages = row.get("messages") if isinstance(row, dict) else None
            if not isinstance(messages, list) or not messages:
                raise ValueError(f"{where}: 'messages' must be a non-empty list")
            call_ids: set[str] = set()
            for i, m in enumerate(messages):
                if not isinstance(m, dict) or m.get("role") not in _ROLES:
                    raise ValueError(f"{where}: messages[{i}] needs a role in {sorted(_ROLES)}")
                for call in m.get("tool_calls") or ():
                    fn = call.get("function") if isinstance(call, dict) else None
                    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                        raise ValueError(f"{where}: messages[{i}].tool_calls entries need function.name")
                    call_ids.add(str(call.get("id")))
                if m["role"] == "tool" and "tool_call_id" in m and str(m["tool_call_id"]) not in call_ids:
                    raise ValueError(
                        f"{where}: messages[{i}].tool_call_id {m['tool_call_id']!r} matches no call"
                    )
            rows.append(row)
    return rows
