"""In-process transformers backend with micro-batching across concurrent episodes.

Every `generate` call joins a queue. A batcher task takes whatever is waiting (up to
`max_batch_size`, after a short collection window) and runs one left-padded, KV-cached decode for the
whole batch in a worker thread, so the event loop, and the tools of other episodes, keep running.
The head the batch's prompts share (system prompt, tool schemas; at least `min_shared_prefix`
tokens) is prefilled once and its KV cache broadcast to every row.
Rows stop individually (stop token, stop string, their own `max_new_tokens`) and finished rows are
dropped from the KV cache, so 64 concurrent episodes cost about one batched generation.
With the prefix KV store (`prefix_cache_mb` > 0, plain full-attention caches only) a finished row's
cache is kept, and a later prompt that extends it (the episode's next turn) starts from it; rows
with no stored prefix share their common head, which is then stored too. A weight change
invalidates the store.

Sampling: temperature, then top-k, then top-p, each request drawing from its own seeded
`torch.Generator`. The reported log-prob is log-softmax(logits / temperature) over the full
vocabulary (the truncation of top-k/top-p is not folded in; that matches what a learner recomputes);
greedy (temperature 0) reports the temperature-1 log-prob. Samples are reproducible for a given seed
and batch composition; a different batch composition can change logits in the last float bits.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from agentrl.chat import stop_token_ids as default_stop_ids
from agentrl.modeling import cache_kwarg
from agentrl.policy.base import (
    PolicyError,
    PolicyTimeoutError,
    WeightsSource,
    check_prompt,
    load_weights_dir,
)
from agentrl.policy.kv_store import KVEntry, PrefixKVStore
from agentrl.types import Generation, SamplingParams

__all__ = ["HFPolicy", "load_weights_dir", "rescore", "sample_rows", "sample_token"]


@dataclass(eq=False)
class _Request:
    prompt: list[int]
    params: SamplingParams
    generator: torch.Generator
    future: asyncio.Future[Generation]
    result: Generation | None = field(default=None)


def sample_rows(
    logits: torch.Tensor, params: Sequence[SamplingParams], generators: Sequence[torch.Generator]
) -> tuple[list[int], list[float]]:
    """Draw one token per row of `logits` [n, V]; return the tokens and their log-probs.

    Rows with equal settings are sampled together (one softmax, one inverse-CDF lookup); each row
    still takes its uniform draw from its own generator, so a request's samples depend only on its
    seed and its logits.
    """
    n = logits.shape[0]
    toks, lps = [0] * n, [0.0] * n
    groups: dict[tuple[float, int, float], list[int]] = {}
    for i, p in enumerate(params):
        groups.setdefault((p.temperature, p.top_k, p.top_p), []).append(i)
    for (temperature, top_k, top_p), rows in groups.items():
        x = logits[rows].float()
        if temperature == 0:
            tok = x.argmax(-1)
            lp = torch.log_softmax(x, -1).gather(-1, tok[:, None])[:, 0]
        else:
            logp = torch.log_softmax(x / temperature, dim=-1)
            probs = logp.exp()
            if 0 < top_k < probs.shape[-1]:
                kth = torch.topk(probs, top_k, dim=-1).values[:, -1:]
                probs = torch.where(probs >= kth, probs, torch.zeros_like(probs))
            if top_p < 1.0:
                sorted_p, order = torch.sort(probs, dim=-1, descending=True)
                cum = torch.cumsum(sorted_p, dim=-1)
                drop = (cum - sorted_p) > top_p * cum[:, -1:]  # keep the smallest prefix reaching top_p
                probs = probs.scatter(-1, order, sorted_p.masked_fill(drop, 0.0))
            # the uniforms come from each request's own CPU generator, so a seed draws the same
            # numbers on every device; they then join the logits' device
            u = torch.cat([torch.rand(1, generator=generators[i], dtype=torch.float64) for i in rows])
            cdf = torch.cumsum(probs.double(), dim=-1)
            u = u.to(cdf.device)
            tok = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True)[:, 0]
            tok = torch.minimum(tok, (probs > 0).cumsum(-1).argmax(-1))  # rounding at the top end
            lp = logp.gather(-1, tok[:, None])[:, 0]
        for i, t, v in zip(rows, tok.tolist(), lp.tolist(), strict=True):
            toks[i], lps[i] = t, v
    return toks, lps


def sample_token(
    logits: torch.Tensor, params: SamplingParams, generator: torch.Generator
) -> tuple[int, float]:
    """Draw one token from a row of logits; return it with its log-prob (see module docstring)."""
    toks, lps = sample_rows(logits[None], [params], [generator])
    return toks[0], lps[0]


@torch.inference_mode()
def rescore(model: Any, token_ids: Sequence[int], temperature: float = 1.0) -> list[float]:
    """Log-prob of every token given the ones before it (0.0 for the first), in one unpadded forward.

    This is the learner's view of a trajectory; comparing it with the sampling log-probs catches
    re-tokenisation drift and backend mismatches.
    """
    device = next(model.parameters()).device
    ids = torch.tensor([list(token_ids)], device=device)
    logits = model(input_ids=ids).logits[0, :-1].float() / (temperature or 1.0)
    logp = torch.log_softmax(logits, dim=-1).gather(-1, ids[0, 1:, None])[:, 0]
    return [0.0, *logp.tolist()]


class HFPolicy:
    """A transformers causal LM behind the `Policy` protocol.

    `timeout` bounds each request from queueing to result. `batch_window_s` is how long the batcher
    keeps collecting after the last arrival (bounded by `max_wait_s`) before it starts a batch.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        max_batch_size: int = 64,
        batch_window_s: float = 0.003,
        max_wait_s: float = 0.05,
        timeout: float = 600.0,
        seed: int = 0,
        stop_token_ids: Sequence[int] | None = None,
        version: int = 0,
        min_shared_prefix: int = 16,
        prefix_cache_mb: float = 256.0,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0, got {timeout}")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.version = version
        self.max_batch_size = max_batch_size
        self.batch_window_s = batch_window_s
        self.max_wait_s = max_wait_s
        self.timeout = timeout
        self.device = next(model.parameters()).device
        self.vocab_size = int(model.get_input_embeddings().weight.shape[0])
        self.stop_ids = frozenset(
            stop_token_ids
            if stop_token_ids is not None
            else default_stop_ids(tokenizer, getattr(model, "generation_config", None))
        )
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_id = int(pad) if pad is not None else 0
        self._seeds = np.random.default_rng(seed)
        self._model_lock = threading.Lock()  # a batch and a weight load never overlap
        self._stop = threading.Event()
        self._queue: deque[_Request] = deque()
        self._wakeup: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._batcher: asyncio.Task[None] | None = None
        self.min_shared_prefix = min_shared_prefix
        if prefix_cache_mb < 0:
            raise ValueError(f"prefix_cache_mb must be >= 0, got {prefix_cache_mb}")
        self.kv_store = (
            PrefixKVStore(int(prefix_cache_mb * 2**20)) if prefix_cache_mb and _plain_kv(model) else None
        )
        self.stats = {
            "batches": 0,
            "requests": 0,
            "rows_x_steps": 0,
            "shared_prefix_tokens": 0,
            "reused_prefix_tokens": 0,
        }

    # -- the protocol ---------------------------------------------------------------------------

    async def generate(self, prompt_ids: Sequence[int], params: SamplingParams) -> Generation:
        if self._stop.is_set():
            raise PolicyError("HFPolicy is closed")
        ids = check_prompt(prompt_ids, self.vocab_size)
        self._ensure_batcher()
        assert self._loop is not None and self._wakeup is not None
        seed = params.seed if params.seed is not None else int(self._seeds.integers(2**63))
        gen = torch.Generator(device="cpu").manual_seed(seed)
        req = _Request(ids, params, gen, self._loop.create_future())
        self._queue.append(req)
        self._wakeup.set()
        try:
            async with asyncio.timeout(self.timeout):
                return await req.future
        except TimeoutError:
            raise PolicyTimeoutError(f"HF generation missed its {self.timeout:g} s deadline") from None

    async def sync_weights(self, version: int, weights: WeightsSource = None) -> None:
        """Load new weights between batches; `weights=None` only bumps the version (shared module)."""
        if weights is not None:
            state = weights if isinstance(weights, Mapping) else load_weights_dir(weights)
            await asyncio.to_thread(self.load_state_dict, state)
        self._weights_changed()
        self.version = version

    def load_state_dict(self, state_dict: Mapping[str, torch.Tensor], version: int | None = None) -> None:
        """Blocking weight load; waits for a running batch to finish. Tied weights may be missing."""
        with self._model_lock:
            self._weights_changed()
            missing, unexpected = self.model.load_state_dict(dict(state_dict), strict=False)
            tied = bool(getattr(self.model.config, "tie_word_embeddings", False))
            missing = [k for k in missing if not (tied and k.endswith("lm_head.weight"))]
            if missing or unexpected:
                raise ValueError(
                    f"state dict does not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}"
                )
            if version is not None:
                self.version = version

    @contextlib.asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        """Hold off generation, e.g. while a learner that shares `self.model` updates it in place."""
        await asyncio.to_thread(self._model_lock.acquire)
        try:
            yield
        finally:
            self._weights_changed()
            self._model_lock.release()

    def _weights_changed(self) -> None:
        if self.kv_store is not None:
            self.kv_store.invalidate()

    async def aclose(self) -> None:
        self._stop.set()
        if self._batcher is not None and not self._batcher.done():
            self._batcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._batcher
        while self._queue:
            req = self._queue.popleft()
            if not req.future.done():
                req.future.set_exception(PolicyError("HFPolicy was closed"))

    # -- batching -------------------------------------------------------------------------------

    def _ensure_batcher(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._batcher is None or self._batcher.done():
            self._loop = loop
            self._wakeup = asyncio.Event()
            self._batcher = loop.create_task(self._run_batcher(), name="HFPolicy.batcher")

    async def _run_batcher(self) -> None:
        assert self._wakeup is not None
        loop = asyncio.get_running_loop()
        while True:
            while not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
            # Collect stragglers: keep waiting while requests keep arriving, within max_wait_s.
            start = loop.time()
            seen = len(self._queue)
            while len(self._queue) < self.max_batch_size and loop.time() - start < self.max_wait_s:
                await asyncio.sleep(self.batch_window_s)
                if len(self._queue) == seen:
                    break
                seen = len(self._queue)
            batch: list[_Request] = []
            while self._queue and len(batch) < self.max_batch_size:
                req = self._queue.popleft()
                if not req.future.done():  # skip requests whose caller gave up
                    batch.append(req)
            if not batch:
                continue
            try:
                version = await asyncio.to_thread(self._generate_batch, batch)
            except Exception as e:
                for req in batch:
                    if not req.future.done():
                        req.future.set_exception(
                            PolicyError(f"HF generation failed: {type(e).__name__}: {e}")
                        )
                continue
            for req in batch:
                if req.result is not None and not req.future.done():
                    req.result.policy_version = version
                    req.future.set_result(req.result)

    # -- the decode loop (worker thread) --------------------------------------------------------

    @torch.inference_mode()
    def _generate_batch(self, batch: list[_Request]) -> int:
        with self._model_lock:
            version = self.version
            self._decode(batch)
            self.stats["batches"] += 1
            self.stats["requests"] += len(batch)
            return version

    def _decode(self, batch: list[_Request]) -> None:
        n = len(batch)
        store = self.kv_store
        epoch = store.epoch if store is not None else 0
        if store is not None:
            cache, offsets = self._cache_from_store(batch, epoch)
        else:
            cache, offsets = self._broadcast_head(batch)
        kv = {cache_kwarg(self.model): cache}
        # Each row: [left pad | its cached prefix] then [left pad | its own new tokens].
        c_max = max(offsets)
        width = max(len(r.prompt) - c for r, c in zip(batch, offsets, strict=True))
        input_ids = torch.full((n, width), self.pad_id, dtype=torch.long)
        own = torch.zeros((n, width), dtype=torch.long)
        cached = torch.zeros((n, c_max), dtype=torch.long)
        for i, (r, c) in enumerate(zip(batch, offsets, strict=True)):
            tail = r.prompt[c:]
            input_ids[i, width - len(tail) :] = torch.tensor(tail)
            own[i, width - len(tail) :] = 1
            cached[i, c_max - c :] = 1
        positions = torch.tensor(offsets)[:, None] + (own.cumsum(-1) - 1).clamp(min=0)
        mask = torch.cat([cached, own], dim=1)
        input_ids, mask, positions = (t.to(self.device) for t in (input_ids, mask, positions))
        out = self.model(
            input_ids=input_ids,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            logits_to_keep=1,
            **kv,
        )
        logits = out.logits[:, -1, :]
        next_pos = positions[:, -1] + 1
        tokens: list[list[int]] = [[] for _ in batch]
        logprobs: list[list[float]] = [[] for _ in batch]
        finish = ["length"] * n
        active = list(range(n))  # batch index of each row still in the KV cache
        while active:
            if self._stop.is_set():
                raise PolicyError("HFPolicy was closed during generation")
            keep_rows: list[int] = []
            next_tokens: list[int] = []
            done_rows: list[int] = []
            sampled, sampled_lp = sample_rows(
                logits, [batch[b].params for b in active], [batch[b].generator for b in active]
            )
            for row, b in enumerate(active):
                req = batch[b]
                tok, lp = sampled[row], sampled_lp[row]
                tokens[b].append(tok)
                logprobs[b].append(lp)
                if tok in self.stop_ids or (
                    req.params.stop and self._hit_stop_string(tokens[b], req.params.stop)
                ):
                    finish[b] = "stop"
                    done_rows.append(row)
                elif len(tokens[b]) < req.params.max_new_tokens:
                    keep_rows.append(row)
                    next_tokens.append(tok)
                else:
                    done_rows.append(row)
            if store is not None:
                for row in done_rows:  # keep what this row's next turn will start with
                    b, seen = active[row], mask[row].bool()
                    layers = [
                        (layer.keys[row][:, seen], layer.values[row][:, seen]) for layer in cache.layers
                    ]
                    store.put(KVEntry(batch[b].prompt + tokens[b][:-1], layers, epoch))
            self.stats["rows_x_steps"] += len(active)
            if not keep_rows:
                break
            if len(keep_rows) < len(active):
                index = torch.tensor(keep_rows, device=self.device)
                cache.batch_select_indices(index)
                mask, next_pos = mask[index], next_pos[index]
                active = [active[r] for r in keep_rows]
            mask = torch.cat([mask, mask.new_ones((len(active), 1))], dim=1)
            out = self.model(
                input_ids=torch.tensor(next_tokens, device=self.device)[:, None],
                attention_mask=mask,
                position_ids=next_pos[:, None],
                use_cache=True,
                **kv,
            )
            logits = out.logits[:, -1, :]
            next_pos = next_pos + 1
        for b, req in enumerate(batch):
            text = self.tokenizer.decode(tokens[b], skip_special_tokens=True)
            req.result = Generation(tokens[b], logprobs[b], finish[b], text, self.version)

    def _broadcast_head(self, batch: list[_Request]) -> tuple[Any, list[int]]:
        """No store: run the head the prompts share once and repeat its cache across the rows."""
        from transformers import DynamicCache

        n, cache = len(batch), DynamicCache()
        shared = _common_prefix_len([r.prompt for r in batch]) if n > 1 else 0
        shared = min(shared, min(len(r.prompt) for r in batch) - 1)
        if shared < self.min_shared_prefix:
            return cache, [0] * n
        head = torch.tensor([batch[0].prompt[:shared]], device=self.device)
        self.model(input_ids=head, use_cache=True, logits_to_keep=1, **{cache_kwarg(self.model): cache})
        cache.batch_repeat_interleave(n)
        self.stats["shared_prefix_tokens"] += shared * (n - 1)  # prompt tokens not recomputed
        return cache, [shared] * n

    def _cache_from_store(self, batch: list[_Request], epoch: int) -> tuple[Any, list[int]]:
        """Start each row from the longest stored prefix of its prompt; rows with none share their
        common head, computed once and stored for the episodes that follow."""
        from transformers import DynamicCache

        store = self.kv_store
        assert store is not None
        entries = [store.longest_prefix(r.prompt) for r in batch]
        fresh = [i for i, e in enumerate(entries) if e is None]
        if fresh:
            prompts = [batch[i].prompt for i in fresh]
            shared = min(_common_prefix_len(prompts), min(len(p) for p in prompts) - 1)
            if shared >= self.min_shared_prefix:
                head = self._prefill(prompts[0][:shared], epoch)
                store.put(head)
                for i in fresh:
                    entries[i] = head
                self.stats["shared_prefix_tokens"] += shared * (len(fresh) - 1)
        offsets = [len(e.tokens) if e is not None else 0 for e in entries]
        c_max = max(offsets)
        if c_max == 0:
            return DynamicCache(), offsets
        self.stats["reused_prefix_tokens"] += sum(offsets)
        some = next(e for e in entries if e is not None)
        layers = []
        for j, (k0, v0) in enumerate(some.kv):
            keys = k0.new_zeros((len(batch), k0.shape[0], c_max, k0.shape[-1]))
            values = v0.new_zeros((len(batch), v0.shape[0], c_max, v0.shape[-1]))
            for i, e in enumerate(entries):
                if e is not None:
                    keys[i, :, c_max - len(e.tokens) :] = e.kv[j][0]
                    values[i, :, c_max - len(e.tokens) :] = e.kv[j][1]
            layers.append((keys, values))
        return DynamicCache(ddp_cache_data=layers), offsets

    def _prefill(self, tokens: list[int], epoch: int) -> KVEntry:
        from transformers import DynamicCache

        cache = DynamicCache()
        ids = torch.tensor([tokens], device=self.device)
        self.model(input_ids=ids, use_cache=True, logits_to_keep=1, **{cache_kwarg(self.model): cache})
        return KVEntry(list(tokens), [(layer.keys[0], layer.values[0]) for layer in cache.layers], epoch)

    def _hit_stop_string(self, tokens: list[int], stops: Sequence[str]) -> bool:
        tail = self.tokenizer.decode(tokens[-32:], skip_special_tokens=False)
        return any(s in tail for s in stops)


def _plain_kv(model: Any) -> bool:
    """Whether every layer keeps a plain, growing key/value cache (no sliding window, no state
    space), the layout `PrefixKVStore` entries are cut from and stitched back into."""
    try:
        from transformers import DynamicCache
        from transformers.cache_utils import DynamicLayer

        layers = DynamicCache(config=model.config).layers
    except Exception:
        return False
    return bool(layers) and all(type(layer) is DynamicLayer for layer in layers)


def _common_prefix_len(seqs: Sequence[Sequence[int]]) -> int:
    first, n = seqs[0], min(len(s) for s in seqs)
    for i in range(n):
        t = first[i]
        if any(s[i] != t for s in seqs):
            return i
    return n
