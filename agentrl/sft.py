"""Supervised warm-start: teach a model an environment's tool use from demonstrations, before RL.

`agentrl sft --env ID` collects the env's scripted expert (`ToolEnv.expert_action`) on its warmup
split (its train split if it has none), or reads a JSONL file of chat transcripts (OpenAI messages
with `tool_calls` and the `tool` role), and fine-tunes a model on the assistant turns only. Every
demonstration is tokenised exactly as the episode loop tokenises an episode at RL time
(`encode_demonstration`: the same `ChatFormat` prompt, turns, end-of-turn and observation tokens),
so the tokens SFT trains on are the tokens RL later samples and scores.

The result is a model directory (weights, tokenizer, `sft.json`, `loss.png`) that `agentrl train
--model DIR` and `agentrl eval --model DIR` take. The embedded `tiny` recipe (`agentrl.tiny`)
builds through the same collection, loss and fitting loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import json
import logging
import math
import os
import random
import re
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from agentrl.chat import ChatFormat

log = logging.getLogger(__name__)

__all__ = [
    "DEMO_ENVS",
    "Demonstration",
    "SFTConfig",
    "collect_demonstrations",
    "encode_demonstration",
    "evaluate_success",
    "fit",
    "load_demonstrations",
    "make_env",
    "masked_loss",
    "warm_start",
]

# Short names of the bundled envs (the `tiny` recipes' demonstrations use these; any gymnasium id works too).
DEMO_ENVS = {
    "calculator": "agentrl.envs.calculator:CalculatorEnv",
    "kb_search": "agentrl.envs.kb_search:KBSearchEnv",
    "python_math": "agentrl.envs.python_math:PythonMathEnv",
}


# ---- demonstrations -----------------------------------------------------------------------------


@dataclass
class Demonstration:
    """One conversation in the env's own message form (assistant turns are the model's raw text)."""

    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]]
    reward: float


def make_env(name: str, split: str = "train") -> Any:
    """A fresh env of `split`: `name` is a short bundled name (`DEMO_ENVS`) or a gymnasium id.

    Gymnasium's `module:Id` form imports `module` first, so an env registered there is found.
    Unknown ids, missing modules and unknown splits give a one-line `ValueError`.
    """
    if name in DEMO_ENVS:
        module, _, cls = DEMO_ENVS[name].partition(":")
        return getattr(importlib.import_module(module), cls)(split=split)
    import gymnasium

    import agentrl.envs  # noqa: F401  (registers the bundled envs)

    try:
        return gymnasium.make(name, split=split).unwrapped
    except (gymnasium.error.Error, ImportError) as e:
        raise ValueError(f"env {name!r}: {type(e).__name__}: {e}") from None


def _prefixes(demo: Demonstration) -> list[Demonstration]:
    """The demonstration cut after each of its assistant turns (the last cut is the whole demo)."""
    ends = [i for i, m in enumerate(demo.messages) if m["role"] == "assistant"]
    return [Demonstration(demo.messages[: e + 1], demo.tools, demo.reward) for e in ends]


def _corrupt_digit(text: str, rng: random.Random) -> str:
    """Change one digit inside the action's arguments or answer (a plausible slip of a small model)."""
    spans = [m.start() for m in re.finditer(r"\d", text)]
    if not spans:
        return text
    at = rng.choice(spans)
    digit = str((int(text[at]) + rng.randint(1, 9)) % 10)
    return text[:at] + digit + text[at + 1 :]


_OPERATOR = re.compile(r"(?<=[\w)]) ([-+*/]) (?=[\w(])")


def _wrong_operator(text: str, rng: random.Random) -> str:
    """Swap one binary operator of the action for another (a reasoning slip, not a copying one).

    Digit slips also teach the model that copying is unreliable, which is the skill a tiny model
    finds hardest to learn; an operator slip leaves copying intact and is a mistake whose fix RL
    can find from the reward alone. Actions without an operator (answers) are left as they are.
    """
    spans = [m.start(1) for m in _OPERATOR.finditer(text)]
    if not spans:
        return text
    at = rng.choice(spans)
    return text[:at] + rng.choice([op for op in "+-*/" if op != text[at]]) + text[at + 1 :]


SLIPS = {"digit": _corrupt_digit, "operator": _wrong_operator}


