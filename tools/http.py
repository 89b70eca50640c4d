"""`http`: call a configured HTTP endpoint (a search service, a remote sandbox, a grader).

Heavy tools live behind their own services; this adapter gives them the same contract as local
tools. Every attempt has its own deadline, the whole call has the base class's deadline, and
transient failures (connection errors, timeouts, 5xx, 429) are retried with exponential backoff and
seeded jitter. A 4xx is the caller's mistake and is returned at once with the server's message.

Hostile or broken servers cannot hold a call or flood memory: the body is streamed up to a byte cap
(`max_response_bytes`), each read has a deadline (`read_timeout`), and so has each whole attempt,
from name lookup to the last byte (`request_timeout`). Redirects are refused, not followed.

Addresses an agent should not reach are refused before any connection is made: loopback, private
and shared ranges, link-local (cloud metadata at 169.254.169.254), multicast, unspecified and
reserved addresses, and URLs carrying credentials. A hostname is resolved on every attempt, every
address it resolves to is checked, and the connection goes to the checked address (the name still
travels in the Host header and TLS SNI), so a DNS answer that changes in between cannot slip
through. `allow` lists the hosts or networks to permit anyway, e.g. `["127.0.0.1", "10.0.0.0/8"]`.
"""

from __future__ import annotations

import asyncio
import codecs
import ipaddress
import json
import random
import socket
import time
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import SplitResult, parse_qsl, urlencode, urlsplit, urlunsplit

import httpx

from agentrl.tools.base import Tool, ToolError

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_QUERY_METHODS = frozenset({"GET", "HEAD"})
RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
REDIRECT_STATUS = frozenset({301, 302, 303, 307, 308})
_NAT64 = ipaddress.ip_network("64:ff9b::/96")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def address_problem(ip: IPAddress) -> str | None:
    """Why an agent should not reach `ip` by default, or None for a public address."""
    embedded: list[IPAddress] = []
    if isinstance(ip, ipaddress.IPv6Address):  # IPv4 carried inside IPv6 is judged as that IPv4
        if ip.ipv4_mapped is not None:
            embedded.append(ip.ipv4_mapped)
        if ip.sixtofour is not None:
            embedded.append(ip.sixtofour)
        if ip.teredo is not None:
            embedded.extend(ip.teredo)
        if ip in _NAT64:
            embedded.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    for inner in embedded:
        if (why := address_problem(inner)) is not None:
            return why
    checks = (
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("reserved", ip.is_reserved),
        ("private", ip.is_private),
        ("not globally routable", not ip.is_global),
    )
    return next((why for why, hit in checks if hit), None)


async def resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (tests replace this to simulate DNS)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


@dataclass(frozen=True, slots=True)
class HttpReply:
    """A reply read under the byte cap: `truncated` says the body went on past `body`."""

    status_code: int
    reason_phrase: str
    headers: httpx.Headers
    body: bytes
    truncated: bool = False
    encoding: str = field(default="utf-8")

    @property
    def text(self) -> str:
        return self.body.decode(self.encoding, errors="replace")

    def json(self) -> Any:
        return json.loads(self.body)


