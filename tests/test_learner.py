"""Learner: masking, accumulation, NaN skipping, checkpoint round trips and learning on a tiny LM."""

from __future__ import annotations

import copy
import io
import logging
import math
import pickle
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from agentrl.algo import (
    OdometerDivergence,
    PrioritizedSampler,
    UniformSampler,
    ValueTracker,
    grpo,
    make_divergence,
    spo,
)
from agentrl.learner import Learner, _pad, compute_logprobs
from agentrl.train_config import LossConfig, OptimConfig
from agentrl.types import Trajectory

VOCAB = 32


def make_learner(
    model: torch.nn.Module, opt: dict | None = None, loss: dict | None = None, **kw: object
) -> Learner:
    """A Learner with the settings these tests were written for: lr 1e-6 and one mini-batch of
    micro-batches of 8 unless given (`num_minibatches`, `micro_batch_size`, `epochs` and `scheduler`
    are accepted under their earlier names)."""
    o = {"lr": 1e-6, "mini_batches": 1, "micro_batch_size": 8, **(opt or {})}
    o.pop("scheduler", None)  # "warmup" is implied by warmup_steps > 0
    lc = dict(loss or {})
    for old, new in (
        ("num_minibatches", "mini_batches"),
        ("micro_batch_size", "micro_batch_size"),
        ("epochs", "epochs"),
    ):
        if old in lc:
            o[new] = lc.pop(old)
    return Learner(model, OptimConfig(**o), LossConfig(**lc), **kw)  # type: ignore[arg-type]


TARGET = 7


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny models are overhead-bound: one thread is faster and kinder to a shared machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny_lm(layers: int = 2, seed: int = 0) -> Qwen2ForCausalLM:
    torch.manual_seed(seed)
    cfg = Qwen2Config(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=True,
    )
    return Qwen2ForCausalLM(cfg)


def params(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def assert_same(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor], exact: bool = True) -> None:
    for x, y in zip(a, b, strict=True):
        if exact:
            assert torch.equal(x, y)
        else:
            torch.testing.assert_close(x, y, atol=2e-6, rtol=1e-5)


def scored_batch(model: torch.nn.Module, seed: int = 0, n: int = 6, head: int = 0) -> list[Trajectory]:
    """Random multi-turn-shaped trajectories: prompt, model tokens, an env span, model tokens again;
    with `head`, every trajectory opens with the same `head` tokens (a shared system prompt).

    Sampling log-probs are the model's own, so the first update starts at ratio 1.
    """
    rng = np.random.default_rng(seed)
    common = [int(x) for x in np.random.default_rng(seed + 1000).integers(0, VOCAB, size=head)]
    trajs = []
    for i in range(n):
        p, a, e, b = (int(x) for x in rng.integers(1, 5, size=4))
        ids = common + [int(x) for x in rng.integers(0, VOCAB, size=p + a + e + b)]
        mask = [0] * (head + p) + [1] * a + [0] * e + [1] * b
        trajs.append(Trajectory(prompt_id=f"q{i}", token_ids=ids, loss_mask=mask, logprobs=[0.0] * len(ids)))
    for t, lp in zip(trajs, compute_logprobs(model, trajs), strict=True):
        t.logprobs = [float(v) if m else 0.0 for v, m in zip(lp, t.loss_mask, strict=True)]
    return trajs


def test_compute_logprobs_is_padding_invariant() -> None:
    model = tiny_lm()
    trajs = scored_batch(model)
    together = compute_logprobs(model, trajs, micro_batch_size=8)
    alone = [compute_logprobs(model, [t])[0] for t in trajs]
    for x, y in zip(together, alone, strict=True):
        np.testing.assert_allclose(x, y, atol=1e-5)
        assert x[0] == 0.0
    with torch.no_grad():
        ids = torch.tensor([trajs[0].token_ids])
        ref = torch.log_softmax(model(input_ids=ids).logits[0, :-1], -1)
        ref = ref.gather(-1, ids[0, 1:, None]).squeeze(-1).numpy()
    np.testing.assert_allclose(together[0][1:], ref, atol=1e-5)


