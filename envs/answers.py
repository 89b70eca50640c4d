"""Answer checking that forgives formatting but not mathematics.

"42", " 42 ", "42.0", "1,000" and "$1,000" are read as the same numbers; "1/2" equals "0.5"; and
symbolic answers ("sqrt(2)/2", "\\frac{1}{2}") are compared with sympy. Model text is never passed to
`eval`/`sympify`: expressions are read through Python's `ast` into a whitelist of node types and
built into sympy objects by hand, with powers sized before they are computed.
"""

from __future__ import annotations

import ast
import math
import re
import unicodedata
import warnings
from collections.abc import Iterable
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # sympy is imported on first use: it costs ~0.3 s and plain numbers never need it
    import sympy

MAX_ANSWER_CHARS = 300
_MAX_EXPONENT = 1000
_MAX_RESULT_DIGITS = 5000

_PLAIN_NUMBER_RE = re.compile(r"[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?")
_THOUSANDS_RE = re.compile(r"[-+]?\d{1,3}(,\d{3})+(\.\d+)?")
_BOXED_RE = re.compile(r"\\boxed\s*\{(.*)\}", re.DOTALL)
_FRAC_RE = re.compile(r"\\d?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}")
_SQRT_RE = re.compile(r"\\sqrt\s*\{([^{}]*)\}")
_LATEX_SUBS = {
    "\\left": "",
    "\\right": "",
    "\\cdot": "*",
    "\\times": "*",
    "\\div": "/",
    "\\pi": "pi",
    "\\,": "",
    "\\!": "",
    "×": "*",
    "÷": "/",
    "−": "-",
    "·": "*",
    "π": "pi",
    "{": "(",
    "}": ")",
}
_ARTICLES_RE = re.compile(r"\b(the|a|an)\b")
_PUNCT_RE = re.compile(r"[^\w\s]")


def clean(text: str) -> str:
    """Strip what models wrap answers in: whitespace, `$`, \\boxed{}, a trailing period, `x =`."""
    s = unicodedata.normalize("NFKC", str(text)).strip()
    m = _BOXED_RE.search(s)
    if m:
        s = m.group(1)
    s = s.replace("$", "").strip()
    if "=" in s:
        s = s.rsplit("=", 1)[1].strip()
    return s.rstrip(".").strip()


def parse_number(text: str) -> Fraction | None:
    """Read a plain number exactly ("1,000.50", "-3", "2.5e3", "$12"); None when it is not one."""
    s = clean(text).replace(" ", "").replace("_", "")
    s = s.lstrip("$€£")
    if s.endswith("%"):
        return None  # a percentage is ambiguous as a number; let the symbolic path decide nothing
    if _THOUSANDS_RE.fullmatch(s):
        s = s.replace(",", "")
    if len(s) > 100 or not _PLAIN_NUMBER_RE.fullmatch(s):
        return None
    try:
        dec = Decimal(s)
    except InvalidOperation:
        return None
    exp = dec.as_tuple().exponent
    if not isinstance(exp, int) or abs(exp) > _MAX_EXPONENT:
        return None
    return Fraction(dec)


def to_sympy(text: str) -> sympy.Expr | None:
    """Parse a numeric expression safely into sympy; None when it is not one we accept."""
    s = clean(text)
    if not s or len(s) > MAX_ANSWER_CHARS:
        return None
    for _ in range(5):  # nested \frac / \sqrt, innermost first
        s2 = _SQRT_RE.sub(r"sqrt(\1)", _FRAC_RE.sub(r"((\1)/(\2))", s))
        if s2 == s:
            break
        s = s2
    for k, v in _LATEX_SUBS.items():
        s = s.replace(k, v)
    if _THOUSANDS_RE.fullmatch(s.strip()):
        s = s.replace(",", "")
    s = s.replace("^", "**")
    try:
        with warnings.catch_warnings():  # a model's "12and 3" parses with a SyntaxWarning to stderr
            warnings.simplefilter("ignore", SyntaxWarning)
            tree = ast.parse(s.strip(), mode="eval")
        return _build(tree.body, s)
    except (SyntaxError, ValueError, TypeError, ZeroDivisionError, RecursionError, MemoryError):
        return None


