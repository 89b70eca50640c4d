"""HttpTool against a real HTTP server on 127.0.0.1: success, retries, deadlines, clear errors."""

from __future__ import annotations

import json
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import httpx
import pytest

from agentrl.tools import ToolBox, ToolCall
from agentrl.tools.http import HttpTool


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    hits: Counter[str]
    release: threading.Event


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
        pass

    def _reply(self, status: int, body: object, headers: dict[str, str] | None = None) -> None:
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain" if isinstance(body, str) else "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _route(self, body: object) -> None:
        path = urlparse(self.path).path
        self.server.hits[path] += 1
        n = self.server.hits[path]
        if path == "/echo":
            query = {k: v[0] for k, v in parse_qs(urlparse(self.path).query).items()}
            key = self.headers.get("X-Api-Key")
            self._reply(200, {"method": self.command, "body": body, "query": query, "key": key})
        elif path == "/answer":
            self._reply(200, {"result": {"items": ["first", {"deep": 42}]}})
        elif path == "/flaky":  # fails twice, then works
            if n <= 2:
                self._reply(503, "temporarily overloaded")
            else:
                self._reply(200, f"ok after {n} attempts")
        elif path == "/limited":  # asks the client to wait once
            if n == 1:
                self._reply(429, "slow down", {"Retry-After": "0"})
            else:
                self._reply(200, "served")
        elif path == "/down":
            self._reply(500, "internal error: database unreachable")
        elif path == "/bad":
            self._reply(400, "field 'query' must not be empty")
        elif path == "/hang":
            self.server.release.wait(10)
            self._reply(200, "too late")
        elif path == "/long":
            self._reply(200, "x" * 10_000)
        elif path == "/empty":
            self._reply(200, "")
        else:
            self._reply(404, "no such endpoint")

    def do_GET(self) -> None:
        self._route(None)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        self._route(json.loads(self.rfile.read(length) or b"null"))


@pytest.fixture(scope="module")
def server() -> Iterator[_Server]:
    srv = _Server(("127.0.0.1", 0), _Handler)
    srv.hits = Counter()
    srv.release = threading.Event()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.release.set()
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def base(server: _Server) -> str:
    server.hits.clear()
    return f"http://127.0.0.1:{server.server_address[1]}"


LOCAL = {"allow": ["127.0.0.1"]}  # loopback is refused unless allowed
FAST = {"backoff_base": 0.01, "backoff_max": 0.05, **LOCAL}


async def test_post_sends_json_body_and_headers(base: str) -> None:
    tool = HttpTool(f"{base}/echo", headers={"X-Api-Key": "k1"}, **FAST)
    result = await tool({"query": "capital", "k": 2})
    assert result.ok
    reply = json.loads(result.content)
    assert reply == {"method": "POST", "body": {"query": "capital", "k": 2}, "query": {}, "key": "k1"}


async def test_get_sends_query_string(base: str) -> None:
    tool = HttpTool(f"{base}/echo", method="get", **FAST)
    reply = json.loads((await tool({"q": "lumen", "n": 3})).content)
    assert reply["method"] == "GET" and reply["query"] == {"q": "lumen", "n": "3"}


async def test_result_field_extraction(base: str) -> None:
    assert (await HttpTool(f"{base}/answer", result_field="result.items.0", **LOCAL)({})).content == "first"
    assert (await HttpTool(f"{base}/answer", result_field="result.items.1.deep", **LOCAL)({})).content == "42"
    missing = await HttpTool(f"{base}/answer", result_field="result.nope", **LOCAL)({})
    assert not missing.ok and "expected field 'result.nope'" in missing.content


async def test_flaky_endpoint_succeeds_after_retries(base: str, server: _Server) -> None:
    result = await HttpTool(f"{base}/flaky", retries=2, **FAST)({})
    assert result.ok and result.content == "ok after 3 attempts"
    assert server.hits["/flaky"] == 3


async def test_too_few_retries_reports_last_failure(base: str, server: _Server) -> None:
    result = await HttpTool(f"{base}/flaky", retries=1, **FAST)({})
    assert not result.ok
    assert (
        "failed after 2 attempts" in result.content and "HTTP 503: temporarily overloaded" in result.content
    )
    assert server.hits["/flaky"] == 2


