from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from agentrl.config import ConfigError, from_dict, load_config, parse_override, save_config


@dataclass
class Inner:
    name: Literal["spo", "grpo"] = "spo"
    lr: float = 1e-6
    layers: list[int] = field(default_factory=lambda: [1, 2])


@dataclass
class Outer:
    steps: int = 10
    flag: bool = False
    tag: str | None = None
    algo: Inner = field(default_factory=Inner)

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise ValueError("steps must be >= 0")


def test_defaults_file_then_overrides(tmp_path) -> None:
    f = tmp_path / "c.toml"
    f.write_text('steps = 5\n[algo]\nname = "grpo"\n')
    cfg = load_config(Outer, f, ["algo.lr=3e-4", "flag=true", "algo.layers=[4,5]", "tag=run1"])
    assert cfg == Outer(steps=5, flag=True, tag="run1", algo=Inner("grpo", 3e-4, [4, 5]))


def test_yaml_and_round_trip(tmp_path) -> None:
    cfg = Outer(steps=3, algo=Inner(lr=0.5))
    save_config(cfg, tmp_path / "c.yaml")
    assert load_config(Outer, tmp_path / "c.yaml") == cfg


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["algo.nme=grpo"], "algo.nme: unknown key; did you mean 'name'?"),
        (["algo.name=ppo"], "algo.name: 'ppo' is not one of 'spo', 'grpo'"),
        (["steps=1.5"], "steps: expected an integer, got 1.5"),
        (["flag=maybe"], "flag: expected true or false, got 'maybe'"),
        (["algo.lr=fast"], "algo.lr: expected a number, got 'fast'"),
        (["steps=-1"], "steps must be >= 0"),
        (["steps"], "must look like key.sub=value"),
        (["steps.x=1"], "steps: expected an integer"),
    ],
)
def test_errors_are_one_line_and_name_the_key(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(Outer, None, overrides)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_missing_and_bad_files(tmp_path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(Outer, tmp_path / "nope.yaml")
    (tmp_path / "bad.toml").write_text("steps = [")
    with pytest.raises(ConfigError, match="cannot parse"):
        load_config(Outer, tmp_path / "bad.toml")


def test_parse_override_reads_yaml_values() -> None:
    assert parse_override("a.b=3") == ("a.b", 3)
    assert parse_override("a=hello world") == ("a", "hello world")
    assert from_dict(Outer, {"algo": {"layers": "7,8"}}).algo.layers == [7, 8]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.micro_batch_size=0", "optim.micro_batch_size: must be an integer >= 1, got 0"),
        ("optim.mini_batches=0", "optim.mini_batches: must be an integer >= 1, got 0"),
        ("model.prefix_cache_mb=-1", "model.prefix_cache_mb: must be a finite number >= 0, got -1.0"),
        ("optim.betas=0.9,1.0", "optim.betas: must be two numbers in [0, 1), got [0.9, 1.0]"),
        ("optim.betas=0.9", "optim.betas: expected a list, got 0.9"),
        ("optim.betas=0.9,0.9,0.9", "optim.betas: must be two numbers in [0, 1), got [0.9, 0.9, 0.9]"),
        ("optim.eps=0", "optim.eps: must be a finite number > 0, got 0.0"),
    ],
)
def test_train_config_rejects_bad_learner_and_cache_settings(override: str, message: str) -> None:
    from agentrl.train_config import TrainConfig

    with pytest.raises(ConfigError) as e:
        load_config(TrainConfig, None, [override])
    assert message in str(e.value) and "\n" not in str(e.value)
