"""Amounts: integer base units inside, decimal strings at the edges."""

from __future__ import annotations

import re

from depositd.errors import InvalidAmount

#: the largest amount any EVM token can carry (uint256)
MAX_BASE_UNITS = 2**256 - 1

_DECIMAL = re.compile(r"(-?)([0-9]+)(?:\.([0-9]+))?")


def parse_amount(text: str, decimals: int) -> int:
    """Turn a positive decimal string such as ``"1.25"`` into base units.

    Only plain decimals are accepted (no exponent, sign, spaces or separators). Rejects zero
    and negatives, more fractional digits than the asset has (trailing zeros excepted), and
    anything that does not fit in a uint256.
    """
    match = _DECIMAL.fullmatch(text)
    if match is None:
        raise InvalidAmount(f"amount {text!r} is not a plain decimal number such as '1.25'")
    negative, whole, fraction = match.group(1), match.group(2).lstrip("0"), (match.group(3) or "")
    fraction = fraction.rstrip("0")
    if len(fraction) > decimals:
        raise InvalidAmount(f"amount {text!r} has more than {decimals} decimal places")
    if len(whole) > 80:
        raise InvalidAmount(f"amount {text!r} is too large")
    base_units: int = int(whole or "0") * 10**decimals + int(fraction.ljust(decimals, "0") or "0")
    if negative or base_units == 0:
        raise InvalidAmount(f"amount {text!r} must be greater than zero")
    if base_units > MAX_BASE_UNITS:
        raise InvalidAmount(f"amount {text!r} is too large")
    return base_units


def format_amount(base_units: int, decimals: int) -> str:
    """Render base units as a decimal string without exponent or trailing zeros."""
    sign = "-" if base_units < 0 else ""
    whole, frac = divmod(abs(base_units), 10**decimals)
    if decimals == 0 or frac == 0:
        return f"{sign}{whole}"
    digits = str(frac).rjust(decimals, "0").rstrip("0")
    return f"{sign}{whole}.{digits}"
