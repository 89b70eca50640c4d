"""Fixtures for policy and episode tests: a quickly trained tokenizer, a small random Qwen2 model,
and `StandInEnv`, a minimal implementation of the environment API for edge cases."""

from __future__ import annotations

import asyncio
import functools
import json
from typing import Any

import pytest
import torch

from agentrl.models import TinyRecipe, tiny_config, train_tokenizer
from agentrl.tools.base import parse_action

CALC_SCHEMA = {
    "type": "function",
    "function": {
        "name": "calculator",
        "description": "Evaluate an arithmetic expression.",
        "parameters": {
            "type": "object",
            "properties": {"expression": {"type": "string"}},
            "required": ["expression"],
        },
    },
}
SYSTEM = "You solve arithmetic with the calculator tool and answer in <answer></answer>."


def _corpus() -> list[str]:
    texts = [SYSTEM, json.dumps(CALC_SCHEMA)]
    for a in range(2, 40):
        b = (a * 7) % 23 + 1
        texts += [
            f"What is {a} + {b}?",
            f'<tool_call>{{"name": "calculator", "arguments": {{"expression": "{a} + {b}"}}}}</tool_call>',
            str(a + b),
            f"<answer>{a + b}</answer>",
        ]
    return texts * 3


@functools.cache
def _tokenizer() -> Any:
    return train_tokenizer(_corpus(), vocab_size=600)


@pytest.fixture(scope="session")
def tokenizer() -> Any:
    return _tokenizer()


@functools.cache
def _model() -> Any:
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    recipe = TinyRecipe(
        hidden_size=64, intermediate_size=128, num_layers=2, num_heads=2, num_kv_heads=1, head_dim=32
    )
    model = AutoModelForCausalLM.from_config(tiny_config(recipe, _tokenizer()), dtype=torch.float32)
    with torch.no_grad():  # sharper than the default init, so samples are not uniform noise
        model.get_input_embeddings().weight.mul_(20.0)
    return model.eval()


@pytest.fixture(scope="session")
def model() -> Any:
    return _model()


class StandInEnv:
    """The environment API in miniature: add two numbers with a calculator tool, answer in tags."""

    def __init__(self, max_turns: int = 4, fail_on_step: int | None = None, step_delay: float = 0.0) -> None:
        self.max_turns = max_turns
        self.fail_on_step = fail_on_step
        self.step_delay = step_delay
        self.messages: list[dict[str, Any]] = []
        self.resets = 0

    def task_ids(self, split: str = "train") -> list[str]:
        return [f"{i:05d}" for i in range(10)]

    async def areset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        opts = options or {}
        self.task_id, self.split = opts.get("task_id", "00000"), opts.get("split", "train")
        self.a, self.b = int(self.task_id) + 2, 5
        self.turn, self.resets = 0, self.resets + 1
        self.messages = [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": f"What is {self.a} + {self.b}?"},
        ]
        info = {
            "prompt_id": f"standin/{self.split}/{self.task_id}",
            "task_id": self.task_id,
            "split": self.split,
            "tools": [CALC_SCHEMA],
            "max_turns": self.max_turns,
            "messages": [dict(m) for m in self.messages],
        }
        return self.messages[-1]["content"], info

    def expert_action(self) -> str:
        results = [m["content"] for m in self.messages if m["role"] == "tool"]
        if results:
            return f"<answer>{results[-1]}</answer>"
        expr = json.dumps({"name": "calculator", "arguments": {"expression": f"{self.a} + {self.b}"}})
        return f"<tool_call>{expr}</tool_call>"

    async def astep(self, action: str):
        self.turn += 1
        if self.fail_on_step == self.turn:
            raise RuntimeError("stand-in env broke")
        if self.step_delay:
            await asyncio.sleep(self.step_delay)
        self.messages.append({"role": "assistant", "content": action})
        parsed = parse_action(action)
        info: dict[str, Any] = {"tool_results": []}
        if parsed.answer is not None:
            correct = parsed.answer.strip() == str(self.a + self.b)
            info.update(messages=[], answer=parsed.answer, correct=correct)
            return "", float(correct), True, False, info
        new: list[dict[str, Any]] = []
        for call in parsed.tool_calls:
            try:
                value = str(sum(int(x) for x in call.arguments["expression"].split("+")))
            except Exception as e:
                value = f"Error: {e}"
            new.append({"role": "tool", "name": call.name, "content": value})
            info["tool_results"].append({"name": call.name, "ok": True})
        if not new:
            new.append({"role": "user", "content": "Error: no tool call and no answer."})
        self.messages += new
        info["messages"] = new
        truncated = self.turn >= self.max_turns
        return "", 0.0, False, truncated, info


class ScriptedPolicy:
    """Answers with fixed texts (or a function of the env), tokenised, ending with <|im_end|>."""

    def __init__(
        self,
        tokenizer: Any,
        texts: list[str] | None = None,
        env: Any = None,
        emit_eos: bool = True,
        delay: float = 0.0,
        version: int = 0,
    ) -> None:
        self.tokenizer, self.texts, self.env = tokenizer, list(texts or []), env
        self.emit_eos, self.delay, self.version = emit_eos, delay, version
        self.prompts: list[list[int]] = []

    async def generate(self, prompt_ids, params):
        from agentrl.types import Generation

        self.prompts.append(list(prompt_ids))
        if self.delay:
            await asyncio.sleep(self.delay)
        text = self.texts.pop(0) if self.texts else self.env.expert_action()
        ids = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        if self.emit_eos:
            ids.append(self.tokenizer.eos_token_id)
        finish = "stop"
        if len(ids) > params.max_new_tokens:
            ids, finish = ids[: params.max_new_tokens], "length"
        return Generation(ids, [-0.5] * len(ids), finish, "", self.version)

    async def sync_weights(self, version, weights=None):
        self.version = version

    async def aclose(self):
        pass
