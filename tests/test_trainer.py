"""The trainer end to end on a micro model (random weights): wiring, checkpoints and exact resume."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from agentrl.checkpoint import latest_checkpoint, load_state
from agentrl.cli.train import config_from_args
from agentrl.config import ConfigError, load_config
from agentrl.runlog import read_metrics
from agentrl.train_config import TrainConfig
from agentrl.trainer import Trainer


def make_micro_model(out: Path) -> Path:
    """A 2-layer random Qwen2 with a tokenizer trained on Calculator-v0 text: seconds to build."""
    import gymnasium

    import agentrl.envs  # noqa: F401
    from agentrl.models import TinyRecipe, tiny_config, train_tokenizer

    env = gymnasium.make("agentrl/Calculator-v0").unwrapped
    texts = []
    for i, tid in enumerate(env.task_ids("train")[:60]):
        _, info = env.reset(options={"task_id": tid})
        texts += [m["content"] for m in info["messages"]]
        texts.append(env.expert_action())
        if i == 0:
            texts.append(json.dumps(info["tools"]))
    tok = train_tokenizer(texts * 2, vocab_size=700)
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    recipe = TinyRecipe(
        hidden_size=64, intermediate_size=128, num_layers=2, num_heads=2, num_kv_heads=1, head_dim=32
    )
    model = AutoModelForCausalLM.from_config(tiny_config(recipe, tok))
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def micro_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_micro_model(tmp_path_factory.mktemp("micro"))


# Seconds-long training on the micro model (shared with the kill -9 integration test).
MICRO_OVERRIDES = [
    "progress=false",
    "env.max_turns=2",
    "env.train_prompts=16",
    "rollout.batch_size=4",
    "rollout.max_concurrency=4",
    "rollout.max_new_tokens=12",
    "rollout.max_tokens=1200",
    "algo.offline_n0=2",
    "algo.offline_prompts=4",
    "eval.tasks=4",
    "optim.lr=1e-3",
    "optim.mini_batches=1",
    "checkpoint_every=1",
]


def micro_config(model_dir: Path, run_root: Path, **top: object) -> TrainConfig:
    overrides = [
        f"model.name={model_dir}",
        f"run_root={run_root}",
        *MICRO_OVERRIDES,
        *(f"{k}={v}" for k, v in top.items()),
    ]
    return load_config(TrainConfig, None, overrides)


def test_spo_train_checkpoint_and_exact_resume(
    micro_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTRL_CACHE", str(tmp_path / "cache"))
    cfg = micro_config(micro_model, tmp_path / "runs", steps=2, name="micro")
    result = Trainer(cfg).run()
    assert result.steps == 2 and result.eval_before is not None and result.eval_after is not None
    run = tmp_path / "runs" / "micro"
    rows = read_metrics(run / "metrics.jsonl")
    train_rows = [r for r in rows if "reward_mean" in r]
    assert [r["step"] for r in train_rows] == [1, 2]
    assert all(np.isfinite(r["learner/loss"]) for r in train_rows)
    assert {"tracker/rho_mean", "tracker/n_eff_mean", "adv/raw_variance", "adv/frac_near_zero_0_02"} <= set(
        train_rows[0]
    )
    # SPO has no groups: no degenerate-group figure that would read ~1.0 for one-sample "groups"
    assert "adv/frac_samples_in_degenerate_groups" not in train_rows[0]
    assert (run / "plots" / "reward.png").is_file() and (run / "summary.json").is_file()
    assert any((run / "tb").iterdir())
    ckpt = latest_checkpoint(run / "checkpoints")
    assert ckpt is not None and ckpt.name == "step_000002"
    state = load_state(ckpt)
    assert (
        state["step"] == 2
        and state["algorithm"]["tracker"]
        and state["sampler"]
        and state["learner"]["optimizer"]
    )
    assert (tmp_path / "cache" / "offline_init").is_dir()  # offline init cached for reuse

    # A second run with the same name refuses to overwrite; --resume continues to step 3.
    with pytest.raises(SystemExit, match="--resume"):
        Trainer(cfg).run()
    cfg3 = micro_config(micro_model, tmp_path / "runs", steps=3, name="micro")
    trainer = Trainer(cfg3, resume=True)
    seen: dict[str, object] = {}
    original = trainer._train_step

    async def spy(batch):  # type: ignore[no-untyped-def]
        if "tracker" not in seen:  # the restored state, before the first resumed update
            seen["tracker"] = copy.deepcopy(trainer.algorithm.tracker.state_dict())
            seen["optimizer"] = copy.deepcopy(trainer.learner.optimizer.state_dict())
            seen["step"] = trainer.step
        return await original(batch)

    trainer._train_step = spy  # type: ignore[method-assign]
    result = trainer.run()
    assert result.steps == 3 and seen["step"] == 2
    _assert_same(seen["tracker"], state["algorithm"]["tracker"])
    _assert_same(seen["optimizer"]["state"], state["learner"]["optimizer"]["state"])
    steps = [r["step"] for r in read_metrics(run / "metrics.jsonl") if "reward_mean" in r]
    assert steps == [1, 2, 3]


def test_first_use_of_an_embedded_model_builds_it_outside_the_event_loop(
    micro_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fresh machine has no cached `tiny`: the trainer builds it, and the build runs its own loop."""
    import asyncio

    import agentrl.models

    def building_model_path(name: str) -> Path:
        assert name == "tiny"
        asyncio.run(asyncio.sleep(0))  # what build_tiny's demonstration collection does
        return micro_model

    monkeypatch.setattr(agentrl.models, "model_path", building_model_path)
    monkeypatch.setenv("AGENTRL_CACHE", str(tmp_path / "cache"))
    cfg = micro_config(micro_model, tmp_path / "runs", steps=1, name="fresh")
    cfg.model.name = "tiny"
    assert Trainer(cfg).run().steps == 1


