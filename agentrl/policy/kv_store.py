"""Key/value caches of recent sequences for the in-process backend.

A multi-turn episode sends its whole history as the next turn's prompt. Keeping the KV cache of the
sequence a request ended with lets the next request that extends it (the next turn, after the tool
output is appended) prefill only the new tokens, and the system-prompt head every episode starts
with is kept as an entry of its own. Bounded by bytes, least recently used out first. Entries are
stamped with the weights they were computed under; a weight change invalidates them all.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import torch

__all__ = ["KVEntry", "PrefixKVStore"]


@dataclass(eq=False, slots=True)
class KVEntry:
    tokens: list[int]
    kv: list[tuple[torch.Tensor, torch.Tensor]]  # per layer: keys, values [kv_heads, len(tokens), head_dim]
    epoch: int

    @property
    def nbytes(self) -> int:
        return sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in self.kv)


class PrefixKVStore:
    """Longest-prefix lookup over a byte-bounded LRU of KV entries."""

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = max_bytes
        self.epoch = 0
        self._entries: OrderedDict[tuple[int, ...], KVEntry] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def invalidate(self) -> None:
        """The weights changed: no entry may be used again (safe to call from any thread)."""
        self.epoch += 1

    def longest_prefix(self, prompt: Sequence[int]) -> KVEntry | None:
        """The longest current entry that is a strict prefix of `prompt` (one token must stay new)."""
        self._drop_stale()
        best: KVEntry | None = None
        n_prompt = len(prompt)
        for e in self._entries.values():
            n = len(e.tokens)
            if n >= n_prompt or (best is not None and n <= len(best.tokens)):
                continue
            if prompt[n - 1] == e.tokens[-1] and list(prompt[:n]) == e.tokens:
                best = e
        if best is not None:
            self._entries.move_to_end(tuple(best.tokens))
        return best

    def put(self, entry: KVEntry) -> None:
        if entry.epoch != self.epoch:
            return  # computed under weights that have since changed
        size = entry.nbytes
        if size > self.max_bytes or not entry.tokens:
            return
        key = tuple(entry.tokens)
        old = self._entries.pop(key, None)
        if old is not None:
            self._bytes -= old.nbytes
        self._entries[key] = entry
        self._bytes += size
        while self._bytes > self.max_bytes:
            _, dropped = self._entries.popitem(last=False)
            self._bytes -= dropped.nbytes

    def _drop_stale(self) -> None:
        if self._entries and next(iter(self._entries.values())).epoch != self.epoch:
            stale = [k for k, e in self._entries.items() if e.epoch != self.epoch]
            for k in stale:
                self._bytes -= self._entries.pop(k).nbytes
