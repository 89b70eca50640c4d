"""Tools an agent can call (installed as `agentrl.tools`).

The concrete tools load lazily on first access, so importing the contract (`agentrl.tools.base`)
does not pull in bm25s/scipy or httpx.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from agentrl.tools.base import (
    ParsedAction,
    Tool,
    ToolBox,
    ToolCall,
    ToolError,
    ToolResult,
    format_answer,
    format_tool_call,
    parse_action,
)
from agentrl.tools.formats import (
    TOOL_FORMATS,
    ToolFormat,
    detect_tool_format,
    get_tool_format,
    reformat_action,
)

if TYPE_CHECKING:
    from agentrl.tools.calculator import CalculatorTool
    from agentrl.tools.function import FunctionTool, function_tool
    from agentrl.tools.http import HttpTool
    from agentrl.tools.mcp import MCPTool, MCPToolset
    from agentrl.tools.python_sandbox import PythonTool, SandboxLimits
    from agentrl.tools.search import Document, SearchTool

_LAZY = {
    "CalculatorTool": "agentrl.tools.calculator",
    "Document": "agentrl.tools.search",
    "SearchTool": "agentrl.tools.search",
    "PythonTool": "agentrl.tools.python_sandbox",
    "SandboxLimits": "agentrl.tools.python_sandbox",
    "HttpTool": "agentrl.tools.http",
    "FunctionTool": "agentrl.tools.function",
    "function_tool": "agentrl.tools.function",
    "MCPTool": "agentrl.tools.mcp",
    "MCPToolset": "agentrl.tools.mcp",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "TOOL_FORMATS",
    "CalculatorTool",
    "Document",
    "FunctionTool",
    "HttpTool",
    "MCPTool",
    "MCPToolset",
    "ParsedAction",
    "PythonTool",
    "SandboxLimits",
    "SearchTool",
    "Tool",
    "ToolBox",
    "ToolCall",
    "ToolError",
    "ToolFormat",
    "ToolResult",
    "detect_tool_format",
    "format_answer",
    "format_tool_call",
    "function_tool",
    "get_tool_format",
    "parse_action",
    "reformat_action",
]
