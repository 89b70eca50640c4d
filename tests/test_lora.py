"""LoRA training on the micro model: only the adapter trains, checkpoints hold only the adapter, a
resume restores it exactly, and `agentrl export --merge` scores exactly as base + adapter."""

from __future__ import annotations

import argparse
import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

pytest.importorskip("peft")

from safetensors.torch import load_file

from agentrl import lora
from agentrl.checkpoint import latest_checkpoint, load_state
from agentrl.cli.train import add_arguments, config_from_args
from agentrl.config import ConfigError
from agentrl.learner import compute_logprobs
from agentrl.models import load_model
from agentrl.runlog import read_metrics
from agentrl.trainer import Trainer
from agentrl.types import Trajectory
from tests.test_trainer import make_micro_model, micro_config

LORA = {"model.lora_rank": 4, "model.lora_alpha": 8}


@pytest.fixture(scope="module")
def micro_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_micro_model(tmp_path_factory.mktemp("micro"))


def _lora_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items() if "lora_" in k}


def _base_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The base weights under their original names (PEFT renames `x.weight` to `x.base_layer.weight`)."""
    return {
        k.replace(".base_layer.", "."): v.detach().clone()
        for k, v in model.state_dict().items()
        if "lora_" not in k
    }


def _trajectories(model_dir: Path, n: int = 3) -> list[Trajectory]:
    rng = np.random.default_rng(0)
    _, tok = load_model(str(model_dir))
    out = []
    for _ in range(n):
        ids = rng.integers(3, len(tok), size=24).tolist()
        out.append(
            Trajectory(
                prompt_id="p",
                token_ids=ids,
                loss_mask=[0] * 8 + [1] * 16,
                logprobs=[0.0] * 24,
            )
        )
    return out


def test_lora_run_trains_the_adapter_only_checkpoints_it_and_resumes_exactly(
    micro_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTRL_CACHE", str(tmp_path / "cache"))
    base_before, _ = load_model(str(micro_model))
    base_state = {k: v.clone() for k, v in base_before.state_dict().items()}
    cfg = micro_config(micro_model, tmp_path / "runs", steps=2, name="lora", **LORA)
    trainer = Trainer(cfg)
    result = trainer.run()
    assert result.steps == 2
    rows = [r for r in read_metrics(tmp_path / "runs" / "lora" / "metrics.jsonl") if "reward_mean" in r]
    assert all(np.isfinite(r["learner/loss"]) for r in rows)
    assert any(r["learner/grad_norm"] > 0 for r in rows)

    # the adapter moved (B starts at zero), the base did not
    trained = _lora_weights(trainer.model)
    assert any(k.endswith("lora_B.default.weight") and v.abs().sum() > 0 for k, v in trained.items())
    base_after = _base_weights(trainer.model)
    assert set(base_after) == set(base_state)
    assert all(torch.equal(base_after[k], base_state[k]) for k in base_state)
    assert trainer.policy.model is trainer.model  # sync regime: the policy runs the adapter in process

    # the checkpoint holds the adapter (+ tokenizer and run state), not the model
    ckpt = latest_checkpoint(tmp_path / "runs" / "lora" / "checkpoints")
    assert ckpt is not None
    files = {p.name for p in ckpt.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "state.pt"} <= files
    assert "model.safetensors" not in files and "config.json" not in files
    saved = load_file(ckpt / "adapter_model.safetensors")
    assert saved and all("lora_" in k for k in saved)
    assert sum(v.numel() for v in saved.values()) < 0.2 * sum(v.numel() for v in base_state.values())
    state = load_state(ckpt)

    # resume: base + the checkpoint's adapter and optimizer state, exactly
    cfg3 = micro_config(micro_model, tmp_path / "runs", steps=3, name="lora", **LORA)
    resumed = Trainer(cfg3, resume=True)
    seen: dict[str, Any] = {}
    original = resumed._train_step

    async def spy(batch: Any) -> dict[str, Any]:
        if not seen:
            seen["lora"] = _lora_weights(resumed.model)
            seen["base"] = _base_weights(resumed.model)
            seen["optimizer"] = copy.deepcopy(resumed.learner.optimizer.state_dict())
        return await original(batch)

    resumed._train_step = spy  # type: ignore[method-assign]
    assert resumed.run().steps == 3
    assert {k: v for k, v in seen["lora"].items()}.keys() == trained.keys()
    assert all(torch.equal(seen["lora"][k], trained[k]) for k in trained)
    assert all(torch.equal(seen["base"][k], base_state[k]) for k in base_state)
    for a, b in zip(
        seen["optimizer"]["state"].values(), state["learner"]["optimizer"]["state"].values(), strict=True
    ):
        assert all(torch.equal(a[k], b[k]) for k in ("exp_avg", "exp_avg_sq"))

    # export: --merge scores as base + adapter; without it, the adapter files alone
    from agentrl.cli.export import export

    trajs = _trajectories(micro_model)
    live = compute_logprobs(resumed.model, trajs, share_prefix=False)
    merged_dir = export(tmp_path / "runs" / "lora", tmp_path / "merged", merge=True)
    merged, _ = load_model(str(merged_dir))
    assert not any("lora_" in k for k in merged.state_dict())
    for a, b in zip(compute_logprobs(merged, trajs), live, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
    adapter_dir = export(tmp_path / "runs" / "lora", tmp_path / "adapter")
    assert lora.is_adapter_dir(adapter_dir) and not (adapter_dir / "state.pt").exists()
    with pytest.raises(ValueError, match="not empty"):
        export(tmp_path / "runs" / "lora", tmp_path / "adapter")

    # `agentrl eval --checkpoint` reads the adapter checkpoint: the base with the adapter folded in
    from agentrl.cli import main
    from agentrl.cli.eval import load_checkpoint_model

    ckpt = latest_checkpoint(tmp_path / "runs" / "lora" / "checkpoints")
    assert ckpt is not None
    folded, _, described = load_checkpoint_model(ckpt, "cpu")
    assert f"LoRA adapter on {micro_model}" in described
    for a, b in zip(compute_logprobs(folded, trajs), live, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
    assert main(["eval", "--checkpoint", str(tmp_path / "runs" / "lora"), "--tasks", "2"]) == 0


def test_async_regime_copies_the_adapter_into_the_policy(
    micro_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTRL_CACHE", str(tmp_path / "cache"))
    cfg = micro_config(
        micro_model, tmp_path / "runs", steps=1, name="async", **LORA, **{"rollout.regime": "async"}
    )
    trainer = Trainer(cfg)
    trainer.run()
    assert trainer.policy.model is not trainer.model
    learner, policy = _lora_weights(trainer.model), _lora_weights(trainer.policy.model)
    assert learner.keys() == policy.keys() and all(torch.equal(learner[k], policy[k]) for k in learner)


def _cli(*argv: str) -> Any:
    p = argparse.ArgumentParser()
    add_arguments(p)
    return config_from_args(p.parse_args(list(argv)))


def test_a_target_that_matches_nothing_is_one_line_before_any_work(micro_model: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    base = [f"model.name={micro_model}", f"run_root={runs}", "model.lora_rank=8"]
    with pytest.raises(ConfigError) as e:
        _cli(*base, "model.lora_target_modules=q_proj,attn_out")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(
        "model.lora_target_modules: no module of the model matches attn_out;"
    )
    assert "q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj" in msg
    assert not runs.exists()
    # a name that matches a module (here only some layers) is accepted; the default too
    assert _cli(*base, "model.lora_target_modules=q_proj,v_proj").model.lora_rank == 8
    assert _cli(*base).model.lora_target_modules == ["all-linear"]
    with pytest.raises(ConfigError, match=r"^model\.lora_rank: the in-process vllm backend"):
        _cli(*base, "--backend", "vllm")


def test_the_build_checks_targets_too(
    micro_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What `check()` cannot see (an embedded model not built yet, a config built in code) is checked
    right after the model loads, before any rollout."""
    monkeypatch.setenv("AGENTRL_CACHE", str(tmp_path / "cache"))
    cfg = micro_config(micro_model, tmp_path / "runs", steps=1, name="bad", **LORA)
    cfg.model.lora_target_modules = ["nope"]
    with pytest.raises(ConfigError, match=r"^model\.lora_target_modules: no module .* matches nope;"):
        Trainer(cfg).run()
    assert not (tmp_path / "runs" / "bad" / "metrics.jsonl").exists()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.lora_rank=-1", r"model\.lora_rank: must be an integer >= 0"),
        ("model.lora_dropout=1", r"model\.lora_dropout: must be in \[0, 1\)"),
        ("model.lora_alpha=0", r"model\.lora_alpha: must be a finite number > 0"),
        (
            "model.lora_target_modules=all-linear,q_proj",
            r"model\.lora_target_modules: all-linear stands alone",
        ),
    ],
)
def test_lora_settings_are_validated(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match="^" + message):
        _cli(override)


def test_resume_cannot_switch_lora_on(
    micro_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTRL_CACHE", str(tmp_path / "cache"))
    Trainer(micro_config(micro_model, tmp_path / "runs", steps=1, name="full")).run()
    with pytest.raises(ConfigError, match=r"^model\.lora_rank: run full was trained with 0"):
        _cli("--resume", "name=full", f"run_root={tmp_path / 'runs'}", "model.lora_rank=4")


def test_dropout_is_active_only_inside_the_context(micro_model: Path) -> None:
    model, _ = load_model(str(micro_model))
    lora.wrap(model, 4, dropout=0.5, target_modules=["q_proj"])
    model.eval()
    drops = [m for n, m in model.named_modules() if "lora_dropout" in n and isinstance(m, torch.nn.Dropout)]
    assert drops and not any(m.training for m in drops)
    with lora.dropout_active(model):
        assert all(m.training for m in drops)
        assert not model.training
    assert not any(m.training for m in drops)
