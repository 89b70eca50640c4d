"""Resume through the trainer on a micro model: past a broken latest checkpoint, and after a kill
during the first checkpoint write left only `.tmp-` leftovers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentrl.checkpoint import load_state, step_folders
from agentrl.runlog import read_metrics
from agentrl.trainer import Trainer
from tests.test_trainer import make_micro_model, micro_config


@pytest.fixture(scope="module")
def micro_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_micro_model(tmp_path_factory.mktemp("micro"))


def _train_steps(run: Path) -> list[int]:
    return [r["step"] for r in read_metrics(run / "metrics.jsonl") if "reward_mean" in r]


def test_resume_falls_back_past_a_corrupt_latest_checkpoint(
    micro_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AGENTRL_CACHE", str(tmp_path / "cache"))
    runs, run = tmp_path / "runs", tmp_path / "runs" / "fb"
    Trainer(micro_config(micro_model, runs, steps=3, name="fb")).run()
    broken = run / "checkpoints" / "step_000003" / "state.pt"
    broken.write_bytes(broken.read_bytes()[:200])  # truncated, as by a full disk
    capsys.readouterr()

    trainer = Trainer(micro_config(micro_model, runs, steps=4, name="fb"), resume=True)
    seen: list[int] = []
    original = trainer._train_step

    async def spy(batch):  # type: ignore[no-untyped-def]
        seen.append(trainer.step)
        return await original(batch)

    trainer._train_step = spy  # type: ignore[method-assign]
    result = trainer.run()
    out = capsys.readouterr().out
    assert "checkpoint step_000003 is unreadable (state.pt: " in out
    assert "; resuming from step_000002" in out
    assert seen == [2, 3] and result.steps == 4
    assert _train_steps(run) == [1, 2, 3, 4]  # step 3 again, once
    assert load_state(run / "checkpoints" / "step_000003")["step"] == 3  # rewritten whole


def test_resume_with_no_intact_checkpoint_is_one_line_naming_the_folder(
    micro_model: Path, tmp_path: Path
) -> None:
    ckpts = tmp_path / "runs" / "dead" / "checkpoints"
    (ckpts / "step_000002").mkdir(parents=True)
    (ckpts / "step_000002" / "state.pt").write_bytes(b"junk")
    (ckpts / "latest").write_text("step_000002")
    trainer = Trainer(micro_config(micro_model, tmp_path / "runs", steps=2, name="dead"), resume=True)
    with pytest.raises(SystemExit) as e:
        trainer._find_resume_point()
    msg = str(e.value)
    assert msg.startswith(f"agentrl train: --resume: no intact checkpoint in {ckpts}: ") and "\n" not in msg
    assert (ckpts / "step_000002" / "state.pt").read_bytes() == b"junk"  # nothing was touched


def _killed_during_first_checkpoint(run: Path) -> None:
    """What `kill -9` inside the first checkpoint write leaves: records of steps 0-1, a half folder."""
    leftover = run / "checkpoints" / "step_000001.tmp-4242"
    leftover.mkdir(parents=True)
    (leftover / "model.safetensors").write_bytes(b"partial")
    (run / "checkpoints" / ".latest.tmp-4242").write_bytes(b"step_0")
    (run / "metrics.jsonl").write_text(
        json.dumps({"step": 0, "eval/success": 0.0})
        + "\n"
        + json.dumps({"step": 1, "reward_mean": 0.5})
        + "\n"
    )
    (run / "rollouts.jsonl").write_text(json.dumps({"step": 1, "prompt_id": "x"}) + "\n")


@pytest.mark.parametrize("resume", [False, True], ids=["fresh", "resume"])
def test_leftovers_of_a_killed_first_checkpoint_do_not_block_the_run(
    micro_model: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    resume: bool,
) -> None:
    monkeypatch.setenv("AGENTRL_CACHE", str(tmp_path / "cache"))
    runs, run = tmp_path / "runs", tmp_path / "runs" / "early"
    _killed_during_first_checkpoint(run)
    result = Trainer(micro_config(micro_model, runs, steps=1, name="early"), resume=resume).run()
    assert result.steps == 1
    if resume:  # no checkpoint was ever complete: --resume starts the run from step 0
        assert "early has no complete checkpoint yet; starting it from step 0" in capsys.readouterr().out
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["latest", "step_000001"]
    assert [p.name for p in step_folders(run / "checkpoints")] == ["step_000001"]
    rows = read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in rows] == [
        0,
        1,
        1,
    ]  # eval before, the step, eval after: the old try's rows gone
    rollouts = [json.loads(line) for line in (run / "rollouts.jsonl").read_text().splitlines()]
    assert rollouts and all(r.get("prompt_id") != "x" for r in rollouts)
