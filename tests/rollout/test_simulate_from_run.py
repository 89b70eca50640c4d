"""`agentrl simulate --from-run`: a synthetic run directory in the trainer's format, replayed."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import yaml

from agentrl.cli import main
from agentrl.envs.latency import LogNormal, Mixture, Uniform
from agentrl.rollout.clock import run_virtual
from agentrl.rollout.scheduler import RolloutScheduler, SchedulerConfig
from agentrl.rollout.simulated import EpisodeProfile, SeededPromptSampler, SimulatedRunner
from agentrl.types import Trajectory, Turn
from agentrl.whatif import (
    GenerationServer,
    ServerFit,
    fit_server,
    in_flight,
    read_run,
    tool_capacity,
    what_if,
)


def make_run(run_dir: Path, *, algo: str = "spo", regime: str = "sync", steps: int = 12) -> dict[str, float]:
    """Play a training run in virtual time and write what the trainer writes: config.yaml,
    metrics.jsonl (one row per step) and rollouts.jsonl (one row per consumed trajectory)."""
    B, G, C = 16, 4, 8
    cfg = SchedulerConfig(
        mode="group" if algo == "grpo" else "stream",
        batch_size=B,
        group_size=G,
        max_concurrency=C,
        regime=regime,
        max_staleness=1 if regime == "async" else None,
        watchdog_s=None,
    )
    profile = EpisodeProfile(
        turns=(1, 4),
        generation=LogNormal(0.8, 0.4),
        tool=Mixture.straggler(LogNormal(0.3, 0.5), Uniform(3.0, 6.0), 0.05),
    )
    learner_rng = np.random.default_rng(5)
    rollouts: list[dict[str, object]] = []
    metrics: list[dict[str, float]] = []

    async def play() -> None:
        loop = asyncio.get_running_loop()
        runner = SimulatedRunner(profile, seed=11)
        async with RolloutScheduler(SeededPromptSampler(200, seed=11), runner, cfg) as sched:
            t_prev = loop.time()
            step = 0
            async for batch in sched.batches(steps):
                learner = float(learner_rng.uniform(1.0, 2.0))
                sync = 0.25
                await asyncio.sleep(learner + sync)
                sched.set_policy_version(sched.policy_version + 1)
                m = batch.metrics
                for t in batch.trajectories:
                    rollouts.append(
                        {
                            "step": step,
                            "prompt_id": t.prompt_id,
                            "reward": t.reward,
                            "status": t.status.value,
                            "policy_version": t.policy_version,
                            "group_id": t.group_id,
                            "started_at": t.started_at,
                            "finished_at": t.finished_at,
                            "turns": [
                                {
                                    "gen_s": u.gen_s,
                                    "tool_s": u.tool_s,
                                    "n_model_tokens": u.n_model_tokens,
                                    "n_env_tokens": u.n_env_tokens,
                                    "tool_calls": u.tool_calls,
                                }
                                for u in t.turns
                            ],
                        }
                    )
                now = loop.time()
                metrics.append(
                    {
                        "step": step,
                        "time/step_s": now - t_prev,
                        "time/learner_s": learner,
                        "time/sync_s": sync,
                        "rollout/queue_wait_mean": m.queue_wait_mean,
                        "rollout/trajectories_per_s": m.trajectories_per_s,
                        "rollout/slot_utilisation": m.slot_utilisation,
                    }
                )
                t_prev = now
                step += 1

    run_virtual(play())
    run_dir.mkdir(parents=True)
    config = {
        "name": run_dir.name,
        "steps": steps,
        "algo": {"name": algo, "group_size": G},
        "rollout": {"batch_size": B, "max_concurrency": C, "regime": regime, "max_staleness": 1},
    }
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in metrics))
    (run_dir / "rollouts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rollouts))
    steady = metrics[1:]
    return {"trajectories_per_s": B * len(steady) / sum(r["time/step_s"] for r in steady)}


@pytest.mark.parametrize(("algo", "regime"), [("spo", "sync"), ("grpo", "async")])
def test_from_run_re_predicts_the_run_and_answers_what_ifs(tmp_path: Path, algo: str, regime: str) -> None:
    measured = make_run(tmp_path / "runs" / "r1", algo=algo, regime=regime)
    t = read_run(tmp_path / "runs" / "r1")
    assert t.algo == algo and t.batch_size == 16 and t.max_concurrency == 8 and len(t.step_s) == 12
    assert len(t.episode_s) == 16 * 12 and all(x >= 1.25 for x in t.learner_s)
    res = what_if(t, seeds=12)
    assert res["measured"]["trajectories_per_s"] == pytest.approx(measured["trajectories_per_s"])
    # the replay of the run's own timings predicts its throughput
    assert abs(res["prediction_error"]) < 0.15, res["prediction_error"]
    names = [s["scenario"] for s in res["scenarios"]]
    other = "grpo" if algo == "spo" else "spo"
    assert names[0] == "as run" and any(n.startswith(f"{other} instead") for n in names)
    assert any(n.startswith("2x slots") for n in names) and any("inference servers" in n for n in names)
    assert any("staleness" in n for n in names)
    by = {s["scenario"]: s for s in res["scenarios"]}
    servers = next(v for k, v in by.items() if "inference servers" in k)
    # generation here does not depend on load (a latency-bound server): a second one gains nothing
    assert servers["speedup_vs_as_run"] == pytest.approx(1.0, abs=0.05)
    assert res["server"]["token_per_req_s"] == pytest.approx(0.0, abs=1e-3)


def test_from_run_cli_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "r"
    make_run(run, steps=6)
    out = tmp_path / "w.json"
    assert main(["simulate", "--from-run", str(run), "--seeds", "4", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "measured" in text and "as run" in text and "error" in text
    assert json.loads(out.read_text())["scenarios"][0]["scenario"] == "as run"

    def err_for(d: Path) -> str:
        assert (
            main(["simulate", "--from-run", str(d), "--seeds", "2", "--out", str(tmp_path / "x.json")]) == 2
        )
        e = capsys.readouterr().err.strip()
        assert "\n" not in e
        return e

    assert "not a run directory" in err_for(tmp_path / "nope")
    (run / "rollouts.jsonl").rename(run / "kept.jsonl")
    assert "rollouts.jsonl: not found" in err_for(run)
    (run / "rollouts.jsonl").write_text("")
    assert "rollouts.jsonl: empty" in err_for(run)
    rows = (run / "kept.jsonl").read_text().splitlines()
    bad = json.loads(rows[1])
    bad["turns"][0]["tool_s"] = -1.0
    (run / "rollouts.jsonl").write_text("\n".join([rows[0], json.dumps(bad), *rows[2:]]) + "\n")
    assert "rollouts.jsonl:2: turns[0]: durations must be >= 0" in err_for(run)
    del bad["turns"][0]["gen_s"]
    (run / "rollouts.jsonl").write_text("\n".join([rows[0], json.dumps(bad)]) + "\n")
    assert "rollouts.jsonl:2: turns[0]: field 'gen_s' missing" in err_for(run)
    (run / "kept.jsonl").rename(run / "rollouts.jsonl")
    (run / "metrics.jsonl").write_text('{"step": 0, "loss": 1.0}\n')
    assert "metrics.jsonl: no step timings" in err_for(run)
    (run / "metrics.jsonl").write_text('{"step": 0, "time/step_s": 3.0}\n')
    assert "metrics.jsonl: step row 1: field 'time/learner_s' missing" in err_for(run)
    (run / "config.yaml").unlink()
    assert "config.yaml: not found" in err_for(run)


def test_in_flight_is_the_time_averaged_overlap() -> None:
    k = in_flight(np.array([0.0, 1.0, 5.0]), np.array([2.0, 3.0, 6.0]))
    assert k.tolist() == pytest.approx([1.5, 1.5, 1.0])


def _fit(
    request_s: float = 0.0, per_req: float = 0.0, token_s: float = 0.01, token_per_req_s: float = 0.005
) -> ServerFit:
    return ServerFit(request_s, per_req, token_s, token_per_req_s, (1.0,), 1.0, (), 1.0, 0)


def test_generation_server_shares_decode_steps_between_requests_in_flight() -> None:
    fit = _fit()
    tau = {k: fit.token_s + fit.token_per_req_s * k for k in (1, 2)}

    async def play() -> list[float]:
        loop = asyncio.get_running_loop()
        server = GenerationServer(fit)
        done: list[float] = []

        async def req(n: int) -> None:
            await server.generate(n)
            done.append(loop.time())

        await asyncio.gather(req(10), req(20))
        return done

    first, second = run_virtual(play())
    assert first == pytest.approx(10 * tau[2])  # both decode together, then the longer one alone
    assert second == pytest.approx(10 * tau[2] + 10 * tau[1])


def make_server_run(run_dir: Path, fit: ServerFit, *, steps: int = 10) -> float:
    """A sync SPO run whose generation is a shared server (as the HF and vLLM backends are), written
    in the trainer's format with `gen_at`; returns the measured trajectories/s over steps 2+."""
    B, C = 32, 32
    cfg = SchedulerConfig(mode="stream", batch_size=B, max_concurrency=C, regime="sync", watchdog_s=None)
    rollouts: list[dict[str, object]] = []
    metrics: list[dict[str, float]] = []
    rng = np.random.default_rng(3)

    async def play() -> None:
        loop = asyncio.get_running_loop()
        server = GenerationServer(fit)

        async def runner(prompt_id: str, version: int) -> Trajectory:
            turns = []
            for _ in range(int(rng.integers(1, 4))):
                n = int(rng.integers(8, 64))
                t0 = loop.time()
                await server.generate(n)
                g = loop.time() - t0
                tool = float(rng.lognormal(np.log(0.2), 0.8))
                await asyncio.sleep(tool)
                turns.append(Turn(g, tool, n, 4, 1, t0))
            return Trajectory(prompt_id, policy_version=version, turns=turns)

        async with RolloutScheduler(SeededPromptSampler(500, seed=3), runner, cfg) as sched:
            t_prev = loop.time()
            async for batch in sched.batches(steps):
                await asyncio.sleep(1.0)
                sched.set_policy_version(sched.policy_version + 1)
                step = sched.policy_version
                for t in batch.trajectories:
                    rollouts.append(
                        {
                            "step": step,
                            "reward": 0.0,
                            "started_at": t.started_at,
                            "finished_at": t.finished_at,
                            "turns": [
                                {
                                    "gen_at": u.gen_at,
                                    "gen_s": u.gen_s,
                                    "tool_s": u.tool_s,
                                    "n_model_tokens": u.n_model_tokens,
                                }
                                for u in t.turns
                            ],
                        }
                    )
                now = loop.time()
                metrics.append(
                    {
                        "step": step,
                        "time/step_s": now - t_prev,
                        "time/learner_s": 1.0,
                        "rollout/assembly_s": batch.metrics.assembly_s,
                    }
                )
                t_prev = now

    run_virtual(play())
    run_dir.mkdir(parents=True)
    config = {
        "name": run_dir.name,
        "steps": steps,
        "algo": {"name": "spo"},
        "rollout": {"batch_size": B, "max_concurrency": C},
    }
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in metrics))
    (run_dir / "rollouts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rollouts))
    return B * (steps - 1) / sum(r["time/step_s"] for r in metrics[1:])


def test_a_shared_generation_server_is_fitted_and_its_run_re_predicted(tmp_path: Path) -> None:
    truth = _fit(request_s=0.05, token_s=0.002, token_per_req_s=0.004)
    measured = make_server_run(tmp_path / "r", truth)
    t = read_run(tmp_path / "r")
    fit = fit_server(t)
    # the load term is what makes a round of lock-stepped episodes slow; the fit finds it
    assert fit.token_per_req_s == pytest.approx(truth.token_per_req_s, rel=0.25)
    assert fit.r2 > 0.9
    res = what_if(t, seeds=6)
    assert res["measured"]["trajectories_per_s"] == pytest.approx(measured)
    assert abs(res["prediction_error"]) < 0.10, res["prediction_error"]
    by = {s["scenario"]: s for s in res["scenarios"]}
    assert by["2x inference servers"]["speedup_vs_as_run"] > 1.2  # a saturated server: a second one helps


def test_rollouts_rows_record_when_each_request_was_sent(tmp_path: Path) -> None:
    from agentrl.trainer import _write_rollouts

    traj = Trajectory(
        "calc/train/1",
        prompt_len=7,
        started_at=10.0,
        finished_at=12.0,
        turns=[Turn(0.5, 0.25, 3, 2, 1, 10.1, 0.125)],
    )
    with open(tmp_path / "rollouts.jsonl", "w") as f:
        _write_rollouts(f, 1, [traj])
    row = json.loads((tmp_path / "rollouts.jsonl").read_text())
    assert row["prompt_len"] == 7 and row["turns"][0]["gen_at"] == 10.1 and row["turns"][0]["gen_s"] == 0.5
    assert row["turns"][0]["tool_wait_s"] == 0.125 and row["turns"][0]["tool_calls"] == 1


def test_an_env_step_reports_how_long_its_tool_calls_queued() -> None:
    import gymnasium as gym

    from agentrl.tools import format_tool_call

    env = gym.make("agentrl/Calculator-v0").unwrapped
    env.reset(seed=0)
    _, _, _, _, info = env.step(format_tool_call("calculator", {"expression": "1+2"}))
    (res,) = info["tool_results"]
    assert res["ok"] and 0.0 <= res["wait_s"] < 1.0


def make_capped_tool_run(run_dir: Path, *, slots: int, cap: int = 4, steps: int = 8) -> float:
    """A sync SPO run whose tool serves at most `cap` calls at once (as the Python sandbox does),
    recorded as the trainer records it (`tool_calls`, `tool_wait_s`); returns trajectories/s over steps 2+."""
    B = 16
    cfg = SchedulerConfig(mode="stream", batch_size=B, max_concurrency=slots, regime="sync", watchdog_s=None)
    rollouts: list[dict[str, object]] = []
    metrics: list[dict[str, float]] = []
    rng = np.random.default_rng(7)

    async def play() -> None:
        loop = asyncio.get_running_loop()
        tool = asyncio.Semaphore(cap)

        async def runner(prompt_id: str, version: int) -> Trajectory:
            turns = []
            for i in range(2):  # a tool call, then the answer
                t0 = loop.time()
                await asyncio.sleep(0.1)
                t1 = loop.time()
                wait = 0.0
                if i == 0:
                    async with tool:
                        wait = loop.time() - t1
                        await asyncio.sleep(float(rng.lognormal(0.0, 0.3)))
                turns.append(Turn(0.1, loop.time() - t1, 16, 4, int(i == 0), t0, wait))
            return Trajectory(prompt_id, policy_version=version, turns=turns)

        async with RolloutScheduler(SeededPromptSampler(500, seed=7), runner, cfg) as sched:
            t_prev = loop.time()
            async for batch in sched.batches(steps):
                await asyncio.sleep(0.5)
                sched.set_policy_version(sched.policy_version + 1)
                step = sched.policy_version
                for t in batch.trajectories:
                    turns = [
                        {
                            "gen_at": u.gen_at,
                            "gen_s": u.gen_s,
                            "tool_s": u.tool_s,
                            "n_model_tokens": u.n_model_tokens,
                            "tool_calls": u.tool_calls,
                            "tool_wait_s": u.tool_wait_s,
                        }
                        for u in t.turns
                    ]
                    rollouts.append(
                        {
                            "step": step,
                            "started_at": t.started_at,
                            "finished_at": t.finished_at,
                            "turns": turns,
                        }
                    )
                now = loop.time()
                metrics.append(
                    {
                        "step": step,
                        "time/step_s": now - t_prev,
                        "time/learner_s": 0.5,
                        "rollout/assembly_s": batch.metrics.assembly_s,
                    }
                )
                t_prev = now

    run_virtual(play())
    run_dir.mkdir(parents=True)
    config = {
        "name": run_dir.name,
        "algo": {"name": "spo"},
        "rollout": {"batch_size": B, "max_concurrency": slots},
    }
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in metrics))
    (run_dir / "rollouts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rollouts))
    return B * (steps - 1) / sum(r["time/step_s"] for r in metrics[1:])


def test_a_capped_tool_is_replayed_as_a_queue(tmp_path: Path) -> None:
    import dataclasses

    make_capped_tool_run(tmp_path / "s8", slots=8)
    doubled = make_capped_tool_run(tmp_path / "s16", slots=16)
    t = read_run(tmp_path / "s8")
    assert tool_capacity(t) == 4
    res = what_if(t, seeds=6)
    assert res["tool_capacity"] == 4 and res["measured"]["tool_wait_share"] > 0.2
    assert abs(res["prediction_error"]) < 0.10, res["prediction_error"]
    by = {s["scenario"]: s["pooled_trajectories_per_s"] for s in res["scenarios"]}
    # twice the slots queue twice as many calls at the tool: the what-if knows, and predicts the real run
    assert by["2x slots (16)"] == pytest.approx(doubled, rel=0.10)
    # replaying the measured tool times as fixed delays (the queueing of 8 slots frozen in) does not
    blind = dataclasses.replace(t, episodes=tuple(dataclasses.replace(e, tool_wait_s=()) for e in t.episodes))
    assert tool_capacity(blind) is None
    by_blind = {s["scenario"]: s["pooled_trajectories_per_s"] for s in what_if(blind, seeds=6)["scenarios"]}
    assert by_blind["2x slots (16)"] > 1.2 * doubled


def test_tool_waits_are_recorded_and_checked(tmp_path: Path) -> None:
    from agentrl.tools import Tool

    class Slow(Tool):
        name: ClassVar[str] = "slow"
        description: ClassVar[str] = "sleeps"
        parameters: ClassVar[dict[str, object]] = {"type": "object", "properties": {}}

        async def run(self, **arguments: object) -> str:
            await asyncio.sleep(0.2)
            return "done"

    async def two_at_once() -> list[float]:
        tool = Slow(max_concurrency=1)
        return [r.wait_s for r in await asyncio.gather(tool({}), tool({}))]

    waits = sorted(asyncio.run(two_at_once()))
    assert waits[0] < 0.05 and 0.15 < waits[1] < 1.0  # the second call queued behind the cap of 1
    make_capped_tool_run(tmp_path / "r", slots=8, steps=3)
    ro = tmp_path / "r" / "rollouts.jsonl"
    rows = [json.loads(x) for x in ro.read_text().splitlines()]
    rows[1]["turns"][0]["tool_wait_s"] = -1.0
    ro.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ValueError, match=r"rollouts.jsonl:2: turns\[0\]: field 'tool_wait_s' must be >= 0"):
        read_run(tmp_path / "r")