def test_scoring_only_sampled_tokens_matches_full_scoring() -> None:
    model = tiny_lm()
    trajs = scored_batch(model, seed=4, head=20)
    full = compute_logprobs(model, trajs)
    for share in (True, False):
        only = compute_logprobs(model, trajs, only_sampled=True, share_prefix=share)
        for t, f, o in zip(trajs, full, only, strict=True):
            m = np.asarray(t.loss_mask, dtype=bool)
            np.testing.assert_allclose(o[m], f[m], atol=1e-5)
            assert not o[~m].any()


def test_first_update_starts_on_policy_and_measures_kl() -> None:
    model = tiny_lm()
    trajs = scored_batch(model)
    learner = make_learner(model, dict(lr=1e-2), dict(micro_batch_size=4))
    before = params(model)
    st = learner.update(trajs, np.linspace(-1, 1, len(trajs)))
    assert st.ratio_mean == pytest.approx(1.0, abs=1e-5)
    assert st.kl_pre == pytest.approx(0.0, abs=1e-6)
    assert st.clip_frac == 0.0
    assert st.kl > 0.0 and math.isfinite(st.grad_norm) and st.entropy > 0.0
    assert st.optimizer_steps == 1 and st.skipped_steps == 0 and st.version == learner.version == 1
    assert st.model_tokens == sum(t.num_model_tokens for t in trajs)
    assert st.tokens == sum(t.num_tokens for t in trajs) and st.tokens_per_s > 0
    assert any(not torch.equal(x, y) for x, y in zip(before, params(model), strict=True))


def test_kl_on_a_subset_of_sequences() -> None:
    trajs = scored_batch(tiny_lm(), n=6)
    adv = np.linspace(-1, 1, 6)
    full = make_learner(tiny_lm(), dict(lr=1e-2)).update(trajs, adv)
    sub = make_learner(tiny_lm(), dict(lr=1e-2), dict(kl_max_sequences=3)).update(trajs, adv)
    assert sub.kl > 0.0 and sub.kl != full.kl  # same update, KL estimated on sequences 0, 2/3, 5
    assert sub.loss == pytest.approx(full.loss)


def test_masked_tokens_never_reach_the_loss() -> None:
    model = tiny_lm()
    trajs = scored_batch(model)
    other = copy.deepcopy(trajs)
    rng = np.random.default_rng(9)
    for t in other:  # rewrite every masked-out position: env/tool token ids stay, their logprobs change
        t.logprobs = [lp if m else float(rng.normal()) for lp, m in zip(t.logprobs, t.loss_mask, strict=True)]
    m1, m2 = tiny_lm(), tiny_lm()
    adv = np.linspace(-1, 1, len(trajs))
    make_learner(m1, dict(lr=1e-2)).update(trajs, adv)
    make_learner(m2, dict(lr=1e-2)).update(other, adv)
    assert_same(params(m1), params(m2))


@pytest.mark.parametrize("aggregation", ["token-mean", "seq-mean"])
def test_gradient_accumulation_matches_one_big_batch(aggregation: str) -> None:
    trajs = scored_batch(tiny_lm(), n=7)
    adv = np.linspace(-1, 1, len(trajs))
    m1, m2 = tiny_lm(), tiny_lm()
    start = params(m1)
    # eps = 1 makes Adam's first step ~ lr·g, so parameter deltas compare gradients (plain Adam's
    # first step is sign-like and would amplify float noise on near-zero gradients).
    opt = dict(lr=1e-2, eps=1.0, weight_decay=0.0)
    s1 = make_learner(m1, opt, dict(micro_batch_size=1, aggregation=aggregation)).update(trajs, adv)
    s2 = make_learner(m2, opt, dict(micro_batch_size=16, aggregation=aggregation)).update(trajs, adv)
    assert s1.loss == pytest.approx(s2.loss, abs=1e-6)
    assert s1.grad_norm == pytest.approx(s2.grad_norm, rel=1e-4)
    for p0, p1, p2 in zip(start, params(m1), params(m2), strict=True):
        torch.testing.assert_close(p1 - p0, p2 - p0, atol=1e-8, rtol=1e-3)  # 1e-8: a few ulps of the weights


