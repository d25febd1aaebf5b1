"""The finite-number rule shared by event validation and stored features."""

from __future__ import annotations

import pytest

from schemas.numbers import finite_number, finite_or_none


@pytest.mark.parametrize(("value", "expected"), [(3, 3.0), (-2.5, -2.5), (0, 0.0), (1e308, 1e308)])
def test_finite_numbers_become_floats(value: object, expected: float) -> None:
    assert finite_number(value) == expected
    assert finite_or_none(value) == expected


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (True, "must be a number or null, not bool"),
        ("1.5", "must be a number or null, not str"),
        (None, "must be a number or null, not NoneType"),
        (float("nan"), "must be a finite number, got nan"),
        (float("-inf"), "must be a finite number, got -inf"),
        (10**400, "must be a finite number (integer too large)"),
    ],
)
def test_everything_else_is_refused_with_a_reason(value: object, reason: str) -> None:
    with pytest.raises(ValueError, match=r"^must be ") as caught:
        finite_number(value)
    assert str(caught.value) == reason
    assert finite_or_none(value) is None
