"""Several learner ranks, the parts that need no second process: the batch split, the world-size and
backend checks (one line, before any work), the torchrun command line, and sharded checkpoints read
back by one process. The 2-process tests are in tests/integration/test_distributed.py."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import torch

from agentrl.checkpoint import load_sharded, save_sharded
from agentrl.cli.train import _torchrun_argv, add_arguments, config_from_args
from agentrl.config import ConfigError, load_config
from agentrl.distributed import check_world, split_balanced
from agentrl.train_config import TrainConfig
from tests.test_learner import make_learner, scored_batch, tiny_lm


@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("n", [0, 1, 5, 8, 13])
def test_split_is_a_partition_with_equal_counts_and_balanced_tokens(n: int, world: int) -> None:
    lengths = [int(x) for x in np.random.default_rng(n * 7 + world).integers(5, 200, size=n)]
    shares = split_balanced(lengths, world)
    assert len(shares) == world and sorted(i for s in shares for i in s) == list(range(n))
    counts = [len(s) for s in shares]
    assert max(counts) - min(counts) <= 1 and all(s == sorted(s) for s in shares)
    tokens = [sum(lengths[i] for i in s) for s in shares]
    if n >= world:  # greedy longest-first: no rank exceeds another by more than one sequence
        assert max(tokens) - min(tokens) <= max(lengths)
    assert split_balanced(lengths, world) == shares  # deterministic: every rank computes the same


def test_split_balances_tokens_not_just_counts() -> None:
    shares = split_balanced([100, 90, 10, 5], 2)
    assert shares == [[0, 3], [1, 2]]


def _parse(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_arguments(p)
    args, extra = p.parse_known_args(list(argv))  # as `agentrl`: overrides may follow flags
    args.overrides += extra
    return args


def test_a_world_size_that_does_not_divide_the_batch_is_one_line() -> None:
    with pytest.raises(
        ConfigError,
        match=r"^rollout\.batch_size \(6\) must be a multiple of the world size × optim\.mini_batches "
        r"\(2 × 2 = 4\): every rank takes an equal share of each mini-batch$",
    ):
        config_from_args(_parse("--nproc-per-node", "2", "rollout.batch_size=6", "optim.mini_batches=2"))
    with pytest.raises(ConfigError, match=r"\(3 × 1 = 3\)"):
        config_from_args(
            _parse("--nproc-per-node", "3", "optim.mini_batches=1", "--nnodes", "1", "rollout.batch_size=8")
        )
    with pytest.raises(ConfigError, match=r"\(4 × 2 = 8\)"):  # 2 machines × 2 ranks
        config_from_args(
            _parse(
                "--nproc-per-node",
                "2",
                "--nnodes",
                "2",
                "--rdzv-endpoint",
                "h:29500",
                "rollout.batch_size=12",
            )
        )
    cfg = config_from_args(_parse("--nproc-per-node", "2", "rollout.batch_size=8"))
    assert cfg.rollout.batch_size == 8


def test_torchrun_env_sets_the_world_size(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "0")
    with pytest.raises(ConfigError, match=r"\(4 × 2 = 8\)"):
        config_from_args(_parse("rollout.batch_size=12"))


def test_backend_and_gpu_options_need_cuda() -> None:
    def cfg(*o: str) -> TrainConfig:
        return load_config(TrainConfig, None, ["rollout.batch_size=8", *o])

    with pytest.raises(
        ConfigError, match=r"^learner\.dist_backend: nccl needs CUDA devices, and this machine"
    ):
        check_world(cfg("learner.dist_backend=nccl"), 2, cuda=False)
    with pytest.raises(ConfigError, match=r"nccl needs CUDA devices \(model\.device is cpu\)"):
        check_world(cfg("learner.dist_backend=nccl", "model.device=cpu"), 2, cuda=True)
    with pytest.raises(ConfigError, match=r"^learner\.mixed_precision: bf16 mixed precision is a GPU option"):
        check_world(cfg("learner.mixed_precision=bf16"), 2, cuda=False)
    with pytest.raises(ConfigError, match=r"^model\.device: cuda:1 pins one GPU"):
        check_world(cfg("model.device=cuda:1"), 2, cuda=True)
    with pytest.raises(
        ConfigError, match=r"^model\.lora_rank: on several learner ranks .* learner\.strategy=ddp$"
    ):
        check_world(cfg("model.lora_rank=8"), 2, cuda=False)  # FSDP2, the default, is not for adapters
    check_world(cfg("model.lora_rank=8", "learner.strategy=ddp"), 2, cuda=False)
    check_world(cfg("learner.dist_backend=nccl", "learner.mixed_precision=bf16"), 2, cuda=True)
    check_world(cfg("learner.dist_backend=nccl", "rollout.batch_size=7"), 1, cuda=False)  # one process
    with pytest.raises(ConfigError, match=r"^learner\.mixed_precision: bf16 mixed precision is a GPU option"):
        check_world(cfg("learner.mixed_precision=bf16"), 1, cuda=False)  # one process too
    check_world(cfg(), 1, cuda=False)  # auto: none on CPU


def test_learner_section_is_validated() -> None:
    with pytest.raises(ConfigError, match=r"^learner\.strategy: 'zero3' is not one of 'fsdp', 'ddp'$"):
        load_config(TrainConfig, None, ["learner.strategy=zero3"])
    with pytest.raises(ConfigError, match=r"^learner\.mixed_precision: needs strategy=fsdp"):
        load_config(TrainConfig, None, ["learner.strategy=ddp", "learner.mixed_precision=bf16"])
    with pytest.raises(ConfigError, match=r"^learner\.dist_timeout_s: must be a finite number > 0"):
        load_config(TrainConfig, None, ["learner.dist_timeout_s=0"])


def test_launcher_flags_are_checked() -> None:
    with pytest.raises(ConfigError, match=r"^--rdzv-endpoint: several machines need node 0's HOST:PORT$"):
        config_from_args(_parse("--nproc-per-node", "2", "--nnodes", "2", "rollout.batch_size=8"))
    with pytest.raises(ConfigError, match=r"^--node-rank: must be in 0\.\.1, got 2$"):
        config_from_args(
            _parse("--nproc-per-node", "1", "--nnodes", "2", "--node-rank", "2", "--rdzv-endpoint", "h:1")
        )
    with pytest.raises(ConfigError, match=r"^--nproc-per-node: must be >= 1, got 0$"):
        config_from_args(_parse("--nproc-per-node", "0"))


def test_the_launcher_reruns_the_command_under_torchrun() -> None:
    args = _parse("--nproc-per-node", "8", "--algo", "grpo", "--resume", "name=r1", "rollout.batch_size=64")
    cfg = config_from_args_unchecked(args)
    argv = _torchrun_argv(args, cfg)
    i = argv.index("torch.distributed.run")
    assert argv[i + 1 : i + 4] == ["--nproc-per-node", "8", "--standalone"]
    assert argv[i + 4 :] == [
        "-m", "agentrl.cli", "train", "--resume", "name=r1", "rollout.batch_size=64", "algo.name=grpo", "name=r1"
    ]  # fmt: skip
    args = _parse(
        "--nproc-per-node", "4", "--nnodes", "2", "--node-rank", "1", "--rdzv-endpoint", "n0:29500", "--config", "c.yaml"
    )  # fmt: skip
    argv = _torchrun_argv(args, TrainConfig(name="x"))
    i = argv.index("torch.distributed.run")
    assert argv[i + 1 : i + 9] == [
        "--nproc-per-node", "4", "--nnodes", "2", "--node-rank", "1", "--rdzv-endpoint", "n0:29500"
    ]  # fmt: skip
    assert argv[-4:] == ["train", "--config", "c.yaml", "name=x"]


def config_from_args_unchecked(args: argparse.Namespace) -> TrainConfig:
    from agentrl.cli.train import _overrides

    return load_config(
        TrainConfig, None, [o for o in _overrides(args) if not o.startswith("name=")] + ["name=r1"]
    )


def test_sharded_checkpoint_round_trip_on_one_process(tmp_path: Path) -> None:
    """`save_sharded`/`load_sharded` without a process group: weights and Adam state come back exactly."""
    torch.set_num_threads(1)
    model = tiny_lm()
    learner = make_learner(model, {"lr": 1e-2})
    trajs = scored_batch(tiny_lm(), n=4)
    learner.update(trajs, np.linspace(-1, 1, 4))
    save_sharded(tmp_path / "dcp", model, learner.optimizer)
    other = tiny_lm(seed=5)
    fresh = make_learner(other, {"lr": 1e-2})
    load_sharded(tmp_path / "dcp", other, fresh.optimizer)
    for a, b in zip(model.parameters(), other.parameters(), strict=True):
        assert torch.equal(a, b)
    sa, sb = learner.optimizer.state_dict(), fresh.optimizer.state_dict()
    for k, v in sa["state"].items():
        for name in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(v[name], sb["state"][k][name])
    # both continue identically
    learner.update(trajs, np.linspace(-1, 1, 4))
    fresh.update(trajs, np.linspace(-1, 1, 4))
    for a, b in zip(model.parameters(), other.parameters(), strict=True):
        assert torch.equal(a, b)
