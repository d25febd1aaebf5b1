"""The finite-number rule: what counts as a feature value, in events and in stored features."""

from __future__ import annotations

import math


def finite_number(value: object) -> float:
    """``value`` as a float, or ``ValueError`` saying why it is not a finite number.

    Booleans and strings are not numbers; NaN, ±Infinity and integers too large for a double
    are not finite.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"must be a number or null, not {type(value).__name__}")
    try:
        number = float(value)
    except OverflowError:
        raise ValueError("must be a finite number (integer too large)") from None
    if not math.isfinite(number):
        raise ValueError(f"must be a finite number, got {number}")
    return number


def finite_or_none(value: object) -> float | None:
    """``value`` as a float when it is a finite number, else None (treated as missing)."""
    try:
        return finite_number(value)
    except ValueError:
        return None
