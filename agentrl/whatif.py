"""What-if from a real run: replay a finished run's measured episodes against a fitted inference server.

`read_run(run_dir)` reads what the trainer records in a run directory:

- `config.yaml`: the run's `TrainConfig` (algorithm, batch and group size, slots, regime, staleness);
- `rollouts.jsonl`: one row per consumed trajectory, with `started_at`, `finished_at` and per turn
  `gen_at` (when the request was sent), `gen_s`, `tool_s`, `n_model_tokens`, `tool_calls` and
  `tool_wait_s` (the part of `tool_s` a call spent queued behind its tool's concurrency cap);
- `metrics.jsonl`: one row per step, with `time/step_s`, `time/learner_s`, `time/sync_s`,
  `rollout/assembly_s` and the measured `rollout/trajectories_per_s` and `rollout/slot_utilisation`.

Generation is a shared server, not a per-episode delay: the HF backend batches concurrent
requests in the trainer process and vLLM batches them continuously, so a turn's generation time
depends on how many other requests were in flight. Replaying each episode's measured wall time in
independent slots therefore mispredicts a run badly (a round of 128 lock-stepped episodes takes
about as long as one of them, but 128 independent draws hit the slowest rounds' episodes). So
`fit_server` fits a processor-sharing server to the run's own turns: a request of `n` tokens
takes `c + n * (a + b * k)` seconds when `k` requests are in flight on average, `c` covering the
request's fixed cost (prefill, HTTP, tokenising), `a + b * k` the time of one decode step of a
batch of `k`. What the fit leaves unexplained per step (another job on the same cores, a cold
cache) is kept as that step's speed factor, and what is left of each turn (its own noise) as
that turn's scale; both are replayed with the turn.

`what_if(timings)` replays the run's episodes (turn token counts, tool seconds and the time
between turns, as measured, so the correlation within an episode is kept) through that server on
the real scheduler in virtual time, with the learner's measured time per step (everything in a
step that is not waiting for the batch: update, weight sync, logging). It first re-predicts the
run's own throughput, then answers what-ifs: the other algorithm, twice the slots, twice the
inference servers (two replicas of the fitted server, requests to the less loaded one) and
another staleness bound.

A tool with a concurrency cap (the Python sandbox runs at most a few programs at once) is a shared
server too: when the run recorded calls queueing behind it, the replay sends each tool call's own
run time (`tool_s - tool_wait_s`) through a queue of that many places, the cap read off the run
(`tool_capacity`), so a what-if with more slots queues more, as the real tool would.
"""

from __future__ import annotations

import asyncio
import heapq
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agentrl.envs.latency import Empirical
from agentrl.rollout.presets import Arm, Preset
from agentrl.rollout.scheduler import SchedulerConfig
from agentrl.rollout.simulated import EpisodeProfile
from agentrl.types import Trajectory, Turn


@dataclass(frozen=True)
class EpisodeRecord:
    """One consumed trajectory as measured: per turn (model tokens, generation s, tool s)."""

    step: int
    started_at: float
    finished_at: float
    reward: float
    tokens: tuple[int, ...]
    gen_s: tuple[float, ...]
    tool_s: tuple[float, ...]
    gen_at: tuple[float, ...]  # when each turn's request was sent (reconstructed for older runs)
    tool_calls: tuple[int, ...] = ()  # per turn (empty: not recorded)
    tool_wait_s: tuple[
        float, ...
    ] = ()  # per turn, of tool_s: queued behind the tool's cap (empty: not recorded)

    @property
    def duration(self) -> float:
        return max(self.finished_at - self.started_at, sum(self.gen_s) + sum(self.tool_s))

    @property
    def between_s(self) -> float:
        """Seconds of the episode in neither generation nor tools (tokenising, templates, the env)."""
        return max(0.0, self.duration - sum(self.gen_s) - sum(self.tool_s))