def test_selected_logits_equal_the_full_forward() -> None:
    from agentrl.prefix import selected_logits, shares_prefix

    model = tiny_lm()
    trajs = scored_batch(model, seed=4, head=20)
    p = _pad(trajs, np.zeros(len(trajs)), torch.device("cpu"), 0)
    sel = p.loss_mask > 0
    assert shares_prefix(model) and int(sel.any(0).nonzero()[0]) >= 20
    with torch.no_grad():
        full = model(input_ids=p.input_ids, attention_mask=p.attention_mask).logits[:, :-1][sel]
        fast = selected_logits(model, p.input_ids, p.attention_mask, sel)
    torch.testing.assert_close(fast, full, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="select must be"):
        selected_logits(model, p.input_ids, p.attention_mask, sel[:, 1:])


@pytest.mark.parametrize(("aggregation", "entropy_coef"), [("token-mean", 0.0), ("seq-mean", 0.01)])
def test_shared_prefix_update_equals_the_full_forward_update(aggregation: str, entropy_coef: float) -> None:
    trajs = scored_batch(tiny_lm(), seed=4, n=7, head=20)
    adv = np.linspace(-1, 1, len(trajs))
    m1, m2 = tiny_lm(), tiny_lm()
    start = params(m1)
    opt = dict(lr=1e-2, eps=1.0, weight_decay=0.0)  # deltas compare gradients (see above)
    stats = []
    for model, share in ((m1, True), (m2, False)):
        loss = dict(
            micro_batch_size=4, aggregation=aggregation, entropy_coef=entropy_coef, share_prefix=share
        )
        stats.append(make_learner(model, opt, loss).update(trajs, adv))
    fast, full = stats
    for name in ("loss", "kl", "entropy", "ratio_mean"):
        assert getattr(fast, name) == pytest.approx(getattr(full, name), rel=1e-4, abs=1e-7), name
    assert fast.grad_norm == pytest.approx(full.grad_norm, rel=1e-4)
    for p0, p1, p2 in zip(start, params(m1), params(m2), strict=True):
        torch.testing.assert_close(p1 - p0, p2 - p0, atol=1e-8, rtol=1e-3)


def test_minibatches_take_one_step_each_and_clip() -> None:
    model = tiny_lm()
    trajs = scored_batch(model, n=8)
    cfg = dict(num_minibatches=4, micro_batch_size=2, kl_reference="pre_update")
    st = make_learner(model, dict(lr=5e-2), cfg).update(trajs, np.linspace(-2, 2, 8))
    assert st.optimizer_steps == 4
    assert st.clip_frac > 0.0  # later mini-batches see a moved policy at this learning rate
    assert st.kl > 0.0 and st.kl_reference == "pre_update"


def test_non_finite_loss_skips_the_step(caplog: pytest.LogCaptureFixture) -> None:
    model = tiny_lm()
    trajs = scored_batch(model)
    i = trajs[0].loss_mask.index(1)
    trajs[0].logprobs[i] = math.nan
    learner = make_learner(model, dict(lr=1e-2))
    before = params(model)
    with caplog.at_level(logging.WARNING, logger="agentrl.learner"):
        st = learner.update(trajs, np.ones(len(trajs)))
    assert st.skipped_steps == 1 and st.optimizer_steps == 0
    assert learner.total_skipped == 1 and learner.version == 0
    assert_same(before, params(model))
    assert "skipped" in caplog.text