async def _demo_episode(
    env: Any, split: str, task_id: str, noise: float, rng: random.Random, kind: str = "digit"
) -> Demonstration:
    _, info = await env.areset(options={"task_id": task_id, "split": split})
    reward = 0.0
    for _ in range(info["max_turns"]):
        action = env.expert_action()
        if noise > 0 and rng.random() < noise:
            action = SLIPS[kind](action, rng)
        _, reward, terminated, truncated, _ = await env.astep(action)
        if terminated or truncated:
            break
    return Demonstration([dict(m) for m in env.messages], info["tools"], float(reward))


async def _collect(
    env_name: str, split: str, n: int, noise: float, seed: int, concurrency: int, kind: str
) -> list[Demonstration]:
    envs = [make_env(env_name, split) for _ in range(max(1, min(concurrency, n)))]
    task_ids = envs[0].task_ids(split)[:n]
    rng = random.Random(f"{seed}/{env_name}")
    rngs = [random.Random(rng.random()) for _ in task_ids]
    out: list[Demonstration | None] = [None] * len(task_ids)
    free: asyncio.Queue[Any] = asyncio.Queue()
    for env in envs:
        free.put_nowait(env)

    async def one(i: int) -> None:
        env = await free.get()
        try:
            async with asyncio.timeout(60):
                out[i] = await _demo_episode(env, split, task_ids[i], noise, rngs[i], kind)
        except Exception as e:  # e.g. no sandbox on this machine: skip, the other envs still count
            log.warning("demonstration %s/%s failed: %s", env_name, task_ids[i], e)
        finally:
            free.put_nowait(env)

    await asyncio.gather(*(one(i) for i in range(len(task_ids))))
    return [d for d in out if d is not None]


def collect_demonstrations(
    spec: Sequence[tuple[str, str, int]],
    noise: float = 0.0,
    seed: int = 0,
    concurrency: int = 16,
    kind: str = "digit",
) -> dict[str, list[Demonstration]]:
    """Run the scripted experts (slipping in a `noise` fraction of steps) on the first tasks of each (env, split)."""
    if kind not in SLIPS:
        raise ValueError(f"noise kind {kind!r} is not one of {sorted(SLIPS)}")

    async def run() -> dict[str, list[Demonstration]]:
        result: dict[str, list[Demonstration]] = {}
        for name, split, n in spec:  # two splits of one env pool their demonstrations
            try:
                demos = await _collect(name, split, n, noise, seed, concurrency, kind)
                result.setdefault(name, []).extend(demos)
            except ImportError as e:
                log.warning("skipping demonstrations of %s: %s", name, e)
        return result

    return asyncio.run(run())


def encode_demonstration(chat: ChatFormat, demo: Demonstration) -> tuple[list[int], list[int]]:
    """Token ids and loss mask of a demonstration, built exactly as an episode builds them."""
    msgs = demo.messages
    i = next((k for k, m in enumerate(msgs) if m["role"] == "assistant"), len(msgs))
    ids = chat.prompt_ids(msgs[:i], demo.tools or None)
    mask = [0] * len(ids)
    while i < len(msgs):
        assert msgs[i]["role"] == "assistant", f"expected an assistant turn at message {i}"
        text = msgs[i]["content"]
        turn = [*chat.encode(text), chat.tokenizer.eos_token_id]
        ids += turn
        mask += [1] * len(turn)
        tail = chat.end_of_turn_ids(turn)
        j = i + 1
        while j < len(msgs) and msgs[j]["role"] != "assistant":
            j += 1
        obs = chat.observation_ids(msgs[:i], text, msgs[i + 1 : j], demo.tools) if j > i + 1 else []
        ids += tail + obs
        mask += [0] * (len(tail) + len(obs))
        i = j
    return ids, mask


class _Encoded(Sequence[tuple[list[int], list[int]]]):
    """Demonstrations encoded on first draw: encoding renders the chat template as an episode does,
    milliseconds a demo, and a short SFT draws only part of its pool."""

    def __init__(self, chat: ChatFormat, demos: Sequence[Demonstration]) -> None:
        self._chat, self._demos = chat, demos
        self.done: dict[int, tuple[list[int], list[int]]] = {}

    def __len__(self) -> int:
        return len(self._demos)

    def __getitem__(self, i: int) -> tuple[list[int], list[int]]:  # type: ignore[override]
        if i not in self.done:
            self.done[i] = encode_demonstration(self._chat, self._demos[i])
        return self.done[i]


def _length_split(lengths: Sequence[int]) -> int:
    """Where to cut rows sorted by length in two so that padding (rows × longest row) is least."""
    n = len(lengths)
    best, cut = n * lengths[-1], n
    for k in range(1, n):
        area = k * lengths[k - 1] + (n - k) * lengths[-1]
        if area < best:
            best, cut = area, k
    return cut


