from __future__ import annotations

import asyncio
import logging
import math

import numpy as np
import pytest

from agentrl.envs.latency import LogNormal, Pareto, Uniform
from agentrl.rollout.clock import run_virtual
from agentrl.rollout.presets import get_preset
from agentrl.rollout.scheduler import (
    RolloutScheduler,
    RunnerFailingError,
    SchedulerConfig,
    WatchdogError,
)
from agentrl.rollout.simulated import EpisodeProfile, SeededPromptSampler, SimulatedRunner
from agentrl.types import Status, Trajectory

from .conftest import TinySampler, sleeping_runner

# ---------------------------------------------------------------- config validation


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"mode": "grpo"}, "mode"),
        ({"regime": "later"}, "regime"),
        ({"batch_size": 0}, "batch_size"),
        ({"mode": "group", "batch_size": 24, "group_size": 5}, "multiple of group_size"),
        ({"mode": "group", "group_size": 1}, "group_size"),
        ({"max_concurrency": 0}, "max_concurrency"),
        ({"overprovision": 0.5}, "overprovision"),
        ({"regime": "async", "overprovision": 2.0, "max_concurrency": 4}, "overprovision"),
        ({"regime": "async"}, "launches without bound"),
        ({"max_staleness": -1}, "max_staleness"),
        ({"admission": "eager"}, "admission"),
        ({"regime": "async", "max_staleness": 2, "admission": "none"}, "max_concurrency"),
        ({"stale_policy": "maybe"}, "stale_policy"),
        ({"episode_timeout": 0}, "episode_timeout"),
        ({"mode": "group", "group_deadline": 10.0}, "straggler_policy"),
        ({"mode": "group", "straggler_policy": "drop"}, "group_deadline"),
        ({"group_deadline": 10.0, "straggler_policy": "drop"}, "group mode"),
        ({"mode": "group", "min_group_size": 9}, "min_group_size"),
        ({"max_retries": -1}, "max_retries"),
        ({"watchdog_s": -3}, "watchdog_s"),
    ],
)
def test_config_errors_name_the_field(kwargs: dict, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        SchedulerConfig(**kwargs)


# ---------------------------------------------------------------- helpers


def _collect(sched: RolloutScheduler, n: int, step: float = 0.0, bump: int = 1) -> list:
    async def main() -> list:
        out = []
        async with sched:
            async for b in sched.batches(n):
                sched.check_accounting()
                out.append(b)
                if step:
                    await asyncio.sleep(step)
                sched.set_policy_version(sched.policy_version + bump)
        sched.check_accounting()
        return out

    return run_virtual(main())


def _assert_no_stray_tasks_after(coro_factory) -> None:
    async def wrapper() -> None:
        await coro_factory()
        me = asyncio.current_task()
        assert [t for t in asyncio.all_tasks() if t is not me] == []

    run_virtual(wrapper())


# ---------------------------------------------------------------- basic behaviour


@pytest.mark.timeout(20)
def test_stream_sync_batches_in_finish_order() -> None:
    runner = SimulatedRunner(EpisodeProfile(duration=LogNormal(10.0, 1.0)), seed=3)
    sched = RolloutScheduler(TinySampler(seed=3), runner, SchedulerConfig(batch_size=8, max_concurrency=4))
    batches = _collect(sched, 5)
    for i, b in enumerate(batches):
        assert len(b) == 8 and len(b.groups) == 8
        assert all(t.policy_version == i for t in b.trajectories)
        assert b.metrics.staleness == {0: 8}
        finish = [t.finished_at for t in b.trajectories]
        assert finish == sorted(finish)
        assert b.metrics.capacity == 4 and 0 < b.metrics.slot_utilisation <= 1 + 1e-9
        assert b.metrics.tokens_per_s > 0 and b.metrics.trajectories_per_s > 0
    c = sched.counts
    assert c.consumed == 40 and c.launched == 40 and c.balanced()


@pytest.mark.timeout(20)
def test_group_mode_keeps_groups_whole() -> None:
    runner = SimulatedRunner(EpisodeProfile(duration=Uniform(1.0, 100.0)), seed=1)
    cfg = SchedulerConfig(mode="group", batch_size=16, group_size=4, overprovision=2.0)
    b = _collect(RolloutScheduler(TinySampler(seed=1), runner, cfg), 3)
    for batch in b:
        assert len(batch.groups) == 4 and len(batch) == 16
        for g in batch.groups:
            assert len(g) == 4
            assert len({t.prompt_id for t in g}) == 1 and len({t.group_id for t in g}) == 1
        m = batch.metrics
        assert m.degenerate_fraction is not None and 0 <= m.degenerate_fraction <= 1
        assert 0 <= m.barrier_idle_share <= 1
        assert m.counts.discarded > 0  # the surplus half of each round


# ---------------------------------------------------------------- the paper's setting vs order statistics


def _order_statistic_times(seed: int) -> tuple[float, float]:
    """Batch-assembly times of paper-fig5 computed straight from the sampled durations."""
    preset = get_preset("paper-fig5")
    runner = SimulatedRunner(preset.profile, seed=seed)
    sampler = SeededPromptSampler(preset.n_prompts, seed=seed)
    spo_prompts = sampler.sample(48)
    spo = sorted(runner.draw(p, 0, 0).duration for p in spo_prompts)[23]  # 24th of 48
    sampler = SeededPromptSampler(preset.n_prompts, seed=seed)
    groups = sampler.sample(6)
    grpo = sorted(max(runner.draw(p, 0, k).duration for k in range(8)) for p in groups)[2]  # 3rd of 6
    return spo, grpo


@pytest.mark.timeout(30)
def test_paper_fig5_scheduler_matches_order_statistics() -> None:
    preset = get_preset("paper-fig5")
    from agentrl.simulate import run_arm

    async def main() -> list[tuple[float, float]]:
        out = []
        for seed in range(100):
            spo = await run_arm(preset.arm("spo"), preset.profile, seed=seed, n_prompts=preset.n_prompts)
            grpo = await run_arm(preset.arm("grpo"), preset.profile, seed=seed, n_prompts=preset.n_prompts)
            out.append((spo.assembly_s[0], grpo.assembly_s[0]))
        return out

    sim = run_virtual(main())
    for seed, (spo, grpo) in enumerate(sim):
        ref_spo, ref_grpo = _order_statistic_times(seed)
        # The issue asks for 1%; the virtual clock is exact, so they agree to float precision.
        assert spo == pytest.approx(ref_spo, rel=1e-9)
        assert grpo == pytest.approx(ref_grpo, rel=1e-9)
        assert grpo / spo == pytest.approx(ref_grpo / ref_spo, rel=0.01)


def _expected_order_statistic(cdf, k: int, n: int) -> tuple[float, float]:
    """Mean and median of the k-th smallest of n i.i.d. draws with CDF `cdf`, by integration:
    P(X_(k:n) > x) = P(Binomial(n, F(x)) < k)."""
    from scipy import integrate, optimize, stats

    def survival(x: float) -> float:
        return float(stats.binom.cdf(k - 1, n, cdf(x)))

    mean = integrate.quad(survival, 0.0, 600.0, points=[79, 138, 449, 560], limit=200)[0]
    median = optimize.brentq(lambda x: survival(x) - 0.5, 1.0, 600.0)
    return mean, median


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_paper_fig5_distribution_matches_order_statistics_integrals() -> None:
    """1000 seeds through `simulate()` against the exact order-statistic distribution of the fitted
    mixture (numerical integration, neither sampler nor scheduler involved)."""
    from agentrl.simulate import simulate

    def F(x: float) -> float:  # the fitted paper-fig5 mixture's CDF
        body = min(max((x - 79.0) / 59.0, 0.0), 1.0)
        tail = min(max((x - 449.0) / 111.0, 0.0), 1.0)
        return 0.875 * body + 0.125 * tail

    spo_mean, spo_median = _expected_order_statistic(F, 24, 48)  # 24th of 48 trajectories
    grpo_mean, grpo_median = _expected_order_statistic(lambda x: F(x) ** 8, 3, 6)  # 3rd of 6 groups
    res = simulate(get_preset("paper-fig5"), 1000)
    spo, grpo = res["arms"]["spo"]["time_per_batch"], res["arms"]["grpo"]["time_per_batch"]
    assert spo["mean"] == pytest.approx(spo_mean, rel=0.01)
    assert spo["median"] == pytest.approx(spo_median, rel=0.01)
    assert grpo["median"] == pytest.approx(grpo_median, rel=0.01)
    assert grpo["mean"] == pytest.approx(grpo_mean, rel=0.03)  # bimodal: standard error ~1.5%


# ---------------------------------------------------------------- async regime and staleness


@pytest.mark.timeout(30)
@pytest.mark.parametrize("mode", ["stream", "group"])
def test_async_admission_bounds_staleness_without_dropping(mode: str) -> None:
    runner = SimulatedRunner(EpisodeProfile(duration=Pareto(5.0, 1.2, cap=1000.0)), seed=7)
    cfg = SchedulerConfig(
        mode=mode, batch_size=16, group_size=4, regime="async", max_concurrency=32, max_staleness=2
    )
    sched = RolloutScheduler(TinySampler(seed=7), runner, cfg)
    batches = _collect(sched, 25, step=20.0)
    worst = max(max(b.metrics.staleness) for b in batches)
    assert worst <= 2
    assert sched.counts.dropped_stale == 0
    assert any(max(b.metrics.staleness) > 0 for b in batches)  # it did run ahead of the learner


@pytest.mark.timeout(30)
@pytest.mark.parametrize("policy", ["drop", "keep"])
def test_stale_fallback_when_learner_outruns_admission(policy: str) -> None:
    runner = SimulatedRunner(EpisodeProfile(duration=LogNormal(5.0, 1.5)), seed=2)
    cfg = SchedulerConfig(
        batch_size=8, regime="async", max_concurrency=16, max_staleness=1, stale_policy=policy
    )
    sched = RolloutScheduler(TinySampler(seed=2), runner, cfg)
    batches = _collect(sched, 12, step=1.0, bump=3)  # 3 versions per batch breaks the admission premise
    c = sched.counts
    if policy == "drop":
        assert c.dropped_stale > 0
        assert all(max(b.metrics.staleness) <= 1 for b in batches)
    else:
        assert c.dropped_stale == 0
        stale = [t for b in batches for t in b.trajectories if "stale" in t.info]
        assert stale and all(t.info["stale"] > 1 for t in stale)


@pytest.mark.timeout(30)
def test_without_pacing_the_fallback_drops_slow_prompts() -> None:
    """admission='none' keeps slots full but drops over-stale work; those are the slow episodes."""
    profile = EpisodeProfile(duration=LogNormal(10.0, 1.5))
    res = {}
    for admission in ("pace", "none"):
        cfg = SchedulerConfig(
            batch_size=16,
            regime="async",
            max_concurrency=16,
            max_staleness=1,
            admission=admission,
            watchdog_s=None,
        )
        sched = RolloutScheduler(TinySampler(seed=8), SimulatedRunner(profile, seed=8), cfg)
        batches = _collect(sched, 30, step=5.0)
        assert all(max(b.metrics.staleness) <= 1 for b in batches)
        res[admission] = (sched.counts.dropped_stale, batches[-1].metrics.bias.rank_correlation)
    assert res["pace"][0] == 0
    assert res["none"][0] > 0
    assert res["none"][1] is not None and res["none"][1] < 0


@pytest.mark.timeout(20)
def test_async_stall_is_an_error_not_a_hang() -> None:
    runner = SimulatedRunner(EpisodeProfile(duration=Uniform(1.0, 2.0)), seed=0)
    cfg = SchedulerConfig(batch_size=4, regime="async", max_staleness=0, max_concurrency=8, watchdog_s=60.0)
    sched = RolloutScheduler(TinySampler(), runner, cfg)

    async def main() -> None:
        async with sched:
            async for _ in sched.batches(3):
                pass  # never calls set_policy_version

    with pytest.raises(WatchdogError, match="set_policy_version"):
        run_virtual(main())
    sched.check_accounting()


# ---------------------------------------------------------------- faults


@pytest.mark.timeout(30)
@pytest.mark.parametrize("mode", ["stream", "group"])
@pytest.mark.parametrize("regime", ["sync", "async"])
def test_faults_accounting_balances(mode: str, regime: str) -> None:
    runner = SimulatedRunner(
        EpisodeProfile(duration=LogNormal(10.0, 0.8)), seed=11, failure_rate=0.10, hang_rate=0.05
    )
    extra = {"max_concurrency": 24, "max_staleness": 2} if regime == "async" else {"max_concurrency": 12}
    cfg = SchedulerConfig(
        mode=mode, batch_size=16, group_size=4, regime=regime, episode_timeout=200.0, max_retries=2, **extra
    )
    sched = RolloutScheduler(TinySampler(seed=11), runner, cfg)
    batches = _collect(sched, 20, step=5.0)
    c = sched.counts
    assert len(batches) == 20 and c.consumed == sum(len(b) for b in batches)
    assert c.failed > 0 and c.timed_out > 0
    assert c.balanced() and c.running == 0 and c.buffered == 0
    failures = [t for b in batches for t in b.failures]
    assert all(t.status in (Status.ENV_ERROR, Status.TIMEOUT) for t in failures)
    assert any("SimulatedFailure" in (t.error or "") for t in failures)
    assert any("episode_timeout" in (t.error or "") for t in failures)
    assert all(t.status is Status.OK for b in batches for t in b.trajectories)


@pytest.mark.timeout(20)
def test_cancellation_mid_batch_is_clean(caplog: pytest.LogCaptureFixture) -> None:
    runner = SimulatedRunner(EpisodeProfile(duration=LogNormal(10.0, 1.0)), seed=4)
    cfg = SchedulerConfig(mode="group", batch_size=16, group_size=4, max_concurrency=6)
    sched = RolloutScheduler(TinySampler(seed=4), runner, cfg)

    async def main() -> None:
        async def consume() -> None:
            async for _ in sched.batches():
                sched.set_policy_version(sched.policy_version + 1)

        task = asyncio.create_task(consume())
        await asyncio.sleep(95.0)  # mid-batch: episodes running, some groups half done
        assert sched.counts.running > 0
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await sched.aclose()
        sched.check_accounting()
        c = sched.counts
        assert c.running == 0 and c.buffered == 0 and c.cancelled > 0 and c.balanced()

    with caplog.at_level(logging.WARNING):
        _assert_no_stray_tasks_after(main)
    assert "destroyed" not in caplog.text


@pytest.mark.timeout(20)
def test_loop_shutdown_without_aclose_accounts_and_does_not_warn(caplog: pytest.LogCaptureFixture) -> None:
    runner = SimulatedRunner(EpisodeProfile(duration=Uniform(5.0, 50.0)), seed=4)
    sched = RolloutScheduler(TinySampler(seed=4), runner, SchedulerConfig(batch_size=8))

    async def main() -> None:
        gen = sched.batches()
        await anext(gen)
        sched.set_policy_version(1)
        asyncio.get_running_loop().call_later(3.0, lambda: None)
        t = asyncio.ensure_future(anext(gen))
        await asyncio.sleep(1.0)
        del t  # abandoned: asyncio.Runner cancels it at exit

    with caplog.at_level(logging.WARNING):
        run_virtual(main())
    assert "destroyed" not in caplog.text
    assert sched.counts.balanced()


@pytest.mark.timeout(20)
@pytest.mark.parametrize(
    "kw",
    [
        {"batch_size": 10},
        {"batch_size": 8, "mode": "group", "group_size": 4, "regime": "async", "max_concurrency": 16},
    ],
)
def test_watchdog_lists_stuck_episodes(kw: dict) -> None:
    async def runner(prompt_id: str, version: int) -> Trajectory:
        await asyncio.sleep(1e9 if prompt_id.endswith("7") else 1.0)
        return Trajectory(prompt_id)

    sampler = TinySampler(n=10, seed=0)
    cfg = SchedulerConfig(watchdog_s=300.0, **kw)
    sched = RolloutScheduler(sampler, runner, cfg)

    async def main() -> None:
        async with sched:
            async for _ in sched.batches(1000):  # async: stuck groups pile up until no slot is left
                pass

    with pytest.raises(WatchdogError) as ei:
        run_virtual(main())
    msg = str(ei.value)
    assert "t/0007" in msg and "no episode finished for 300s" in msg
    sched.check_accounting()


@pytest.mark.timeout(20)
def test_runner_that_always_fails_stops_with_a_clear_error() -> None:
    async def runner(prompt_id: str, version: int) -> Trajectory:
        raise ConnectionError("env server down")

    sched = RolloutScheduler(
        TinySampler(), runner, SchedulerConfig(batch_size=4, max_consecutive_failures=20)
    )

    async def main() -> None:
        async with sched:
            async for _ in sched.batches(1):
                pass

    with pytest.raises(RunnerFailingError, match="env server down"):
        run_virtual(main())
    c = sched.counts
    assert c.failed >= 20 and c.balanced()  # episodes already started still end and are counted


@pytest.mark.timeout(20)
def test_bad_runner_return_is_recorded_not_raised() -> None:
    calls = 0

    async def runner(prompt_id: str, version: int) -> Trajectory:
        nonlocal calls
        calls += 1
        mine = calls
        await asyncio.sleep(1)
        return "oops" if mine == 1 else Trajectory(prompt_id)  # type: ignore[return-value]

    b = _collect(RolloutScheduler(TinySampler(), runner, SchedulerConfig(batch_size=4)), 1)[0]
    assert len(b) == 4 and len(b.failures) == 1 and "expected Trajectory" in (b.failures[0].error or "")


# ---------------------------------------------------------------- stragglers


@pytest.mark.timeout(20)
@pytest.mark.parametrize("policy", ["wait", "drop", "partial"])
def test_group_deadline_straggler_policies(policy: str) -> None:
    profile = EpisodeProfile(duration=get_preset("paper-fig5").profile.duration)
    deadline = {} if policy == "wait" else {"group_deadline": 200.0}
    cfg = SchedulerConfig(
        mode="group", batch_size=24, group_size=8, straggler_policy=policy, min_group_size=4, **deadline
    )  # type: ignore[arg-type]
    sched = RolloutScheduler(TinySampler(seed=9), SimulatedRunner(profile, seed=9), cfg)
    batches = _collect(sched, 10)
    for b in batches:
        assert len(b.groups) == 3
        for g in b.groups:
            if policy == "wait":  # whole groups, however slow; the batch waits for the 3rd group
                assert len(g) == 8
            else:
                assert all(t.duration <= 200.0 for t in g)
                assert len(g) == 8 if policy == "drop" else 4 <= len(g) <= 8
        if policy == "wait":
            slowest = max(t.finished_at for t in b.trajectories)
            assert b.metrics.emitted_at == slowest
    c = sched.counts
    if policy == "wait":
        assert c.discarded == 0
        assert any(t.duration > 400 for b in batches for t in b.trajectories)  # stragglers kept
    else:
        assert c.discarded > 0
        assert all(t.duration <= 200.0 for b in batches for t in b.trajectories)
    if policy == "partial":
        assert any(len(g) < 8 for b in batches for g in b.groups)


@pytest.mark.timeout(20)
def test_bias_metric_shows_who_is_starved() -> None:
    preset = get_preset("paper-fig5")
    sched = RolloutScheduler(
        SeededPromptSampler(1000, 0), SimulatedRunner(preset.profile, seed=0), preset.arm("spo").config
    )
    b = _collect(sched, 20)[-1]
    bias = b.metrics.bias
    assert bias.n == 20 * 48
    assert bias.rank_correlation is not None and bias.rank_correlation < -0.5  # slow ones never kept
    assert bias.acceptance_by_quartile[0] == 1.0 and bias.acceptance_by_quartile[-1] < 0.25
    stats = sched.prompt_stats()
    assert sum(s.sampled for s in stats.values()) == 20 * 48
    assert sum(s.reached for s in stats.values()) == 20 * 24
    per_prompt = sched.prompt_bias()  # the same question asked per prompt
    assert per_prompt.n == sum(s.episodes > 0 for s in stats.values())
    assert per_prompt.rank_correlation is not None and per_prompt.rank_correlation < -0.3
    assert per_prompt.acceptance_by_quartile[0] > per_prompt.acceptance_by_quartile[-1]


def test_fast_mixture_sampling_is_bit_identical_to_the_latency_model() -> None:
    from agentrl.envs.latency import Mixture
    from agentrl.rollout.simulated import fast_sampler

    models = [
        get_preset("paper-fig5").profile.duration,
        Mixture((Uniform(1, 2), LogNormal(3.0, 0.5), Pareto(1.0, 2.0)), (0.2, 0.3, 0.5)),
        Mixture.straggler(Mixture.straggler(Uniform(0, 1), Uniform(5, 6), 0.1), Uniform(9, 10), 0.001),
    ]
    for model in models:
        fast = fast_sampler(model)
        a, b = np.random.default_rng(7), np.random.default_rng(7)
        assert [model.sample(a) for _ in range(5000)] == [fast(b) for _ in range(5000)]
        assert a.random() == b.random()  # same generator consumption


# ---------------------------------------------------------------- reproducibility and real time


@pytest.mark.timeout(20)
def test_simulation_is_reproducible() -> None:
    def once() -> list[tuple[str, float, float]]:
        profile = EpisodeProfile(duration=LogNormal(10.0, 1.0), turns=(2, 5))
        cfg = SchedulerConfig(batch_size=8, regime="async", max_concurrency=8, max_staleness=1)
        bs = _collect(
            RolloutScheduler(TinySampler(seed=1), SimulatedRunner(profile, seed=1), cfg), 6, step=3.0
        )
        return [(t.prompt_id, t.finished_at, t.reward) for b in bs for t in b.trajectories]

    assert once() == once()


def test_simulated_draws_do_not_depend_on_order() -> None:
    r1 = SimulatedRunner(EpisodeProfile(duration=LogNormal(10.0, 1.0)), seed=5)
    r2 = SimulatedRunner(EpisodeProfile(duration=LogNormal(10.0, 1.0)), seed=5)
    a = [r1.draw("p/1", 0, k).duration for k in range(3)] + [r1.draw("p/2", 0, 0).duration]
    b = [r2.draw("p/2", 0, 0).duration] + [r2.draw("p/1", 0, k).duration for k in (2, 1, 0)]
    assert a == [b[3], b[2], b[1], b[0]]


def _real_vs_virtual_config() -> tuple[SchedulerConfig, EpisodeProfile]:
    cfg = SchedulerConfig(batch_size=8, max_concurrency=4, regime="sync")
    return cfg, EpisodeProfile(duration=Uniform(0.05, 0.25))


async def _timed_run() -> tuple[float, float]:
    cfg, profile = _real_vs_virtual_config()
    sched = RolloutScheduler(TinySampler(seed=3), SimulatedRunner(profile, seed=3), cfg)
    ms = []
    async with sched:
        async for b in sched.batches(5):
            ms.append(b.metrics)
            sched.set_policy_version(sched.policy_version + 1)
    return float(np.mean([m.assembly_s for m in ms])), sum(m.n_trajectories for m in ms) / sum(
        m.window_s for m in ms
    )


@pytest.mark.timeout(30)
def test_virtual_time_agrees_with_real_time() -> None:
    real_batch, real_tput = asyncio.run(_timed_run())  # ~2 s of real sleeping
    virt_batch, virt_tput = run_virtual(_timed_run())
    assert real_batch > 0.3  # it really slept
    assert virt_batch == pytest.approx(real_batch, rel=0.05)
    assert virt_tput == pytest.approx(real_tput, rel=0.05)
    assert math.isfinite(virt_tput)


def test_zero_latency_episodes_and_sampler_contract() -> None:
    class Short(TinySampler):
        def sample(self, n: int) -> list[str]:
            return super().sample(n)[:-1]

    sched = RolloutScheduler(Short(), sleeping_runner(lambda p, v: 0.0), SchedulerConfig(batch_size=4))

    async def main() -> None:
        async with sched:
            async for _ in sched.batches(1):
                pass

    with pytest.raises(Exception, match=r"sample\(4\) returned 3"):
        run_virtual(main())
    ok = _collect(
        RolloutScheduler(TinySampler(), sleeping_runner(lambda p, v: 0.0), SchedulerConfig(batch_size=4)), 3
    )
    assert [len(b) for b in ok] == [4, 4, 4]
