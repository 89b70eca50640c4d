"""A custom env with its own tool: unit conversion through a `convert` tool.

    PYTHONPATH=examples agentrl sft --env units_env:myorg/Units-v0
    PYTHONPATH=examples agentrl train --env units_env:myorg/Units-v0 --model runs/sft-units-v0-tiny

Gymnasium's `module:Id` form imports `units_env` (which registers `myorg/Units-v0`) before making it.
"""

from __future__ import annotations

import random
from typing import Any

import gymnasium

from agentrl.envs import Task, ToolEnv
from agentrl.tools import Tool, ToolError, format_answer, format_tool_call

FACTORS = {  # (from, to) -> how many `to` in one `from`
    ("km", "m"): 1000, ("m", "cm"): 100, ("kg", "g"): 1000, ("h", "min"): 60, ("min", "s"): 60,
    ("l", "ml"): 1000, ("ft", "in"): 12, ("yd", "ft"): 3, ("day", "h"): 24, ("week", "day"): 7,
}  # fmt: skip
SPLITS = {"warmup": (0, 3000), "train": (3000, 3500), "test": (3500, 3700)}  # disjoint slices


class ConvertTool(Tool):
    name = "convert"
    description = "Convert a quantity from one unit to another."
    parameters = {  # noqa: RUF012  (the Tool contract's class attribute)
        "type": "object",
        "properties": {
            "value": {"type": "number"},
            "from_unit": {"type": "string"},
            "to_unit": {"type": "string"},
        },
        "required": ["value", "from_unit", "to_unit"],
    }

    async def run(self, value: float, from_unit: str, to_unit: str, **_: Any) -> str:
        factor = FACTORS.get((from_unit, to_unit))
        if factor is None:
            raise ToolError(f"cannot convert {from_unit!r} to {to_unit!r}; known: {sorted(FACTORS)}")
        result = float(value) * factor
        return str(int(result)) if result.is_integer() else f"{result:g}"


class UnitsEnv(ToolEnv):
    name = "units"
    tools = (ConvertTool,)
    instructions = "Convert with the convert tool, then answer with the number alone."
    max_turns = 3
    splits = ("warmup", "train", "test")

    def load_tasks(self, split: str) -> list[Task]:
        pairs = [(v, p) for v in range(1, 1000) for p in FACTORS]
        random.Random(7).shuffle(pairs)
        lo, hi = SPLITS[split]
        return [
            Task(
                f"{i:05d}", f"How many {b} are in {v} {a}?", answer=v * FACTORS[(a, b)], data={"q": (v, a, b)}
            )
            for i, (v, (a, b)) in enumerate(pairs[lo:hi], start=lo)
        ]

    def expert_action(self) -> str:
        assert self.task is not None
        results = self.tool_outputs("convert")
        if results:
            return format_answer(results[-1])
        value, a, b = self.task.data["q"]
        return format_tool_call("convert", {"value": value, "from_unit": a, "to_unit": b})


gymnasium.register("myorg/Units-v0", entry_point=UnitsEnv)
