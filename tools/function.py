"""Tools from plain Python functions.

`function_tool(fn)` (or passing `fn` wherever a `Tool` is accepted: `ToolBox`, a `ToolEnv`'s `tools`)
wraps a sync or async function as a `Tool`. The JSON schema comes from the signature: type hints give
the types, defaults make parameters optional, and the docstring (Google or NumPy style, read with
`docstring_parser`) gives the description and per-parameter help. Calls get what every `Tool` gets:
argument validation, a timeout, a concurrency cap and rate limit, and an error observation for any
exception. Sync functions run on a private thread pool, so a slow one cannot stall the event loop
and a timed-out one does not hold up `asyncio.run` at exit.

    def add(a: int, b: int) -> int:
        '''Add two integers.

        Args:
            a: the first addend.
            b: the second addend.
        '''
        return a + b

    env = MyEnv(tools=[add])   # or ToolBox([add]), or function_tool(add, timeout=2.0)
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import enum
import functools
import importlib
import inspect
import json
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

import docstring_parser

from agentrl.tools.base import Tool

__all__ = ["FunctionTool", "as_tools", "build_tools", "function_tool", "import_object", "json_schema_for"]

# One shared pool for all sync function tools; threads are created on demand. Not the loop's default
# executor, because `asyncio.run` joins that one at exit and would wait out a hung function.
_POOL = concurrent.futures.ThreadPoolExecutor(max_workers=32, thread_name_prefix="agentrl-fn-tool")

_SCALARS: dict[Any, str] = {str: "string", int: "integer", float: "number", bool: "boolean"}


def _where(fn: Callable[..., Any]) -> str:
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
    module = getattr(fn, "__module__", None)
    return f"{module}.{name}" if module and module != "builtins" else name


def json_schema_for(tp: Any, where: str = "parameter") -> dict[str, Any]:
    """JSON schema of a type hint: str, int, float, bool, None, list[T], tuple[...], dict[str, T],
    Literal[...], Enum subclasses, and unions of these (`T | None` included)."""
    if tp is Any:
        return {}
    if tp is None or tp is type(None):
        return {"type": "null"}
    if tp in _SCALARS:
        return {"type": _SCALARS[tp]}
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        values = [m.value for m in tp]
        schema = json_schema_for(type(values[0]), where) if values else {}
        return {**schema, "enum": values}
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Annotated:
        return json_schema_for(args[0], where)
    if origin is Literal:
        kinds = {_SCALARS.get(type(a)) for a in args}
        schema: dict[str, Any] = {"enum": list(args)}
        if len(kinds) == 1 and None not in kinds:
            schema["type"] = kinds.pop()
        return schema
    if origin in (typing.Union, types.UnionType):
        parts = [json_schema_for(a, where) for a in args]
        if all(isinstance(p.get("type"), str) and "enum" not in p for p in parts):
            merged: dict[str, Any] = {}
            for p in parts:  # e.g. list[str] | None -> {"type": ["array", "null"], "items": ...}
                merged.update({k: v for k, v in p.items() if k != "type"})
            return {"type": [p["type"] for p in parts], **merged}
        return {"anyOf": parts}
    if tp in (list, tuple, set, frozenset) or origin in (list, set, frozenset, tuple, typing.Sequence):
        out: dict[str, Any] = {"type": "array"}
        if origin is tuple and args and args[-1] is not Ellipsis:
            out["prefixItems"] = [json_schema_for(a, where) for a in args]
        elif args:
            out["items"] = json_schema_for(args[0], where)
        return out
    if tp is dict or origin in (dict, Mapping):
        out = {"type": "object"}
        if len(args) == 2 and args[1] is not Any:
            out["additionalProperties"] = json_schema_for(args[1], where)
        return out
    raise ValueError(
        f"{where}: type hint {tp!r} has no JSON-schema equivalent; use str, int, float, bool, "
        "list[...], dict[str, ...], Literal[...], an Enum or a union of these"
    )


class FunctionTool(Tool):
    """A `Tool` whose `run` is a plain function; build it with `function_tool(fn)`."""

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        timeout: float = 10.0,
        max_concurrency: int = 64,
        rate_limit: tuple[int, float] | None = None,
    ) -> None:
        super().__init__(timeout=timeout, max_concurrency=max_concurrency, rate_limit=rate_limit)
        if isinstance(fn, type) or not callable(fn):
            raise TypeError(f"function_tool: expected a function, got {fn!r}")
        self.fn = fn
        where = _where(fn)
        self.name = name or getattr(fn, "__name__", "") or type(fn).__name__  # type: ignore[misc]
        if not self.name or self.name == "<lambda>":
            raise ValueError(f"function tool {where}: a lambda has no usable name; pass name=...")
        doc = docstring_parser.parse(inspect.getdoc(fn) or "")
        text = " ".join(p for p in (doc.short_description, doc.long_description) if p)
        self.description = description or text or self.name  # type: ignore[misc]
        self.parameters, self._enums = self._schema(fn, where, {p.arg_name: p for p in doc.params})  # type: ignore[misc]
        self._is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(type(fn).__call__)

    @staticmethod
    def _schema(
        fn: Callable[..., Any], where: str, docs: Mapping[str, docstring_parser.DocstringParam]
    ) -> tuple[dict[str, Any], dict[str, type[enum.Enum]]]:
        try:
            sig = inspect.signature(fn)
        except (TypeError, ValueError) as e:
            raise ValueError(f"function tool {where}: cannot read its signature ({e})") from None
        target = fn.func if isinstance(fn, functools.partial) else fn
        if not (inspect.isfunction(target) or inspect.ismethod(target)):
            target = type(target).__call__  # a callable object: its __call__ has the hints
        try:
            hints = typing.get_type_hints(target, include_extras=True)
        except Exception as e:  # a forward reference that does not resolve
            raise ValueError(f"function tool {where}: cannot resolve its type hints ({e})") from None
        props: dict[str, Any] = {}
        required: list[str] = []
        enums: dict[str, type[enum.Enum]] = {}
        for pname, param in sig.parameters.items():
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                raise ValueError(
                    f"function tool {where}: parameter {param}: *args/**kwargs cannot be described to a "
                    "model; name every parameter"
                )
            if param.kind is param.POSITIONAL_ONLY:
                raise ValueError(f"function tool {where}: parameter {pname!r} is positional-only")
            if pname not in hints:
                raise ValueError(
                    f"function tool {where}: parameter {pname!r} has no type hint; annotate it "
                    f"(e.g. `{pname}: str`) so its JSON schema can be built"
                )
            schema = json_schema_for(hints[pname], f"function tool {where}, parameter {pname!r}")
            tp = hints[pname]
            if isinstance(tp, type) and issubclass(tp, enum.Enum):
                enums[pname] = tp
            if pname in docs and docs[pname].description:
                schema = {**schema, "description": " ".join(docs[pname].description.split())}
            if param.default is param.empty:
                required.append(pname)
            elif param.default is None or isinstance(param.default, str | int | float | bool):
                schema = {**schema, "default": param.default}
            props[pname] = schema
        return {"type": "object", "properties": props, "required": required}, enums

    async def run(self, **arguments: Any) -> str:
        for key, cls in self._enums.items():
            if key in arguments:
                arguments[key] = cls(arguments[key])
        if self._is_async:
            value = await self.fn(**arguments)
        else:
            loop = asyncio.get_running_loop()
            value = await loop.run_in_executor(_POOL, functools.partial(self.fn, **arguments))
            if inspect.isawaitable(value):  # a sync wrapper that returned a coroutine
                value = await value
        return _to_text(value)

    def __repr__(self) -> str:
        return f"FunctionTool({_where(self.fn)}, name={self.name!r})"


def _to_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, enum.Enum):
        value = value.value
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(value)


def function_tool(
    fn: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    description: str | None = None,
    timeout: float = 10.0,
    max_concurrency: int = 64,
    rate_limit: tuple[int, float] | None = None,
) -> Any:
    """Wrap `fn` as a `FunctionTool`; usable bare (`function_tool(fn)`) or as a decorator with options
    (`@function_tool(timeout=2.0)`). Bad signatures raise a one-line `ValueError` naming the function."""
    options = {
        "name": name,
        "description": description,
        "timeout": timeout,
        "max_concurrency": max_concurrency,
        "rate_limit": rate_limit,
    }
    if fn is None:
        return lambda f: FunctionTool(f, **options)
    return FunctionTool(fn, **options)


def _is_tool_factory(obj: Any) -> bool:
    """A zero-argument callable that builds tools (a Tool class, a lambda, a partial of a Tool class,
    or a function annotated to return a Tool) rather than a function to expose as a tool."""
    if isinstance(obj, type):
        return True
    if isinstance(obj, functools.partial):
        return isinstance(obj.func, type)
    if getattr(obj, "__name__", None) == "<lambda>":
        return True
    try:
        ret = typing.get_type_hints(obj).get("return")
    except Exception:
        return False
    return isinstance(ret, type) and (issubclass(ret, Tool) or hasattr(ret, "as_tools"))


def as_tools(items: Iterable[Any]) -> list[Tool]:
    """Normalise what users pass as tools: `Tool` instances stay, toolsets (objects with
    `as_tools()`, e.g. an MCP toolset) are expanded, and plain callables become `FunctionTool`s."""
    out: list[Tool] = []
    for item in items:
        if isinstance(item, Tool):
            out.append(item)
        elif hasattr(item, "as_tools") and not isinstance(item, type):
            out.extend(item.as_tools())
        elif callable(item) and not isinstance(item, type):
            out.append(FunctionTool(item))
        else:
            raise TypeError(
                f"not a tool: {item!r}; pass a Tool instance, a toolset, or a function with type hints"
            )
    return out


def build_tools(entries: Iterable[Any]) -> list[Tool]:
    """Tools from a `ToolEnv.tools` class attribute: instances are shared, factories (a Tool class,
    a lambda returning a Tool) are called once per env, and plain functions become function tools."""
    built: list[Any] = []
    for entry in entries:
        if isinstance(entry, Tool) or (hasattr(entry, "as_tools") and not isinstance(entry, type)):
            built.append(entry)
        elif _is_tool_factory(entry):
            built.append(entry())
        else:
            built.append(entry)
    return as_tools(built)


def import_object(path: str, what: str = "object") -> Any:
    """`"package.module:name"` (or `"package.module.name"`) -> the object; a one-line ValueError
    naming `what` and the path when the module does not import or has no such name."""
    if not isinstance(path, str) or not path.strip():
        raise ValueError(f"{what}: expected an import path 'module:function', got {path!r}")
    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise ValueError(f"{what} {path!r}: expected an import path 'module:function'")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:
        raise ValueError(
            f"{what} {path!r}: module {module_name!r} does not import ({type(e).__name__}: {e})"
        ) from None
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"{what} {path!r}: module {module_name!r} has no attribute {attr!r}") from None
    return obj
