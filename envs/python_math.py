"""`agentrl/PythonMath-v0`: math problems solved by running code in the Python sandbox.

This is the tool-integrated reasoning setting: each problem (sums over ranges, modular powers,
prime counting, divisor counts, exact fractions, ...) is easy to program and hard to do in one's
head. Answers are checked symbolically with sympy, so "1/2", "0.5" and "\\frac{1}{2}" all count.
"""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Callable, Sequence
from fractions import Fraction
from typing import ClassVar

from agentrl.envs.answers import numbers_equal
from agentrl.envs.base import Task, ToolEnv
from agentrl.tools.base import Tool, format_answer, format_tool_call

SPLIT_SIZES = {"train": 1000, "test": 200, "warmup": 5000}

# A family draws (prompt, answer, code, difficulty); `answer` is computed here, independently of `code`.
Problem = tuple[str, str, str, int]


def _power_sum(rng: random.Random) -> Problem:
    p = rng.choice((1, 2, 3))
    n = rng.randint(50, 2000)
    ans = sum(k**p for k in range(1, n + 1))
    return (
        f"Compute the sum of k^{p} for k = 1 to {n}.",
        str(ans),
        f"print(sum(k**{p} for k in range(1, {n} + 1)))",
        1,
    )


def _modpow(rng: random.Random) -> Problem:
    a, b, m = rng.randint(2, 999), rng.randint(10**3, 10**9), rng.randint(10**3, 10**6)
    return (
        f"What is the remainder when {a}^{b} is divided by {m}?",
        str(pow(a, b, m)),
        f"print(pow({a}, {b}, {m}))",
        1 if b < 10**5 else 2,
    )


def _lcm(rng: random.Random) -> Problem:
    nums = [rng.randint(6, 600) for _ in range(rng.choice((3, 4)))]
    joined = ", ".join(map(str, nums))
    return (
        f"What is the least common multiple of {joined}?",
        str(math.lcm(*nums)),
        f"import math\nprint(math.lcm({joined}))",
        1,
    )


def _prime_count(rng: random.Random) -> Problem:
    n = rng.randint(1000, 100_000)
    sieve = bytearray([1]) * (n + 1)
    sieve[0:2] = b"\x00\x00"
    for i in range(2, math.isqrt(n) + 1):
        if sieve[i]:
            sieve[i * i :: i] = bytearray(len(range(i * i, n + 1, i)))
    code = (
        f"n = {n}\ns = [True] * (n + 1)\ns[0] = s[1] = False\n"
        "for i in range(2, int(n**0.5) + 1):\n"
        "    if s[i]:\n        for j in range(i * i, n + 1, i):\n            s[j] = False\n"
        "print(sum(s))"
    )
    return f"How many prime numbers are less than or equal to {n}?", str(sum(sieve)), code, 2


def _divisible_count(rng: random.Random) -> Problem:
    n = rng.randint(1000, 50_000)
    a, b = rng.sample(range(2, 13), 2)
    c = rng.randint(13, 40)
    ans = sum(1 for k in range(1, n + 1) if (k % a == 0 or k % b == 0) and k % c != 0)
    return (
        f"How many integers from 1 to {n} are divisible by {a} or by {b}, but not by {c}?",
        str(ans),
        f"print(sum(1 for k in range(1, {n} + 1) if (k % {a} == 0 or k % {b} == 0) and k % {c} != 0))",
        2,
    )


def _digit_sum(rng: random.Random) -> Problem:
    a, b = rng.randint(2, 99), rng.randint(20, 400)
    return (
        f"What is the sum of the decimal digits of {a}^{b}?",
        str(sum(map(int, str(a**b)))),
        f"print(sum(int(d) for d in str({a}**{b})))",
        2,
    )


