"""`calculator`: exact arithmetic on a parsed AST, never `eval`.

Numbers are `fractions.Fraction` so that `0.1 + 0.2` is exactly `0.3` and word problems come out
exact; only irrational operations (a non-square `sqrt`, a fractional power, `pi`) fall back to float.
Every operation whose result could be huge is sized *before* it runs (digits estimated from bit
lengths and logarithms), so `9**9**9` or `factorial(10**6)` is refused in microseconds instead of
hanging the event loop.
"""

from __future__ import annotations

import ast
import math
import operator
import warnings
from collections.abc import Callable
from decimal import Decimal, InvalidOperation, localcontext
from fractions import Fraction
from typing import Any, ClassVar

from agentrl.tools.base import Tool, ToolError

Number = Fraction | float

MAX_DIGITS = 1000  # largest numerator/denominator (decimal digits) any step may produce
MAX_EXPRESSION_CHARS = 1000
MAX_DEPTH = 60  # nesting depth of the expression tree
_LOG10_2 = math.log10(2)
_MAX_BITS = int(MAX_DIGITS / _LOG10_2) + 1
_SHOWN_DECIMALS = 12  # decimals shown for a non-terminating or float result

_UNICODE_OPS = {"×": "*", "÷": "/", "−": "-", "–": "-", "·": "*"}


def _check(value: Number) -> Number:
    """Refuse a value that is too large to keep computing with cheaply."""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ToolError("result is too large (overflows a float)")
        return value
    if value.numerator.bit_length() > _MAX_BITS or value.denominator.bit_length() > _MAX_BITS:
        raise ToolError(f"result is too large (more than {MAX_DIGITS} digits)")
    return value


def _to_float(x: Number) -> float:
    try:
        return float(x)
    except OverflowError:
        raise ToolError("number is too large for this operation") from None


def _as_int(x: Number, what: str) -> int:
    if isinstance(x, Fraction) and x.denominator == 1:
        return x.numerator
    if isinstance(x, float) and x.is_integer():
        return int(x)
    raise ToolError(f"{what} needs a whole number, got {format_number(x)}")


def _power(base: Number, exp: Number) -> Number:
    if isinstance(exp, Fraction) and exp.denominator == 1 and isinstance(base, Fraction):
        n = exp.numerator
        if base == 0 and n < 0:
            raise ToolError("division by zero (0 raised to a negative power)")
        if base in (0, 1):
            return base
        if base == -1:
            return Fraction(1 if n % 2 == 0 else -1)
        # (p/q)**n has about |n|*log10(max(|p|, q)) digits; compare logs so nothing big is ever built
        log_size = max(math.log10(abs(base.numerator)), math.log10(base.denominator))
        if abs(n) > 4 * _MAX_BITS or abs(n) * log_size > MAX_DIGITS + 1:
            raise ToolError(f"result is too large: the power would have more than {MAX_DIGITS} digits")
        return _check(base**n)
    b, e = _to_float(base), _to_float(exp)
    if b < 0 and not e.is_integer():
        raise ToolError("a negative number to a fractional power is not a real number")
    if b == 0 and e < 0:
        raise ToolError("division by zero (0 raised to a negative power)")
    try:
        result = math.pow(b, e)
    except OverflowError:
        raise ToolError("result is too large (overflows a float)") from None
    return _check(_exact_if_integral(result))


def _exact_if_integral(x: float) -> Number:
    """Keep exactness where a float op landed on a modest whole number (e.g. 8**(1/3) ≈ 2.0)."""
    if math.isfinite(x) and x.is_integer() and abs(x) < 2**53:
        return Fraction(int(x))
    return x


def _sqrt(x: Number) -> Number:
    if x < 0:
        raise ToolError(f"sqrt of a negative number ({format_number(x)}) is not a real number")
    if isinstance(x, Fraction):
        rn, rd = math.isqrt(x.numerator), math.isqrt(x.denominator)
        if rn * rn == x.numerator and rd * rd == x.denominator:
            return Fraction(rn, rd)
        if x.numerator.bit_length() > 1000 or x.denominator.bit_length() > 1000:
            with localcontext() as ctx:  # beyond float range: go through Decimal
                ctx.prec = 20
                return _check(_to_float((Decimal(x.numerator) / Decimal(x.denominator)).sqrt()))
    return math.sqrt(_to_float(x))


def _factorial(x: Number) -> Number:
    n = _as_int(x, "factorial")
    if n < 0:
        raise ToolError("factorial needs a non-negative whole number")
    # log10(n!) via lgamma, computed before any multiplication happens
    if n > 10_000 or math.lgamma(n + 1) / math.log(10) > MAX_DIGITS:
        raise ToolError(f"factorial({n}) is too large (more than {MAX_DIGITS} digits)")
    return Fraction(math.factorial(n))


