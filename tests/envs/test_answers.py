"""Answer checking: forgiving about format, exact about value, and safe on hostile text."""

from __future__ import annotations

import time
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentrl.envs.answers import answers_match, normalize_text, numbers_equal, parse_number, to_sympy


@pytest.mark.parametrize(
    "pred", ["42", " 42 ", "42.0", "42.000", "+42", "$42", "\\boxed{42}", "x = 42", "42."]
)
def test_number_formats_match(pred):
    assert answers_match(pred, 42)
    assert answers_match(pred, "42")


@pytest.mark.parametrize("pred", ["1,000", "1000", "1,000.0", "1 000", "$1,000"])
def test_thousands_separators(pred):
    assert answers_match(pred, 1000)


@pytest.mark.parametrize("pred", ["43", "4.2", "42/2", "forty-two", "", "42%", "1,00"])
def test_wrong_numbers_do_not_match(pred):
    assert not answers_match(pred, 42)


@pytest.mark.parametrize(
    "pred, gold",
    [
        ("1/2", "0.5"),
        ("0.5", "1/2"),
        ("\\frac{1}{2}", "1/2"),
        ("\\dfrac{3}{6}", "1/2"),
        ("2/4", Fraction(1, 2)),
        ("sqrt(2)/2", "1/sqrt(2)"),
        ("\\frac{\\sqrt{2}}{2}", "sqrt(2)/2"),
        ("0.70710678118654752", "sqrt(2)/2"),
        ("2^10", "1024"),
        ("1.5e3", "1500"),
        ("-3/7", "-6/14"),
    ],
)
def test_symbolic_equality(pred, gold):
    assert numbers_equal(pred, gold)


@pytest.mark.parametrize("pred, gold", [("0.3333", "1/3"), ("1/3", "0.33"), ("sqrt(3)", "sqrt(2)")])
def test_symbolic_inequality(pred, gold):
    assert not numbers_equal(pred, gold)


@pytest.mark.parametrize(
    "hostile",
    [
        "__import__('os').system('echo pwned')",
        "().__class__.__bases__[0]",
        "9^9^9",
        "9**9**9",
        "10**100000",
        "(" * 200 + "1" + ")" * 200,
        "lambda: 1",
        "x" * 10_000,
    ],
)
def test_hostile_text_is_rejected_quickly(hostile):
    start = time.perf_counter()
    assert to_sympy(hostile) is None
    assert not answers_match(hostile, 42)
    assert time.perf_counter() - start < 5  # a hang would trip this; it is not a speed benchmark


def test_text_answers():
    assert answers_match("  the Velmora. ", "Velmora")
    assert answers_match("VELMORA", ["Velmora", "Velmoran Republic"])
    assert not answers_match("Velmor", "Velmora")
    assert normalize_text("The  Brightwave-Labs!") == "brightwave labs"


def test_parse_number():
    assert parse_number("1,234.5") == Fraction(2469, 2)
    assert parse_number("abc") is None
    assert parse_number("1e99999") is None


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_never_raises_on_any_text(text):
    answers_match(text, 42)
    answers_match(text, "1/2")
    answers_match(text, "Velmora")


@settings(max_examples=200, deadline=None)
@given(st.integers(-(10**12), 10**12))
def test_integers_roundtrip_with_separators(n):
    assert answers_match(f"{n:,}", n)
    assert answers_match(f"{n}.0", n)


def test_malformed_numbers_parse_without_a_syntax_warning() -> None:
    """A model's "12and 3" must not print Python's SyntaxWarning to the training log."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert to_sympy("1131970824740and 5") is None
    assert not [w for w in caught if issubclass(w.category, SyntaxWarning)]
