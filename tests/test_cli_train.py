"""`agentrl train` from the command line: every algorithm trains, user errors are one line before any
work, `--resume` restores the run's own config, runs never share a folder, and plots and loggers."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from agentrl.cli import main
from agentrl.runlog import read_metrics
from tests.test_trainer import MICRO_OVERRIDES, make_micro_model


@pytest.fixture(scope="module")
def micro_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_micro_model(tmp_path_factory.mktemp("micro"))


def train(model: Path, runs: Path, *extra: str) -> int:
    return main(["train", f"model.name={model}", f"run_root={runs}", *MICRO_OVERRIDES, *extra])


@pytest.mark.parametrize("algo", ["rloo", "drgrpo", "grpo", "no_baseline"])
def test_every_algorithm_trains_from_the_cli(
    algo: str, micro_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTRL_CACHE", str(tmp_path / "cache"))
    extra = ["algo.group_size=2"] if algo != "no_baseline" else []
    assert train(micro_model, tmp_path / "runs", "--algo", algo, "steps=2", *extra) == 0
    (run,) = (tmp_path / "runs").iterdir()
    assert run.name.startswith(f"calculator-{algo}-")
    rows = [r for r in read_metrics(run / "metrics.jsonl") if "reward_mean" in r]
    assert [r["step"] for r in rows] == [1, 2]
    assert all("learner/loss" in r and "time/learner_s" in r for r in rows)
    assert not any(k.startswith("tracker/") for r in rows for k in r)  # no tracker outside SPO
    plots = {p.name for p in (run / "plots").iterdir()}
    assert {"reward.png", "kl.png", "entropy.png", "step_time.png"} <= plots
    assert "tracker.png" not in plots and "tracker_values.png" not in plots
    assert yaml.safe_load((run / "config.yaml").read_text())["algo"]["name"] == algo
    lines = (run / "rollouts.jsonl").read_text().splitlines()
    assert len(lines) == 2 * 4 and {"turns", "policy_version", "step"} <= set(json.loads(lines[0]))


def test_two_runs_never_share_a_folder(
    micro_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTRL_CACHE", str(tmp_path / "cache"))
    for _ in range(2):
        assert train(micro_model, tmp_path / "runs", "steps=1") == 0
    names = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert len(names) == 2 and all(re.match(r"calculator-spo-\d{8}-\d{6}", n) for n in names)


BAD = [
    (["optim.lr=nan"], r"optim\.lr: must be a finite number > 0"),
    (["optim.lr=-1"], r"optim\.lr: must be a finite number > 0"),
    (["optim.lr=.inf"], r"optim\.lr: must be a finite number > 0"),
    (["checkpoint_every=0"], r"checkpoint_every: must be an integer >= 1"),
    (["env.max_turns=0"], r"env\.max_turns: must be an integer >= 1"),
    (["rollout.episode_timeout=0"], r"rollout\.episode_timeout: must be None or a positive number"),
    (["rollout.max_new_tokens=0"], r"rollout\.max_new_tokens: must be an integer >= 1"),
    (["rollout.temperature=-1"], r"rollout\.temperature: must be a finite number >= 0"),
    (["env.train_prompts=0"], r"env\.train_prompts: must be an integer >= 1"),
    (["eval.k=0"], r"eval\.k: must be an integer >= 1"),
    (["eval.tasks=-5"], r"eval\.tasks: must be an integer >= 1"),
    (["--env", "agentrl/Nope-v0"], r"env\.id: .*Nope"),
    (["--env", "no_such_module_xyz:agentrl/Nope-v0"], r"env\.id: cannot import 'no_such_module_xyz'"),
    (["--model", "no-such-model"], r"model\.name: unknown model 'no-such-model'"),
    (["--model", "nobody/not-cached-model"], r"model\.name: 'nobody/not-cached-model' is not in the local"),
    (["--backend", "openai"], r"model\.endpoints: the openai backend needs"),
    (["--algo", "grop"], r"algo\.name: unknown algorithm 'grop'; did you mean 'grpo'"),
    (["--algo", "grpo", "rollout.batch_size=12"], r"multiple of algo\.group_size"),
    (["--config", "no-such-file.yaml"], r"no-such-file\.yaml: config file not found"),
    (["model.tool_format=xml"], r"model\.tool_format: must be one of auto, hermes"),
    (
        ["env.train_prompts=64"],
        r"env\.train_prompts \(64\) is smaller than the distinct prompts one batch draws \(128\)",
    ),
]


@pytest.mark.parametrize(("args", "message"), BAD)
def test_user_errors_are_one_line_before_any_work(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as e:
        main(["train", f"run_root={tmp_path / 'runs'}", *args])
    text = str(e.value.code)
    assert e.value.code != 0 and "\n" not in text and re.search(message, text), text
    assert text.startswith("agentrl train: ")
    assert not (tmp_path / "runs").exists()  # no run folder was made


def test_a_model_directory_without_a_tokenizer_is_refused(tmp_path: Path) -> None:
    d = tmp_path / "m"
    d.mkdir()
    (d / "config.json").write_text("{}")
    with pytest.raises(SystemExit, match=r"model\.name: .* has no tokenizer"):
        main(["train", f"run_root={tmp_path / 'runs'}", f"model.name={d}"])


def test_resume_restores_the_saved_config_and_refuses_identity_changes(
    micro_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTRL_CACHE", str(tmp_path / "cache"))
    runs = tmp_path / "runs"
    assert train(micro_model, runs, "name=r", "steps=1", "eval.tasks=3") == 0
    config = runs / "r" / "config.yaml"
    before = config.read_text()
    for args, msg in (
        (["--env", "agentrl/Nope-v0"], r"env\.id"),
        (["--model", "no-such-model"], r"model\.name"),
        (["--algo", "grpo"], r"algo\.name: run r was trained with 'spo'"),
        (["--env", "agentrl/KBSearch-v0"], r"env\.id: run r was trained with"),
    ):
        with pytest.raises(SystemExit, match=msg):
            main(["train", "--resume", f"run_root={runs}", "name=r", *args])
        assert config.read_text() == before  # a failed command never touches the run
    # only what is given changes: the batch size and eval tasks stay the run's own
    assert main(["train", "--resume", f"run_root={runs}", "name=r", "steps=2"]) == 0
    saved = yaml.safe_load(config.read_text())
    assert saved["steps"] == 2 and saved["rollout"]["batch_size"] == 4 and saved["eval"]["tasks"] == 3
    evals = [r for r in read_metrics(runs / "r" / "metrics.jsonl") if "eval/success" in r]
    assert {r["eval/n"] for r in evals} == {3 * 4}  # before and after on the same 3 tasks x k=4
    with pytest.raises(SystemExit, match=r"no such run to resume"):
        main(["train", "--resume", f"run_root={runs}", "name=nope"])
    assert not (runs / "nope").exists()


def test_spo_recipe_preset_loads(tmp_path: Path) -> None:
    import argparse

    from agentrl.cli.train import add_arguments, config_from_args

    p = argparse.ArgumentParser()
    add_arguments(p)
    cfg = config_from_args(p.parse_args(["--config", "spo-recipe", f"run_root={tmp_path}"]))
    a = cfg.algo
    assert (a.init_smoothing, a.adv_std_ddof, a.divergence) == (0.5, 1, "replay")
    assert (a.replay_mask, a.replay_reference, a.replay_first_visit) == ("response", "rescored", "rho_max")


def test_plot_overlays_runs_and_wandb_logs_offline(
    micro_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("AGENTRL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    runs = tmp_path / "runs"
    try:
        assert train(micro_model, runs, "name=a", "steps=1", "log.wandb=true") == 0
    finally:
        wandb.teardown()  # stop wandb's service process, which outlives runs
    assert any((runs / "a" / "wandb").glob("offline-run-*"))  # the offline run is on disk
    assert train(micro_model, runs, "name=b", "steps=1", "--algo", "rloo", "algo.group_size=2") == 0
    out = tmp_path / "cmp"
    assert main(["plot", str(runs / "a"), str(runs / "b"), "--out", str(out)]) == 0
    names = {p.name for p in out.iterdir()}
    assert {"reward.png", "kl.png", "tracker.png"} <= names  # SPO's panel, from run a
    with pytest.raises(SystemExit, match=r"metrics\.jsonl: no such file"):
        main(["plot", str(tmp_path / "nothing")])


def test_eval_of_a_run_uses_the_runs_own_env_and_lengths(
    micro_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from agentrl.cli.eval import run_config

    monkeypatch.setenv("AGENTRL_CACHE", str(tmp_path / "cache"))
    runs = tmp_path / "runs"
    assert train(micro_model, runs, "name=r", "steps=1", "rollout.max_new_tokens=7") == 0
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(runs / "r"), "--tasks", "2"]) == 0
    out = capsys.readouterr().out
    assert "env: agentrl/Calculator-v0 (the run's), max_new_tokens 7" in out
    ckpt = next((runs / "r" / "checkpoints").glob("step_*"))
    assert run_config(ckpt)["env"]["max_turns"] == 2  # found from a checkpoint folder too


def test_eval_of_a_run_with_nothing_overridden_repeats_the_runs_own_evaluation(
    micro_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AGENTRL_CACHE", str(tmp_path / "cache"))
    runs = tmp_path / "runs"
    assert (
        train(micro_model, runs, "name=r", "steps=2", "eval.tasks=3", "eval.k=2", "eval.temperature=0.9") == 0
    )
    after = [r for r in read_metrics(runs / "r" / "metrics.jsonl") if r.get("eval/final")][-1]
    capsys.readouterr()
    out_json = tmp_path / "e.json"
    assert main(["eval", "--checkpoint", str(runs / "r"), "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    assert "the run's own evaluation: env agentrl/Calculator-v0, 3 test tasks × k=2, temperature 0.9" in out
    got = json.loads(out_json.read_text())
    assert got["tasks"] * got["k"] == after["eval/n"] == 6
    assert got["avg_at_k"] == after["eval/success"] and got["pass_at"]["2"] == after["eval/pass@2"]


def test_the_command_exits_2_with_one_line_on_stderr_for_a_user_error() -> None:
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "agentrl.cli", "train", "steps=-1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == "agentrl train: steps: must be an integer >= 0, got -1"
