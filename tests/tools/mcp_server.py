"""A small MCP server for the tests, written with the SDK's server side; run as a script over stdio."""

from __future__ import annotations

import asyncio
import os

try:  # mcp 2.x
    from mcp.server.mcpserver import MCPServer as Server
except ImportError:  # mcp 1.x
    from mcp.server.fastmcp import FastMCP as Server

server = Server("agentrl-test")


@server.tool()
def add(a: int, b: int) -> str:
    """Add two integers."""
    return str(a + b)


@server.tool()
def lookup(key: str) -> str:
    """Look a word up in a tiny dictionary."""
    table = {"capital_of_france": "Paris", "answer": "42"}
    if key not in table:
        raise ValueError(f"no entry {key!r}")
    return table[key]


@server.tool()
async def slow(seconds: float) -> str:
    """Sleep, then answer."""
    await asyncio.sleep(seconds)
    return "done"


@server.tool()
def crash() -> str:
    """Kill the server process."""
    os._exit(3)


if __name__ == "__main__":
    server.run()
