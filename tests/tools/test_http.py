"""HttpTool against a real HTTP server on 127.0.0.1: success, retries, deadlines, clear errors."""

from __future__ import annotations

import asyncio
import gzip
import ipaddress
import json
import socket
import threading
import time
import tracemalloc
from collections import Counter
from collections.abc import Iterable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import httpx
import pytest

from agentrl.tools import ToolBox, ToolCall
from agentrl.tools import http as http_mod
from agentrl.tools.http import HttpTool


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    hits: Counter[str]
    release: threading.Event
    sent: int  # body bytes the streaming routes managed to write


_GZIP_BOMB = gzip.compress(bytes(64 << 20), compresslevel=9)


def _trickle(stop: threading.Event, count: int, every: float) -> Iterator[bytes]:
    for _ in range(count):
        yield b"x"
        if stop.wait(every):
            return


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

    def _stream(self, chunks: Iterable[bytes], headers: dict[str, str] | None = None) -> None:
        """An HTTP/1.0 body without a length: it ends when the server closes the connection."""
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        try:
            for chunk in chunks:
                self.wfile.write(chunk)
                self.wfile.flush()
                self.server.sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client stopped reading: what we want

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
        elif path == "/huge":  # 64 MiB with no length, written as fast as the client reads
            self._stream(bytes(64 << 10) for _ in range(1024))
        elif path == "/gzip-bomb":  # 64 MiB of zeros, about 64 KB on the wire
            self._stream([_GZIP_BOMB], {"Content-Encoding": "gzip"})
        elif path == "/trickle":  # one byte every 0.2 s, for up to 20 s
            self._stream(_trickle(self.server.release, 100, 0.2))
        elif path == "/stall":  # headers and one byte, then silence
            self._stream(_trickle(self.server.release, 2, 5.0))
        elif path == "/redirect":
            self._reply(302, "moved", {"Location": self.headers.get("X-Location", "/echo")})
        elif path == "/host":
            self._reply(200, {"host": self.headers.get("Host")})
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
    srv.sent = 0
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.release.set()
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def base(server: _Server) -> str:
    server.hits.clear()
    server.sent = 0
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
        ({"url": "FILE:///etc/passwd"}, "must start with http"),
        ({"url": "http://x", "read_timeout": 0}, "read_timeout must be > 0"),
        ({"url": "http://x", "max_response_bytes": 0}, "max_response_bytes must be > 0"),
        ({"url": "http://x", "allow": "127.0.0.1"}, "allow must be a list"),
        ({"url": "http://x", "allow": ["not a host"]}, "neither a host name nor a network"),
        ({"url": "http://x", "method": "TRACE"}, "unsupported method"),
        ({"url": "http://x", "retries": -1}, "retries >= 0"),
        ({"url": "http://x", "request_timeout": 0}, "request_timeout > 0"),
    ],
)
def test_constructor_validation(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        HttpTool(**kwargs)  # type: ignore[arg-type]


# --- hostile servers: size and time -----------------------------------------------------------------


async def test_huge_body_is_streamed_under_the_byte_cap(base: str, server: _Server) -> None:
    tool = HttpTool(f"{base}/huge", max_response_bytes=64 << 10, max_response_chars=100, **LOCAL)
    tracemalloc.start()
    try:
        result = await tool({})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.ok and result.content.startswith("\0" * 100)
    assert "reply truncated" in result.content
    assert peak < 8 << 20, f"peak {peak / 2**20:.1f} MiB while reading a 64 MiB body"
    await asyncio.sleep(0.2)  # let the server notice the closed connection
    assert server.sent < 32 << 20, f"the server wrote {server.sent / 2**20:.0f} MiB: the body was read whole"
    bounded = await HttpTool(f"{base}/huge", max_response_bytes=1000, result_field="a", **LOCAL)({})
    assert not bounded.ok and "larger than 1000 bytes" in bounded.content


async def test_compressed_body_is_capped_after_decoding(base: str) -> None:
    tool = HttpTool(f"{base}/gzip-bomb", max_response_bytes=100_000, max_response_chars=50, **LOCAL)
    tracemalloc.start()
    try:
        result = await tool({})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.ok and "reply truncated: 99950+ more characters" in result.content
    assert peak < 8 << 20, f"peak {peak / 2**20:.1f} MiB while inflating a 64 MiB gzip body"


async def test_trickling_server_cannot_hold_an_attempt_past_request_timeout(base: str) -> None:
    tool = HttpTool(f"{base}/trickle", request_timeout=1.0, retries=0, **FAST)
    start = time.monotonic()
    result = await tool({})
    elapsed = time.monotonic() - start
    assert not result.ok and "no reply within 1 s" in result.content, result.content
    assert elapsed < 1.6, f"a trickle of one byte per 0.2 s held the call for {elapsed:.1f} s"
    start = time.monotonic()
    twice = await HttpTool(f"{base}/trickle", request_timeout=0.5, retries=1, **FAST)({})
    assert "failed after 2 attempts" in twice.content and time.monotonic() - start < 1.6


async def test_read_timeout_bounds_each_read(base: str) -> None:
    tool = HttpTool(f"{base}/stall", request_timeout=5.0, read_timeout=0.3, retries=0, **FAST)
    start = time.monotonic()
    result = await tool({})
    assert not result.ok and "sent nothing for 0.3 s" in result.content, result.content
    assert time.monotonic() - start < 1.5


# --- addresses -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://[fe80::1]/", "link-local"),
        ("http://10.1.2.3/", "private"),
        ("http://172.16.0.1:8080/", "private"),
        ("http://192.168.1.1/", "private"),
        ("http://[fd00::1]/", "private"),
        ("http://100.64.0.1/", "not globally routable"),
        ("http://127.0.0.1:8000/", "loopback"),
        ("http://[::1]:8000/", "loopback"),
        ("http://[::ffff:169.254.169.254]/", "link-local"),
        ("http://[2002:a9fe:a9fe::1]/", "link-local"),  # 6to4 wrapping 169.254.169.254
        ("http://224.0.0.1/", "multicast"),
        ("http://0.0.0.0/", "unspecified"),
        ("http://[::]/", "unspecified"),
        ("http://240.0.0.1/", "reserved"),
    ],
)
def test_non_public_addresses_are_refused_before_any_connection(url: str, why: str) -> None:
    with pytest.raises(ValueError, match=f"is {why}, so it is not allowed.*allow="):
        HttpTool(url)