def test_bad_batches_are_rejected() -> None:
    model = tiny_lm()
    trajs = scored_batch(model)
    learner = make_learner(model)
    with pytest.raises(ValueError, match="one advantage per trajectory"):
        learner.update(trajs, [1.0])
    with pytest.raises(ValueError, match="finite"):
        learner.update(trajs, [math.inf] * len(trajs))
    bad = Trajectory(prompt_id="b", token_ids=[1, 2], loss_mask=[1, 1], logprobs=[0.0, 0.0])
    with pytest.raises(ValueError, match="loss_mask\\[0\\]"):
        learner.update([bad], [1.0])
    with pytest.raises(ValueError, match="aggregation"):
        LossConfig(aggregation="sum")  # type: ignore[arg-type]


def test_replay_divergence_rescoring_with_the_learner() -> None:
    model = tiny_lm()
    trajs = scored_batch(model, n=3)
    learner = make_learner(model, dict(lr=1e-2))
    rep = make_divergence("replay", ValueTracker(), score_fn=learner.score)
    rep.remember(trajs)
    ids = [t.prompt_id for t in trajs]
    np.testing.assert_allclose(rep.estimate(ids), 0.0, atol=1e-5)  # same policy: no change
    learner.update(trajs, [1.0, -1.0, 0.5])
    assert np.all(rep.estimate(ids) > 1e-4)


def test_warmup_scheduler() -> None:
    learner = make_learner(tiny_lm(), dict(lr=1e-3, scheduler="warmup", warmup_steps=4))
    trajs = scored_batch(learner.model)
    lrs = [learner.update(trajs, np.linspace(-1, 1, len(trajs))).lr for _ in range(5)]
    np.testing.assert_allclose(lrs, [5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3])


# ---------------------------------------------------------------- a tiny "emit the target token" task


class TargetTask:
    """Prompt [1, 2+p]; the policy emits one token; reward 1 if it is the target token."""

    def __init__(
        self, model: torch.nn.Module, n_prompts: int = 16, target: Callable[[int], int] | None = None
    ):
        self.model = model
        self.prompt_ids = [f"t{p}" for p in range(n_prompts)]
        self.target = target or (lambda p: TARGET)
        self.gen = torch.Generator().manual_seed(1)

    @torch.no_grad()
    def rollout(self, ids: Sequence[str], version: int) -> list[Trajectory]:
        ps = [int(i[1:]) for i in ids]
        lp = torch.log_softmax(self.model(input_ids=torch.tensor([[1, 2 + p] for p in ps])).logits[:, -1], -1)
        acts = torch.multinomial(lp.exp(), 1, generator=self.gen).squeeze(1).tolist()
        return [
            Trajectory(
                prompt_id=f"t{p}",
                token_ids=[1, 2 + p, a],
                loss_mask=[0, 0, 1],
                logprobs=[0.0, 0.0, float(lp[i, a])],
                reward=float(a == self.target(p)),
                policy_version=version,
            )
            for i, (p, a) in enumerate(zip(ps, acts, strict=True))
        ]

    @torch.no_grad()
    def success(self) -> float:
        n = len(self.prompt_ids)
        x = torch.tensor([[1, 2 + p] for p in range(n)])
        pr = torch.softmax(self.model(input_ids=x).logits[:, -1], -1)
        return float(pr[torch.arange(n), torch.tensor([self.target(p) for p in range(n)])].mean())


