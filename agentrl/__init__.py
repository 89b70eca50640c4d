"""agentrl: train tool-using LLM agents with reinforcement learning (SPO and GRPO)."""

from agentrl.types import Generation, SamplingParams, Status, Trajectory, Turn

__version__ = "0.1.0"

__all__ = [
    "Generation",
    "SamplingParams",
    "Status",
    "Trajectory",
    "Turn",
    "__version__",
]