def _divisor_count(rng: random.Random) -> Problem:
    n = 1
    for p in rng.sample((2, 3, 5, 7, 11, 13, 17), rng.randint(2, 4)):
        n *= p ** rng.randint(1, 4)
    count = sum(1 for d in range(1, math.isqrt(n) + 1) if n % d == 0 for _ in ({d, n // d}))
    return (
        f"How many positive divisors does {n} have?",
        str(count),
        f"n = {n}\nprint(sum(1 for d in range(1, n + 1) if n % d == 0))"
        if n < 2_000_000
        else f"import math\nn = {n}\nprint(sum(1 if d * d == n else 2 for d in range(1, math.isqrt(n) + 1) if n % d == 0))",
        2,
    )


def _telescoping(rng: random.Random) -> Problem:
    n = rng.randint(10, 500)
    ans = sum((Fraction(1, k * (k + 1)) for k in range(1, n + 1)), Fraction(0))
    return (
        f"Compute the exact value of the sum of 1/(k(k+1)) for k = 1 to {n}. Give a fraction.",
        f"{ans.numerator}/{ans.denominator}",
        f"from fractions import Fraction\nprint(sum(Fraction(1, k * (k + 1)) for k in range(1, {n} + 1)))",
        3,
    )


def _geometric(rng: random.Random) -> Problem:
    r, n = rng.randint(2, 9), rng.randint(5, 30)
    ans = sum((Fraction(1, r**k) for k in range(n + 1)), Fraction(0))
    return (
        f"Compute the exact value of the sum of (1/{r})^k for k = 0 to {n}. Give a fraction.",
        f"{ans.numerator}/{ans.denominator}",
        f"from fractions import Fraction\nprint(sum(Fraction(1, {r})**k for k in range({n} + 1)))",
        3,
    )


def _fib_mod(rng: random.Random) -> Problem:
    n, m = rng.randint(100, 100_000), rng.randint(100, 10**6)
    a, b = 0, 1
    for _ in range(n):
        a, b = b, (a + b) % m
    return (
        f"With F(1) = F(2) = 1 and F(k) = F(k-1) + F(k-2), what is F({n}) modulo {m}?",
        str(a),
        f"a, b = 0, 1\nfor _ in range({n}):\n    a, b = b, (a + b) % {m}\nprint(a)",
        3,
    )


def _collatz(rng: random.Random) -> Problem:
    n = rng.randint(10**3, 10**7)
    steps, x = 0, n
    while x != 1:
        x = x // 2 if x % 2 == 0 else 3 * x + 1
        steps += 1
    return (
        f"Starting from {n}, repeatedly halve the number if it is even, or replace it with 3x + 1 if it "
        "is odd. How many steps does it take to reach 1?",
        str(steps),
        f"x, steps = {n}, 0\nwhile x != 1:\n    x = x // 2 if x % 2 == 0 else 3 * x + 1\n    steps += 1\nprint(steps)",
        3,
    )


def _pair_count(rng: random.Random) -> Problem:
    n, m = rng.randint(30, 300), rng.randint(3, 30)
    ans = sum(1 for x in range(1, n) for y in range(1, n - x + 1) if (x * y) % m == 0)
    return (
        f"How many ordered pairs (x, y) of positive integers satisfy x + y <= {n} and x*y divisible by {m}?",
        str(ans),
        f"print(sum(1 for x in range(1, {n}) for y in range(1, {n} - x + 1) if (x * y) % {m} == 0))",
        4,
    )


def _mean_fraction(rng: random.Random) -> Problem:
    n = rng.randint(3, 40)
    ans = Fraction(sum(k * k for k in range(1, n + 1)), n)
    text = f"{ans.numerator}/{ans.denominator}" if ans.denominator > 1 else str(ans.numerator)
    return (
        f"What is the average of the squares 1^2, 2^2, ..., {n}^2? Give the exact value.",
        text,
        f"from fractions import Fraction\nprint(Fraction(sum(k * k for k in range(1, {n} + 1)), {n}))",
        2,
    )


FAMILIES: tuple[Callable[[random.Random], Problem], ...] = (
    _power_sum,
    _modpow,
    _lcm,
    _prime_count,
    _divisible_count,
    _digit_sum,
    _divisor_count,
    _telescoping,
    _geometric,
    _fib_mod,
    _collatz,
    _pair_count,
    _mean_fraction,
)


def generate(split: str, n: int, avoid: frozenset[str] = frozenset()) -> list[Task]:
    rng = random.Random(f"agentrl/python_math/{split}")
    tasks: list[Task] = []
    seen = set(avoid)
    while len(tasks) < n:
        family = rng.choice(FAMILIES)
        prompt, answer, code, difficulty = family(rng)
        if prompt in seen:
            continue
        seen.add(prompt)
        tasks.append(
            Task(
                id=f"{len(tasks):05d}",
                prompt=prompt,
                answer=answer,
                difficulty=difficulty,
                data={"code": code, "family": family.__name__.lstrip("_")},
            )
        )
    return tasks


@functools.cache
def _python_tool() -> Tool:
    """One sandbox tool per process, so its concurrency cap bounds sandboxes across all episodes."""
    from agentrl.tools.python_sandbox import PythonTool

    return PythonTool()


class PythonMathEnv(ToolEnv):
    """Math problems answered by writing and running Python in a bubblewrap sandbox."""

    name: ClassVar[str] = "python_math"
    instructions: ClassVar[str] = (
        "Write Python code and run it with the python tool (print the result), then give the exact "
        "answer: an integer or a fraction such as 3/7."
    )
    max_turns = 6
    # "warmup": problems disjoint from train and test, for supervised warm-starts (the tiny models)
    splits = ("train", "test", "warmup")

    def make_tools(self) -> list[Tool]:
        return [_python_tool()]

    def load_tasks(self, split: str) -> Sequence[Task]:
        if split == "train":
            return generate("train", SPLIT_SIZES["train"])
        train = frozenset(t.prompt for t in self.tasks("train"))
        if split == "test":
            return generate("test", SPLIT_SIZES["test"], avoid=train)
        test = frozenset(t.prompt for t in self.tasks("test"))
        return generate(split, SPLIT_SIZES[split], avoid=train | test)

    def score(self, task: Task, answer: str) -> float:
        return float(numbers_equal(answer, task.answer))

    def expert_action(self) -> str:
        """Run the task's program in the sandbox, then answer with the last line it printed."""
        assert self.task is not None, "call reset() first"
        outputs = self.tool_outputs("python")
        if not outputs:
            return format_tool_call("python", {"code": self.task.data["code"]})
        lines = [ln.strip() for ln in outputs[-1].strip().splitlines() if ln.strip()]
        return format_answer(lines[-1] if lines else "")