def masked_loss(model: Any, pad_id: int, batch: Sequence[tuple[list[int], list[int]]]) -> torch.Tensor:
    """Mean next-token loss on the masked tokens of right-padded rows.

    Rows of one env share their system prompt and tool schemas (two thirds of a calculator demo), so
    `selected_logits` runs that head once: the same loss and gradients as a full forward at about a
    third of the cost. Rows are sorted by length and run in two padded chunks where that saves
    padding (demos of one to four calculations differ in length by about half).
    """
    from agentrl.prefix import selected_logits

    device = next(model.parameters()).device
    rows = sorted(batch, key=lambda r: len(r[0]))
    cut = _length_split([len(s) for s, _ in rows]) if len(rows) >= 8 else len(rows)
    total = torch.zeros((), device=device)
    count = 0
    for chunk in (rows[:cut], rows[cut:]):
        if not chunk:
            continue
        width = len(chunk[-1][0])
        # one tensor per field from padded lists (not a copy per row)
        ids = torch.tensor([[*s, *[pad_id] * (width - len(s))] for s, _ in chunk], device=device)
        mask = torch.tensor([[*m, *[0] * (width - len(m))] for _, m in chunk], device=device)
        attention = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s, _ in chunk], device=device)
        keep = mask[:, 1:] == 1
        logits = selected_logits(model, ids, attention, keep)
        total = total + torch.nn.functional.cross_entropy(logits.float(), ids[:, 1:][keep], reduction="sum")
        count += int(keep.sum())
    if count == 0:
        raise ValueError("a batch has no supervised (assistant) tokens")
    return total / count


def fit(
    model: Any,
    pad_id: int,
    sample: Any,
    steps: int,
    lr: float,
    warmup: int,
    tag: str,
    stop_below: float = 0.0,
    progress: bool = False,
) -> list[float]:
    """AdamW on the next-token loss of masked tokens of `sample(step)` batches; returns the losses.

    With `stop_below` > 0 the learning rate stays constant after warmup and training stops once the
    mean loss of the last 20 steps falls below it (or after `steps`); otherwise a cosine schedule
    (down to a tenth of `lr`) runs all `steps`. `progress` shows a tqdm bar on stderr.
    """
    from tqdm.auto import tqdm

    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if stop_below > 0:
            return 1.0
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    losses: list[float] = []
    model.train()
    bar = tqdm(total=steps, desc=tag, disable=not progress, dynamic_ncols=True)
    try:
        for step in range(steps):
            loss = masked_loss(model, pad_id, sample(step))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            losses.append(loss.item())
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
            if step % 50 == 0:
                log.info("%s step %d/%d loss %.3f", tag, step, steps, losses[-1])
            if stop_below > 0 and len(losses) >= 20 and sum(losses[-20:]) / 20 < stop_below:
                log.info("%s reached loss %.3f at step %d", tag, sum(losses[-20:]) / 20, step + 1)
                break
    finally:
        bar.close()
        model.eval()
    return losses


def evaluate_success(
    model: Any,
    tokenizer: Any,
    env_name: str,
    n: int,
    seed: int = 0,
    temperature: float = 1.0,
    max_new_tokens: int = 96,
    exclude: Sequence[str] = (),
) -> float:
    """Held-out success rate on the first `n` test tasks not in `exclude` (batched HF generation;
    0 is greedy).

    `env_name` is a short bundled name or a gymnasium id (see `make_env`).
    """
    from agentrl.policy.hf import HFPolicy
    from agentrl.rollout.episode import run_episode
    from agentrl.types import SamplingParams

    async def run() -> float:
        policy = HFPolicy(model, tokenizer, seed=seed, max_batch_size=128)
        try:
            envs = [make_env(env_name, "test") for _ in range(n)]
            skip = set(exclude)
            ids = [t for t in envs[0].task_ids("test") if t not in skip][:n]
            envs = envs[: len(ids)]
            params = SamplingParams(temperature=temperature, max_new_tokens=max_new_tokens)
            trajs = await asyncio.gather(
                *(
                    run_episode(
                        e, policy, tokenizer, task_id=t, split="test", params=replace_seed(params, seed + k)
                    )
                    for k, (e, t) in enumerate(zip(envs, ids, strict=True))
                )
            )
        finally:
            await policy.aclose()
        return sum(t.reward for t in trajs) / len(trajs)

    return asyncio.run(run())


