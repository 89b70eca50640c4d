"""Scorers the Dataset-v0 tests name by import path."""

from __future__ import annotations

import asyncio
from typing import Any


def first_word(prediction: str, answer: str) -> float:
    return float(prediction.split()[0].lower() == answer.lower()) if prediction.split() else 0.0


async def async_exact(prediction: str, answer: str, row: dict[str, Any]) -> float:
    await asyncio.sleep(0)
    return float(prediction.strip() == str(answer).strip()) * float(row.get("weight", 1))


def not_a_number(prediction: str, answer: str) -> str:
    return "yes"


LOOPS: list[asyncio.AbstractEventLoop] = []  # the loop each call of `loop_recording` ran on


async def loop_recording(prediction: str, answer: str) -> float:
    LOOPS.append(asyncio.get_running_loop())
    await asyncio.sleep(0)
    return float(prediction.strip() == str(answer).strip())


async def slow_when_wrong(prediction: str, answer: str) -> float:
    if prediction.strip() != str(answer).strip():
        await asyncio.sleep(30)
    return 1.0
