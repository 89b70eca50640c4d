"""`http`: call a configured HTTP endpoint (a search service, a remote sandbox, a grader).

Heavy tools live behind their own services; this adapter gives them the same contract as local
tools. Every attempt has its own deadline, the whole call has the base class's deadline, and
transient failures (connection errors, timeouts, 5xx, 429) are retried with exponential backoff and
seeded jitter. A 4xx is the caller's mistake and is returned at once with the server's message.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Mapping
from typing import Any, ClassVar

import httpx

from agentrl.tools.base import Tool, ToolError

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_QUERY_METHODS = frozenset({"GET", "HEAD"})
RETRY_STATUS = frozenset({429, 500, 502, 503, 504})


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
        retries: int = 2,
        backoff_base: float = 0.5,
        backoff_max: float = 8.0,
        max_response_chars: int = 4000,
        seed: int = 0,
        client: httpx.AsyncClient | None = None,
        timeout: float | None = None,
        max_concurrency: int = 16,
        rate_limit: tuple[int, float] | None = None,
    ) -> None:
        method = method.upper()
        if method not in _BODY_METHODS | _QUERY_METHODS:
            raise ValueError(f"HttpTool: unsupported method {method!r}")
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"HttpTool: url must start with http:// or https://, got {url!r}")
        if request_timeout <= 0 or retries < 0 or backoff_base < 0 or backoff_max < backoff_base:
            raise ValueError(
                "HttpTool: need request_timeout > 0, retries >= 0 and 0 <= backoff_base <= backoff_max; "
                f"got {request_timeout}, {retries}, {backoff_base}, {backoff_max}"
            )
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
        self.retries = retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.max_response_chars = max_response_chars
        self.client = client
        self._rng = random.Random(seed)

    def backoff(self, attempt: int) -> float:
        """Delay before retry `attempt` (1-based): exponential, capped, with seeded jitter in [50%, 100%]."""
        ceiling = min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1))
        return ceiling * (0.5 + 0.5 * self._rng.random())

    async def _send(self, client: httpx.AsyncClient, arguments: Mapping[str, Any]) -> httpx.Response:
        kwargs: dict[str, Any] = {"headers": self.headers, "timeout": self.request_timeout}
        if self.method in _BODY_METHODS:
            kwargs["json"] = dict(arguments)
        else:
            kwargs["params"] = {k: v if isinstance(v, str) else json.dumps(v) for k, v in arguments.items()}
        return await client.request(self.method, self.url, **kwargs)

    async def request(self, arguments: Mapping[str, Any]) -> httpx.Response:
        """The first response that is not transient, retrying as configured; raises ToolError otherwise."""
        if self.client is not None:
            return await self._request_with(self.client, arguments)
        async with httpx.AsyncClient() as client:
            return await self._request_with(client, arguments)

    async def _request_with(self, client: httpx.AsyncClient, arguments: Mapping[str, Any]) -> httpx.Response:
        last = ""
        start = time.monotonic()
        delay = 0.0
        for attempt in range(self.retries + 1):
            if attempt:
                await asyncio.sleep(max(delay, self.backoff(attempt)))
            delay = 0.0
            try:
                response = await self._send(client, arguments)
            except httpx.TimeoutException:
                last = f"no reply within {self.request_timeout:g} s"
                continue
            except httpx.TransportError as e:
                last = f"could not reach the service ({type(e).__name__}: {e or 'connection failed'})"
                continue
            if response.status_code not in RETRY_STATUS:
                return response
            last = f"HTTP {response.status_code}: {_snippet(response.text, 200)}"
            delay = min(_retry_after(response) or 0.0, self.backoff_max)  # honour the server's hint
        attempts = self.retries + 1
        raise ToolError(
            f"the {self.name} service failed after {attempts} attempt{'s' * (attempts > 1)} "
            f"in {time.monotonic() - start:.1f} s: {last}"
        )

    async def run(self, **arguments: Any) -> str:
        response = await self.request(arguments)
        if response.status_code >= 400:
            raise ToolError(
                f"the {self.name} service rejected the request (HTTP {response.status_code}): "
                f"{_snippet(response.text, 500) or response.reason_phrase}"
            )
        return self._extract(response)

    def _extract(self, response: httpx.Response) -> str:
        text = response.text
        if self.result_field is not None:
            try:
                value: Any = response.json()
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
            text = text[: self.max_response_chars] + f"\n[... reply truncated: {cut} more characters]"
        return text if text.strip() else "(empty reply)"


def _snippet(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff
