"""Feature vector rule: event value, else stored value, else NaN; in the model's order."""

from __future__ import annotations

import numpy as np

from schemas import InputEvent
from scoring.cache import Lookup
from scoring.vectors import assemble

NAMES = ("amount", "hour", "account_age_days", "avg_amount_30d")


def ev(entity: str, **features: float | None) -> InputEvent:
    return InputEvent(event_id=f"e-{entity}", entity_id=entity, features=features)


def test_order_precedence_and_missing() -> None:
    events = [
        ev("a", amount=10.0, account_age_days=5.0),  # event overrides stored age
        ev("b", hour=None),  # null means "not given": stored or NaN
        ev("c", amount=1.0, colour=3.0),  # unknown entity, one ignored feature
    ]
    stored: Lookup = {
        "a": {"account_age_days": 800.0, "avg_amount_30d": 41.2, "not_in_model": 1.0},
        "b": {"hour": 7.0},
        "c": None,
    }
    matrix, ignored = assemble(events, stored, NAMES)
    expected = np.array(
        [
            [10.0, np.nan, 5.0, 41.2],
            [np.nan, 7.0, np.nan, np.nan],
            [1.0, np.nan, np.nan, np.nan],
        ]
    )
    np.testing.assert_array_equal(matrix, expected)
    assert ignored == 1
    assert matrix.dtype == np.float64


def test_empty_batch() -> None:
    matrix, ignored = assemble([], {}, NAMES)
    assert matrix.shape == (0, 4)
    assert ignored == 0


def test_same_entity_rows_are_independent() -> None:
    events = [ev("a", amount=1.0), ev("a")]
    matrix, _ = assemble(events, {"a": {"amount": 9.0}}, NAMES)
    assert matrix[0, 0] == 1.0
    assert matrix[1, 0] == 9.0