def _round(x: Number, ndigits: Number | None = None) -> Number:
    """Round half away from zero (2.5 -> 3), as people expect in word problems."""
    nd = 0 if ndigits is None else _as_int(ndigits, "round's number of digits")
    if abs(nd) > 100:
        raise ToolError("round's number of digits must be between -100 and 100")
    q = x if isinstance(x, Fraction) else Fraction(_to_float(x))
    scale = Fraction(10) ** nd
    r = math.floor(abs(q) * scale + Fraction(1, 2))
    return _check(Fraction(r if q >= 0 else -r) / scale)


def _gcd_lcm(fn: Callable[[int, int], int], name: str) -> Callable[..., Number]:
    def apply(*args: Number) -> Number:
        ints = [_as_int(a, name) for a in args]
        acc = ints[0]
        for i in ints[1:]:  # pairwise, so a growing lcm is refused as soon as it gets too big
            acc = fn(acc, i)
            _check(Fraction(acc))
        return Fraction(abs(acc))

    return apply


def _min_max(fn: Callable[..., Any]) -> Callable[..., Number]:
    def apply(*args: Number) -> Number:
        return fn(args)

    return apply


def _floor(x: Number) -> Number:
    return Fraction(math.floor(x))


def _ceil(x: Number) -> Number:
    return Fraction(math.ceil(x))


def _abs(x: Number) -> Number:
    return abs(x)


FUNCTIONS: dict[str, tuple[Callable[..., Number], int, int | None]] = {
    # name: (implementation, min args, max args or None for any)
    "sqrt": (_sqrt, 1, 1),
    "abs": (_abs, 1, 1),
    "round": (_round, 1, 2),
    "min": (_min_max(min), 1, None),
    "max": (_min_max(max), 1, None),
    "floor": (_floor, 1, 1),
    "ceil": (_ceil, 1, 1),
    "factorial": (_factorial, 1, 1),
    "gcd": (_gcd_lcm(math.gcd, "gcd"), 1, None),
    "lcm": (_gcd_lcm(math.lcm, "lcm"), 1, None),
}
CONSTANTS: dict[str, Number] = {"pi": math.pi, "e": math.e}

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Number]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
}
_OP_NAMES = {ast.BitXor: "^ (use ** for powers)", ast.BitAnd: "&", ast.BitOr: "|", ast.MatMult: "@"}


def _literal(node: ast.Constant, source: str) -> Number:
    value = node.value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ToolError(f"only numbers are allowed, got {value!r}")
    if isinstance(value, int):
        return _check(Fraction(value))
    # read the literal's own text so 0.1 is exactly 1/10, sizing it before Fraction builds 10**exp
    text = ast.get_source_segment(source, node) or repr(value)
    try:
        dec = Decimal(text.replace("_", ""))
    except InvalidOperation:
        return _check(float(value))
    digits = len(dec.as_tuple().digits)
    exponent = dec.as_tuple().exponent
    assert isinstance(exponent, int)
    if abs(exponent) + digits > MAX_DIGITS:
        raise ToolError(f"number {text} is too large or too precise (over {MAX_DIGITS} digits)")
    return _check(Fraction(dec))


class _Evaluator:
    def __init__(self, source: str) -> None:
        self.source = source

    def eval(self, node: ast.AST, depth: int = 0) -> Number:
        if depth > MAX_DEPTH:
            raise ToolError(f"expression is nested too deeply (more than {MAX_DEPTH} levels)")
        d = depth + 1
        if isinstance(node, ast.Expression):
            return self.eval(node.body, d)
        if isinstance(node, ast.Constant):
            return _literal(node, self.source)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
            v = self.eval(node.operand, d)
            return -v if isinstance(node.op, ast.USub) else v
        if isinstance(node, ast.BinOp):
            left, right = self.eval(node.left, d), self.eval(node.right, d)
            if isinstance(node.op, ast.Pow):
                return _power(left, right)
            fn = _BINARY.get(type(node.op))
            if fn is None:
                name = _OP_NAMES.get(type(node.op), type(node.op).__name__)
                raise ToolError(f"operator {name} is not supported; use + - * / // % **")
            try:
                return _check(fn(left, right))
            except ZeroDivisionError:
                raise ToolError("division by zero") from None
            except OverflowError:
                raise ToolError("result is too large (overflows a float)") from None
        if isinstance(node, ast.Call):
            return self.call(node, d)
        if isinstance(node, ast.Name):
            if node.id in CONSTANTS:
                return CONSTANTS[node.id]
            if node.id in FUNCTIONS:
                raise ToolError(f"{node.id} is a function; call it like {node.id}(...)")
            raise ToolError(f"unknown name {node.id!r}; only numbers, operators and {_known()} are allowed")
        if isinstance(node, ast.Tuple):
            raise ToolError("a comma outside a function call; write numbers without thousands separators")
        if isinstance(node, ast.Compare | ast.BoolOp):
            raise ToolError("comparisons and and/or are not supported; compute a number")
        raise ToolError(f"unsupported syntax ({type(node).__name__}); use numbers, + - * / // % ** and ()")

    def call(self, node: ast.Call, depth: int) -> Number:
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
            shown = node.func.id if isinstance(node.func, ast.Name) else ast.unparse(node.func)
            raise ToolError(f"unknown function {shown!r}; available: {', '.join(FUNCTIONS)}")
        if node.keywords:
            raise ToolError(f"{node.func.id}() takes positional arguments only")
        fn, lo, hi = FUNCTIONS[node.func.id]
        n = len(node.args)
        if n < lo or (hi is not None and n > hi):
            want = str(lo) if lo == hi else f"{lo} to {hi}" if hi is not None else f"at least {lo}"
            raise ToolError(f"{node.func.id}() takes {want} argument(s), got {n}")
        args = [self.eval(a, depth) for a in node.args]
        try:
            return _check(fn(*args))
        except (OverflowError, ValueError) as e:
            raise ToolError(f"{node.func.id}() failed: {e}") from None