class SPORun:
    """The whole SPO loop at toy scale: prioritised sampler, tracker with the KL odometer, learner."""

    def __init__(self, seed: int = 0, layers: int = 2, lr: float = 1e-3, loss: dict | None = None):
        self.model = tiny_lm(layers, seed)
        self.task = TargetTask(self.model)
        self.tracker = ValueTracker()
        self.div = OdometerDivergence(self.tracker)
        self.sampler = PrioritizedSampler(self.tracker, self.task.prompt_ids, seed=seed)
        self.learner = make_learner(self.model, dict(lr=lr), loss or dict(micro_batch_size=64))

    def step(self, batch: int = 16) -> float:
        ids = self.sampler.sample(batch)
        trajs = self.task.rollout(ids, self.learner.version)
        r = np.array([t.reward for t in trajs])
        base = self.div.update_tracker(ids, r, [t.policy_version for t in trajs])
        st = self.learner.update(trajs, spo(r, base).advantages)
        if st.optimizer_steps:
            self.div.odometer.record(st.kl, st.version)
        return float(r.mean())

    def state(self) -> bytes:
        buf = io.BytesIO()
        torch.save(
            {
                "learner": self.learner.state_dict(),
                "gen": self.task.gen.get_state(),
                "odometer": self.div.state_dict(),
            },
            buf,
        )
        return pickle.dumps(
            {
                "torch": buf.getvalue(),
                "tracker": self.tracker.state_dict(),
                "sampler": self.sampler.state_dict(),
            }
        )

    def load(self, blob: bytes) -> None:
        d = pickle.loads(blob)
        t = torch.load(io.BytesIO(d["torch"]), weights_only=True)
        self.learner.load_state_dict(t["learner"])
        self.task.gen.set_state(t["gen"])
        self.div.load_state_dict(t["odometer"])
        self.tracker.load_state_dict(d["tracker"])
        self.sampler.load_state_dict(d["sampler"])


def grpo_run(updates: int, layers: int = 2, seed: int = 0) -> tuple[float, float]:
    model = tiny_lm(layers, seed)
    task = TargetTask(model)
    sampler = UniformSampler(task.prompt_ids, seed=seed)
    learner = make_learner(model, dict(lr=1e-3), dict(micro_batch_size=64))
    start = task.success()
    for _ in range(updates):
        ids = [p for p in sampler.sample(4) for _ in range(4)]  # 4 prompts x G = 4
        trajs = task.rollout(ids, learner.version)
        res = grpo([t.reward for t in trajs], ids)
        learner.update(trajs, res.advantages)
    return start, task.success()


def test_spo_learns_to_emit_the_target_token() -> None:
    run = SPORun()
    start = run.task.success()
    for _ in range(60):
        run.step()
    assert start < 0.06
    assert run.task.success() > 0.5
    assert run.div.odometer.total > 0.0
    assert run.tracker.value("t0") > 0.3  # the tracker followed the rising success rate


def test_grpo_learns_to_emit_the_target_token() -> None:
    start, end = grpo_run(60)
    assert start < 0.06 and end > 0.5


def test_checkpoint_round_trip_is_bit_exact() -> None:
    a = SPORun(seed=3, lr=3e-3)
    for _ in range(3):
        a.step()
    blob = a.state()
    for _ in range(3):
        a.step()
    b = SPORun(seed=11, lr=3e-3)  # different init weights, sampler seed and generator state
    b.load(blob)
    for _ in range(3):
        b.step()
    assert_same(params(a.model), params(b.model))
    sa, sb = a.learner.optimizer.state_dict(), b.learner.optimizer.state_dict()
    for k in sa["state"]:
        for name in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(sa["state"][k][name], sb["state"][k][name])
    ta, tb = a.tracker.state_dict(), b.tracker.state_dict()
    assert ta["prompt_ids"] == tb["prompt_ids"]
    for k in ("alpha", "beta", "last_odometer", "last_version", "visits"):
        assert np.array_equal(ta[k], tb[k])
    assert a.sampler.sample(8) == b.sampler.sample(8)
    assert a.div.state_dict() == b.div.state_dict()


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["spo", "grpo"])
def test_learning_on_a_four_layer_model(mode: str) -> None:
    if mode == "spo":
        run = SPORun(layers=4, loss=dict(micro_batch_size=64))
        start = run.task.success()
        for _ in range(300):
            run.step()
        end = run.task.success()
    else:
        start, end = grpo_run(300, layers=4)
    assert start < 0.06
    assert end > 0.95


