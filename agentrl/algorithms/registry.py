"""Algorithms by name: `@register_algorithm("name")` on a class, `get_algorithm("name")` to find it."""

from __future__ import annotations

import difflib
from collections.abc import Callable

from agentrl.algorithms.base import Algorithm

ALGORITHMS: dict[str, type[Algorithm]] = {}


def register_algorithm(name: str) -> Callable[[type[Algorithm]], type[Algorithm]]:
    """Class decorator: makes the algorithm available as `algo.name=<name>` / `--algo <name>`."""

    def add(cls: type[Algorithm]) -> type[Algorithm]:
        if name in ALGORITHMS and ALGORITHMS[name] is not cls:
            raise ValueError(
                f"an algorithm named {name!r} is already registered ({ALGORITHMS[name].__qualname__})"
            )
        if cls.mode not in ("stream", "group"):
            raise ValueError(f"{cls.__qualname__}.mode must be 'stream' or 'group', got {cls.mode!r}")
        cls.name = name
        ALGORITHMS[name] = cls
        return cls

    return add


def get_algorithm(name: str) -> type[Algorithm]:
    """The class registered as `name`; an unknown name raises ValueError listing the known ones."""
    try:
        return ALGORITHMS[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(ALGORITHMS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(
            f"unknown algorithm {name!r}{hint} (known: {', '.join(sorted(ALGORITHMS))})"
        ) from None
