"""Several learner ranks on CPU (gloo, 2 processes): the sharded update equals one process's update,
and `torchrun -m agentrl.cli train` trains, checkpoints (sharded) and resumes with 2 or 1 ranks.

Tolerances: the ranks sum the same terms in another order (float32), so losses agree to 1e-6,
gradients to 1e-5 relative (1e-7 absolute), the global grad norm and KL to 1e-4 relative, and the
parameter changes of an Adam step to 1e-3 relative (1e-8 absolute).
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tests.test_learner import make_learner, scored_batch, tiny_lm

pytestmark = pytest.mark.integration

OPT = {"lr": 1e-2, "eps": 1.0, "weight_decay": 0.0, "mini_batches": 2, "micro_batch_size": 2}
LOSS = {"kl_reference": "sampling"}
N = 9  # odd shares: one rank runs a zero-weight forward in some mini-batches


def _batch() -> tuple[list[Any], np.ndarray]:
    trajs = scored_batch(tiny_lm(), n=N)
    return trajs, np.linspace(-1, 1, N)


def _recorder(learner: Any, names: dict[int, str]) -> list[dict[str, torch.Tensor]]:
    """The gradients each optimizer step sees, as full tensors by parameter name."""
    seen: list[dict[str, torch.Tensor]] = []

    def hook(opt: torch.optim.Optimizer, *_: Any) -> None:
        out = {}
        for g in opt.param_groups:
            for p in g["params"]:
                grad = p.grad.full_tensor() if hasattr(p.grad, "full_tensor") else p.grad
                out[names[id(p)]] = grad.detach().clone()
        seen.append(out)

    learner.optimizer.register_step_pre_hook(hook)
    return seen


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    from agentrl.distributed import (
        DistContext,
        enable_activation_checkpointing,
        full_state_dict,
        unwrapped,
        wrap_model,
    )
    from agentrl.train_config import LearnerConfig

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        ctx = DistContext(rank, world, rank, "gloo", torch.device("cpu"), dist.group.WORLD)
        out = {}
        for strategy in ("fsdp", "ddp", "fsdp+checkpointing"):
            model = tiny_lm()
            if strategy.endswith("checkpointing"):
                enable_activation_checkpointing(model)
                model.train()  # transformers checkpoints layers in train mode (dropout is 0)
            wrapped = wrap_model(model, ctx, LearnerConfig(strategy=strategy.split("+")[0]))  # type: ignore[arg-type]
            learner = make_learner(wrapped, OPT, LOSS, process_group=dist.group.WORLD)
            names = {id(p): n for n, p in unwrapped(wrapped).named_parameters()}
            grads = _recorder(learner, names)
            trajs, adv = _batch()
            st = learner.update(trajs, adv, shard=True)
            out[strategy] = {
                "stats": st.as_dict(),
                "grads": grads,
                "params": {k: v.clone() for k, v in full_state_dict(wrapped).items()},
            }
        torch.save(out, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_rank_fsdp_and_ddp_updates_equal_one_process(tmp_path: Path) -> None:
    """Each rank trains on its share of every mini-batch; the loss, the gradients of every optimizer
    step and the parameters after the update match one process on the whole batch (FSDP2 with and
    without activation checkpointing, DDP)."""
    import torch.multiprocessing as mp

    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    model = tiny_lm()
    start = dict(model.named_parameters())
    start = {k: v.detach().clone() for k, v in start.items()}
    learner = make_learner(model, OPT, LOSS)
    grads = _recorder(learner, {id(p): n for n, p in model.named_parameters()})
    trajs, adv = _batch()
    ref = learner.update(trajs, adv)
    after = model.state_dict()
    assert ref.optimizer_steps == 2 and len(grads) == 2
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=False)
        for strategy, res in got.items():
            st = res["stats"]
            assert st["loss"] == pytest.approx(ref.loss, abs=1e-6), strategy
            assert st["kl"] == pytest.approx(ref.kl, rel=1e-4), strategy
            assert st["grad_norm"] == pytest.approx(ref.grad_norm, rel=1e-4), strategy
            assert (st["tokens"], st["model_tokens"], st["sequences"]) == (ref.tokens, ref.model_tokens, N)
            assert len(res["grads"]) == 2
            for step, (g_ref, g_got) in enumerate(zip(grads, res["grads"], strict=True)):
                assert set(g_got) == set(g_ref), strategy
                for name in g_ref:
                    torch.testing.assert_close(
                        g_got[name], g_ref[name], atol=1e-7, rtol=1e-5, msg=f"{strategy} step {step} {name}"
                    )
            if rank == 0:  # the gathered full weights live on rank 0
                for name, p0 in start.items():
                    torch.testing.assert_close(
                        res["params"][name] - p0, after[name] - p0, atol=1e-8, rtol=1e-3, msg=name
                    )


# ---- `torchrun -m agentrl.cli train` on the micro model ---------------------------------------------


def _torchrun(
    nproc: int, overrides: list[str], env: dict[str, str], log: Path
) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    cmd += ["-m", "agentrl.cli", "train", *overrides]
    with open(log, "ab") as f:
        return subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=600, check=False)


def _rows(run: Path) -> list[dict[str, Any]]:
    from agentrl.runlog import read_metrics

    return [r for r in read_metrics(run / "metrics.jsonl") if "reward_mean" in r]


def test_two_rank_micro_run_checkpoints_and_resumes_on_two_or_one_ranks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    from agentrl.checkpoint import SHARDED, latest_checkpoint, load_state
    from agentrl.trainer import Trainer
    from tests.test_trainer import MICRO_OVERRIDES, make_micro_model, micro_config

    model = make_micro_model(tmp_path / "micro")
    runs = tmp_path / "runs"
    env = {**os.environ, "AGENTRL_CACHE": str(tmp_path / "cache"), "PYTHONUNBUFFERED": "1"}
    monkeypatch.setenv("AGENTRL_CACHE", env["AGENTRL_CACHE"])
    base = [f"model.name={model}", f"run_root={runs}", *MICRO_OVERRIDES]
    log = tmp_path / "train.log"

    # 2 ranks (FSDP2) through the launcher flag, which re-runs the command under torchrun
    cmd = [
        sys.executable,
        "-m",
        "agentrl.cli",
        "train",
        "--nproc-per-node",
        "2",
        *base,
        "name=two",
        "steps=2",
    ]
    with open(log, "ab") as f:
        proc = subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=600, check=False)
    assert proc.returncode == 0, log.read_text()[-4000:]
    two = _rows(runs / "two")
    assert [r["step"] for r in two] == [1, 2]
    ckpt = latest_checkpoint(runs / "two" / "checkpoints")
    assert ckpt is not None and ckpt.name == "step_000002"
    assert (ckpt / SHARDED / ".metadata").is_file() and (ckpt / "model.safetensors").is_file()
    state = load_state(ckpt)
    assert "optimizer" not in state["learner"] and state["learner"]["total_steps"] == 2

    # the same seed on one process: the first update (same episodes) has the same loss, KL, grad norm
    Trainer(micro_config(model, runs, steps=1, name="one")).run()
    one = _rows(runs / "one")
    for key in ("learner/kl", "learner/grad_norm", "learner/entropy"):
        assert two[0][key] == pytest.approx(one[0][key], rel=1e-4), key
    assert two[0]["learner/loss"] == pytest.approx(one[0]["learner/loss"], abs=1e-6)
    assert two[0]["learner/tokens"] == one[0]["learner/tokens"]

    # one process resumes the 2-rank checkpoint (DCP reshards); its optimizer state is the saved one
    shutil.copytree(runs / "two", runs / "two-on-one")
    trainer = Trainer(micro_config(model, runs, steps=3, name="two-on-one"), resume=True)
    seen: dict[str, Any] = {}
    original = trainer._train_step

    async def spy(batch: Any) -> Any:
        if not seen:
            from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

            state = get_optimizer_state_dict(trainer.learner.model, trainer.learner.optimizer)
            seen["optim"] = copy.deepcopy(state)  # the update changes the tensors in place
            seen["step"] = trainer.step
        return await original(batch)

    trainer._train_step = spy  # type: ignore[method-assign]
    assert trainer.run().steps == 3 and seen["step"] == 2
    saved = _read_dcp(ckpt / SHARDED, tmp_path / "saved.pt")
    for name, s in seen["optim"]["state"].items():
        for k in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(s[k], saved[f"optim.state.{name}.{k}"], atol=0, rtol=0)
        assert float(s["step"]) == 2.0
    assert [r["step"] for r in _rows(runs / "two-on-one")] == [1, 2, 3]

    # 2 ranks resume the 2-rank run, and the 1-process run (its optimizer state goes to the shards)
    for name, steps in (("two", 3), ("one", 2)):
        r = _torchrun(2, [*base, f"name={name}", f"steps={steps}", "--resume"], env, log)
        assert r.returncode == 0, log.read_text()[-4000:]
        assert [row["step"] for row in _rows(runs / name)] == list(range(1, steps + 1))
        assert f"resumed {name} at step {steps - 1}" in log.read_text()
        last = latest_checkpoint(runs / name / "checkpoints")
        assert last is not None and (last / SHARDED / ".metadata").is_file()
        assert load_state(last)["learner"]["total_steps"] == steps


def test_two_rank_lora_run_under_ddp_matches_one_process_and_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    from safetensors.torch import load_file

    from agentrl.checkpoint import SHARDED, latest_checkpoint
    from tests.test_trainer import MICRO_OVERRIDES, make_micro_model

    model = make_micro_model(tmp_path / "micro")
    runs = tmp_path / "runs"
    env = {**os.environ, "AGENTRL_CACHE": str(tmp_path / "cache"), "PYTHONUNBUFFERED": "1"}
    monkeypatch.setenv("AGENTRL_CACHE", env["AGENTRL_CACHE"])
    lora = ["model.lora_rank=4", "learner.strategy=ddp"]
    base = [f"model.name={model}", f"run_root={runs}", *MICRO_OVERRIDES, *lora]
    log = tmp_path / "train.log"

    def cli(nproc: int, *extra: str) -> None:
        launch = ["--nproc-per-node", str(nproc)] if nproc > 1 else []
        cmd = [sys.executable, "-m", "agentrl.cli", "train", *launch, *base, *extra]
        with open(log, "ab") as f:
            proc = subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=600, check=False)
        assert proc.returncode == 0, log.read_text()[-4000:]

    cli(2, "name=two", "steps=2")
    cli(1, "name=one", "steps=1")
    two, one = _rows(runs / "two"), _rows(runs / "one")
    for key in ("learner/kl", "learner/grad_norm", "learner/entropy"):
        assert two[0][key] == pytest.approx(one[0][key], rel=1e-4), key
    assert two[0]["learner/loss"] == pytest.approx(one[0]["learner/loss"], abs=1e-6)
    assert two[0]["learner/tokens"] == one[0]["learner/tokens"]
    ckpt = latest_checkpoint(runs / "two" / "checkpoints")
    assert ckpt is not None and ckpt.name == "step_000002"
    assert (ckpt / "adapter_model.safetensors").is_file() and not (ckpt / "model.safetensors").exists()
    assert (ckpt / SHARDED / ".metadata").is_file()

    # resumed on 2 ranks and on 1 process: one more step each, the adapter keeps training
    shutil.copytree(runs / "two", runs / "two-on-one")
    for name, nproc in (("two", 2), ("two-on-one", 1)):
        cli(nproc, f"name={name}", "steps=3", "--resume")
        assert [r["step"] for r in _rows(runs / name)] == [1, 2, 3]
        assert f"resumed {name} at step 2" in log.read_text()
        last = latest_checkpoint(runs / name / "checkpoints")
        assert last is not None and last.name == "step_000003"
        before, after = (
            load_file(ckpt / "adapter_model.safetensors"),
            load_file(last / "adapter_model.safetensors"),
        )
        assert any(not torch.equal(before[k], after[k]) for k in before)


def _read_dcp(path: Path, out: Path) -> dict[str, torch.Tensor]:
    """A DCP folder's tensors by flat key, read by torch's own converter."""
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    dcp_to_torch_save(path, out)
    flat: dict[str, torch.Tensor] = {}

    def walk(prefix: str, v: Any) -> None:
        if isinstance(v, dict):
            for k, x in v.items():
                walk(f"{prefix}.{k}" if prefix else str(k), x)
        elif isinstance(v, torch.Tensor):
            flat[prefix] = v

    walk("", torch.load(out, weights_only=False))
    return flat


def test_two_machines_rendezvous_and_match_one_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--nnodes 2 --node-rank R --rdzv-endpoint H:P`, one rank per "machine", both on this host:
    the two launches meet, train, and their first update is the one a single process makes."""
    import socket

    from agentrl.trainer import Trainer
    from tests.test_trainer import MICRO_OVERRIDES, make_micro_model, micro_config

    model = make_micro_model(tmp_path / "micro")
    runs = tmp_path / "runs"
    env = {**os.environ, "AGENTRL_CACHE": str(tmp_path / "cache"), "PYTHONUNBUFFERED": "1"}
    monkeypatch.setenv("AGENTRL_CACHE", env["AGENTRL_CACHE"])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = [f"model.name={model}", f"run_root={runs}", *MICRO_OVERRIDES, "name=nodes", "steps=2"]
    procs = []
    for node in (0, 1):
        launch = ["--nproc-per-node", "1", "--nnodes", "2", "--node-rank", str(node)]
        launch += ["--rdzv-endpoint", f"127.0.0.1:{port}"]
        out = open(tmp_path / f"node{node}.log", "wb")  # noqa: SIM115  (closed below)
        cmd = [sys.executable, "-m", "agentrl.cli", "train", *launch, *base]
        procs.append((subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT), out))
    for node, (proc, out) in enumerate(procs):
        try:
            rc = proc.wait(timeout=600)
        finally:
            if proc.poll() is None:
                proc.kill()
            out.close()
        assert rc == 0, (tmp_path / f"node{node}.log").read_text()[-4000:]
    nodes = _rows(runs / "nodes")
    assert [r["step"] for r in nodes] == [1, 2]

    Trainer(micro_config(model, runs, steps=1, name="one")).run()
    one = _rows(runs / "one")
    for key in ("learner/kl", "learner/grad_norm", "learner/entropy"):
        assert nodes[0][key] == pytest.approx(one[0][key], rel=1e-4), key
    assert nodes[0]["learner/loss"] == pytest.approx(one[0]["learner/loss"], abs=1e-6)
