"""Prompt samplers: SPO's prioritised sampler (spec §4) and the uniform one GRPO uses.

Both draw from one seeded numpy Generator whose bit-generator state is checkpointed, so a resumed
run draws exactly the batch the uninterrupted run would have drawn next.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from agentrl.algo.value_tracker import ValueTracker


def _pool_digest(prompt_ids: Sequence[str]) -> str:
    h = hashlib.sha256()
    for pid in prompt_ids:
        h.update(pid.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()


def _check_pool(prompt_ids: Sequence[str]) -> list[str]:
    ids = list(prompt_ids)
    if not ids:
        raise ValueError("prompt pool is empty")
    if len(set(ids)) != len(ids):
        raise ValueError("prompt pool has duplicate prompt ids")
    for pid in ids:
        if not isinstance(pid, str):
            raise TypeError(f"prompt ids must be str, got {type(pid).__name__}: {pid!r}")
    return ids


class _SamplerBase:
    """Pool bookkeeping, seeded generator and checkpointing shared by both samplers."""

    kind = "base"

    def __init__(self, prompt_ids: Sequence[str], seed: int, replace: bool) -> None:
        self.prompt_ids = _check_pool(prompt_ids)
        self.replace = bool(replace)
        self.seed = int(seed)
        self.rng = np.random.default_rng(self.seed)
        self._digest = _pool_digest(self.prompt_ids)

    def __len__(self) -> int:
        return len(self.prompt_ids)

    def _check_n(self, n: int) -> None:
        if n < 0:
            raise ValueError(f"sample size must be >= 0, got {n}")
        if not self.replace and n > len(self.prompt_ids):
            raise ValueError(
                f"cannot draw {n} distinct prompts from a pool of {len(self.prompt_ids)}; "
                "use replace=True or a smaller batch"
            )

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "seed": self.seed,
            "replace": self.replace,
            "num_prompts": len(self.prompt_ids),
            "pool_sha256": self._digest,
            "rng": self.rng.bit_generator.state,
            **self._extra_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the generator; refuse a state saved for another pool or sampler kind."""
        if state.get("kind") != self.kind:
            raise ValueError(f"sampler state is for {state.get('kind')!r}, not {self.kind!r}")
        if state["pool_sha256"] != self._digest:
            raise ValueError(
                f"sampler state was saved for a different prompt pool "
                f"({state['num_prompts']} prompts, this pool has {len(self.prompt_ids)})"
            )
        rng = np.random.default_rng()
        rng.bit_generator.state = state["rng"]
        self.rng = rng
        self.seed = int(state["seed"])
        self.replace = bool(state["replace"])
        self._load_extra(state)

    def _load_extra(self, state: dict[str, Any]) -> None:
        pass


class UniformSampler(_SamplerBase):
    """Every prompt equally likely; without replacement within one batch by default."""

    kind = "uniform"

    def __init__(self, prompt_ids: Sequence[str], seed: int = 0, replace: bool = False) -> None:
        super().__init__(prompt_ids, seed, replace)

    def probabilities(self) -> np.ndarray:
        n = len(self.prompt_ids)
        return np.full(n, 1.0 / n)

    def sample(self, n: int) -> list[str]:
        self._check_n(n)
        idx = self.rng.choice(len(self.prompt_ids), size=n, replace=self.replace)
        return [self.prompt_ids[i] for i in idx]


class PrioritizedSampler(_SamplerBase):
    """Draws prompts with weight `sqrt(v̂(1−v̂)) / N_eff^γ + ε` from a live `ValueTracker`.

    Without replacement it uses exponential keys (Efraimidis–Spirakis): the `n` smallest of
    `E_i / w_i`, `E_i ~ Exp(1)`, which is exactly successive weighted draws without replacement,
    in one vectorised pass over the pool.
    """

    kind = "prioritized"

    def __init__(
        self,
        tracker: ValueTracker,
        prompt_ids: Sequence[str],
        eps: float = 0.05,
        gamma: float = 0.0,
        seed: int = 0,
        replace: bool = False,
    ) -> None:
        if not eps > 0.0:
            raise ValueError(f"eps must be > 0 so every prompt stays reachable, got {eps}")
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {gamma}")
        super().__init__(prompt_ids, seed, replace)
        self.tracker = tracker
        self.eps = float(eps)
        self.gamma = float(gamma)
        self._rows = np.full(len(self.prompt_ids), -1, dtype=np.int64)
        self._rows_generation = -1

    def _pool_rows(self) -> np.ndarray:
        """Tracker rows of the pool, refreshing only the prompts the tracker did not know yet."""
        if self._rows_generation != self.tracker.generation:
            self._rows = self.tracker.indices(self.prompt_ids)
            self._rows_generation = self.tracker.generation
        else:
            unknown = np.flatnonzero(self._rows < 0)
            if unknown.size:
                self._rows[unknown] = self.tracker.indices([self.prompt_ids[i] for i in unknown])
        return self._rows

    def weights(self) -> np.ndarray:
        """Unnormalised weight of each pool prompt, in pool order."""
        rows = self._pool_rows()
        v = self.tracker.values_at(rows)
        w = np.sqrt(np.clip(v * (1.0 - v), 0.0, None))
        if self.gamma:
            w = w / self.tracker.n_effs_at(rows) ** self.gamma
        return w + self.eps

    def probabilities(self) -> np.ndarray:
        """Probability of each prompt being the next single draw."""
        w = self.weights()
        return w / w.sum()

    def sample(self, n: int) -> list[str]:
        self._check_n(n)
        w = self.weights()
        if self.replace:
            idx = self.rng.choice(len(w), size=n, replace=True, p=w / w.sum())
        else:
            keys = self.rng.exponential(size=len(w)) / w
            if n < len(w):
                part = np.argpartition(keys, n)[:n]
                idx = part[np.argsort(keys[part], kind="stable")]
            else:
                idx = np.argsort(keys, kind="stable")
        return [self.prompt_ids[i] for i in idx]

    def _extra_state(self) -> dict[str, Any]:
        return {"eps": self.eps, "gamma": self.gamma}

    def _load_extra(self, state: dict[str, Any]) -> None:
        self.eps = float(state["eps"])
        self.gamma = float(state["gamma"])
        self._rows_generation = -1


def make_sampler(
    kind: str,
    prompt_ids: Sequence[str],
    *,
    tracker: ValueTracker | None = None,
    seed: int = 0,
    replace: bool = False,
    eps: float = 0.05,
    gamma: float = 0.0,
) -> UniformSampler | PrioritizedSampler:
    """Build a sampler from configuration: `"uniform"` or `"prioritized"` (needs a tracker)."""
    if kind == "uniform":
        return UniformSampler(prompt_ids, seed=seed, replace=replace)
    if kind in ("prioritized", "prioritised"):
        if tracker is None:
            raise ValueError("the prioritized sampler needs a ValueTracker")
        return PrioritizedSampler(tracker, prompt_ids, eps=eps, gamma=gamma, seed=seed, replace=replace)
    raise ValueError(f"unknown sampler kind {kind!r}; expected 'uniform' or 'prioritized'")
