from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentrl.cli import main


@pytest.mark.timeout(60)
def test_simulate_paper_fig5_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "res.json"
    assert main(["simulate", "--preset", "paper-fig5", "--seeds", "20", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "median" in text and "mean" in text and "5%" in text and "95%" in text
    assert "paper         4.35" in text and "paper grpo         486.0" in text
    res = json.loads(out.read_text())
    sp = res["speedup"]
    assert sp["n"] == 20 and len(sp["per_seed"]) == 20 and sp["reference"] == 4.35
    assert {"median", "mean", "p5", "p95"} <= set(sp) and sp["reference_time_per_batch"] == {
        "spo": 112.0,
        "grpo": 486.0,
    }
    assert 1.0 < sp["median"] < 6.0
    assert set(res["arms"]) == {"spo", "grpo"}


@pytest.mark.timeout(60)
def test_simulate_other_presets_and_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["simulate", "--list"]) == 0
    assert "paper-fig5" in capsys.readouterr().out
    assert main(["simulate", "--preset", "nope"]) == 2
    assert "unknown preset" in capsys.readouterr().err
    assert main(["simulate", "--preset", "slots-heavy-tail", "--seeds", "2", "--batches", "3"]) == 0
    assert "grpo-sync" in capsys.readouterr().out
    assert main(["simulate", "--preset", "agentic-multiturn", "--seeds", "3", "--max-concurrency", "32"]) == 0
    res = json.loads((tmp_path / "runs" / "simulate" / "agentic-multiturn.json").read_text())  # the default
    assert res["preset"] == "agentic-multiturn" and res["seeds"] == 3
    assert res["arms"]["spo"]["config"]["max_concurrency"] == 32
