"""`agentrl simulate` studies from options, study files and traces; common random numbers; barrier idle."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from agentrl.cli import main
from agentrl.envs.latency import LogNormal, load_trace
from agentrl.rollout.presets import make_arms
from agentrl.rollout.simulated import EpisodeProfile, SimulatedRunner
from agentrl.simulate import build_study, simulate


def write_csv(path: Path, n: int = 500, seed: int = 1) -> Path:
    x = np.random.default_rng(seed).lognormal(0.0, 1.0, n)
    path.write_text("call_id,tool,duration_s\n" + "".join(f"{i},search,{v:.4f}\n" for i, v in enumerate(x)))
    return path


@pytest.mark.timeout(60)
def test_csv_study_from_the_cli_alone(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The done-when study (500 measured durations, B=64, G=8, 32 slots, SPO vs GRPO), few seeds."""
    trace = write_csv(tmp_path / "calls.csv")
    out = tmp_path / "csv.json"
    args = ["simulate", "--tool-trace", str(trace), "--column", "duration_s", "--batch-size", "64"]
    args += ["--group-size", "8", "--max-concurrency", "32", "--overprovision", "2", "--seeds", "6"]
    assert main([*args, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "grpo/spo" in text and "paired" in text and "wasted" in text and "barrier idle" in text
    res = json.loads(out.read_text())
    assert out.with_suffix(".png").stat().st_size > 1000
    assert set(res["arms"]) == {"spo", "grpo"} and res["seeds"] == 6 and res["common_random_numbers"]
    r = res["ratios"]["grpo/spo"]
    assert r["paired"] and len(r["per_seed"]) == 6 and r["median"] > 1.0  # 2x launched: SPO keeps the fastest
    for a in res["arms"].values():
        assert {"median", "p5", "p95"} <= set(a["time_per_batch"])
        assert 0 <= a["wasted_share"]["mean"] < 1 and 0 < a["slot_utilisation"]["mean"] <= 1
    assert res["arms"]["spo"]["config"]["max_concurrency"] == 32
    # --json prints the same numbers
    assert main([*args, "--out", str(tmp_path / "b.json"), "--json", "--no-plot"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["ratios"]["grpo/spo"]["per_seed"] == r["per_seed"]


def test_common_random_numbers_pair_the_arms() -> None:
    """With one round of B on unlimited slots and no over-provisioning, both arms wait for the same
    B durations: identical per seed with common random numbers, different without."""
    settings = {"duration": "lognormal:median=10,sigma=1", "batch_size": 16, "group_size": 4, "batches": 1}
    paired, _ = build_study(settings)
    res = simulate(paired, 8)
    a, b = (res["arms"][n]["per_seed_time_per_batch"] for n in ("spo", "grpo"))
    assert a == pytest.approx(b, rel=1e-12) and res["ratios"]["grpo/spo"]["per_seed"] == pytest.approx(
        [1.0] * 8
    )
    indep, _ = build_study({**settings, "common_random_numbers": False})
    res = simulate(indep, 8)
    a, b = (res["arms"][n]["per_seed_time_per_batch"] for n in ("spo", "grpo"))
    assert a != pytest.approx(b, rel=1e-3) and not res["ratios"]["grpo/spo"]["paired"]


def test_runner_keys_timing_by_launch_index() -> None:
    prof = EpisodeProfile(duration=LogNormal(5.0, 1.0))
    r1 = SimulatedRunner(prof, seed=3, common_timing=True)
    r2 = SimulatedRunner(prof, seed=3, common_timing=True)
    assert r1.draw("a", 0, 0, launch=7).duration == r2.draw("zz", 4, 2, launch=7).duration
    assert r1.draw("a", 0, 0, launch=7).duration != r1.draw("a", 0, 0, launch=8).duration
    # the prompt-keyed default is unchanged
    assert SimulatedRunner(prof, seed=3).draw("a", 0, 0).duration == r1.draw("a", 0, 0).duration


def test_barrier_idle_is_counted_for_every_arm_that_waits() -> None:
    """A sync SPO round waits for its whole batch as GRPO's waits for its groups: both show idle
    slots at the barrier; async SPO has no barrier."""
    preset, _ = build_study(
        {
            "duration": "lognormal:median=60,sigma=1",
            "batch_size": 64,
            "max_concurrency": 64,
            "arms": "spo-sync,grpo-sync,spo-async",
            "learner_s": 30,
            "batches": 3,
        }
    )
    res = simulate(preset, 4)
    idle = {n: a["barrier_idle_share"]["mean"] for n, a in res["arms"].items()}
    util = {n: a["slot_utilisation"]["mean"] for n, a in res["arms"].items()}
    assert idle["spo-sync"] > 0.3 and idle["grpo-sync"] > 0.3
    assert idle["spo-sync"] == pytest.approx(idle["grpo-sync"], abs=0.05)
    assert util["spo-sync"] == pytest.approx(util["grpo-sync"], abs=0.05)
    assert idle["spo-async"] == 0.0


@pytest.mark.parametrize("suffix", ["yaml", "toml"])
def test_study_file_matches_the_options(
    tmp_path: Path, suffix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    write_csv(tmp_path / "calls.csv", n=100)
    if suffix == "yaml":
        text = (
            "tool-trace: calls.csv\ncolumn: duration_s\ngeneration: lognormal:median=0.5,sigma=0.3\n"
            "turns: 2-4\nbatch_size: 16\ngroup_size: 4\nmax_concurrency: 8\nregime: async\n"
            "max_staleness: 2\nlearner_s: {kind: uniform, low: 1, high: 2}\nseeds: 3\n"
        )
    else:
        text = (
            'tool_trace = "calls.csv"\ncolumn = "duration_s"\ngeneration = "lognormal:median=0.5,sigma=0.3"\n'
            'turns = "2-4"\nbatch_size = 16\ngroup_size = 4\nmax_concurrency = 8\nregime = "async"\n'
            'max_staleness = 2\nlearner_s = {kind = "uniform", low = 1, high = 2}\nseeds = 3\n'
        )
    study = tmp_path / f"my-study.{suffix}"
    study.write_text(text)
    out = tmp_path / "s.json"
    assert main(["simulate", "--study", str(study), "--out", str(out), "--no-plot"]) == 0
    res = json.loads(out.read_text())
    assert res["preset"] == "my-study" and res["seeds"] == 3 and res["batches_per_seed"] == 12
    assert res["arms"]["grpo"]["config"]["max_staleness"] == 2
    assert res["arms"]["spo"]["config"]["regime"] == "async"
    capsys.readouterr()
    # the same settings as options give the same numbers
    opts = ["--tool-trace", str(tmp_path / "calls.csv"), "--column", "duration_s"]
    opts += ["--generation", "{kind: lognormal, median: 0.5, sigma: 0.3}", "--turns", "2-4"]
    opts += ["--batch-size", "16", "--group-size", "4", "--max-concurrency", "8", "--regime", "async"]
    opts += ["--max-staleness", "2", "--learner-s", "uniform:low=1,high=2", "--seeds", "3"]
    out2 = tmp_path / "o.json"
    assert main(["simulate", *opts, "--out", str(out2), "--no-plot"]) == 0
    res2 = json.loads(out2.read_text())
    assert res2["ratios"]["grpo/spo"]["per_seed"] == res["ratios"]["grpo/spo"]["per_seed"]


def test_turns_trace_and_unknown_study_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "turns.txt").write_text("3\n5\n8\n")
    preset, _ = build_study({"tool": 1.0, "turns_trace": str(tmp_path / "turns.txt"), "batch_size": 8})
    assert preset.profile.turn_counts == (3, 5, 8)
    (tmp_path / "bad.yaml").write_text("tool: 1\nbatchsize: 8\n")
    assert main(["simulate", "--study", str(tmp_path / "bad.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert "bad.yaml" in err and "batchsize" in err and "batch_size" in err and "\n" not in err


@pytest.mark.parametrize(
    ("name", "content", "column", "expected"),
    [
        ("missing.csv", "call_id,latency_s\n0,1.0\n", "duration_s", r"missing\.csv: no column 'duration_s'"),
        ("negative.csv", "latency_s\n1.0\n-2\n", None, r"negative\.csv:3: column 'latency_s'.*>= 0"),
        (
            "text.csv",
            "id,latency_s\n0,1.0\n1,slow\n",
            None,
            r"text\.csv:3: column 'latency_s': 'slow' is not a number",
        ),
        ("empty.csv", "", None, r"empty\.csv: the trace is empty"),
        ("header.csv", "# only a header\nlatency_s\n", None, r"header\.csv: the trace is empty"),
        ("nan.txt", "1.0\nnan\n", None, r"nan\.txt:2: value.*finite"),
        ("rec.jsonl", '{"latency_s": 1}\n{"other": 2}\n', None, r"rec\.jsonl:2: no field 'latency_s'"),
        ("neg.jsonl", '{"t": -1}\n', "t", r"neg\.jsonl:1: field 't'.*>= 0"),
    ],
)
def test_bad_traces_give_one_line_errors(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
    content: str,
    column: str | None,
    expected: str,
) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(ValueError, match=expected):
        load_trace(path, column)
    args = ["simulate", "--tool-trace", str(path), "--seeds", "1", "--out", str(tmp_path / "x.json")]
    assert main(args + (["--column", column] if column else [])) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("agentrl simulate: ") and name in err and "\n" not in err


def test_option_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for args, msg in (
        (["--tool", "lognormal:median=x"], "median='x' is not a number"),
        (["--tool", "weibull:k=1"], "unknown latency kind 'weibull'"),
        (["--tool", "1", "--turns", "5-2"], "turns: need 1 <= a <= b"),
        (["--tool", "1", "--arms", "spo,ppo"], "unknown arm 'ppo'"),
        (["--tool", "1", "--batch-size", "12"], "multiple of group_size"),
        (["--tool", "1", "--preset", "paper-fig5"], "not both"),
        (["--batch-size", "8"], "no latency given"),
    ):
        assert main(["simulate", *args, "--seeds", "1", "--out", str(tmp_path / "x.json")]) == 2, args
        err = capsys.readouterr().err.strip()
        assert msg in err and "\n" not in err, (args, err)


def test_make_arms_regimes() -> None:
    arms = make_arms(["spo", "grpo-async"], batch_size=16, group_size=4, overprovision=2.0)
    assert arms[0].config.regime == "sync" and arms[0].config.overprovision == 2.0
    assert arms[1].config.mode == "group" and arms[1].config.regime == "async"
    assert arms[1].config.max_staleness == 1