def _distributed_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        model = tiny_lm()
        trajs = scored_batch(tiny_lm(), n=6)
        adv = np.linspace(-1, 1, len(trajs))
        learner = make_learner(
            model, dict(lr=1e-2, eps=1.0, weight_decay=0.0), process_group=dist.group.WORLD
        )
        st = learner.update(trajs[rank::world], adv[rank::world])
        torch.save({"params": params(model), "loss": st.loss, "kl": st.kl}, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_rank_gloo_update_equals_single_process(tmp_path: Path) -> None:
    """Each rank holds half the batch; global token normalisation makes the result the full-batch one."""
    import torch.multiprocessing as mp

    mp.spawn(_distributed_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    model = tiny_lm()
    start = params(model)
    trajs = scored_batch(tiny_lm(), n=6)
    st = make_learner(model, dict(lr=1e-2, eps=1.0, weight_decay=0.0)).update(
        trajs, np.linspace(-1, 1, len(trajs))
    )
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert got["kl"] == pytest.approx(st.kl, rel=1e-4)
        assert got["loss"] == pytest.approx(st.loss, abs=1e-6)
        for p0, p1, p2 in zip(start, params(model), got["params"], strict=True):
            torch.testing.assert_close(p2 - p0, p1 - p0, atol=1e-8, rtol=1e-3)


def test_activation_checkpointing_takes_the_full_forward() -> None:
    from agentrl.prefix import shares_prefix

    model = tiny_lm()
    assert shares_prefix(model)
    enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
    enable()
    assert not shares_prefix(model)


def test_bf16_autocast_over_fp32_weights_trains_where_bf16_weights_barely_move() -> None:
    """The GPU default: fp32 master weights, forwards computed in bf16 (autocast). Checked on CPU,
    whose autocast also computes in bf16: the weights stay fp32 and every one moves at a small
    learning rate, the loss is the fp32 loss within bf16 error, and bf16 weights (the old GPU
    default) lose most of the same update to rounding."""
    adv = np.linspace(-1, 1, 6)
    ref, bf16, cast = tiny_lm(), tiny_lm().to(torch.bfloat16), tiny_lm()
    trajs = scored_batch(ref)
    moved = {}
    for name, model, kw in (
        ("fp32", ref, {}),
        ("bf16 weights", bf16, {}),
        ("autocast", cast, {"autocast": torch.bfloat16}),
    ):
        before = {k: v.detach().clone() for k, v in model.named_parameters()}
        st = make_learner(model, {"lr": 1e-5}, **kw).update(trajs, adv)
        moved[name] = (
            sum((p != before[k]).sum().item() for k, p in model.named_parameters())
            / sum(p.numel() for p in model.parameters()),
            st.loss,
        )
    assert all(p.dtype == torch.float32 for p in cast.parameters())
    assert moved["autocast"][0] > 0.9 and moved["fp32"][0] > 0.9
    assert moved["bf16 weights"][0] < 0.5
    assert moved["autocast"][1] == pytest.approx(moved["fp32"][1], abs=2e-2)


def test_mixed_precision_auto_is_bf16_compute_on_cuda_only() -> None:
    from agentrl.train_config import LearnerConfig
    from agentrl.trainer import _dtype

    auto = LearnerConfig()
    assert auto.bf16_compute("cuda") and auto.bf16_compute(torch.device("cuda", 0), world=4)
    assert not auto.bf16_compute("cpu")
    assert not LearnerConfig(strategy="ddp").bf16_compute("cuda", world=2)  # DDP keeps fp32 compute
    assert LearnerConfig(strategy="ddp").bf16_compute("cuda", world=1)
    assert not LearnerConfig(mixed_precision="none").bf16_compute("cuda")
    assert LearnerConfig(mixed_precision="bf16").bf16_compute("cpu")  # explicit; refused on CPU by the CLI
    for device in ("cpu", "cuda"):
        assert _dtype("auto", torch.device(device)) is torch.float32  # fp32 master weights everywhere
    assert _dtype("bfloat16", torch.device("cuda")) is torch.bfloat16
