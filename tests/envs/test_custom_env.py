"""The README's custom-environment example runs, registers, and passes check_env."""

from __future__ import annotations

import runpy
import subprocess
import sys
from pathlib import Path

import gymnasium
from gymnasium.utils.env_checker import check_env

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "custom_env.py"


def test_example_is_under_40_lines():
    assert len(EXAMPLE.read_text().splitlines()) < 40


def test_example_registers_and_its_expert_solves_it():
    runpy.run_path(str(EXAMPLE), run_name="custom_env_example")
    env = gymnasium.make("myorg/Seconds-v0")
    check_env(env.unwrapped)
    solved = 0
    for task_id in env.unwrapped.task_ids("test")[:20]:
        _, info = env.reset(options={"task_id": task_id, "split": "test"})
        assert info["prompt_id"] == f"seconds/test/{task_id}"
        done, reward = False, 0.0
        while not done:
            _, reward, terminated, truncated, _ = env.step(env.unwrapped.expert_action())
            done = terminated or truncated
        solved += reward
    assert solved == 20


def test_example_runs_as_a_script():
    out = subprocess.run(
        [sys.executable, str(EXAMPLE)], capture_output=True, text=True, timeout=60, check=True
    )
    assert "reward=1.0" in out.stdout
