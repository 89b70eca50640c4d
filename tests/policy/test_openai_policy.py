"""The HTTP backend against in-process fake servers (httpx.MockTransport): request shape, routing,
retries, deadlines, clear errors and the weight-sync calls. The real vLLM server is in
tests/integration/test_vllm_server.py."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

from agentrl.policy.base import Policy, PolicyError, PolicyTimeoutError, PolicyUnavailableError
from agentrl.policy.openai import OpenAIPolicy
from agentrl.types import SamplingParams


class FakeServers:
    """Scripted behaviour per host: 'ok', 'down' (connection refused), 'slow', '500', '400'."""

    def __init__(self, modes: dict[str, list[str] | str], delay: float = 0.0) -> None:
        self.modes = modes
        self.delay = delay
        self.requests: list[tuple[str, str, dict[str, Any] | None]] = []
        self.active: dict[str, int] = {}
        self.peak: dict[str, int] = {}

    def mode(self, host: str) -> str:
        m = self.modes[host]
        if isinstance(m, list):
            return m.pop(0) if len(m) > 1 else m[0]
        return m

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        body = json.loads(request.content) if request.content else None
        self.requests.append((host, request.url.path, body))
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"data": [{"id": "tiny"}]})
        mode = self.mode(host)
        if mode == "down":
            raise httpx.ConnectError("connection refused", request=request)
        if mode == "slow":
            await asyncio.sleep(10)
        if mode == "500":
            return httpx.Response(500, text="engine died")
        if mode == "400":
            return httpx.Response(400, json={"error": "max_tokens too large"})
        if request.url.path != "/v1/completions":
            return httpx.Response(200, json={"ok": True})
        self.active[host] = self.active.get(host, 0) + 1
        self.peak[host] = max(self.peak.get(host, 0), self.active[host])
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.active[host] -= 1
        n = min(3, body["max_tokens"])
        ids = [(body["prompt"][-1] + k + 1) % 100 for k in range(n)]
        return httpx.Response(
            200,
            json={
                "choices": [
                    {
                        "text": "abc"[:n],
                        "token_ids": ids,
                        "finish_reason": "length" if n == body["max_tokens"] else "stop",
                        "logprobs": {"tokens": [f"token_id:{i}" for i in ids], "token_logprobs": [-0.25] * n},
                    }
                ]
            },
        )


def _exists(*parts: str) -> bool:
    return Path(*parts).exists()


def _resolved(path: Path) -> str:
    return str(path.resolve())


def make(servers: FakeServers, hosts: list[str], **kw: Any) -> OpenAIPolicy:
    client = httpx.AsyncClient(transport=httpx.MockTransport(servers))
    kw = {"backoff_s": 0.001, "backoff_max_s": 0.002, "cooldown_s": 0.05, "timeout": 0.5, **kw}
    return OpenAIPolicy([f"http://{h}:8000/v1" for h in hosts], tokenizer=None, client=client, **kw)


async def test_token_ids_in_token_ids_and_logprobs_out() -> None:
    servers = FakeServers({"a": "ok"})
    policy = make(servers, ["a"])
    assert isinstance(policy, Policy)
    out = await policy.generate(
        [5, 6, 7], SamplingParams(max_new_tokens=8, temperature=0.7, top_k=5, seed=3, stop=("</tool_call>",))
    )
    assert out.token_ids == [8, 9, 10] and out.logprobs == [-0.25] * 3 and out.finish_reason == "stop"
    _, path, body = servers.requests[-1]
    assert path == "/v1/completions" and body["prompt"] == [5, 6, 7] and body["model"] == "tiny"
    assert body["logprobs"] == 0 and body["return_token_ids"] and body["seed"] == 3
    assert body["top_k"] == 5 and body["stop"] == ["</tool_call>"] and body["include_stop_str_in_output"]
    out = await policy.generate([1], SamplingParams(max_new_tokens=3))
    assert out.finish_reason == "length" and "top_k" not in servers.requests[-1][2]
    await policy.aclose()


async def test_least_loaded_routing_spreads_concurrent_requests() -> None:
    servers = FakeServers({"a": "ok", "b": "ok", "c": "ok"}, delay=0.02)
    policy = make(servers, ["a", "b", "c"])
    await asyncio.gather(*(policy.generate([i], SamplingParams(max_new_tokens=2)) for i in range(30)))
    counts = {h: sum(1 for r in servers.requests if r[0] == h and r[1] == "/v1/completions") for h in "abc"}
    assert counts == {"a": 10, "b": 10, "c": 10}
    assert max(servers.peak.values()) == 10
    await policy.aclose()


async def test_failed_endpoint_is_retried_elsewhere_and_rested() -> None:
    servers = FakeServers({"a": "down", "b": "ok"})
    policy = make(servers, ["a", "b"], cooldown_s=30)
    outs = [await policy.generate([1], SamplingParams(max_new_tokens=2)) for _ in range(5)]
    assert all(o.token_ids == [2, 3] for o in outs)
    hits_a = [r for r in servers.requests if r[0] == "a" and r[1] == "/v1/completions"]
    assert len(hits_a) == 1  # after one failure, a rests and b serves
    assert policy.endpoints[0].failures == 1 and policy.endpoints[1].served == 5
    await policy.aclose()


async def test_server_errors_are_retried_then_succeed() -> None:
    servers = FakeServers({"a": ["500", "500", "ok"]})
    policy = make(servers, ["a"], cooldown_s=0.0)
    out = await policy.generate([1], SamplingParams(max_new_tokens=2))
    assert out.token_ids == [2, 3] and len([r for r in servers.requests if r[1] == "/v1/completions"]) == 3
    await policy.aclose()


async def test_all_endpoints_down_is_a_clear_error_not_a_hang() -> None:
    servers = FakeServers({"a": "down", "b": "500"})
    policy = make(servers, ["a", "b"], max_retries=3)
    policy.model = "tiny"
    with pytest.raises(PolicyUnavailableError) as err:
        async with asyncio.timeout(5):
            await policy.generate([1], SamplingParams())
    msg = str(err.value)
    assert "4 attempts over 2 endpoint(s)" in msg and "http://a:8000" in msg and "HTTP 500" in msg
    await policy.aclose()


async def test_timeouts_become_policy_timeout() -> None:
    servers = FakeServers({"a": "slow"})
    policy = make(servers, ["a"], timeout=0.05, max_retries=1)
    policy.model = "tiny"
    with pytest.raises(PolicyTimeoutError, match="timed out on all 2 attempts"):
        await policy.generate([1], SamplingParams())
    policy = make(servers, ["a"], timeout=0.05, max_retries=5, deadline=0.12)
    policy.model = "tiny"
    with pytest.raises(PolicyTimeoutError, match=r"overall 0\.12 s deadline"):
        await policy.generate([1], SamplingParams())
    await policy.aclose()


async def test_client_errors_fail_fast_with_the_server_message() -> None:
    servers = FakeServers({"a": "400"})
    policy = make(servers, ["a"])
    policy.model = "tiny"
    with pytest.raises(PolicyError, match="max_tokens too large"):
        await policy.generate([1], SamplingParams())
    assert len(servers.requests) == 1
    with pytest.raises(ValueError, match="empty"):
        await policy.generate([], SamplingParams())
    await policy.aclose()


async def test_reload_sync_waits_for_in_flight_requests(tmp_path: Path) -> None:
    servers = FakeServers({"a": "ok", "b": "ok"}, delay=0.05)
    policy = make(servers, ["a", "b"], weights_dir=tmp_path)
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    gens = [asyncio.create_task(policy.generate([1], SamplingParams(max_new_tokens=2))) for _ in range(4)]
    await asyncio.sleep(0.01)
    await policy.sync_weights(1, ckpt)
    assert all(g.done() and g.result().policy_version == 0 for g in gens)  # finished before the reload
    calls = [(h, p, b) for h, p, b in servers.requests if p != "/v1/completions" and p != "/v1/models"]
    for host in ("a", "b"):  # per server: pause, reload, drop the prefix cache, record the version, resume
        assert [p for h, p, _ in calls if h == host] == [
            "/pause",
            "/collective_rpc",
            "/reset_prefix_cache",
            "/update_weight_version",
            "/resume",
        ]
    assert ("a", "/update_weight_version", {"new_version": "1"}) in calls
    rpc = next(b for _, p, b in calls if p == "/collective_rpc")
    assert rpc == {"method": "reload_weights", "kwargs": {"weights_path": str(ckpt.resolve())}}
    assert (await policy.generate([1], SamplingParams(max_new_tokens=2))).policy_version == 1
    # a state dict is written as safetensors for the server to read, tied weights included
    tied = torch.ones(2)
    await policy.sync_weights(2, {"embed.weight": tied, "lm_head.weight": tied})
    rpc = [b for _, p, b in servers.requests if p == "/collective_rpc"][-1]
    assert _exists(rpc["kwargs"]["weights_path"], "model.safetensors") and policy.version == 2
    await policy.aclose()
    assert not _exists(rpc["kwargs"]["weights_path"])


async def test_reload_without_dev_mode_says_how_to_fix(tmp_path: Path) -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, json={"detail": "Not Found"})

    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    policy = OpenAIPolicy("http://a:8000", None, client=client)
    with pytest.raises(PolicyError, match="VLLM_SERVER_DEV_MODE=1"):
        await policy.sync_weights(1, tmp_path)
    assert policy.version == 0
    with pytest.raises(FileNotFoundError):
        await policy.sync_weights(1, tmp_path / "missing")
    await policy.aclose()


async def test_reload_on_a_server_without_pause_or_versions_still_works(tmp_path: Path) -> None:
    """Older vLLM servers have /collective_rpc but not the RL routes: the reload goes on without them."""
    seen: list[str] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        if request.url.path in ("/collective_rpc", "/reset_prefix_cache"):
            return httpx.Response(200)
        return httpx.Response(404, json={"detail": "Not Found"})

    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    policy = OpenAIPolicy("http://a:8000", None, client=client)
    await policy.sync_weights(3, tmp_path)
    assert policy.version == 3
    assert seen == ["/pause", "/collective_rpc", "/reset_prefix_cache", "/update_weight_version"]
    assert await policy.server_versions() == {"http://a:8000": None}
    await policy.aclose()


async def test_lora_sync_switches_the_requested_model(tmp_path: Path) -> None:
    where = _resolved(tmp_path)
    servers = FakeServers({"a": "ok"})
    policy = make(servers, ["a"], weight_sync="lora", lora_name="pol")
    await policy.sync_weights(1, tmp_path)
    await policy.sync_weights(2, tmp_path)
    await policy.generate([1], SamplingParams(max_new_tokens=1))
    paths = [(p, b) for _, p, b in servers.requests]
    assert ("/v1/load_lora_adapter", {"lora_name": "pol-v1", "lora_path": where}) in paths
    assert ("/v1/unload_lora_adapter", {"lora_name": "pol-v1"}) in paths
    assert paths[-1][1]["model"] == "pol-v2"
    with pytest.raises(ValueError, match="adapter directory"):
        await policy.sync_weights(3, {"w": torch.ones(1)})
    await policy.aclose()


async def test_reload_spells_out_a_tied_lm_head(tmp_path: Path) -> None:
    """vLLM's in-place reload keeps the old head of a tied model whose checkpoint omits lm_head.weight
    (as save_pretrained writes it), so the client hands the server a copy with the head spelled out."""
    from safetensors.torch import load_file, save_file

    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text(json.dumps({"tie_word_embeddings": True}))
    embed = torch.arange(6.0).reshape(3, 2)
    save_file({"model.embed_tokens.weight": embed}, str(ckpt / "model.safetensors"))
    servers = FakeServers({"a": "ok"})
    policy = make(servers, ["a"], weights_dir=tmp_path / "w")
    await policy.sync_weights(1, ckpt)
    sent = Path([b for _, p, b in servers.requests if p == "/collective_rpc"][-1]["kwargs"]["weights_path"])
    assert sent != ckpt.resolve() and sent.parent == (tmp_path / "w").resolve()
    written = load_file(str(sent / "model.safetensors"))
    assert torch.equal(written["lm_head.weight"], embed) and torch.equal(
        written["model.embed_tokens.weight"], embed
    )
    # an untied checkpoint (or one that has the head) is reloaded from where it is
    (ckpt / "config.json").write_text(json.dumps({"tie_word_embeddings": False}))
    await policy.sync_weights(2, ckpt)
    rpc = [b for _, p, b in servers.requests if p == "/collective_rpc"][-1]
    assert rpc["kwargs"]["weights_path"] == str(ckpt.resolve())
    await policy.aclose()


# -- several real (fake) servers on local sockets: rotation, health probes, catching up ----------------


class LocalServer:
    """A minimal vLLM look-alike on a real local port: completions, health, and the weight routes.

    `stop()` closes the port and drops open connections (a crash); `start()` again is a restart with
    the launch weights (no weight version) and a fresh request log."""

    def __init__(self, port: int = 0, delay: float = 0.0) -> None:
        self.port = port
        self.delay = delay
        self.log: list[str] = []
        self.version: str | None = None
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def completions(self) -> int:
        return self.log.count("/v1/completions")

    async def start(self) -> None:
        self.version, self.log = None, []
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for w in list(self._writers):
            w.transport.abort()
        await self._server.wait_closed()
        self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode().split("\r\n")
                path = lines[0].split()[1].split("?")[0]
                length = next(
                    (int(h.split(":")[1]) for h in lines[1:] if h.lower().startswith("content-length")), 0
                )
                raw = await reader.readexactly(length) if length else b""
                body = json.loads(raw) if raw else None
                self.log.append(path)
                payload = await self._answer(path, body)
                data = json.dumps(payload).encode()
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    + f"content-length: {len(data)}\r\n\r\n".encode()
                    + data
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _answer(self, path: str, body: Any) -> Any:
        if path == "/v1/models":
            return {"data": [{"id": "tiny"}]}
        if path == "/weight_info":
            return {"weight_version": self.version}
        if path == "/update_weight_version":
            self.version = body["new_version"]
        if path != "/v1/completions":
            return {}
        await asyncio.sleep(self.delay)
        ids = [self.port % 1000, body["prompt"][-1]]
        return {
            "choices": [
                {
                    "text": "ok",
                    "token_ids": ids,
                    "finish_reason": "stop",
                    "logprobs": {"token_logprobs": [-0.5, -0.5]},
                }
            ]
        }


async def _until(predicate: Any, limit_s: float = 5.0) -> None:
    async with asyncio.timeout(limit_s):
        while not predicate():  # noqa: ASYNC110 (polls the policy's state)
            await asyncio.sleep(0.01)


async def _servers(n: int, delay: float = 0.0) -> list[LocalServer]:
    out = [LocalServer(delay=delay) for _ in range(n)]
    for s in out:
        await s.start()
    return out


def _local_policy(servers: list[LocalServer], **kw: Any) -> OpenAIPolicy:
    kw = {"timeout": 2.0, "backoff_s": 0.01, "backoff_max_s": 0.02, "cooldown_s": 0.05, **kw}
    return OpenAIPolicy([s.url for s in servers], None, health_interval_s=0.05, **kw)


async def test_a_dead_server_leaves_the_rotation_and_returns_when_healthy() -> None:
    a, b = await _servers(2, delay=0.05)
    policy = _local_policy([a, b])
    params = SamplingParams(max_new_tokens=2)
    await asyncio.gather(*(policy.generate([i], params) for i in range(10)))
    assert a.completions() == 5 and b.completions() == 5

    # a crashes with requests in flight: they are retried on b, and a is left alone
    batch = [asyncio.create_task(policy.generate([i], params)) for i in range(10)]
    await asyncio.sleep(0.02)
    await a.stop()
    outs = await asyncio.gather(*batch)
    assert all(len(o.token_ids) == 2 for o in outs)
    assert not policy.endpoints[0].in_rotation and policy.endpoints[1].in_rotation
    before = b.completions()
    outs = await asyncio.gather(*(policy.generate([i], params) for i in range(10)))
    assert b.completions() == before + 10 and {o.token_ids[0] for o in outs} == {b.port % 1000}

    # a comes back on the same port: the health probe puts it back in rotation
    await a.start()
    await _until(lambda: policy.endpoints[0].in_rotation)
    assert policy.endpoints[0].returns == 1 and a.log[0] == "/health"
    await asyncio.gather(*(policy.generate([i], params) for i in range(10)))
    assert a.completions() == 5
    await policy.aclose()
    await b.stop()
    await a.stop()


async def test_a_returning_server_is_brought_up_to_date_before_it_serves(tmp_path: Path) -> None:
    a, b = await _servers(2)
    policy = _local_policy([a, b], weights_dir=tmp_path / "w")
    params = SamplingParams(max_new_tokens=2)
    await policy.sync_weights(1, tmp_path)
    assert await policy.server_versions() == {a.url: "1", b.url: "1"}

    await a.stop()
    await asyncio.gather(*(policy.generate([i], params) for i in range(4)))  # a's failure takes it out
    assert not policy.endpoints[0].in_rotation
    ckpt = tmp_path / "ckpt-2"
    ckpt.mkdir()
    await policy.sync_weights(2, ckpt)  # reaches b only; a is marked stale
    assert b.version == "2" and policy.endpoints[0].stale

    await a.start()  # a restart: launch weights again
    await _until(lambda: policy.endpoints[0].in_rotation)
    assert a.version == "2" and not policy.endpoints[0].stale
    assert "/collective_rpc" in a.log and "/v1/completions" not in a.log  # reloaded before serving
    await asyncio.gather(*(policy.generate([i], params) for i in range(4)))
    assert a.completions() == 2 and await policy.server_versions() == {a.url: "2", b.url: "2"}

    # a server that was only unreachable for a moment and kept its weights is not reloaded again
    policy._mark_failed(policy.endpoints[1], "a blip")
    reloads = b.log.count("/collective_rpc")
    await _until(lambda: policy.endpoints[1].in_rotation)
    assert b.log.count("/collective_rpc") == reloads
    await policy.aclose()
    await a.stop()
    await b.stop()


async def test_with_every_server_down_requests_fail_within_the_deadline_and_resume_after() -> None:
    a, b = await _servers(2)
    policy = _local_policy([a, b], max_retries=2)
    params = SamplingParams(max_new_tokens=2)
    await policy.generate([1], params)
    await a.stop()
    await b.stop()
    with pytest.raises(PolicyUnavailableError, match="3 attempts over 2 endpoint"):
        async with asyncio.timeout(5):
            await policy.generate([1], params)
    await b.start()
    await _until(lambda: policy.endpoints[1].in_rotation)
    assert len((await policy.generate([1], params)).token_ids) == 2
    await policy.aclose()
    await b.stop()