def test_loss_settings_reach_the_learner(
    micro_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import agentrl.learner
    import agentrl.trainer

    seen, optimizers = [], []

    class Spy(agentrl.learner.Learner):
        def __init__(self, model, optimizer, loss, **kw):  # type: ignore[no-untyped-def]
            seen.append((loss, optimizer))
            super().__init__(model, optimizer, loss, **kw)
            optimizers.append(self.optimizer)

    monkeypatch.setattr(agentrl.trainer, "Learner", Spy)
    monkeypatch.setenv("AGENTRL_CACHE", str(tmp_path / "cache"))
    cfg = micro_config(micro_model, tmp_path / "runs", steps=1, name="ent")
    cfg.loss.entropy_coef, cfg.loss.aggregation, cfg.optim.epochs = -0.05, "seq-mean", 2
    cfg.optim.betas, cfg.optim.eps = (0.8, 0.95), 1e-6
    row = _train_rows(cfg, tmp_path)[0]
    loss, optim = seen[0]
    assert (loss.entropy_coef, loss.aggregation, optim.epochs) == (-0.05, "seq-mean", 2)
    assert row["learner/entropy"] > 0
    group = optimizers[0].param_groups[0]
    assert (group["betas"], group["eps"]) == ((0.8, 0.95), 1e-6)


def test_same_seed_trains_on_the_same_episodes_whether_the_tracker_init_is_cached_or_not(
    micro_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTRL_CACHE", str(tmp_path / "cache"))
    runs = []
    for name in ("first", "second"):  # the first computes the offline init, the second reads it
        cfg = micro_config(micro_model, tmp_path / "runs", steps=2, name=name)
        rows = _train_rows(cfg, tmp_path)
        summary = json.loads((tmp_path / "runs" / name / "summary.json").read_text())
        runs.append(
            (summary["offline_init"]["source"], [(r["tokens/model_mean"], r["learner/loss"]) for r in rows])
        )
    assert [source for source, _ in runs] == ["computed", "cache"]
    assert runs[0][1] == runs[1][1]


def _train_rows(cfg: TrainConfig, tmp_path: Path) -> list[dict]:
    Trainer(cfg).run()
    return [r for r in read_metrics(tmp_path / "runs" / cfg.name / "metrics.jsonl") if "reward_mean" in r]


def test_grpo_groups_and_degenerate_fraction(
    micro_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTRL_CACHE", str(tmp_path / "cache"))
    cfg = micro_config(micro_model, tmp_path / "runs", steps=1, name="g")
    cfg = load_config(
        TrainConfig,
        None,
        [],
        base={**_as_dict(cfg), "algo": {**_as_dict(cfg)["algo"], "name": "grpo", "group_size": 2}},
    )
    Trainer(cfg).run()
    row = next(r for r in read_metrics(tmp_path / "runs" / "g" / "metrics.jsonl") if "reward_mean" in r)
    assert 0.0 <= row["adv/frac_samples_in_degenerate_groups"] <= 1.0


def test_cli_config_errors_are_one_line(tmp_path: Path) -> None:
    import argparse

    from agentrl.cli.train import add_arguments

    p = argparse.ArgumentParser()
    add_arguments(p)
    with pytest.raises(ConfigError, match=r"^rollout\.batchsize: unknown key; did you mean 'batch_size'\?$"):
        config_from_args(p.parse_args(["rollout.batchsize=8"]))
    with pytest.raises(ConfigError, match=r"multiple of algo\.group_size"):
        config_from_args(p.parse_args(["--algo", "grpo", "rollout.batch_size=12"]))
    cfg = config_from_args(p.parse_args(["--algo", "grpo", "--env", "agentrl/KBSearch-v0"]))
    assert re.fullmatch(r"kbsearch-grpo-\d{8}-\d{6}", cfg.name) and cfg.algo.name == "grpo"


def _as_dict(cfg: TrainConfig) -> dict:
    from agentrl.config import to_dict

    return to_dict(cfg)


def _assert_same(a: object, b: object) -> None:
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b)
        for k in a:
            _assert_same(a[k], b[k])
    elif isinstance(a, list | tuple):
        assert len(a) == len(b)  # type: ignore[arg-type]
        for x, y in zip(a, b, strict=True):  # type: ignore[call-overload]
            _assert_same(x, y)
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b)  # type: ignore[arg-type]
    elif isinstance(a, np.ndarray):
        assert np.array_equal(a, b)  # type: ignore[arg-type]
    else:
        assert a == b


def test_evaluate_checkpoint_repeats_the_runs_own_evaluation(
    micro_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTRL_CACHE", str(tmp_path / "cache"))
    cfg = micro_config(
        micro_model,
        tmp_path / "runs",
        steps=2,
        name="ev",
        **{"algo.name": "grpo", "algo.group_size": 2, "eval.k": 2},
    )
    result = Trainer(cfg).run()
    ckpts = tmp_path / "runs" / "ev" / "checkpoints"
    again = Trainer(cfg).evaluate_checkpoint(ckpts / "step_000002")
    assert result.eval_after is not None
    assert (again.avg_at_k, again.pass_at, again.maj_at) == (
        result.eval_after.avg_at_k,
        result.eval_after.pass_at,
        result.eval_after.maj_at,
    )
    mid = Trainer(cfg).evaluate_checkpoint(ckpts / "step_000001")
    assert mid.tasks == 4 and mid.k == 2
    with pytest.raises(FileNotFoundError, match="not a checkpoint"):
        Trainer(cfg).evaluate_checkpoint(tmp_path)