@dataclass(frozen=True)
class RunTimings:
    """A finished run's measured timings."""

    run_dir: Path
    algo: str  # spo | grpo | no_baseline
    batch_size: int
    group_size: int
    max_concurrency: int
    regime: str
    max_staleness: int
    overprovision: float
    episodes: tuple[EpisodeRecord, ...]
    learner_s: tuple[float, ...]  # per step: learner update + weight sync
    step_s: tuple[float, ...]  # per step, measured
    assembly_s: tuple[float, ...]  # per step: how long the learner waited for the batch
    trajectories_per_s: tuple[float, ...]  # per step, measured by the scheduler
    slot_utilisation: tuple[float, ...]
    queue_wait_mean: tuple[float, ...]
    trajectories_per_step: tuple[int, ...]

    @property
    def episode_s(self) -> tuple[float, ...]:
        return tuple(e.duration for e in self.episodes)

    @property
    def gen_s(self) -> tuple[float, ...]:
        return tuple(sum(e.gen_s) for e in self.episodes)

    @property
    def learner_side_s(self) -> tuple[float, ...]:
        """Per step, what is not waiting for the batch: update, sync, logging, checkpoints."""
        if len(self.assembly_s) == len(self.step_s):
            return tuple(
                max(s - a, x) for s, a, x in zip(self.step_s, self.assembly_s, self.learner_s, strict=True)
            )
        return self.learner_s

    def scheduler_config(self, **changes: Any) -> SchedulerConfig:
        kw: dict[str, Any] = {
            "mode": "group" if self.algo == "grpo" else "stream",
            "batch_size": self.batch_size,
            "group_size": self.group_size,
            "max_concurrency": self.max_concurrency,
            "regime": self.regime,
            "overprovision": self.overprovision if self.regime == "sync" else 1.0,
            "max_staleness": self.max_staleness if self.regime == "async" else None,
            "watchdog_s": None,
        }
        kw.update(changes)
        return SchedulerConfig(**kw)


def _num(row: dict[str, Any], key: str, where: str) -> float:
    if key not in row:
        raise ValueError(f"{where}: field {key!r} missing")
    v = row[key]
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise ValueError(f"{where}: field {key!r} is not a number: {v!r}")
    return float(v)


def _read_jsonl(path: Path) -> list[tuple[int, dict[str, Any]]]:
    rows = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            raise ValueError(f"{path}:{lineno}: not a JSON record") from None
        if not isinstance(rec, dict):
            raise ValueError(f"{path}:{lineno}: not a JSON object")
        rows.append((lineno, rec))
    return rows


def _episode(rec: dict[str, Any], where: str) -> EpisodeRecord:
    t0, t1 = _num(rec, "started_at", where), _num(rec, "finished_at", where)
    if t1 < t0:
        raise ValueError(f"{where}: field 'finished_at' is before 'started_at'")
    ts = rec.get("turns")
    if not isinstance(ts, list) or not ts:
        raise ValueError(f"{where}: field 'turns' missing or empty")
    tokens, gen, tool, at, calls, waits = [], [], [], [], [], []
    clock = t0
    for i, t in enumerate(ts):
        w = f"{where}: turns[{i}]"
        if not isinstance(t, dict):
            raise ValueError(f"{w} is not an object")
        gi, xi = _num(t, "gen_s", w), _num(t, "tool_s", w)
        if gi < 0 or xi < 0:
            raise ValueError(f"{w}: durations must be >= 0, got gen_s={gi}, tool_s={xi}")
        n = t.get("n_model_tokens", 1)
        if isinstance(n, bool) or not isinstance(n, int | float) or n < 0:
            raise ValueError(f"{w}: field 'n_model_tokens' is not a count: {n!r}")
        # runs recorded before `gen_at` existed: the turns follow each other from the start
        a = _num(t, "gen_at", w) if "gen_at" in t else clock
        c = t.get("tool_calls", 0)
        if isinstance(c, bool) or not isinstance(c, int | float) or c < 0:
            raise ValueError(f"{w}: field 'tool_calls' is not a count: {c!r}")
        wi = _num(t, "tool_wait_s", w) if "tool_wait_s" in t else 0.0
        if wi < 0:
            raise ValueError(f"{w}: field 'tool_wait_s' must be >= 0, got {wi}")
        tokens.append(int(n))
        gen.append(gi)
        tool.append(xi)
        at.append(a)
        calls.append(int(c))
        waits.append(min(wi, xi))
        clock = a + gi + xi
    return EpisodeRecord(
        step=int(_num(rec, "step", where)),
        started_at=t0,
        finished_at=t1,
        reward=float(rec["reward"]) if isinstance(rec.get("reward"), int | float) else 0.0,
        tokens=tuple(tokens),
        gen_s=tuple(gen),
        tool_s=tuple(tool),
        gen_at=tuple(at),
        tool_calls=tuple(calls),
        tool_wait_s=tuple(waits),
    )