def _known() -> str:
    return "functions " + ", ".join(FUNCTIONS) + " and constants " + ", ".join(CONSTANTS)


def evaluate(expression: str) -> Number:
    """Evaluate an arithmetic expression exactly where possible. Raises `ToolError` on any problem."""
    if not isinstance(expression, str):
        raise ToolError("expression must be a string")
    text = expression.strip()
    for k, v in _UNICODE_OPS.items():
        text = text.replace(k, v)
    if not text:
        raise ToolError("expression is empty")
    if len(text) > MAX_EXPRESSION_CHARS:
        raise ToolError(f"expression is longer than {MAX_EXPRESSION_CHARS} characters")
    if text.count("(") + text.count("[") > 2 * MAX_DEPTH:
        raise ToolError(f"expression is nested too deeply (more than {MAX_DEPTH} levels)")
    try:
        with warnings.catch_warnings():  # "3or 4" parses with a SyntaxWarning to stderr
            warnings.simplefilter("ignore", SyntaxWarning)
            tree = ast.parse(text, mode="eval")
    except SyntaxError as e:
        raise ToolError(f"invalid expression: {e.msg}") from None
    except (RecursionError, MemoryError, ValueError):
        raise ToolError("invalid expression: too complex to parse") from None
    try:
        return _Evaluator(text).eval(tree)
    except RecursionError:
        raise ToolError(f"expression is nested too deeply (more than {MAX_DEPTH} levels)") from None


def format_number(x: Number) -> str:
    """Whole numbers print as integers; others as decimals with at most 12 places."""
    if isinstance(x, float):
        if x.is_integer() and abs(x) < 1e15:
            return str(int(x))
        if x != 0 and (abs(x) >= 1e15 or abs(x) < 1e-6):
            return format(x, f".{_SHOWN_DECIMALS}g")
        x = Fraction(x)
    if x.denominator == 1:
        return str(x.numerator)
    if abs(x) < Fraction(1, 10**6):
        return format(_to_float(x), f".{_SHOWN_DECIMALS}g")
    with localcontext() as ctx:
        whole_digits = len(str(abs(x.numerator) // x.denominator))
        ctx.prec = whole_digits + _SHOWN_DECIMALS + 2
        dec = Decimal(x.numerator) / Decimal(x.denominator)
        dec = dec.quantize(Decimal(1).scaleb(-_SHOWN_DECIMALS))
    text = format(dec, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


class CalculatorTool(Tool):
    """Exact arithmetic for word problems; refuses oversized work up front."""

    name: ClassVar[str] = "calculator"
    description: ClassVar[str] = (
        "Evaluate an arithmetic expression exactly. Use numbers, + - * / // % ** and parentheses, "
        "and the functions sqrt, abs, round, min, max, floor, ceil, factorial, gcd, lcm "
        "(constants pi, e). Example: (12.5 * 4 - 3) / 2. Returns the result as a number."
    )
    parameters: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {
            "expression": {
                "type": "string",
                "description": "The arithmetic expression, e.g. 3 * (4 + 5) / 2",
                "maxLength": MAX_EXPRESSION_CHARS,
            }
        },
        "required": ["expression"],
        "additionalProperties": False,
    }

    def __init__(
        self,
        timeout: float = 5.0,
        max_concurrency: int = 64,
        rate_limit: tuple[int, float] | None = None,
    ) -> None:
        super().__init__(timeout=timeout, max_concurrency=max_concurrency, rate_limit=rate_limit)

    async def run(self, **arguments: Any) -> str:
        return format_number(evaluate(arguments["expression"]))
