"""Tools served by an MCP server over stdio (needs the `mcp` SDK: `pip install agentrl[mcp]`).

`MCPToolset(["python", "my_server.py"])` starts the server, lists its tools and turns each into a
`Tool` whose schema is the server's input schema; pass the toolset wherever tools are accepted
(`ToolBox`, a `ToolEnv`'s `tools`). Calls get the same argument validation, timeout, concurrency
cap and rate limit as any `Tool`, and every failure (a tool error, a crashed server) comes back as
an error observation.

The MCP client runs on its own event loop in a background thread, so the toolset serves the sync
`env.step` (which runs each step under `asyncio.run`) and the async `env.astep` of any loop alike;
each call crosses over with `run_coroutine_threadsafe` and waits under the tool's deadline. The
server process lives until `close()` (`env.close()` calls it) or interpreter exit.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import json
import shlex
import tempfile
import threading
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

from agentrl.tools.base import Tool, ToolError

__all__ = ["MCPTool", "MCPToolset"]

_LIVE: weakref.WeakSet[MCPToolset] = weakref.WeakSet()


def _field(obj: Any, *names: str, default: Any = None) -> Any:
    """Read a field under its mcp 2 (snake_case) or mcp 1 (camelCase) name."""
    for name in names:
        value = getattr(obj, name, None)
        if value is not None:
            return value
    return default


def _tool_parameters(schema: Mapping[str, Any] | None) -> dict[str, Any]:
    schema = dict(schema or {})
    out: dict[str, Any] = {"type": "object", "properties": dict(schema.get("properties") or {})}
    out["required"] = list(schema.get("required") or [])
    for key in ("additionalProperties", "$defs", "definitions"):
        if key in schema:
            out[key] = schema[key]
    return out


def _result_text(result: Any) -> tuple[str, bool]:
    """(text shown to the model, is_error) of a CallToolResult."""
    parts: list[str] = []
    for block in _field(result, "content", default=[]) or []:
        kind = getattr(block, "type", None)
        if kind == "text":
            parts.append(block.text)
        elif kind in ("image", "audio"):
            parts.append(f"[{kind}: {_field(block, 'mime_type', 'mimeType', default='?')}]")
        elif kind == "resource":
            res = block.resource
            parts.append(getattr(res, "text", None) or f"[resource: {getattr(res, 'uri', '?')}]")
        elif kind == "resource_link":
            parts.append(f"[resource: {getattr(block, 'uri', '?')}]")
        else:
            parts.append(str(block))
    structured = _field(result, "structured_content", "structuredContent")
    if not parts and structured is not None:
        parts.append(json.dumps(structured, ensure_ascii=False, default=str))
    return "\n".join(parts), bool(_field(result, "is_error", "isError", default=False))


class MCPTool(Tool):
    """One tool of an `MCPToolset`; calling it forwards to the server."""

    def __init__(self, toolset: MCPToolset, name: str, description: str, parameters: dict[str, Any]) -> None:
        super().__init__(
            timeout=toolset.timeout, max_concurrency=toolset.max_concurrency, rate_limit=toolset.rate_limit
        )
        self.toolset = toolset
        self.name = name  # type: ignore[misc]
        self.description = description  # type: ignore[misc]
        self.parameters = parameters  # type: ignore[misc]

    async def run(self, **arguments: Any) -> str:
        result = await self.toolset.acall(self.name, arguments, self.timeout)
        text, is_error = _result_text(result)
        if is_error:
            raise ToolError(text or f"{self.name} reported an error")
        return text

    def close(self) -> None:
        self.toolset.close()


class MCPToolset:
    """An MCP server started over stdio and the tools it lists.

    `command` is an argv list (or one string, split like a shell would); `env` adds environment
    variables; `timeout` bounds each call and `start_timeout` the start-up handshake; `include`
    keeps only the named tools. A command that cannot start raises a one-line `ValueError`.
    """

    def __init__(
        self,
        command: str | Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        timeout: float = 30.0,
        start_timeout: float = 30.0,
        max_concurrency: int = 16,
        rate_limit: tuple[int, float] | None = None,
        include: Sequence[str] | None = None,
    ) -> None:
        argv = shlex.split(command) if isinstance(command, str) else [str(c) for c in command]
        if not argv:
            raise ValueError("MCPToolset: empty server command")
        self.argv = argv
        self.cmdline = shlex.join(argv)
        self.timeout = timeout
        self.max_concurrency = max_concurrency
        self.rate_limit = rate_limit
        # the server's stderr, for the last line in error messages; closed by close()
        self._stderr = tempfile.TemporaryFile(mode="w+", encoding="utf-8", errors="replace")  # noqa: SIM115
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="agentrl-mcp", daemon=True)
        self._thread.start()
        self._session: Any = None
        self._stop: asyncio.Event | None = None
        self._dead: str | None = None
        self._closed = False
        ready: concurrent.futures.Future[list[Any]] = concurrent.futures.Future()
        self._serving = asyncio.run_coroutine_threadsafe(self._serve(env, cwd, ready), self._loop)
        try:
            listed = ready.result(timeout=start_timeout)
        except concurrent.futures.TimeoutError:
            tail = self._stderr_tail()
            self.close()
            raise ValueError(
                f"MCP server {self.cmdline!r} did not finish its start-up handshake within "
                f"{start_timeout:g} s{tail}"
            ) from None
        except Exception as e:
            tail = self._stderr_tail()
            self.close()
            what = "failed to start" if isinstance(e, OSError) else "exited or failed during start-up"
            raise ValueError(f"MCP server command {self.cmdline!r} {what}: {_describe(e)}{tail}") from None
        wanted = set(include) if include is not None else None
        self.tools: list[MCPTool] = [
            MCPTool(
                self,
                t.name,
                (_field(t, "description") or t.name).strip(),
                _tool_parameters(_field(t, "input_schema", "inputSchema")),
            )
            for t in listed
            if wanted is None or t.name in wanted
        ]
        if wanted is not None and wanted - {t.name for t in self.tools}:
            missing = sorted(wanted - {t.name for t in self.tools})
            self.close()
            raise ValueError(
                f"MCP server {self.cmdline!r} has no tool(s) {missing}; it lists {[t.name for t in listed]}"
            )
        _LIVE.add(self)

    def as_tools(self) -> list[MCPTool]:
        return list(self.tools)

    # ---- the background loop ------------------------------------------------------------------

    async def _serve(
        self, env: Mapping[str, str] | None, cwd: str | None, ready: concurrent.futures.Future[list[Any]]
    ) -> None:
        from mcp import ClientSession, StdioServerParameters
        from mcp.client.stdio import stdio_client

        self._stop = asyncio.Event()
        params = StdioServerParameters(command=self.argv[0], args=self.argv[1:], env=dict(env or {}), cwd=cwd)
        try:
            async with (
                stdio_client(params, errlog=self._stderr) as streams,
                ClientSession(streams[0], streams[1]) as session,
            ):
                await session.initialize()
                listed = await _list_all_tools(session)
                self._session = session
                ready.set_result(listed)
                await self._stop.wait()
        except BaseException as e:
            if not ready.done():
                ready.set_exception(e if isinstance(e, Exception) else RuntimeError(repr(e)))
            elif not self._closed:
                self._dead = _describe(e)
            if not isinstance(e, Exception):
                raise
        finally:
            self._session = None
            if self._dead is None:
                self._dead = "it was closed" if self._closed else "it stopped"

    async def _call(self, name: str, arguments: dict[str, Any], limit_s: float) -> Any:
        session = self._session
        if session is None:
            raise ToolError(f"the MCP server {self.cmdline!r} is not running ({self._dead})")
        try:
            return await session.call_tool(name, arguments, read_timeout_seconds=limit_s)
        except TypeError:  # an SDK without the read-timeout parameter
            return await session.call_tool(name, arguments)

    async def acall(self, name: str, arguments: dict[str, Any], limit_s: float | None = None) -> Any:
        """Call a tool from any event loop; the caller's deadline cancels the call on the server side."""
        if self._closed or self._session is None:
            raise ToolError(f"the MCP server {self.cmdline!r} is not running ({self._dead or 'closed'})")
        fut = asyncio.run_coroutine_threadsafe(
            self._call(name, arguments, limit_s or self.timeout), self._loop
        )
        try:
            return await asyncio.wrap_future(fut)
        except ToolError:
            raise
        except Exception as e:
            if "connection closed" in str(e).lower():  # the server process is gone
                self._dead = self._dead or "connection closed"
                self._session = None
            if self._session is None or self._serving.done():
                raise ToolError(
                    f"the MCP server {self.cmdline!r} is not running ({self._dead or _describe(e)})"
                ) from None
            raise ToolError(f"MCP call {name!r} failed: {_describe(e)}") from None

    def call(self, name: str, arguments: dict[str, Any], timeout: float | None = None) -> Any:
        """Blocking call, for code outside any event loop."""
        return asyncio.run(self.acall(name, arguments, timeout))

    @property
    def alive(self) -> bool:
        return self._session is not None and not self._serving.done()

    def _stderr_tail(self) -> str:
        try:
            self._stderr.flush()
            self._stderr.seek(0)
            lines = [ln.strip() for ln in self._stderr.read()[-4000:].splitlines() if ln.strip()]
        except (OSError, ValueError):
            return ""
        return f" (server stderr: {lines[-1][:300]})" if lines else ""

    def close(self, timeout: float = 10.0) -> None:
        """Stop the server (stdin closed, then terminate/kill) and the background loop; idempotent."""
        if self._closed:
            return
        self._closed = True
        _LIVE.discard(self)
        if self._loop.is_running():
            if self._stop is not None:
                self._loop.call_soon_threadsafe(self._stop.set)
            try:
                self._serving.result(timeout=timeout)
            except BaseException:
                self._serving.cancel()
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=timeout)
        if not self._thread.is_alive():
            self._loop.close()
        self._stderr.close()

    def __enter__(self) -> MCPToolset:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"MCPToolset({self.cmdline!r}, tools={[t.name for t in self.tools]})"


async def _list_all_tools(session: Any) -> list[Any]:
    result = await session.list_tools()
    tools = list(result.tools)
    cursor = _field(result, "next_cursor", "nextCursor")
    while cursor:
        try:
            from mcp.types import PaginatedRequestParams

            result = await session.list_tools(params=PaginatedRequestParams(cursor=cursor))
        except (ImportError, TypeError):
            result = await session.list_tools(cursor=cursor)
        tools += list(result.tools)
        cursor = _field(result, "next_cursor", "nextCursor")
    return tools


def _describe(e: BaseException) -> str:
    """One line for an exception, unwrapping anyio/asyncio exception groups."""
    while isinstance(e, BaseExceptionGroup) and e.exceptions:
        e = e.exceptions[0]
    text = " ".join(str(e).split()) or type(e).__name__
    return f"{type(e).__name__}: {text}"[:400]


@atexit.register
def _close_all() -> None:
    for toolset in list(_LIVE):
        toolset.close(timeout=3.0)
