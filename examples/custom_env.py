"""A custom tool-use environment in under 40 lines: unit conversion with the calculator tool."""

import gymnasium

from agentrl.envs import Task, ToolEnv
from agentrl.tools import format_answer, format_tool_call
from agentrl.tools.calculator import CalculatorTool


class SecondsEnv(ToolEnv):
    name = "seconds"  # prompt ids look like "seconds/train/0007"
    tools = (CalculatorTool(),)
    instructions = "Use the calculator, then answer with a whole number."

    def load_tasks(self, split: str) -> list[Task]:
        first = 1 if split == "train" else 1000  # disjoint, deterministic splits
        days = range(first, first + 100)
        return [Task(f"{d:04d}", f"How many seconds are in {d} days?", answer=d * 86400) for d in days]

    def expert_action(self) -> str:  # optional: a scripted policy that really uses the tool
        results = self.tool_outputs("calculator")
        if results:
            return format_answer(results[-1])
        days = self.task.prompt.split()[-2]
        return format_tool_call("calculator", {"expression": f"{days} * 24 * 60 * 60"})


gymnasium.register("myorg/Seconds-v0", entry_point=SecondsEnv)

if __name__ == "__main__":
    env = gymnasium.make("myorg/Seconds-v0")
    obs, info = env.reset(seed=0)
    print(info["prompt_id"], "|", obs)
    done = False
    while not done:
        action = env.unwrapped.expert_action()
        obs, reward, terminated, truncated, info = env.step(action)
        print(f"{action}\n  -> {obs!r} reward={reward}")
        done = terminated or truncated
