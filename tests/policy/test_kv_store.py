"""The prefix KV store: longest-prefix lookup, byte-bounded LRU, invalidation on weight changes, and
multi-turn generation that reuses it and samples exactly what a cache-less policy samples."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import torch

from agentrl.policy.hf import HFPolicy, rescore
from agentrl.policy.kv_store import KVEntry, PrefixKVStore
from agentrl.types import SamplingParams


def entry(tokens: list[int], epoch: int = 0) -> KVEntry:
    n = len(tokens)
    return KVEntry(tokens, [(torch.zeros(1, n, 4), torch.zeros(1, n, 4))], epoch)  # 32 bytes a token


def test_longest_strict_prefix_wins() -> None:
    store = PrefixKVStore(10_000)
    for toks in ([1, 2], [1, 2, 3, 4], [1, 2, 9], [5]):
        store.put(entry(toks))
    assert store.longest_prefix([1, 2, 3, 4, 5]).tokens == [1, 2, 3, 4]
    assert store.longest_prefix([1, 2, 3, 4]).tokens == [1, 2]  # one token must stay new
    assert store.longest_prefix([1, 2, 9, 9]).tokens == [1, 2, 9]
    assert store.longest_prefix([7, 1, 2]) is None
    with pytest.raises(ValueError, match="max_bytes"):
        PrefixKVStore(-1)


def test_lru_eviction_by_bytes_keeps_recently_used() -> None:
    store = PrefixKVStore(32 * 9)
    store.put(entry([1, 2, 3, 4]))
    store.put(entry([5, 6, 7]))
    assert store.longest_prefix([1, 2, 3, 4, 0]) is not None  # [1..4] is now the most recent
    store.put(entry([8, 9, 10]))  # 10 tokens > 9: over budget, the LRU one ([5, 6, 7]) goes
    assert store.longest_prefix([5, 6, 7, 0]) is None
    assert store.longest_prefix([1, 2, 3, 4, 0]) is not None and len(store) == 2
    assert store.nbytes == 32 * 7
    store.put(entry(list(range(20))))  # larger than the whole budget: not kept
    assert len(store) == 2


def test_invalidation_drops_everything_and_rejects_late_entries() -> None:
    store = PrefixKVStore(10_000)
    store.put(entry([1, 2]))
    store.invalidate()
    assert store.longest_prefix([1, 2, 3]) is None and len(store) == 0 and store.nbytes == 0
    store.put(entry([1, 2], epoch=0))  # finished under the old weights
    assert store.longest_prefix([1, 2, 3]) is None
    store.put(entry([1, 2], epoch=1))
    assert store.longest_prefix([1, 2, 3]) is not None


async def test_multi_turn_reuse_samples_what_a_cacheless_policy_samples(model: Any, tokenizer: Any) -> None:
    head = "You are a careful agent. Use the calculator tool for arithmetic. " * 3
    reuse = HFPolicy(model, tokenizer, batch_window_s=0.01)
    plain = HFPolicy(model, tokenizer, batch_window_s=0.01, prefix_cache_mb=0)
    assert reuse.kv_store is not None and plain.kv_store is None

    async def episode(policy: HFPolicy, i: int) -> list[tuple[list[int], Any]]:
        ids = tokenizer.encode(f"{head}Episode {i}: what is {i} + {3 * i}?")
        turns = []
        for turn in range(3):
            params = SamplingParams(max_new_tokens=3 + (i + turn) % 4, seed=1000 * turn + i)
            out = await policy.generate(ids, params)
            turns.append((list(ids), out))
            ids = ids + out.token_ids + tokenizer.encode(f" tool says {i * turn} ")
        return turns

    with_store = await asyncio.gather(*(episode(reuse, i) for i in range(8)))
    without = await asyncio.gather(*(episode(plain, i) for i in range(8)))
    assert reuse.stats["reused_prefix_tokens"] > 0 and len(reuse.kv_store) > 0
    for a, b in zip(with_store, without, strict=True):
        for (prompt, x), (_, y) in zip(a, b, strict=True):
            assert x.token_ids == y.token_ids
            assert x.logprobs == pytest.approx(y.logprobs, abs=1e-4)
            assert rescore(model, prompt + x.token_ids)[len(prompt) :] == pytest.approx(x.logprobs, abs=1e-4)
    await reuse.aclose()
    await plain.aclose()