async def test_retry_after_is_honoured(base: str, server: _Server) -> None:
    result = await HttpTool(f"{base}/limited", retries=1, **FAST)({})
    assert result.ok and result.content == "served" and server.hits["/limited"] == 2


async def test_server_error_after_all_retries(base: str, server: _Server) -> None:
    result = await HttpTool(f"{base}/down", retries=3, **FAST)({})
    assert not result.ok and result.error_kind == "exception"
    assert "failed after 4 attempts" in result.content and "database unreachable" in result.content
    assert server.hits["/down"] == 4


async def test_client_error_is_not_retried(base: str, server: _Server) -> None:
    result = await HttpTool(f"{base}/bad", retries=3, **FAST)({})
    assert not result.ok
    assert "rejected the request (HTTP 400): field 'query' must not be empty" in result.content
    assert server.hits["/bad"] == 1
    not_found = await HttpTool(f"{base}/nowhere", **FAST)({})
    assert "HTTP 404" in not_found.content


async def test_hanging_endpoint_times_out_per_attempt(base: str, server: _Server) -> None:
    result = await HttpTool(f"{base}/hang", request_timeout=0.2, retries=1, **FAST)({})
    assert not result.ok
    assert "failed after 2 attempts" in result.content and "no reply within 0.2 s" in result.content
    assert server.hits["/hang"] == 2


async def test_overall_deadline_bounds_the_whole_call(base: str) -> None:
    tool = HttpTool(f"{base}/hang", request_timeout=5, retries=5, timeout=0.3, **FAST)
    result = await tool({})
    assert result.error_kind == "timeout" and "timed out after 0.3 s" in result.content


async def test_connection_refused_is_retried_then_reported() -> None:
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = await HttpTool(f"http://127.0.0.1:{port}/x", retries=2, **FAST)({})
    assert not result.ok
    assert "failed after 3 attempts" in result.content and "could not reach the service" in result.content


async def test_long_and_empty_replies(base: str) -> None:
    long = await HttpTool(f"{base}/long", max_response_chars=100, **LOCAL)({})
    assert long.content.startswith("x" * 100) and "truncated: 9900 more characters" in long.content
    assert (await HttpTool(f"{base}/empty", **LOCAL)({})).content == "(empty reply)"


async def test_shared_client_and_per_instance_schema(base: str) -> None:
    schema = {
        "type": "object",
        "properties": {"query": {"type": "string"}},
        "required": ["query"],
        "additionalProperties": False,
    }
    async with httpx.AsyncClient() as client:
        tool = HttpTool(
            f"{base}/echo",
            name="kb_service",
            description="Search the remote KB.",
            parameters=schema,
            client=client,
            **LOCAL,
        )
        box = ToolBox([tool])
        ok = await box.call(ToolCall("kb_service", {"query": "x"}))
        assert ok.ok and json.loads(ok.content)["body"] == {"query": "x"}
        bad = await box.call(ToolCall("kb_service", {"q": "x"}))
        assert bad.error_kind == "bad_arguments"
    fn = tool.schema()["function"]
    assert fn["name"] == "kb_service" and fn["parameters"] is schema
    assert HttpTool.name == "http"  # the class default is untouched


def test_backoff_is_seeded_exponential_and_capped() -> None:
    a = HttpTool("http://127.0.0.1:1/", backoff_base=0.5, backoff_max=2.0, seed=7, **LOCAL)
    b = HttpTool("http://127.0.0.1:1/", backoff_base=0.5, backoff_max=2.0, seed=7, **LOCAL)
    delays = [a.backoff(i) for i in range(1, 7)]
    assert delays == [b.backoff(i) for i in range(1, 7)]
    for i, d in enumerate(delays, 1):
        ceiling = min(2.0, 0.5 * 2 ** (i - 1))
        assert ceiling / 2 <= d <= ceiling
    c = HttpTool("http://127.0.0.1:1/", backoff_base=0.5, backoff_max=2.0, seed=8, **LOCAL)
    assert [c.backoff(i) for i in range(1, 7)] != delays


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"url": "ftp://x"}, "must start with http"),
        ({"url": "http://x", "method": "TRACE"}, "unsupported method"),
        ({"url": "http://x", "retries": -1}, "retries >= 0"),
        ({"url": "http://x", "request_timeout": 0}, "request_timeout > 0"),
    ],
)
def test_constructor_validation(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        HttpTool(**kwargs)  # type: ignore[arg-type]