def _build(node: ast.AST, source: str, depth: int = 0) -> sympy.Expr:
    import sympy

    if depth > 40:
        raise ValueError("too deep")
    d = depth + 1
    if isinstance(node, ast.Constant):
        v = node.value
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ValueError("not a number")
        if isinstance(v, int):
            return sympy.Integer(v)
        seg = ast.get_source_segment(source, node) or repr(v)
        num = parse_number(seg)
        if num is None:
            raise ValueError("bad float")
        return sympy.Rational(num.numerator, num.denominator)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        x = _build(node.operand, source, d)
        return -x if isinstance(node.op, ast.USub) else x
    if isinstance(node, ast.BinOp):
        a, b = _build(node.left, source, d), _build(node.right, source, d)
        if isinstance(node.op, ast.Add):
            return a + b
        if isinstance(node.op, ast.Sub):
            return a - b
        if isinstance(node.op, ast.Mult):
            return a * b
        if isinstance(node.op, ast.Div):
            if b == 0:
                raise ZeroDivisionError
            return a / b
        if isinstance(node.op, ast.Pow):
            return _power(a, b)
        raise ValueError("operator not allowed")
    if isinstance(node, ast.Name):
        if node.id == "pi":
            return sympy.pi
        if node.id in ("e", "E"):
            return sympy.E
        raise ValueError(f"name {node.id} not allowed")
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "sqrt"
        and len(node.args) == 1
        and not node.keywords
    ):
        return sympy.sqrt(_build(node.args[0], source, d))
    raise ValueError(f"{type(node).__name__} not allowed")


def _power(base: sympy.Expr, exp: sympy.Expr) -> sympy.Expr:
    """Size a power before computing it, so '9^9^9' is refused instead of hanging."""
    import sympy

    if not exp.is_Rational or abs(exp) > _MAX_EXPONENT:
        raise ValueError("exponent too large or not rational")
    if base.is_Rational and base != 0:
        size = max(abs(int(base.p)), int(base.q))
        if math.log10(max(size, 2)) * abs(float(exp)) > _MAX_RESULT_DIGITS:
            raise ValueError("power too large")
    elif base.is_number:
        approx = abs(complex(base.evalf(15)))
        if approx > 1 and math.log10(approx) * abs(float(exp)) > _MAX_RESULT_DIGITS:
            raise ValueError("power too large")
    return sympy.Pow(base, exp)


def numbers_equal(pred: str, gold: object, rel_tol: float = 1e-9) -> bool:
    """Numeric equality: exact for rationals, `rel_tol` when either side is irrational."""
    p_num, g_num = parse_number(pred), _gold_number(gold)
    if p_num is not None and g_num is not None:  # the common case, exact and without sympy
        return p_num == g_num
    import sympy

    g = _gold_expr(gold)
    if g is None:
        return False
    p = sympy.Rational(p_num.numerator, p_num.denominator) if p_num is not None else to_sympy(pred)
    if p is None:
        return False
    return _sympy_equal(p, g, rel_tol)


def _gold_number(gold: object) -> Fraction | None:
    if isinstance(gold, bool):
        return None
    if isinstance(gold, int | Fraction):
        return Fraction(gold)
    if isinstance(gold, str):
        return parse_number(gold)
    return None


def _gold_expr(gold: object) -> sympy.Expr | None:
    import sympy

    if isinstance(gold, sympy.Expr):
        return gold
    if isinstance(gold, int):
        return sympy.Integer(gold)
    if isinstance(gold, Fraction):
        return sympy.Rational(gold.numerator, gold.denominator)
    if isinstance(gold, float):
        return sympy.Float(gold)
    return to_sympy(str(gold))


def _sympy_equal(a: sympy.Expr, b: sympy.Expr, rel_tol: float) -> bool:
    import sympy

    if a.is_Rational and b.is_Rational:
        return bool(a == b)
    if not (a.is_number and b.is_number):
        return False
    if a.is_Rational != b.is_Rational or isinstance(a, sympy.Float) or isinstance(b, sympy.Float):
        # one side is a decimal approximation of an irrational (or float) value
        try:
            fa, fb = complex(a.evalf(30)), complex(b.evalf(30))
        except (TypeError, ValueError):
            return False
        return abs(fa - fb) <= rel_tol * max(1.0, abs(fb))
    try:
        return bool(sympy.simplify(a - b) == 0)
    except (TypeError, ValueError, RecursionError):
        return False


def normalize_text(text: str) -> str:
    """Lower-case, drop punctuation and articles, collapse spaces: 'The  Velmora.' -> 'velmora'."""
    s = unicodedata.normalize("NFKC", str(text)).lower()
    s = _PUNCT_RE.sub(" ", s)
    s = _ARTICLES_RE.sub(" ", s)
    return " ".join(s.split())


def text_equal(pred: str, golds: str | Iterable[str]) -> bool:
    """True when `pred` matches any accepted spelling in `golds` after `normalize_text`."""
    options = [golds] if isinstance(golds, str) else list(golds)
    p = normalize_text(pred)
    return bool(p) and any(p == normalize_text(g) for g in options)


def answers_match(pred: str, gold: Any) -> bool:
    """Numbers compare as numbers (exactly), anything else as normalised text."""
    if pred is None:
        return False
    if isinstance(gold, int | float | Fraction) or type(gold).__module__.startswith("sympy"):
        return numbers_equal(pred, gold)
    if isinstance(gold, str) and (parse_number(gold) is not None or to_sympy(gold) is not None):
        return numbers_equal(pred, gold)
    if isinstance(gold, list | tuple):
        return any(answers_match(pred, g) for g in gold)
    return text_equal(pred, str(gold))
