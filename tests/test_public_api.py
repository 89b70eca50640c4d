"""Every name `agentrl` promises resolves, and a plain import stays light."""

from __future__ import annotations

import subprocess
import sys

import pytest

import agentrl


@pytest.mark.parametrize("name", agentrl.__all__)
def test_public_name_resolves(name: str) -> None:
    assert getattr(agentrl, name) is not None


def test_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = agentrl.nope  # type: ignore[attr-defined]


def test_import_agentrl_does_not_import_torch() -> None:
    code = "import sys, agentrl; print('torch' in sys.modules)"
    assert (
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout.strip()
        == "False"
    )


def test_import_agentrl_alone_registers_the_bundled_envs() -> None:
    import subprocess
    import sys

    code = (
        "import agentrl, gymnasium; print(type(gymnasium.make('agentrl/Calculator-v0').unwrapped).__name__)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "CalculatorEnv"