def read_run(run_dir: str | Path) -> RunTimings:
    """A run directory's timings; every problem is a one-line `ValueError` naming the file and row or field."""
    from agentrl.config import load_config
    from agentrl.runlog import read_metrics
    from agentrl.train_config import TrainConfig

    d = Path(run_dir)
    if not d.is_dir():
        raise ValueError(f"{d}: not a run directory")
    cfg_path = d / "config.yaml"
    if not cfg_path.is_file():
        raise ValueError(f"{cfg_path}: not found; --from-run needs the run's config")
    cfg = load_config(TrainConfig, cfg_path)
    ro = d / "rollouts.jsonl"
    if not ro.is_file():
        raise ValueError(f"{ro}: not found; the run recorded no per-trajectory timings")
    episodes = [_episode(rec, f"{ro}:{lineno}") for lineno, rec in _read_jsonl(ro)]
    if not episodes:
        raise ValueError(f"{ro}: empty; the run recorded no per-trajectory timings")
    per_step: dict[int, int] = {}
    for e in episodes:
        per_step[e.step] = per_step.get(e.step, 0) + 1
    mp = d / "metrics.jsonl"
    if not mp.is_file():
        raise ValueError(f"{mp}: not found; --from-run needs the per-step timings")
    rows = [r for r in read_metrics(mp) if "time/step_s" in r]
    if not rows:
        raise ValueError(f"{mp}: no step timings (no row has 'time/step_s')")
    learner, step_s, asm, tps, util, qw = [], [], [], [], [], []
    for i, r in enumerate(rows):
        where = f"{mp}: step row {i + 1}"
        step_s.append(_num(r, "time/step_s", where))
        learner.append(_num(r, "time/learner_s", where) + float(r.get("time/sync_s") or 0.0))
        for key, out in (
            ("rollout/assembly_s", asm),
            ("rollout/trajectories_per_s", tps),
            ("rollout/slot_utilisation", util),
            ("rollout/queue_wait_mean", qw),
        ):
            if isinstance(r.get(key), int | float):
                out.append(float(r[key]))
    ro_cfg = cfg.rollout
    return RunTimings(
        run_dir=d,
        algo=cfg.algo.name,
        batch_size=ro_cfg.batch_size,
        group_size=cfg.algo.group_size,
        max_concurrency=ro_cfg.max_concurrency,
        regime=ro_cfg.regime,
        max_staleness=ro_cfg.max_staleness,
        overprovision=ro_cfg.overprovision,
        episodes=tuple(episodes),
        learner_s=tuple(learner),
        step_s=tuple(step_s),
        assembly_s=tuple(asm),
        trajectories_per_s=tuple(tps),
        slot_utilisation=tuple(util),
        queue_wait_mean=tuple(qw),
        trajectories_per_step=tuple(per_step[k] for k in sorted(per_step)),
    )


def tool_capacity(t: RunTimings) -> int | None:
    """How many tool calls the run's tools served at once, read off the turns that queued for them:
    the time-weighted median number of calls running while some call waited (None: no call waited,
    so the tool times are replayed as measured)."""
    runs, waits = [], []
    for e in t.episodes:
        for a, g, x, c, w in zip(e.gen_at, e.gen_s, e.tool_s, e.tool_calls, e.tool_wait_s, strict=False):
            if c <= 0:
                continue
            s0 = a + g  # the env step starts when the generation is back
            runs.append((s0 + w, s0 + x))
            if w > 1e-3:
                waits.append((s0, s0 + w))
    if not waits:
        return None
    edges = np.unique(np.array([x for iv in runs + waits for x in iv]))
    mids = (edges[:-1] + edges[1:]) / 2
    running = np.zeros(mids.size)
    waiting = np.zeros(mids.size, bool)
    for s0, s1 in runs:
        running += (mids >= s0) & (mids < s1)
    for s0, s1 in waits:
        waiting |= (mids >= s0) & (mids < s1)
    dt = np.diff(edges)[waiting]
    if dt.sum() <= 0:
        return None
    order = np.argsort(running[waiting])
    cum = np.cumsum(dt[order])
    cap = float(running[waiting][order][np.searchsorted(cum, cum[-1] / 2)])
    return max(1, round(cap))