class HttpTool(Tool):
    """Send the tool arguments to one endpoint (JSON body, or query string for GET) and return the reply.

    `name`, `description` and `parameters` can be set per instance, so one environment can expose
    several services as differently named tools.
    """

    name: ClassVar[str] = "http"
    description: ClassVar[str] = (
        "Call the configured web service with the given arguments and return its reply."
    )
    parameters: ClassVar[dict[str, Any]] = {"type": "object", "properties": {}, "additionalProperties": True}

    def __init__(
        self,
        url: str,
        *,
        method: str = "POST",
        headers: Mapping[str, str] | None = None,
        name: str | None = None,
        description: str | None = None,
        parameters: dict[str, Any] | None = None,
        result_field: str | None = None,
        request_timeout: float = 10.0,
        read_timeout: float | None = None,
        retries: int = 2,
        backoff_base: float = 0.5,
        backoff_max: float = 8.0,
        max_response_chars: int = 4000,
        max_response_bytes: int = 1 << 20,
        allow: Sequence[str] = (),
        seed: int = 0,
        client: httpx.AsyncClient | None = None,
        timeout: float | None = None,
        max_concurrency: int = 16,
        rate_limit: tuple[int, float] | None = None,
    ) -> None:
        method = method.upper()
        if method not in _BODY_METHODS | _QUERY_METHODS:
            raise ValueError(f"HttpTool: unsupported method {method!r}")
        if request_timeout <= 0 or retries < 0 or backoff_base < 0 or backoff_max < backoff_base:
            raise ValueError(
                "HttpTool: need request_timeout > 0, retries >= 0 and 0 <= backoff_base <= backoff_max; "
                f"got {request_timeout}, {retries}, {backoff_base}, {backoff_max}"
            )
        if read_timeout is not None and read_timeout <= 0:
            raise ValueError(f"HttpTool: read_timeout must be > 0, got {read_timeout}")
        if max_response_bytes <= 0:
            raise ValueError(f"HttpTool: max_response_bytes must be > 0, got {max_response_bytes}")
        self.allow_hosts, self.allow_networks = _parse_allow(allow)
        self.split = self._check_url(url)
        # by default the whole call may use every attempt plus the longest backoffs between them
        total = timeout or request_timeout * (retries + 1) + backoff_max * retries + 1.0
        super().__init__(timeout=total, max_concurrency=max_concurrency, rate_limit=rate_limit)
        if name is not None:
            self.name = name  # type: ignore[misc]  # per-instance override of the class default
        if description is not None:
            self.description = description  # type: ignore[misc]
        if parameters is not None:
            self.parameters = parameters  # type: ignore[misc]
        self.url = url
        self.method = method
        self.headers = dict(headers or {})
        self.result_field = result_field
        self.request_timeout = request_timeout
        self.read_timeout = read_timeout
        self.retries = retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.max_response_chars = max_response_chars
        self.max_response_bytes = max_response_bytes
        self.client = client
        self._rng = random.Random(seed)

    # --- addresses ---------------------------------------------------------------------------------

    def _check_url(self, url: str) -> SplitResult:
        try:
            split = urlsplit(url)
            split.port  # noqa: B018  # raises on a malformed port
        except ValueError as e:
            raise ValueError(f"HttpTool: bad url {url!r}: {e}") from None
        if split.scheme.lower() not in ("http", "https"):
            raise ValueError(f"HttpTool: url must start with http:// or https://, got {url!r}")
        if not split.hostname:
            raise ValueError(f"HttpTool: url has no host: {url!r}")
        if split.username is not None or split.password is not None:
            raise ValueError(
                "HttpTool: url must not carry credentials (user:password@); send them in `headers`"
            )
        host = split.hostname
        if not self._host_allowed(host):
            try:
                ip = ipaddress.ip_address(host)
            except ValueError:
                pass  # a name: resolved and checked on every attempt
            else:
                if (why := self._ip_problem(ip)) is not None:
                    raise ValueError(f"HttpTool: {_denied(host, ip, why)}")
        return split

    def _host_allowed(self, host: str) -> bool:
        return host.lower().rstrip(".") in self.allow_hosts

    def _ip_problem(self, ip: IPAddress) -> str | None:
        if any(ip.version == net.version and ip in net for net in self.allow_networks):
            return None
        return address_problem(ip)

    async def _target(self) -> tuple[str, dict[str, str], dict[str, Any]]:
        """The URL to connect to (a checked address), plus the Host header and TLS name to send."""
        split = self.split
        host: str = split.hostname
        scheme = split.scheme.lower()
        port = split.port or (443 if scheme == "https" else 80)
        query = split.query
        if self._host_allowed(host):
            return urlunsplit((scheme, split.netloc, split.path, query, "")), {}, {}
        try:
            ipaddress.ip_address(host)
            return urlunsplit((scheme, split.netloc, split.path, query, "")), {}, {}  # checked at init
        except ValueError:
            pass
        try:
            addresses = await resolve(host, port)
        except OSError as e:
            raise _Unreachable(f"could not resolve {host!r} ({e})") from None
        if not addresses:
            raise _Unreachable(f"could not resolve {host!r}")
        ips = [ipaddress.ip_address(a.split("%", 1)[0]) for a in addresses]
        for ip in ips:
            if (why := self._ip_problem(ip)) is not None:
                raise ToolError(_denied(host, ip, why))
        ip = ips[0]
        netloc = f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"
        url = urlunsplit((scheme, netloc, split.path, query, ""))
        default_port = split.port is None
        headers = {"Host": host if default_port else f"{host}:{split.port}"}
        extensions = {"sni_hostname": host} if scheme == "https" else {}
        return url, headers, extensions

    # --- requests ----------------------------------------------------------------------------------

    def backoff(self, attempt: int) -> float:
        """Delay before retry `attempt` (1-based): exponential, capped, with seeded jitter in [50%, 100%]."""
        ceiling = min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1))
        return ceiling * (0.5 + 0.5 * self._rng.random())

    async def _send(self, client: httpx.AsyncClient, arguments: Mapping[str, Any]) -> HttpReply:
        url, target_headers, extensions = await self._target()
        headers = {"Accept-Encoding": "gzip, deflate, identity"} | target_headers | self.headers
        # a whole attempt has request_timeout; a shorter read_timeout also bounds each single read
        per_read = (
            self.read_timeout if self.read_timeout and self.read_timeout < self.request_timeout else None
        )
        kwargs: dict[str, Any] = {
            "headers": headers,
            "timeout": httpx.Timeout(self.request_timeout, read=per_read),
            "follow_redirects": False,
            "extensions": extensions,
        }
        if self.method in _BODY_METHODS:
            kwargs["json"] = dict(arguments)
        else:
            fixed = parse_qsl(self.split.query, keep_blank_values=True)
            clash = sorted({k for k, _ in fixed} & set(arguments))
            if clash:
                raise ToolError(f"argument {clash[0]!r} is fixed by the {self.name} service's URL")
            pairs = [*fixed, *((k, v if isinstance(v, str) else json.dumps(v)) for k, v in arguments.items())]
            url = urlunsplit((*urlsplit(url)[:3], urlencode(pairs), ""))
        async with client.stream(self.method, url, **kwargs) as response:
            body, truncated = await self._read_body(response)
            return HttpReply(
                status_code=response.status_code,
                reason_phrase=response.reason_phrase,
                headers=response.headers,
                body=body,
                truncated=truncated,
                encoding=_codec(response.charset_encoding),
            )

    async def _read_body(self, response: httpx.Response) -> tuple[bytes, bool]:
        """Up to max_response_bytes of the decoded body; stops reading (and never buffers) past it."""
        cap = self.max_response_bytes
        if response.is_stream_consumed:  # a transport that hands over a decoded body in memory (mocks)
            return response.content[:cap], len(response.content) > cap
        coding = response.headers.get("content-encoding", "identity").strip().lower()
        if coding in ("gzip", "x-gzip", "deflate"):
            inflate = zlib.decompressobj(zlib.MAX_WBITS | 32)  # gzip or zlib framing
        elif coding in ("", "identity"):
            inflate = None
        else:
            raise ToolError(f"the {self.name} service replied with an unsupported encoding {coding!r}")
        body = bytearray()
        async for chunk in response.aiter_raw():
            if inflate is not None:
                try:  # max_length: a small compressed chunk cannot expand past the cap
                    chunk = inflate.decompress(chunk, cap + 1 - len(body))
                except zlib.error as e:
                    raise ToolError(f"the {self.name} service sent a corrupt {coding} body ({e})") from None
            body += chunk
            if len(body) > cap:
                del body[cap:]
                return bytes(body), True
        return bytes(body), False

    async def request(self, arguments: Mapping[str, Any]) -> HttpReply:
        """The first reply that is not transient, retrying as configured; raises ToolError otherwise."""
        if self.client is not None:
            return await self._request_with(self.client, arguments)
        async with httpx.AsyncClient() as client:
            return await self._request_with(client, arguments)

    async def _request_with(self, client: httpx.AsyncClient, arguments: Mapping[str, Any]) -> HttpReply:
        last = ""
        start = time.monotonic()
        delay = 0.0
        for attempt in range(self.retries + 1):
            if attempt:
                await asyncio.sleep(max(delay, self.backoff(attempt)))
            delay = 0.0
            try:
                async with asyncio.timeout(self.request_timeout):
                    reply = await self._send(client, arguments)
            except (TimeoutError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.WriteTimeout):
                last = f"no reply within {self.request_timeout:g} s"
                continue
            except httpx.ReadTimeout:
                last = f"the service sent nothing for {self.read_timeout or self.request_timeout:g} s"
                continue
            except _Unreachable as e:
                last = str(e)
                continue
            except httpx.TransportError as e:
                last = f"could not reach the service ({type(e).__name__}: {e or 'connection failed'})"
                continue
            if reply.status_code not in RETRY_STATUS:
                return reply
            last = f"HTTP {reply.status_code}: {_snippet(reply.text, 200)}"
            delay = min(_retry_after(reply.headers) or 0.0, self.backoff_max)  # honour the server's hint
        attempts = self.retries + 1
        raise ToolError(
            f"the {self.name} service failed after {attempts} attempt{'s' * (attempts > 1)} "
            f"in {time.monotonic() - start:.1f} s: {last}"
        )

    async def run(self, **arguments: Any) -> str:
        reply = await self.request(arguments)
        if reply.status_code in REDIRECT_STATUS:
            where = _snippet(reply.headers.get("location", "(no location)"), 200)
            raise ToolError(
                f"the {self.name} service answered with a redirect (HTTP {reply.status_code}) to {where}; "
                "redirects are not followed"
            )
        if reply.status_code >= 400:
            raise ToolError(
                f"the {self.name} service rejected the request (HTTP {reply.status_code}): "
                f"{_snippet(reply.text, 500) or reply.reason_phrase}"
            )
        return self._extract(reply)

    def _extract(self, reply: HttpReply) -> str:
        text = reply.text
        if self.result_field is not None:
            if reply.truncated:
                raise ToolError(
                    f"the {self.name} service's reply is larger than {self.max_response_bytes} bytes, "
                    f"so the field {self.result_field!r} cannot be read"
                )
            try:
                value: Any = reply.json()
                for key in self.result_field.split("."):
                    value = value[int(key)] if isinstance(value, list) else value[key]
            except (ValueError, KeyError, IndexError, TypeError):
                raise ToolError(
                    f"the {self.name} service replied without the expected field {self.result_field!r}: "
                    f"{_snippet(text, 200)}"
                ) from None
            text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        if len(text) > self.max_response_chars:
            cut = len(text) - self.max_response_chars
            more = f"{cut}{'+' if reply.truncated else ''} more characters"
            text = text[: self.max_response_chars] + f"\n[... reply truncated: {more}]"
        elif reply.truncated:
            text += f"\n[... reply truncated at {self.max_response_bytes} bytes]"
        return text if text.strip() else "(empty reply)"


