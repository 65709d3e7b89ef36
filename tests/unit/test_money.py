"""Amounts: decimal strings at the edges parse to exact base units, and render back."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from depositd.domain.money import MAX_BASE_UNITS, format_amount, parse_amount
from depositd.errors import InputError, InvalidAmount


@pytest.mark.parametrize(
    ("text", "decimals", "expected"),
    [
        ("1", 18, 10**18),
        ("1.25", 2, 125),
        ("0.01", 2, 1),
        ("1.5", 6, 1_500_000),
        ("0.000000000000000001", 18, 1),
        ("123456789", 0, 123456789),
        ("007.50", 2, 750),
        # trailing zeros beyond the asset's decimals say nothing new
        ("1.500", 2, 150),
        ("2.000000", 0, 2),
        ("1.0", 0, 1),
    ],
)
def test_parse_amount_accepts_plain_decimals(text: str, decimals: int, expected: int) -> None:
    assert parse_amount(text, decimals) == expected


@pytest.mark.parametrize(
    ("text", "decimals"),
    [("1.234", 2), ("0.0000001", 6), ("1.5", 0), ("0.1234567890123456789", 18)],
)
def test_parse_amount_rejects_more_decimal_places_than_the_asset_has(
    text: str, decimals: int
) -> None:
    with pytest.raises(InvalidAmount, match=f"more than {decimals} decimal places"):
        parse_amount(text, decimals)


@pytest.mark.parametrize("text", ["0", "0.0", "0.000", "000", "-1", "-0", "-0.5", "-1.25"])
def test_parse_amount_rejects_zero_and_negatives(text: str) -> None:
    with pytest.raises(InvalidAmount, match="greater than zero"):
        parse_amount(text, 2)


@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        "1e3",
        "1E3",
        "1.5e2",
        " 1",
        "1 ",
        "1 000",
        "\t1",
        "1\n",
        "+1",
        "NaN",
        "nan",
        "Infinity",
        "inf",
        "\u0661",  # Arabic-Indic one: int() would take it, an amount must not
        "\u0661\u0662\u0663",  # Arabic-Indic 123
        "\uff11",  # full-width one
        "1_000",
        "1,5",
        "1.",
        ".5",
        "0x10",
        "1.2.3",
        "--1",
        "abc",
    ],
)
def test_parse_amount_rejects_anything_but_a_plain_decimal(text: str) -> None:
    with pytest.raises(InvalidAmount, match="not a plain decimal"):
        parse_amount(text, 18)


def test_invalid_amount_is_input_error_naming_the_text() -> None:
    with pytest.raises(InputError) as caught:
        parse_amount("1e3", 18)
    assert "'1e3'" in str(caught.value)
    assert caught.value.slug == "invalid-amount"


def test_parse_amount_accepts_the_largest_uint256() -> None:
    assert parse_amount(str(MAX_BASE_UNITS), 0) == 2**256 - 1
    assert parse_amount(format_amount(MAX_BASE_UNITS, 18), 18) == MAX_BASE_UNITS


@pytest.mark.parametrize(
    ("text", "decimals"),
    [
        (str(2**256), 0),
        (format_amount(MAX_BASE_UNITS + 1, 18), 18),
        (format_amount(MAX_BASE_UNITS, 18) + "1", 19),
        ("1" + "0" * 78, 0),
        ("9" * 81, 0),
        ("9" * 5000, 0),  # beyond int()'s digit limit: still a clean rejection
    ],
)
def test_parse_amount_rejects_more_than_uint256_base_units(text: str, decimals: int) -> None:
    with pytest.raises(InvalidAmount, match="too large"):
        parse_amount(text, decimals)


def test_parse_amount_ignores_leading_zeros_when_checking_size() -> None:
    assert parse_amount("0" * 80 + "1", 0) == 1


@pytest.mark.parametrize(
    ("base_units", "decimals", "expected"),
    [
        (0, 18, "0"),
        (1, 18, "0.000000000000000001"),
        (10**18, 18, "1"),
        (1_500_000, 6, "1.5"),
        (125, 2, "1.25"),
        (100, 2, "1"),
        (5, 0, "5"),
        (-1500, 3, "-1.5"),
        (MAX_BASE_UNITS, 0, str(2**256 - 1)),
    ],
)
def test_format_amount_has_no_exponent_or_trailing_zeros(
    base_units: int, decimals: int, expected: str
) -> None:
    assert format_amount(base_units, decimals) == expected


@settings(max_examples=300, deadline=None)
@given(decimals=st.integers(0, 30), base_units=st.integers(1, MAX_BASE_UNITS))
def test_format_then_parse_round_trips(decimals: int, base_units: int) -> None:
    text = format_amount(base_units, decimals)
    assert "e" not in text.lower()
    assert parse_amount(text, decimals) == base_units


@settings(max_examples=200, deadline=None)
@given(
    decimals=st.integers(0, 30),
    base_units=st.integers(1, 10**40),
    extra_zeros=st.integers(0, 5),
)
def test_trailing_zeros_never_change_the_amount(
    decimals: int, base_units: int, extra_zeros: int
) -> None:
    text = format_amount(base_units, decimals)
    if "." not in text:
        text += ".0"
    assert parse_amount(text + "0" * extra_zeros, decimals) == base_units
