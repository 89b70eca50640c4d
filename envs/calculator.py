"""`agentrl/Calculator-v0`: arithmetic word problems solved one exact calculation per turn.

Each problem is a short story whose quantity changes 1 to 4 times (buy, sell, multiply, share out),
so later computations need earlier results, and the numbers run from one digit to four. The number
of operations and the size of the numbers spread the per-prompt success rates, which is what SPO's
value tracker and prioritised sampler work with.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import ClassVar

from agentrl.envs.base import Task, ToolEnv
from agentrl.tools.base import format_answer, format_tool_call
from agentrl.tools.calculator import CalculatorTool

SPLIT_SIZES = {"train": 1000, "test": 200, "warmup": 20000}
_NAMES = ("Mara", "Tobin", "Ilse", "Rafa", "Quinn", "Noor", "Edda", "Kofi", "Lena", "Arun", "Sade", "Pim")
_ITEMS = ("marbles", "apples", "stamps", "bolts", "candles", "tickets", "seeds", "beads", "coins", "cards")
# (a, b) ranges for a starting product, and the range for added/removed amounts, per size bucket
_SIZES = (
    ((2, 12), (2, 12), (1, 30)),
    ((6, 60), (5, 40), (10, 300)),
    ((40, 400), (12, 99), (100, 5000)),
)


def _story(rng: random.Random) -> tuple[str, list[str], int, int, int]:
    """One problem: (prompt, expression templates using {x} for the previous result, answer, ops, size)."""
    name, items = rng.choice(_NAMES), rng.choice(_ITEMS)
    n_ops = rng.choice((1, 1, 2, 2, 3, 3, 4))
    size = rng.randrange(len(_SIZES))
    (alo, ahi), (blo, bhi), (nlo, nhi) = _SIZES[size]
    exprs: list[str] = []
    if rng.random() < 0.5:
        a, b = rng.randint(alo, ahi), rng.randint(blo, bhi)
        x = a * b
        sentences = [f"{name} packs {a} boxes with {b} {items} in each."]
        exprs.append(f"{a} * {b}")
    else:
        x = rng.randint(nlo * 2, nhi * 3)
        sentences = [f"{name} has {x} {items}."]
    while len(exprs) < n_ops:
        prev = "{x}" if exprs else str(x)  # the first step starts from the stated amount
        kind = rng.choice(("add", "sub", "mul", "div"))
        if kind == "add":
            n = rng.randint(nlo, nhi)
            sentences.append(f"Then {name} buys {n} more {items}.")
            exprs.append(f"{prev} + {n}")
            x += n
        elif kind == "sub" and x > 2:
            n = rng.randint(2, min(nhi, x - 1))
            sentences.append(f"Then {name} sells {n} {items}.")
            exprs.append(f"{prev} - {n}")
            x -= n
        elif kind == "mul" and x < 10**7:
            m = rng.randint(2, 9 if size < 2 else 25)
            sentences.append(f"Then the number of {items} is multiplied by {m}.")
            exprs.append(f"{prev} * {m}")
            x *= m
        elif kind == "div":
            divisors = [k for k in range(2, 13) if x % k == 0]
            if not divisors:
                continue
            k = rng.choice(divisors)
            sentences.append(f"Then {name} shares the {items} equally among {k} friends and keeps one share.")
            exprs.append(f"{prev} / {k}")
            x //= k
    sentences.append(f"How many {items} does {name} have now?")
    return " ".join(sentences), exprs, x, n_ops, size


def generate(split: str, n: int, avoid: frozenset[str] = frozenset()) -> list[Task]:
    """The tasks of a split, from a fixed seed: the same list on every machine and every run."""
    rng = random.Random(f"agentrl/calculator/{split}")
    tasks: list[Task] = []
    seen = set(avoid)
    while len(tasks) < n:
        prompt, exprs, answer, n_ops, size = _story(rng)
        if prompt in seen:
            continue
        seen.add(prompt)
        tasks.append(
            Task(
                id=f"{len(tasks):05d}",
                prompt=prompt,
                answer=answer,
                difficulty=n_ops,
                data={"steps": exprs, "size": size},
            )
        )
    return tasks


class CalculatorEnv(ToolEnv):
    """Word problems that need exact arithmetic through the `calculator` tool, over 2 to 5 turns."""

    name: ClassVar[str] = "calculator"
    tools: ClassVar[Sequence[CalculatorTool]] = (CalculatorTool(),)
    instructions: ClassVar[str] = (
        "Do every computation with the calculator tool, one step at a time, and answer with a number."
    )
    max_turns = 8
    # "warmup": fresh stories, disjoint from train and test, for supervised warm-starts (the tiny model)
    splits = ("train", "test", "warmup")

    def load_tasks(self, split: str) -> list[Task]:
        if split == "train":
            return generate("train", SPLIT_SIZES["train"])
        train = frozenset(t.prompt for t in self.tasks("train"))
        if split == "test":
            return generate("test", SPLIT_SIZES["test"], avoid=train)
        test = frozenset(t.prompt for t in self.tasks("test"))
        return generate(split, SPLIT_SIZES[split], avoid=train | test)

    def expert_action(self) -> str:
        """Run the task's steps through the calculator, feeding each result into the next step."""
        assert self.task is not None, "call reset() first"
        steps: list[str] = list(self.task.data["steps"])
        results = self.tool_outputs("calculator")
        if len(results) < len(steps):
            expr = steps[len(results)].format(x=results[-1].strip() if results else "")
            return format_tool_call("calculator", {"expression": expr})
        return format_answer(results[-1].strip())
