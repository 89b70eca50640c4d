"""Tools an agent can call (installed as `agentrl.tools`)."""

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

__all__ = [
    "ParsedAction",
    "Tool",
    "ToolBox",
    "ToolCall",
    "ToolError",
    "ToolResult",
    "format_answer",
    "format_tool_call",
    "parse_action",
]