def _tail_mean(losses: Sequence[float], n: int = 10) -> float:
    tail = losses[-n:]
    return sum(tail) / max(1, len(tail))


def replace_seed(params: Any, seed: int) -> Any:
    return dataclasses.replace(params, seed=seed)


# ---- demonstrations from a JSONL file of chat transcripts ---------------------------------------

_ROLES = ("system", "user", "assistant", "tool")


def _text(content: Any, where: str) -> str:
    """A message's content as text: a string, null, or OpenAI's list of `{"type": "text"}` parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in content):
        return "".join(str(p.get("text", "")) for p in content)
    raise ValueError(f"{where}: content must be a string, null or a list of text parts")


def _assistant_text(message: dict[str, Any], where: str) -> tuple[str, dict[str, str]]:
    """The raw text a model writes for this assistant message, and its tool-call ids -> names.

    OpenAI `tool_calls` become the `<tool_call>` markup the env parses, appended to the content,
    unless the content already holds the calls as markup (a transcript exported from an episode
    may carry both).
    """
    from agentrl.tools.base import format_tool_call, parse_action

    text = _text(message.get("content"), where)
    calls = message.get("tool_calls") or []
    if not isinstance(calls, list):
        raise ValueError(f"{where}: tool_calls must be a list")
    names: dict[str, str] = {}
    rendered = []
    for k, call in enumerate(calls):
        at = f"{where}.tool_calls[{k}]"
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
            raise ValueError(f"{at}: expected {{'function': {{'name': ..., 'arguments': ...}}}}")
        args = fn.get("arguments", {})
        if isinstance(args, str):
            try:
                args = json.loads(args) if args.strip() else {}
            except json.JSONDecodeError as e:
                raise ValueError(f"{at}.function.arguments: not valid JSON ({e.msg})") from None
        if not isinstance(args, dict):
            raise ValueError(f"{at}.function.arguments: must be a JSON object")
        if isinstance(call.get("id"), str):
            names[call["id"]] = fn["name"]
        rendered.append(format_tool_call(fn["name"], args))
    if rendered and not parse_action(text).tool_calls:
        text = "".join([text, *rendered]) if not text else text.rstrip() + "\n" + "".join(rendered)
    if not text:
        raise ValueError(f"{where}: an assistant message needs content or tool_calls")
    return text, names


def _parse_transcript(row: Any, where: str, tools: list[dict[str, Any]]) -> Demonstration:
    if not isinstance(row, dict) or not isinstance(row.get("messages"), list) or not row["messages"]:
        raise ValueError(f"{where}: expected an object with a non-empty 'messages' list")
    line_tools = row.get("tools", tools)
    if not isinstance(line_tools, list) or not all(isinstance(t, dict) for t in line_tools):
        raise ValueError(f"{where}: tools: must be a list of tool schemas")
    reward = row.get("reward", 1.0)
    if not isinstance(reward, int | float) or isinstance(reward, bool):
        raise ValueError(f"{where}: reward: must be a number, got {reward!r}")
    messages: list[dict[str, Any]] = []
    names: dict[str, str] = {}
    for i, m in enumerate(row["messages"]):
        at = f"{where}: messages[{i}]"
        if not isinstance(m, dict) or m.get("role") not in _ROLES:
            raise ValueError(f"{at}: expected an object whose role is one of {list(_ROLES)}")
        if m["role"] == "assistant":
            if not any(x["role"] in ("system", "user") for x in messages):
                raise ValueError(f"{at}: an assistant turn needs a system or user message before it")
            text, ids = _assistant_text(m, at)
            names.update(ids)
            messages.append({"role": "assistant", "content": text})
        elif m["role"] == "tool":
            name = m.get("name") or names.get(str(m.get("tool_call_id")), "")
            messages.append({"role": "tool", "name": name, "content": _text(m.get("content"), at)})
        else:
            messages.append({"role": m["role"], "content": _text(m.get("content"), at)})
    if not any(m["role"] == "assistant" for m in messages):
        raise ValueError(f"{where}: the transcript has no assistant message to learn from")
    return Demonstration(messages, [dict(t) for t in line_tools], float(reward))


def load_demonstrations(path: str | Path, tools: Sequence[dict[str, Any]] = ()) -> list[Demonstration]:
    """Read a JSONL file of chat transcripts, one `{"messages": [...]}` object a line.

    Messages are OpenAI chat messages: `system`, `user`, `assistant` (content and/or `tool_calls`
    with `function.name` and JSON `function.arguments`) and `tool` (`content`, with `name` or the
    `tool_call_id` of its call). Optional keys: `tools` (the line's tool schemas; default `tools`,
    the env's) and `reward` (default 1). Other keys are ignored; blank lines are skipped. Any
    malformed line raises a one-line `ValueError` naming the file and line number.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: demonstrations file not found")
    demos: list[Demonstration] = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{n}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
            demos.append(_parse_transcript(row, where, list(tools)))
    if not demos:
        raise ValueError(f"{path}: no demonstrations (the file is empty)")
    return demos


# ---- the stage ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SFTConfig:
    """Settings of `warm_start` (the flags of `agentrl sft`)."""

    env: str
    demos: str | None = None  # a JSONL file of transcripts; None: the env's scripted expert
    expert: int = 1000  # expert episodes (the first tasks of `split`)
    split: str | None = None  # default: the env's "warmup" split if it has one, else "train"
    steps: int = 150
    batch_size: int = 16
    lr: float | None = None  # default: 1e-3 below 10M parameters, else 5e-5
    warmup: int = 10
    seed: int = 0
    eval_tasks: int = 50  # held-out test tasks evaluated before and after (0: none)
    max_new_tokens: int = 96
    keep_failed: bool = False  # train on demonstrations whose reward is 0 too

    def __post_init__(self) -> None:
        for name in ("expert", "steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr is not None and not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.warmup < 0 or self.eval_tasks < 0:
            raise ValueError("warmup and eval_tasks must be >= 0")


def default_lr(model: Any) -> float:
    """A small model trained from a few hours of pretraining (like `tiny`) takes a large lr; a real
    pretrained model a fine-tuning one."""
    params = sum(p.numel() for p in model.parameters())
    return 1e-3 if params < 10_000_000 else 5e-5


def _has_expert(env: Any) -> bool:
    from agentrl.envs.base import ToolEnv

    method = getattr(type(env), "expert_action", None)
    return method is not None and method is not ToolEnv.expert_action


def gather_demonstrations(cfg: SFTConfig) -> tuple[list[Demonstration], dict[str, Any]]:
    """The demonstrations `cfg` asks for and a description of them (source, counts, skipped)."""
    probe = make_env(cfg.env, "train")
    splits = tuple(getattr(probe, "splits", ("train", "test")))
    test_tasks: list[str] = []
    if cfg.demos:
        demos = load_demonstrations(cfg.demos, probe.toolbox.schemas())
        source = str(cfg.demos)
        test_tasks = _test_tasks_in(cfg.demos)
    else:
        if not _has_expert(probe):
            raise ValueError(
                f"env {cfg.env!r} ({type(probe).__name__}) has no expert_action(); pass --demos FILE.jsonl"
            )
        split = cfg.split or ("warmup" if "warmup" in splits else "train")
        if split not in splits:
            raise ValueError(f"split {split!r} is not one of env {cfg.env!r}'s splits {list(splits)}")
        demos = collect_demonstrations(((cfg.env, split, cfg.expert),), seed=cfg.seed)[cfg.env]
        source = f"expert:{split}"
    probe.close()
    kept = demos if cfg.keep_failed else [d for d in demos if d.reward > 0]
    if not kept:
        raise ValueError(
            f"none of the {len(demos)} demonstrations from {source} has a reward above 0 "
            "(pass --keep-failed to train on them anyway)"
        )
    info = {
        "source": source,
        "count": len(kept),
        "skipped_failed": len(demos) - len(kept),
        "mean_reward": sum(d.reward for d in demos) / len(demos),
    }
    if test_tasks:
        info["test_tasks_in_demos"] = test_tasks
    return kept, info


def _test_tasks_in(path: str | Path) -> list[str]:
    """Task ids of the test split that a demonstrations file holds (rows written by `agentrl
    rollouts` say their split and task); the held-out evaluation skips them."""
    found: list[str] = []
    with Path(path).open(encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            row = json.loads(line)
            split, task = row.get("split"), row.get("task_id")
            if (split is None or task is None) and isinstance(row.get("prompt_id"), str):
                parts = row["prompt_id"].split("/")
                split, task = (parts[-2], parts[-1]) if len(parts) >= 3 else (None, None)
            if split == "test" and task is not None and str(task) not in found:
                found.append(str(task))
    return found


def _plot_losses(losses: Sequence[float], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(range(1, len(losses) + 1), losses, lw=0.8, alpha=0.5, label="step")
    k = max(1, len(losses) // 20)
    smooth = [
        sum(losses[max(0, i - k + 1) : i + 1]) / len(losses[max(0, i - k + 1) : i + 1])
        for i in range(len(losses))
    ]
    ax.plot(range(1, len(losses) + 1), smooth, lw=1.6, label=f"mean of {k}")
    ax.set(xlabel="step", ylabel="loss on assistant tokens", title=title, yscale="log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _held_out(
    model: Any, tokenizer: Any, cfg: SFTConfig, probe_splits: Sequence[str], exclude: Sequence[str] = ()
) -> dict[str, float] | None:
    if not cfg.eval_tasks or "test" not in probe_splits:
        return None
    kw = dict(seed=cfg.seed, max_new_tokens=cfg.max_new_tokens, exclude=exclude)
    return {
        "sampled": evaluate_success(model, tokenizer, cfg.env, cfg.eval_tasks, temperature=1.0, **kw),
        "greedy": evaluate_success(model, tokenizer, cfg.env, cfg.eval_tasks, temperature=0.0, **kw),
    }


def warm_start(
    model: Any,
    tokenizer: Any,
    cfg: SFTConfig,
    out_dir: str | Path | None = None,
    *,
    model_name: str = "",
    progress: bool = True,
    demos: tuple[list[Demonstration], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Fine-tune `model` in place on `cfg`'s demonstrations; write it to `out_dir` if given.

    Everything that can fail on bad input (the env, the demonstrations, the tokenizer's chat
    template, encoding) is checked before training, so nothing is written on an error. The
    directory gets the weights, the tokenizer, `sft.json` (the build record) and `loss.png`,
    written to a temporary directory first and renamed into place. Returns the record.
    """
    t0 = time.monotonic()
    torch.manual_seed(cfg.seed)
    rows, demo_info = demos if demos is not None else gather_demonstrations(cfg)
    chat = ChatFormat(tokenizer)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    encoded: list[tuple[list[int], list[int]]] = []
    for k, d in enumerate(rows):
        try:
            encoded.append(encode_demonstration(chat, d))
        except (AssertionError, ValueError) as e:
            raise ValueError(
                f"demonstration {k + 1} of {demo_info['source']}: cannot be encoded: {e}"
            ) from None
    splits = tuple(getattr(make_env(cfg.env, "train"), "splits", ("train", "test")))
    t_demos = time.monotonic() - t0
    lr = cfg.lr or default_lr(model)
    t1 = time.monotonic()
    seen = demo_info.get("test_tasks_in_demos", [])  # held out means not trained on
    before = _held_out(model, tokenizer, cfg, splits, seen)
    t_eval = time.monotonic() - t1
    rng = random.Random(f"{cfg.seed}/sft")
    tokens = [0]

    def batch(step: int) -> list[tuple[list[int], list[int]]]:
        drawn = rng.choices(encoded, k=cfg.batch_size)
        tokens[0] += sum(len(s) for s, _ in drawn)
        return drawn

    t1 = time.monotonic()
    losses = fit(model, tokenizer.pad_token_id, batch, cfg.steps, lr, cfg.warmup, "sft", progress=progress)
    t_fit = time.monotonic() - t1
    t1 = time.monotonic()
    after = _held_out(model, tokenizer, cfg, splits, seen)
    t_eval += time.monotonic() - t1
    record: dict[str, Any] = {
        "model": model_name,
        "env": cfg.env,
        "config": dataclasses.asdict(cfg) | {"lr": lr},
        "params": sum(p.numel() for p in model.parameters()),
        "device": str(next(model.parameters()).device),
        "demos": demo_info
        | {
            "tokens_per_demo": sum(len(s) for s, _ in encoded) / len(encoded),
            "supervised_tokens_per_demo": sum(sum(m) for _, m in encoded) / len(encoded),
        },
        "steps": len(losses),
        "loss": {"first": _tail_mean(losses[:10]), "final": _tail_mean(losses), "curve": losses},
        "held_out": {"tasks": cfg.eval_tasks, "before": before, "after": after},
        "tokens_per_s": tokens[0] / max(t_fit, 1e-9),
        "seconds": {"demos": t_demos, "sft": t_fit, "eval": t_eval, "total": time.monotonic() - t0},
    }
    if out_dir is not None:
        _write(model, tokenizer, record, Path(out_dir))
    return record


def _write(model: Any, tokenizer: Any, record: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "sft.json").write_text(json.dumps(record, indent=2))
        _plot_losses(record["loss"]["curve"], tmp / "loss.png", f"agentrl sft: {record['env']}")
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