# ---- the inference server: fitted from the run, replayed in virtual time --------------------------


@dataclass(frozen=True)
class ServerFit:
    """A request of `n` tokens with `k` in flight takes
    `request_s + request_per_req_s * k + n * (token_s + token_per_req_s * k)`."""

    request_s: float
    request_per_req_s: float
    token_s: float
    token_per_req_s: float
    step_speed: tuple[float, ...]  # per step (steps 2+): measured / fitted generation seconds
    r2: float  # of the fit on the speed-corrected turns
    turn_scale: tuple[float, ...]  # per recorded turn (episodes in order): measured / (fitted x step speed)
    mean_in_flight: float
    turns: int

    def service_s(self, n: int, k: float) -> float:
        return self.request_s + self.request_per_req_s * k + n * (self.token_s + self.token_per_req_s * k)

    def as_dict(self) -> dict[str, Any]:
        sp = np.asarray(self.step_speed)
        return {
            "request_s": self.request_s,
            "request_per_req_s": self.request_per_req_s,
            "token_s": self.token_s,
            "token_per_req_s": self.token_per_req_s,
            "r2": self.r2,
            "mean_in_flight": self.mean_in_flight,
            "turns": self.turns,
            "step_speed": {"median": float(np.median(sp)), "mean": float(sp.mean()), "max": float(sp.max())},
        }