class _Unreachable(Exception):
    """A transient failure before any connection (name lookup); retried like a transport error."""


def _parse_allow(allow: Sequence[str]) -> tuple[frozenset[str], tuple[IPNetwork, ...]]:
    if isinstance(allow, str):
        raise ValueError("HttpTool: allow must be a list of hosts or networks, not a string")
    hosts: set[str] = set()
    networks: list[IPNetwork] = []
    for entry in allow:
        entry = entry.strip()
        try:
            networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
        except ValueError:
            if not entry or "/" in entry or ":" in entry or " " in entry:
                raise ValueError(
                    f"HttpTool: allow entry {entry!r} is neither a host name nor a network"
                ) from None
            hosts.add(entry.lower().rstrip("."))
    return frozenset(hosts), tuple(networks)


def _denied(host: str, ip: IPAddress, why: str) -> str:
    shown = str(ip) if host == str(ip) else f"{host} ({ip})"
    return f"the address {shown} is {why}, so it is not allowed; to permit it, add it to allow=[...]"


def _codec(name: str | None) -> str:
    try:
        return codecs.lookup(name or "utf-8").name
    except LookupError:
        return "utf-8"  # a charset Python does not know: decode as UTF-8 with replacements


def _snippet(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _retry_after(headers: httpx.Headers) -> float | None:
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff
