"""Reward shaping for `ToolEnv`: optional per-turn signals, reported beside the outcome reward.

Off by default. With `shaping=` set, every step reports `info["shaping"]` (this turn's value) and
`info["shaping_total"]` (the episode's running sum); the step's `reward` stays what the scorer says,
so a trainer decides whether to add the shaping and can always log the two apart.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from agentrl.tools.base import ParsedAction, ToolResult

__all__ = ["SHAPINGS", "Shaping", "TurnOutcome", "format_shaping", "resolve_shaping", "tool_call_shaping"]


@dataclass(frozen=True)
class TurnOutcome:
    """What a shaping function sees of one turn: the action, its parse, the tool results and the
    step's outcome (`reward` is the scorer's on the final turn, 0.0 before)."""

    turn: int
    action: str
    parsed: ParsedAction | None
    tool_results: list[ToolResult]
    reward: float
    terminated: bool
    truncated: bool

    @property
    def well_formed(self) -> bool:
        """The turn made a tool call or gave an answer, with no format error."""
        p = self.parsed
        return p is not None and not p.errors and (bool(p.tool_calls) or p.answer is not None)


Shaping = Callable[[TurnOutcome], float]


def format_shaping(turn: TurnOutcome) -> float:
    """-0.1 for a turn with a format error or with neither a tool call nor an answer, else 0."""
    return 0.0 if turn.well_formed else -0.1


def tool_call_shaping(turn: TurnOutcome) -> float:
    """+0.1 for a turn whose tool calls all succeeded, else 0."""
    results = turn.tool_results
    return 0.1 if results and all(r.ok for r in results) else 0.0


SHAPINGS: dict[str, Shaping] = {"format": format_shaping, "tool_calls": tool_call_shaping}


def resolve_shaping(spec: Shaping | str | None) -> Shaping | None:
    """None, a built-in name (`format`, `tool_calls`), an import path `module:function`, or a callable."""
    if spec is None or callable(spec):
        return spec
    if spec in SHAPINGS:
        return SHAPINGS[spec]
    if isinstance(spec, str) and ":" in spec:
        from agentrl.tools.function import import_object

        fn = import_object(spec, "shaping")
        if not callable(fn):
            raise ValueError(f"shaping {spec!r} is not callable")
        return fn
    raise ValueError(f"shaping {spec!r}: expected one of {sorted(SHAPINGS)}, 'module:function' or a callable")
