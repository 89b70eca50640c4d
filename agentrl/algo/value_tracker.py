"""The KL-adaptive per-prompt value tracker of SPO (spec §2).

Each prompt keeps Beta counts (α, β); `v̂ = α/(α+β)` is the baseline and `N_eff = α+β` its memory.
An update discounts both counts by a forgetting factor ρ that shrinks as the policy moves away
from the one that last acted on the prompt, so stale evidence fades faster after big updates.

State lives in flat numpy arrays indexed through one dict, so a tracker over a million prompts
costs a few tens of bytes per prompt and the batch forms are vectorised.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

ArrayLike = Sequence[float] | np.ndarray

_GROW = 1.5  # amortised growth factor of the per-prompt arrays


def _as_float_array(x: ArrayLike | float, n: int, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim == 0:
        arr = np.full(n, float(arr))
    if arr.shape != (n,):
        raise ValueError(f"{name} must be a scalar or have shape ({n},), got {arr.shape}")
    return arr


def _check_rewards(rewards: np.ndarray) -> None:
    if not np.all(np.isfinite(rewards)):
        raise ValueError(f"rewards must be finite, got {rewards[~np.isfinite(rewards)][:5]}")
    if np.any((rewards < 0.0) | (rewards > 1.0)):
        bad = rewards[(rewards < 0.0) | (rewards > 1.0)][:5]
        raise ValueError(f"rewards must lie in [0, 1], got {bad}")


def _check_divergences(divergences: np.ndarray) -> None:
    if np.any(np.isnan(divergences)) or np.any(divergences < 0.0):
        bad = divergences[np.isnan(divergences) | (divergences < 0.0)][:5]
        raise ValueError(f"divergences must be >= 0 (inf allowed), got {bad}")


class ValueTracker:
    """Per-prompt Beta value estimates with KL-adaptive forgetting.

    Args:
        rho_min, rho_max: bounds on the forgetting factor (memory of 8 to 25 samples by default).
        d_half: divergence at which ρ halves, before clipping: `ρ = clip(2^(−D/d_half))`.
        prior: `(α0, β0)` for prompts never seen, or `"global_mean"`: the mean v̂ over the
            prompts already tracked (0.5 when none), with `prior_strength` pseudo-counts.
        prior_strength: `α0 + β0` for the `"global_mean"` prior.
        init_smoothing: `c` in the offline initialisation `v̂0 = (s + c)/(n + 2c)` for `s` summed
            rewards over `n` samples; ½ (the reference recipe's add-½) keeps a prompt solved 0 of 8
            times off exactly 0, where the prioritised sampler would all but never draw it. 0 gives `s/n`.

    Besides (α, β), every prompt stores the odometer reading and policy version of its last visit,
    which is all the `odometer` divergence estimator needs (O(1) memory per prompt).
    """

    def __init__(
        self,
        rho_min: float = 0.875,
        rho_max: float = 0.96,
        d_half: float = 0.06,
        prior: tuple[float, float] | str = (0.5, 0.5),
        prior_strength: float = 1.0,
        init_smoothing: float = 0.5,
    ) -> None:
        if not 0.0 < rho_min <= rho_max < 1.0:
            raise ValueError(f"need 0 < rho_min <= rho_max < 1, got {rho_min}, {rho_max}")
        if not d_half > 0.0:
            raise ValueError(f"d_half must be > 0, got {d_half}")
        if isinstance(prior, str):
            if prior != "global_mean":
                raise ValueError(f"prior must be (alpha0, beta0) or 'global_mean', got {prior!r}")
            if not prior_strength > 0.0:
                raise ValueError(f"prior_strength must be > 0, got {prior_strength}")
        else:
            a0, b0 = (float(p) for p in prior)
            if a0 < 0 or b0 < 0 or a0 + b0 <= 0:
                raise ValueError(f"prior counts must be >= 0 with a positive sum, got {prior}")
            prior = (a0, b0)
        if not (init_smoothing >= 0 and np.isfinite(init_smoothing)):
            raise ValueError(f"init_smoothing must be a finite number >= 0, got {init_smoothing}")
        self.init_smoothing = float(init_smoothing)
        self.rho_min = float(rho_min)
        self.rho_max = float(rho_max)
        self.d_half = float(d_half)
        self.prior = prior
        self.prior_strength = float(prior_strength)
        self._reset_storage(0)

    # ------------------------------------------------------------------ storage

    def _reset_storage(self, capacity: int) -> None:
        self._index: dict[str, int] = {}
        self._ids: list[str] = []
        self._alpha = np.zeros(capacity, dtype=np.float64)
        self._beta = np.zeros(capacity, dtype=np.float64)
        self._last_odometer = np.zeros(capacity, dtype=np.float64)
        self._last_version = np.zeros(capacity, dtype=np.int64)
        self._visits = np.zeros(capacity, dtype=np.int64)
        # Bumped whenever indices may change meaning, so cached index arrays can be invalidated.
        self.generation = getattr(self, "generation", -1) + 1

    def _ensure_capacity(self, n: int) -> None:
        cap = self._alpha.shape[0]
        if n <= cap:
            return
        new_cap = max(n, int(cap * _GROW) + 16)
        for name in ("_alpha", "_beta", "_last_odometer", "_last_version", "_visits"):
            old = getattr(self, name)
            new = np.zeros(new_cap, dtype=old.dtype)
            new[:cap] = old
            setattr(self, name, new)

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, prompt_id: object) -> bool:
        return prompt_id in self._index

    @property
    def prompt_ids(self) -> list[str]:
        return list(self._ids)

    def prior_counts(self) -> tuple[float, float]:
        """(α0, β0) that an unseen prompt starts from right now."""
        if isinstance(self.prior, tuple):
            return self.prior
        n = len(self._ids)
        if n == 0:
            m = 0.5
        else:
            a, b = self._alpha[:n], self._beta[:n]
            m = float(np.mean(a / (a + b)))
        return self.prior_strength * m, self.prior_strength * (1.0 - m)

    def indices(self, prompt_ids: Iterable[str], create: bool = False) -> np.ndarray:
        """Row index of each prompt; -1 for unknown ones unless `create` adds them with the prior."""
        ids = list(prompt_ids)
        out = np.empty(len(ids), dtype=np.int64)
        new: list[int] = []
        prior = (0.0, 0.0)
        if create:
            for pid in ids:
                if not isinstance(pid, str):
                    raise TypeError(f"prompt_id must be str, got {type(pid).__name__}: {pid!r}")
            prior = self.prior_counts()  # from the prompts known before this call
        for i, pid in enumerate(ids):
            j = self._index.get(pid, -1)
            if j < 0 and create:
                j = len(self._ids)
                self._index[pid] = j
                self._ids.append(pid)
                new.append(j)
            out[i] = j
        if new:
            a0, b0 = prior
            self._ensure_capacity(len(self._ids))
            rows = np.asarray(new, dtype=np.int64)
            self._alpha[rows] = a0
            self._beta[rows] = b0
            self._last_odometer[rows] = 0.0
            self._last_version[rows] = 0
            self._visits[rows] = 0
        return out

    # ------------------------------------------------------------------ maths

    def rho(self, divergence: float | np.ndarray) -> float | np.ndarray:
        """ρ = clip(2^(−D/d_half), ρ_min, ρ_max); scalar in, scalar out."""
        d = np.asarray(divergence, dtype=np.float64)
        r = np.clip(np.exp2(-d / self.d_half), self.rho_min, self.rho_max)
        return float(r) if r.ndim == 0 else r

    def values_at(self, rows: np.ndarray) -> np.ndarray:
        """v̂ for row indices (as from `indices`), with the prior for -1."""
        rows = np.asarray(rows, dtype=np.int64)
        a0, b0 = self.prior_counts()
        known = rows >= 0
        out = np.full(rows.shape, a0 / (a0 + b0), dtype=np.float64)
        r = rows[known]
        out[known] = self._alpha[r] / (self._alpha[r] + self._beta[r])
        return out

    def n_effs_at(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        a0, b0 = self.prior_counts()
        known = rows >= 0
        out = np.full(rows.shape, a0 + b0, dtype=np.float64)
        r = rows[known]
        out[known] = self._alpha[r] + self._beta[r]
        return out

    def values(self, prompt_ids: Iterable[str]) -> np.ndarray:
        return self.values_at(self.indices(prompt_ids))

    def n_effs(self, prompt_ids: Iterable[str]) -> np.ndarray:
        return self.n_effs_at(self.indices(prompt_ids))

    def value(self, prompt_id: str) -> float:
        """v̂(x); the prior mean for an unseen prompt."""
        return float(self.values([prompt_id])[0])

    def n_eff(self, prompt_id: str) -> float:
        return float(self.n_effs([prompt_id])[0])

    def counts(self, prompt_id: str) -> tuple[float, float]:
        j = self._index.get(prompt_id, -1)
        if j < 0:
            return self.prior_counts()
        return float(self._alpha[j]), float(self._beta[j])

    def last_odometer(self, prompt_ids: Iterable[str]) -> np.ndarray:
        """Odometer reading at each prompt's last visit (0.0, the initial policy, if never visited)."""
        rows = self.indices(prompt_ids)
        out = np.zeros(rows.shape, dtype=np.float64)
        out[rows >= 0] = self._last_odometer[rows[rows >= 0]]
        return out

    def last_version(self, prompt_ids: Iterable[str]) -> np.ndarray:
        rows = self.indices(prompt_ids)
        out = np.zeros(rows.shape, dtype=np.int64)
        out[rows >= 0] = self._last_version[rows[rows >= 0]]
        return out

    def visits(self, prompt_id: str) -> int:
        j = self._index.get(prompt_id, -1)
        return 0 if j < 0 else int(self._visits[j])

    def update(
        self,
        prompt_id: str,
        reward: float,
        divergence: float | None = None,
        *,
        odometer: float | None = None,
        policy_version: int | None = None,
    ) -> float:
        """Fold one reward in; return v̂ *before* the update (the unbiased SPO baseline).

        `divergence` is D(x); if None, it is taken from the odometer: |odometer − reading at the
        last visit|. `odometer`/`policy_version`, when given, are recorded as this visit's.
        """
        return float(
            self.update_batch(
                [prompt_id],
                [reward],
                None if divergence is None else [divergence],
                odometer=None if odometer is None else [odometer],
                policy_versions=None if policy_version is None else [policy_version],
            )[0]
        )

    def update_batch(
        self,
        prompt_ids: Sequence[str],
        rewards: ArrayLike,
        divergences: ArrayLike | float | None = None,
        *,
        odometer: ArrayLike | float | None = None,
        policy_versions: Sequence[int] | np.ndarray | int | None = None,
    ) -> np.ndarray:
        """Vectorised `update`: identical to calling `update` for each element in order.

        A prompt may repeat in the batch; its k-th occurrence sees the state left by the (k−1)-th,
        whose reward is an independent sample, so every returned baseline stays unbiased.
        """
        n = len(prompt_ids)
        r = _as_float_array(rewards, n, "rewards")
        _check_rewards(r)
        if divergences is None:
            if odometer is None:
                raise ValueError("pass divergences, or odometer readings to derive them from")
            d = None
        else:
            d = _as_float_array(divergences, n, "divergences")
            _check_divergences(d)
        odo = None if odometer is None else _as_float_array(odometer, n, "odometer")
        if odo is not None and not np.all(np.isfinite(odo)):
            raise ValueError("odometer readings must be finite")
        ver = None
        if policy_versions is not None:
            ver = np.asarray(policy_versions, dtype=np.int64)
            if ver.ndim == 0:
                ver = np.full(n, int(ver), dtype=np.int64)
            if ver.shape != (n,):
                raise ValueError(f"policy_versions must have shape ({n},), got {ver.shape}")

        rows = self.indices(prompt_ids, create=True)
        baselines = np.empty(n, dtype=np.float64)
        # Process repeated prompts in rounds: round k holds every prompt's k-th occurrence.
        occurrence = np.zeros(n, dtype=np.int64)
        if n:
            order = np.argsort(rows, kind="stable")
            sorted_rows = rows[order]
            starts = np.r_[0, np.flatnonzero(np.diff(sorted_rows)) + 1]
            run_start = np.repeat(starts, np.diff(np.r_[starts, n]))
            occurrence[order] = np.arange(n) - run_start
        for k in range(int(occurrence.max()) + 1 if n else 0):
            sel = np.flatnonzero(occurrence == k)
            j = rows[sel]
            a, b = self._alpha[j], self._beta[j]
            baselines[sel] = a / (a + b)
            dk = np.abs(odo[sel] - self._last_odometer[j]) if d is None else d[sel]  # type: ignore[index]
            rho = np.clip(np.exp2(-dk / self.d_half), self.rho_min, self.rho_max)
            self._alpha[j] = rho * a + r[sel]
            self._beta[j] = rho * b + (1.0 - r[sel])
            self._visits[j] += 1
            if odo is not None:
                self._last_odometer[j] = odo[sel]
            if ver is not None:
                self._last_version[j] = ver[sel]
        return baselines

    def init_offline(
        self,
        prompt_id: str,
        rewards: ArrayLike,
        *,
        odometer: float = 0.0,
        policy_version: int = 0,
    ) -> None:
        """Initialise from n samples of the initial policy: v̂0 = (s + c)/(n + 2c) with c = init_smoothing,
        then α0 = N0·v̂0, β0 = N0·(1−v̂0), N0 = 1/(1−ρ_min)."""
        self.init_offline_batch(
            [prompt_id],
            [np.asarray(rewards, dtype=np.float64)],
            odometer=odometer,
            policy_version=policy_version,
        )

    def init_offline_batch(
        self,
        prompt_ids: Sequence[str],
        rewards: Sequence[ArrayLike],
        *,
        odometer: float = 0.0,
        policy_version: int = 0,
    ) -> None:
        if len(prompt_ids) != len(rewards):
            raise ValueError(f"got {len(prompt_ids)} prompt ids but {len(rewards)} reward lists")
        means = np.empty(len(prompt_ids), dtype=np.float64)
        for i, (pid, rs) in enumerate(zip(prompt_ids, rewards, strict=True)):
            arr = np.asarray(rs, dtype=np.float64).ravel()
            if arr.size == 0:
                raise ValueError(f"init_offline needs at least one reward for {pid!r}")
            _check_rewards(arr)
            c = self.init_smoothing
            means[i] = (arr.sum() + c) / (arr.size + 2.0 * c)
        n0 = 1.0 / (1.0 - self.rho_min)
        rows = self.indices(prompt_ids, create=True)
        self._alpha[rows] = n0 * means
        self._beta[rows] = n0 * (1.0 - means)
        self._last_odometer[rows] = float(odometer)
        self._last_version[rows] = int(policy_version)

    # ------------------------------------------------------------------ checkpointing

    def config(self) -> dict[str, Any]:
        return {
            "rho_min": self.rho_min,
            "rho_max": self.rho_max,
            "d_half": self.d_half,
            "prior": list(self.prior) if isinstance(self.prior, tuple) else self.prior,
            "prior_strength": self.prior_strength,
            "init_smoothing": self.init_smoothing,
        }

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume bit for bit: config, ids and trimmed copies of the arrays."""
        n = len(self._ids)
        return {
            "config": self.config(),
            "prompt_ids": list(self._ids),
            "alpha": self._alpha[:n].copy(),
            "beta": self._beta[:n].copy(),
            "last_odometer": self._last_odometer[:n].copy(),
            "last_version": self._last_version[:n].copy(),
            "visits": self._visits[:n].copy(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        cfg = state["config"]
        prior = cfg["prior"]
        fresh = ValueTracker(
            rho_min=cfg["rho_min"],
            rho_max=cfg["rho_max"],
            d_half=cfg["d_half"],
            prior=prior if isinstance(prior, str) else tuple(prior),
            prior_strength=cfg["prior_strength"],
            init_smoothing=cfg.get("init_smoothing", 0.0),  # checkpoints from before smoothing used s/n
        )
        ids = list(state["prompt_ids"])
        n = len(ids)
        arrays = {
            k: np.asarray(state[k]) for k in ("alpha", "beta", "last_odometer", "last_version", "visits")
        }
        for k, v in arrays.items():
            if v.shape != (n,):
                raise ValueError(f"tracker state {k!r} has shape {v.shape}, expected ({n},)")
        if len(set(ids)) != n:
            raise ValueError("tracker state has duplicate prompt ids")
        self.rho_min, self.rho_max, self.d_half = fresh.rho_min, fresh.rho_max, fresh.d_half
        self.prior, self.prior_strength = fresh.prior, fresh.prior_strength
        self.init_smoothing = fresh.init_smoothing
        self._reset_storage(n)
        self._ids = ids
        self._index = {pid: i for i, pid in enumerate(ids)}
        self._alpha[:] = arrays["alpha"]
        self._beta[:] = arrays["beta"]
        self._last_odometer[:] = arrays["last_odometer"]
        self._last_version[:] = arrays["last_version"]
        self._visits[:] = arrays["visits"]

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> ValueTracker:
        t = cls()
        t.load_state_dict(state)
        return t
