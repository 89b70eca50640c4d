"""Several learner ranks on CPU (gloo, 2 processes): the sharded update equals one process's update,
and `torchrun -m agentrl.cli train` trains, checkpoints (sharded) and resumes with 2 or 1 ranks.

Tolerances: the ranks sum the same terms in another order (float32), so losses agree to 1e-6,
gradients to 1e-5 relative (1e-7 absolute), the global grad norm and KL to 1e-4 relative, and the
parameter changes of an Adam step to 1e-3 relative (1e-8 absolute).
"""

from __future__ import annotations

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

    from agentrl.distributed import DistContext, full_state_dict, unwrapped, wrap_model
    from agentrl.train_config import LearnerConfig

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        ctx = DistContext(rank, world, rank, "gloo", torch.device("cpu"), dist.group.WORLD)
        out = {}
        for strategy in ("fsdp", "ddp"):
            model = tiny_lm()
            wrapped = wrap_model(model, ctx, LearnerConfig(strategy=strategy))
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
    step and the parameters after the update match one process on the whole batch."""
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


def _torchrun(nproc: int, overrides: list[str], env: dict[str, str], log: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    cmd += ["-m", "agentrl.cli", "train", *overrides]
    with open(log, "ab") as f:
        return subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=600, check=False)