def test_credentials_in_the_url_are_refused() -> None:
    for url in ("http://user:secret@example.com/", "https://token@example.com/x", "http://:pw@example.com/"):
        with pytest.raises(ValueError, match="must not carry credentials"):
            HttpTool(url)


def test_public_addresses_and_allowed_networks_pass() -> None:
    HttpTool("http://93.184.216.34/")
    HttpTool("https://[2606:4700::1111]/")
    HttpTool("http://10.1.2.3:9000/", allow=["10.0.0.0/8"])
    HttpTool("http://[fd00::1]/", allow=["fd00::/8"])
    HttpTool("http://169.254.169.254/", allow=["169.254.169.254"])
    with pytest.raises(ValueError, match="private"):
        HttpTool("http://10.1.2.3/", allow=["192.168.0.0/16"])
    assert http_mod.address_problem(ipaddress.ip_address("8.8.8.8")) is None


class _Recorder:
    """A mock transport: whatever reaches it would have gone out on the network."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(200, text="reached")


def _fake_dns(monkeypatch: pytest.MonkeyPatch, answers: list[list[str]]) -> list[str]:
    """Replace name lookup: each call returns the next answer (the last one repeats)."""
    asked: list[str] = []

    async def resolve(host: str, port: int) -> list[str]:
        asked.append(host)
        return answers[min(len(asked), len(answers)) - 1]

    monkeypatch.setattr(http_mod, "resolve", resolve)
    return asked


@pytest.mark.parametrize(
    "answer", [["169.254.169.254"], ["93.184.216.34", "10.0.0.5"], ["::1"], ["::ffff:192.168.0.1"]]
)
async def test_a_name_resolving_to_a_denied_address_is_refused(
    monkeypatch: pytest.MonkeyPatch, answer: list[str]
) -> None:
    asked = _fake_dns(monkeypatch, [answer])
    recorder = _Recorder()
    async with httpx.AsyncClient(transport=httpx.MockTransport(recorder)) as client:
        result = await HttpTool("http://metadata.test/latest", client=client, **FAST)({})
    assert not result.ok and "so it is not allowed" in result.content, result.content
    assert recorder.requests == [] and asked == ["metadata.test"]  # refused once, not retried


async def test_connection_goes_to_the_checked_address(
    monkeypatch: pytest.MonkeyPatch, base: str, server: _Server
) -> None:
    """A name is looked up by the tool, checked, and connected to by address: DNS cannot rebind it."""
    port = server.server_address[1]
    asked = _fake_dns(monkeypatch, [["127.0.0.1"], ["169.254.169.254"]])
    tool = HttpTool(f"http://svc.test:{port}/host", **FAST)
    reply = json.loads((await tool({})).content)
    assert reply == {"host": f"svc.test:{port}"}  # the name travels in the Host header
    assert asked == ["svc.test"]
    rebound = await tool({})  # the next lookup points somewhere else: checked again, refused
    assert not rebound.ok and "169.254.169.254" in rebound.content and "link-local" in rebound.content
    assert server.hits["/host"] == 1
    _fake_dns(monkeypatch, [["127.0.0.1"]])
    loopback = await HttpTool(f"http://svc.test:{port}/host", **FAST | {"allow": []})({})
    assert not loopback.ok and "loopback" in loopback.content


async def test_allowlisted_host_names_skip_the_address_check(monkeypatch: pytest.MonkeyPatch) -> None:
    async def no_lookup(host: str, port: int) -> list[str]:
        raise AssertionError("an allowlisted name needs no check")

    monkeypatch.setattr(http_mod, "resolve", no_lookup)
    recorder = _Recorder()
    async with httpx.AsyncClient(transport=httpx.MockTransport(recorder)) as client:
        tool = HttpTool("http://Grader.Internal:8080/score", allow=["grader.internal"], client=client)
        result = await tool({"x": 1})
    assert result.ok and result.content == "reached"
    assert str(recorder.requests[0].url) == "http://grader.internal:8080/score"


async def test_scheme_is_case_insensitive(base: str) -> None:
    port = base.rsplit(":", 1)[1]
    tool = HttpTool(f"HTTP://127.0.0.1:{port}/echo", method="GET", **FAST)
    reply = json.loads((await tool({"q": "x"})).content)
    assert reply["query"] == {"q": "x"}
    HttpTool("HtTpS://example.com/")  # accepted as https


async def test_redirects_are_refused_not_followed(base: str, server: _Server) -> None:
    for location in ("/echo", "http://169.254.169.254/latest/meta-data/"):
        tool = HttpTool(f"{base}/redirect", headers={"X-Location": location}, **FAST)
        result = await tool({})
        assert not result.ok and "redirect (HTTP 302)" in result.content and location in result.content
    # even a shared client configured to follow redirects does not follow them here
    async with httpx.AsyncClient(follow_redirects=True) as client:
        result = await HttpTool(f"{base}/redirect", client=client, **FAST)({})
    assert not result.ok and "not followed" in result.content
    assert server.hits["/redirect"] == 3 and server.hits["/echo"] == 0


# --- query string --------------------------------------------------------------------------------------


async def test_get_keeps_the_urls_own_query_string(base: str) -> None:
    tool = HttpTool(f"{base}/echo?key=abc&format=json", method="GET", **FAST)
    reply = json.loads((await tool({"q": "lumen", "n": 3})).content)
    assert reply["query"] == {"key": "abc", "format": "json", "q": "lumen", "n": "3"}
    clash = await tool({"key": "other"})
    assert not clash.ok and "'key' is fixed by the http service's URL" in clash.content
    post = json.loads((await HttpTool(f"{base}/echo?key=abc", **FAST)({"q": "x"})).content)
    assert post["query"] == {"key": "abc"} and post["body"] == {"q": "x"}


async def test_https_to_a_name_keeps_the_name_for_tls_and_host(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_dns(monkeypatch, [["93.184.216.34"]])
    recorder = _Recorder()
    async with httpx.AsyncClient(transport=httpx.MockTransport(recorder)) as client:
        result = await HttpTool("HTTPS://api.example.com/v1?x=1", method="GET", client=client)({"q": "a"})
    assert result.ok
    (sent,) = recorder.requests
    assert str(sent.url) == "https://93.184.216.34/v1?x=1&q=a"
    assert sent.headers["host"] == "api.example.com"
    assert sent.extensions["sni_hostname"] == "api.example.com"  # the certificate is checked for the name