def in_flight(starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """For each interval, the time-averaged number of intervals (itself included) open during it."""
    starts, ends = np.asarray(starts, float), np.asarray(ends, float)
    edges = np.unique(np.concatenate([starts, ends]))
    if edges.size < 2:
        return np.ones_like(starts)
    delta = np.zeros(edges.size)
    np.add.at(delta, np.searchsorted(edges, starts), 1.0)
    np.add.at(delta, np.searchsorted(edges, ends), -1.0)
    count = np.cumsum(delta)[:-1]  # on [edges[j], edges[j+1])
    area = np.concatenate([[0.0], np.cumsum(count * np.diff(edges))])
    a, b = np.interp(starts, edges, area), np.interp(ends, edges, area)
    span = ends - starts
    return np.where(span > 0, (b - a) / np.where(span > 0, span, 1.0), np.interp(starts, edges[:-1], count))


def fit_server(t: RunTimings) -> ServerFit:
    """Fit the processor-sharing server to the run's turns (steps 2+ when there are several)."""
    from scipy.optimize import nnls

    eps = t.episodes
    steps = sorted({e.step for e in eps})
    keep = set(steps[1:]) if len(steps) > 1 else set(steps)
    n = np.array([x for e in eps for x in e.tokens], float)
    g = np.array([x for e in eps for x in e.gen_s], float)
    s0 = np.array([x for e in eps for x in e.gen_at], float)
    step = np.array([e.step for e in eps for _ in e.tokens])
    k = in_flight(s0, s0 + g)
    use = np.isin(step, list(keep))
    X = np.stack([np.ones_like(n), k, n, n * k], axis=1)
    factor = np.ones_like(g)
    coef = np.zeros(4)
    speeds: dict[int, float] = {}
    for _ in range(3):  # fit on speed-corrected turns, then re-estimate each step's speed
        coef, _ = nnls(X[use], (g / factor)[use])
        pred = X @ coef
        if not np.any(pred > 0):
            coef = np.array([float(np.mean(g[use])), 0.0, 0.0, 0.0])
            pred = X @ coef
        # every step's speed (step 1's too: its turns' own scales are taken against it)
        speeds = {int(s): float(g[step == s].sum() / max(pred[step == s].sum(), 1e-12)) for s in steps}
        factor = np.array([speeds.get(int(s), 1.0) for s in step])
    pred = X @ coef
    scale = np.where(pred > 0, g / np.maximum(factor * pred, 1e-12), 1.0)
    y = (g / factor)[use]
    resid = y - (X @ coef)[use]
    r2 = 1.0 - float(resid @ resid) / max(float(((y - y.mean()) ** 2).sum()), 1e-12)
    return ServerFit(
        request_s=float(coef[0]),
        request_per_req_s=float(coef[1]),
        token_s=float(coef[2]),
        token_per_req_s=float(coef[3]),
        step_speed=tuple(speeds[s] for s in sorted(keep)),
        r2=r2,
        turn_scale=tuple(np.clip(scale, 0.0, 50.0).tolist()),
        mean_in_flight=float(np.average(k[use], weights=g[use])) if g[use].sum() > 0 else 1.0,
        turns=int(use.sum()),
    )


class GenerationServer:
    """A shared inference server in loop time: requests in flight decode together, one token each
    per decode step of `token_s + token_per_req_s * k` seconds (`k` in flight, those in their fixed
    part included), after a fixed `request_s + request_per_req_s * k`; `replicas` independent copies, each request to the least loaded one; `speed`
    scales every duration (1 = the fitted server)."""

    def __init__(self, fit: ServerFit, replicas: int = 1) -> None:
        self.fit = fit
        self.speed = 1.0
        self._replicas = [_Replica(self) for _ in range(max(1, replicas))]

    async def generate(self, n_tokens: int, scale: float = 1.0) -> None:
        """One request of `n_tokens`; `scale` multiplies its work (a replayed turn's own residual)."""
        rep = min(self._replicas, key=lambda r: len(r.heap) + r.waiting)
        f = self.fit
        fixed = (f.request_s + f.request_per_req_s * (len(rep.heap) + rep.waiting + 1)) * self.speed * scale
        loop = asyncio.get_running_loop()
        rep.enter(loop, 1)  # a request in its fixed part counts as in flight, as the fit counted it
        try:
            if fixed > 0:
                await asyncio.sleep(fixed)
        finally:
            rep.enter(loop, -1)
        if n_tokens > 0 and scale > 0 and f.token_s + f.token_per_req_s > 0:
            await rep.serve(n_tokens * scale)


class _Replica:
    def __init__(self, server: GenerationServer) -> None:
        self.server = server
        self.heap: list[tuple[float, int, asyncio.Future[None]]] = []
        self.served = 0.0  # tokens each in-flight request has received since the start
        self.t = 0.0
        self.seq = 0
        self.waiting = 0  # requests in their fixed part (prefill, transport)
        self.timer: asyncio.TimerHandle | None = None

    def enter(self, loop: asyncio.AbstractEventLoop, d: int) -> None:
        self._advance(loop.time())
        self.waiting += d
        self._arm(loop)

    def _tau(self) -> float:
        f = self.server.fit
        return (f.token_s + f.token_per_req_s * (len(self.heap) + self.waiting)) * self.server.speed

    def _advance(self, now: float) -> None:
        if self.heap:
            tau = self._tau()
            self.served += (now - self.t) / tau if tau > 0 else math.inf
        self.t = now

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.heap:
            left = max(self.heap[0][0] - self.served, 0.0)
            self.timer = loop.call_at(self.t + left * self._tau(), self._fire, loop)

    def _fire(self, loop: asyncio.AbstractEventLoop) -> None:
        self.timer = None
        self._advance(loop.time())
        # the timer was armed for the head (any change re-arms it), so the head is done even when
        # rounding leaves it a hair short; so is everything within a millionth of a token
        first = True
        while self.heap and (first or self.heap[0][0] <= self.served + 1e-6):
            first = False
            _, _, fut = heapq.heappop(self.heap)
            if not fut.done():
                fut.set_result(None)
        self._arm(loop)

    async def serve(self, n: float) -> None:
        loop = asyncio.get_running_loop()
        self._advance(loop.time())
        fut: asyncio.Future[None] = loop.create_future()
        self.seq += 1
        heapq.heappush(self.heap, (self.served + n, self.seq, fut))
        self._arm(loop)
        try:
            await fut
        finally:
            if not fut.done():  # cancelled: leave the server
                self._advance(loop.time())
                self.heap = [h for h in self.heap if h[2] is not fut]
                heapq.heapify(self.heap)
                self._arm(loop)


class ReplayRunner:
    """Episode runner for the simulator: the n-th launched episode replays a recorded episode chosen
    by a generator keyed by `(seed, n)` (so every arm of a seed replays the same ones), generating
    through a shared `GenerationServer`; after each learner update the server takes the speed of a
    resampled measured step."""

    def __init__(
        self, t: RunTimings, fit: ServerFit, *, seed: int, replicas: int = 1, tool_capacity: int | None = None
    ) -> None:
        self.episodes = t.episodes
        # a capped tool: each call's own run time through a queue of `tool_capacity` places
        self.tool_queue = asyncio.Semaphore(tool_capacity) if tool_capacity else None
        self.scales = fit.turn_scale
        self.offsets = np.concatenate([[0], np.cumsum([len(e.tokens) for e in t.episodes])]).tolist()
        self.server = GenerationServer(fit, replicas)
        self.speeds = fit.step_speed or (1.0,)
        self.seed = seed
        self.launched = 0
        self._speed_rng = np.random.default_rng([seed, 0x5EED])
        self._learner_rng = np.random.default_rng([seed, 0x1EA])
        self.learner = t.learner_side_s
        self.on_update(0)

    def learner_time(self, index: int) -> float:
        """The learner side of step `index + 1`: the first as measured (a first update is slow, and
        in the async regime the episodes that run meanwhile fill the next batches), then resampled."""
        if index == 0 or len(self.learner) == 1:
            return self.learner[0]
        return self.learner[1 + int(self._learner_rng.integers(len(self.learner) - 1))]

    def on_update(self, version: int) -> None:
        self.server.speed = float(self.speeds[int(self._speed_rng.integers(len(self.speeds)))])

    async def __call__(self, prompt_id: str, policy_version: int, *_: Any, **__: Any) -> Trajectory:
        n = self.launched
        self.launched += 1
        rng = np.random.default_rng([self.seed, n])
        i = int(rng.integers(len(self.episodes)))
        e = self.episodes[i]
        scales = self.scales[self.offsets[i] : self.offsets[i + 1]] or (1.0,) * len(e.tokens)
        loop = asyncio.get_running_loop()
        gap = e.between_s / len(e.tokens)
        calls = e.tool_calls or (0,) * len(e.tokens)
        waits = e.tool_wait_s or (0.0,) * len(e.tokens)
        turns = []
        for tokens, tool, sc, c, w in zip(e.tokens, e.tool_s, scales, calls, waits, strict=True):
            t0 = loop.time()
            await self.server.generate(tokens, sc)
            g = loop.time() - t0
            t1 = loop.time()
            if self.tool_queue is not None and c > 0:
                async with self.tool_queue:
                    await asyncio.sleep(tool - w)
            else:
                await asyncio.sleep(tool)
            x = loop.time() - t1
            await asyncio.sleep(gap)
            turns.append(Turn(g, x, tokens, 0, c, t0, max(0.0, x - (tool - w))))
        return Trajectory(prompt_id, reward=e.reward, policy_version=policy_version, turns=turns)


def scenarios(t: RunTimings) -> list[tuple[str, SchedulerConfig, int]]:
    """(name, scheduler config, inference server replicas): the run as it was, then one change at a time."""
    other = "spo" if t.algo == "grpo" else "grpo"
    if other == "grpo" and t.batch_size % t.group_size:
        other_cfg = None
    else:
        other_cfg = t.scheduler_config(mode="group" if other == "grpo" else "stream")
    out: list[tuple[str, SchedulerConfig, int]] = [("as run", t.scheduler_config(), 1)]
    if other_cfg is not None:
        out.append((f"{other} instead of {t.algo}", other_cfg, 1))
    out.append(
        (f"2x slots ({2 * t.max_concurrency})", t.scheduler_config(max_concurrency=2 * t.max_concurrency), 1)
    )
    out.append(("2x inference servers", t.scheduler_config(), 2))
    if t.regime == "async":
        s2 = 2 * t.max_staleness if t.max_staleness > 0 else 1
        out.append((f"staleness <= {s2} (was {t.max_staleness})", t.scheduler_config(max_staleness=s2), 1))
    else:
        out.append(
            (
                "async, staleness <= 1 (was sync)",
                t.scheduler_config(regime="async", max_staleness=1, overprovision=1.0),
                1,
            )
        )
    return out


def measured_figures(t: RunTimings) -> dict[str, Any]:
    """The run's own figures over steps 2+ (step 1 pays start-up costs)."""
    steady = slice(1, None) if len(t.step_s) > 1 else slice(None)
    step_s = np.asarray(t.step_s)[steady]
    n_traj = np.asarray(t.trajectories_per_step[: len(t.step_s)], dtype=float)[steady]
    ep = np.asarray(t.episode_s)
    tool_s = sum(sum(e.tool_s) for e in t.episodes)
    wait_s = sum(sum(e.tool_wait_s) for e in t.episodes)
    recorded = any(e.tool_wait_s for e in t.episodes)
    return {
        "steps": len(t.step_s),
        "time_per_step_s": float(step_s.mean()),
        "trajectories_per_s": float(n_traj.sum() / step_s[: len(n_traj)].sum())
        if len(n_traj)
        else t.batch_size / float(step_s.mean()),
        "scheduler_trajectories_per_s": float(np.mean(t.trajectories_per_s))
        if t.trajectories_per_s
        else None,
        "slot_utilisation": float(np.mean(t.slot_utilisation)) if t.slot_utilisation else None,
        "episode_s": {
            "mean": float(ep.mean()),
            "p50": float(np.median(ep)),
            "p95": float(np.percentile(ep, 95)),
        },
        "generation_share": float(np.sum(t.gen_s) / max(float(ep.sum()), 1e-12)),
        # of the tool time, the share queued behind a tool's concurrency cap (None: not recorded)
        "tool_wait_share": wait_s / tool_s if recorded and tool_s > 0 else (0.0 if recorded else None),
        "learner_s_mean": float(np.mean(np.asarray(t.learner_side_s)[steady])),
    }


def what_if(t: RunTimings, *, seeds: int = 30, batches: int | None = None, seed0: int = 0) -> dict[str, Any]:
    """Re-predict the run's own throughput, then the what-ifs; JSON-able."""
    from agentrl.simulate import simulate

    nb = batches or max(4, min(50, len(t.step_s)))  # as many steps as the run had
    # the same window as the measurement (steps 2+), so the async start-up burst counts in both
    warm = min(1, nb - 1)
    side = t.learner_side_s
    learner = Empirical(side[1:] if len(side) > 1 else side, source="learner side per step")
    fit = fit_server(t)
    cap = tool_capacity(t)
    measured = measured_figures(t)
    placeholder = EpisodeProfile(duration=Empirical(t.episode_s, source=str(t.run_dir)))
    rows = []
    base_tpb = None
    for name, cfg, replicas in scenarios(t):
        preset = Preset(
            name=f"{t.run_dir.name}: {name}",
            description=name,
            profile=placeholder,
            arms=(Arm("arm", cfg, name),),
            baseline="arm",
            candidate="arm",
            batches=nb,
            learner_step=learner,
            warmup=warm,
        )
        res = simulate(
            preset,
            seeds,
            seed0=seed0,
            runner_factory=lambda s, r=replicas: ReplayRunner(t, fit, seed=s, replicas=r, tool_capacity=cap),
        )
        a = res["arms"]["arm"]
        tpb = a["time_per_batch"]
        if base_tpb is None:
            base_tpb = tpb["median"]
        rows.append(
            {
                "scenario": name,
                "config": a["config"],
                "replicas": replicas,
                "time_per_step_s": tpb,
                "trajectories_per_s": a["trajectories_per_s"],
                # the expectation of what the run measures (trajectories over seconds, pooled)
                "pooled_trajectories_per_s": a["trainer_trajectories_per_s"],
                "slot_utilisation": a["slot_utilisation"]["mean"],
                "wasted_share": a["wasted_share"]["mean"],
                "speedup_vs_as_run": base_tpb / tpb["median"] if tpb["median"] > 0 else math.inf,
            }
        )
    pred = rows[0]["pooled_trajectories_per_s"]
    return {
        "run": str(t.run_dir),
        "settings": {
            "algo": t.algo,
            "batch_size": t.batch_size,
            "group_size": t.group_size,
            "max_concurrency": t.max_concurrency,
            "regime": t.regime,
            "max_staleness": t.max_staleness,
            "overprovision": t.overprovision,
        },
        "trajectories_replayed": len(t.episodes),
        "seeds": seeds,
        "batches": nb,
        "warmup": warm,
        "server": fit.as_dict(),
        "tool_capacity": cap,
        "measured": measured,
        "prediction_error": pred / measured["trajectories_per_s"] - 1.0,
        "scenarios": rows,
    }


def format_what_if(res: dict[str, Any]) -> str:
    m, s, sv = res["measured"], res["settings"], res["server"]
    lines = [
        f"what-if from {res['run']}: {s['algo']}, B={s['batch_size']}"
        + (f", G={s['group_size']}" if s["algo"] == "grpo" else "")
        + f", {s['max_concurrency']} slots, {s['regime']}"
        + (
            f", staleness <= {s['max_staleness']}"
            if s["regime"] == "async"
            else f", {s['overprovision']:g}x launched"
        ),
        f"  replayed {res['trajectories_replayed']} measured trajectories (mean {m['episode_s']['mean']:.2f} s, "
        f"p95 {m['episode_s']['p95']:.2f} s, {100 * m['generation_share']:.0f}% generation) and "
        f"{m['steps']} learner steps (mean {m['learner_s_mean']:.2f} s per step besides waiting for the batch)",
        f"  generation server fitted to {sv['turns']} turns: ({1000 * sv['request_s']:.0f} + "
        f"{1000 * sv['request_per_req_s']:.2f} x in-flight) ms per request + "
        f"n_tokens x ({1000 * sv['token_s']:.2f} + {1000 * sv['token_per_req_s']:.3f} x in-flight) ms "
        f"(R2 {sv['r2']:.2f}, {sv['mean_in_flight']:.1f} in flight on average; per-step speed median "
        f"{sv['step_speed']['median']:.2f}, max {sv['step_speed']['max']:.2f})",
        *(
            [
                f"  tools: {100 * m['tool_wait_share']:.0f}% of the tool time queued behind a cap of "
                f"{res['tool_capacity']} calls at once; replayed through a queue of {res['tool_capacity']} places"
            ]
            if res.get("tool_capacity")
            else []
        ),
        f"  {res['seeds']} seeds x {res['batches']} batches per scenario (figures over batches {res['warmup'] + 1}-{res['batches']})",
        "",
        f"  {'scenario':<40} {'time/step s: median [5%, 95%]':<31} {'traj/s':>8} {'slot util':>9} {'wasted':>6} {'speedup':>7}",
        f"  {'measured (steps 2+)':<40} {m['time_per_step_s']:9.2f}{'':<22} {m['trajectories_per_s']:8.3f} "
        f"{'' if m['slot_utilisation'] is None else format(m['slot_utilisation'], '9.3f'):>9}",
    ]
    for r in res["scenarios"]:
        t = r["time_per_step_s"]
        lines.append(
            f"  {r['scenario']:<40} {t['median']:9.2f} [{t['p5']:8.2f}, {t['p95']:8.2f}]  "
            f"{r['trajectories_per_s']['median']:8.3f} {r['slot_utilisation']:9.3f} {r['wasted_share']:6.3f} "
            f"{r['speedup_vs_as_run']:7.2f}"
        )
    lines += [
        "",
        f"  the run's own throughput, predicted {res['scenarios'][0]['pooled_trajectories_per_s']:.3f} traj/s "
        f"(steps 2+, pooled over seeds) against {m['trajectories_per_s']:.3f} measured: error {100 * res['prediction_error']:+.1f}%",
        "  2x inference servers: two replicas of the fitted server, each request to the less loaded one.",
    ]
    return "\n".join(lines)


__all__ = [
    "EpisodeRecord",
    "GenerationServer",
    "ReplayRunner",
    "RunTimings",
    "ServerFit",
    "fit_server",
    "format_what_if",
    "in_flight",
    "measured_figures",
    "read_run",
    "scenarios",
    "tool_capacity",
    "what_if",
]
