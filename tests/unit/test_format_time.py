"""schemas.events.format_time: the contract's times, whatever the input's zone, cached or not."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone

import pytest

from schemas import Enrichment, InputEvent, ModelRef, Prediction
from schemas.events import format_time


def reference(value: datetime) -> str:
    """The contract: ISO-8601 in UTC, ``Z``, as precise as the time (seconds, milliseconds
    or microseconds)."""
    utc = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    text = utc.replace(tzinfo=None).isoformat()  # microseconds only when there are some
    if "." in text and text.endswith("000"):
        text = text[:-3]
    return text + "Z"


EDGES = [
    datetime(1, 1, 1, tzinfo=UTC),
    datetime(999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
    datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
    datetime(2026, 11, 25, 10, 0, tzinfo=UTC),
    datetime(2026, 11, 25, 10, 0, 0, 999_999, tzinfo=UTC),
    datetime(2026, 11, 25, 10, 0, 0, 1_000),
    datetime(2026, 11, 25, 10, 0, tzinfo=timezone(timedelta(hours=2))),
    datetime(2026, 11, 25, 0, 30, tzinfo=timezone(timedelta(hours=-5, minutes=-30))),
    datetime(2026, 11, 25, 0, 30, tzinfo=timezone.utc),  # noqa: UP017 - the same object as UTC
    datetime(2026, 11, 25, 0, 30, tzinfo=timezone(timedelta(0), "Z")),
]


@pytest.mark.parametrize("value", EDGES, ids=str)
def test_edges_match_the_contract(value: datetime) -> None:
    assert format_time(value) == reference(value)
    assert format_time(value) == reference(value)  # again: from the one-entry cache


def test_random_times_match_the_contract_in_any_order() -> None:
    rng = random.Random(5)
    zones = [UTC, None, timezone(timedelta(hours=9)), timezone(timedelta(minutes=-90))]
    values = [
        datetime(2000, 1, 1, tzinfo=UTC).replace(tzinfo=rng.choice(zones))
        + timedelta(microseconds=rng.randrange(10**15))
        for _ in range(2_000)
    ]
    for value in values + values[::-1]:
        assert format_time(value) == reference(value)


def test_a_predictions_json_is_byte_for_byte_the_contract() -> None:
    scored_at = datetime(2026, 11, 25, 10, 0, 0, 12_000, tzinfo=UTC)  # scoring_time()
    prediction = Prediction(
        event_id="e-000123",
        entity_id="usér-42",
        score=0.9731,
        model=ModelRef(name="fraud", version="3"),
        enrichment=Enrichment.HIT,
        event_time=datetime(2026, 11, 25, 12, 0, tzinfo=timezone(timedelta(hours=2))),
        scored_at=scored_at,
    )
    assert (
        prediction.model_dump_json().encode()
        == (
            '{"event_id":"e-000123","entity_id":"usér-42","score":0.9731,'
            '"model":{"name":"fraud","version":"3"},"enrichment":"hit",'
            '"event_time":"2026-11-25T10:00:00Z","scored_at":"2026-11-25T10:00:00.012Z"}'
        ).encode()
    )


@pytest.mark.parametrize(
    ("sent", "echoed"),
    [
        ("2026-11-25T10:00:00Z", "2026-11-25T10:00:00Z"),
        ("2026-11-25T10:00:00.5Z", "2026-11-25T10:00:00.500Z"),
        ("2026-11-25T10:00:00.123456Z", "2026-11-25T10:00:00.123456Z"),
        ("2026-11-25T12:00:00.000+02:00", "2026-11-25T10:00:00Z"),
        ("2026-11-25T10:00:00.000100", "2026-11-25T10:00:00.000100Z"),
    ],
)
def test_an_event_time_comes_back_as_the_same_instant(sent: str, echoed: str) -> None:
    from schemas import InputEvent

    event = InputEvent.model_validate({"event_id": "e", "entity_id": "u", "event_time": sent})
    assert event.event_time is not None
    text = format_time(event.event_time)
    assert text == echoed
    assert datetime.fromisoformat(text) == event.event_time.astimezone(UTC)


def test_scored_at_is_taken_to_the_millisecond_in_utc() -> None:
    from scoring.compute import scoring_time

    for _ in range(100):
        now = scoring_time()
        assert now.tzinfo is UTC
        assert now.microsecond % 1_000 == 0
        assert format_time(now).count(".") in (0, 1)
        assert len(format_time(now).partition(".")[2]) in (0, 4)  # "SSSZ" or no fraction


@pytest.mark.parametrize(
    ("given", "written"),
    [
        ("2026-11-25T10:00:00.123456789Z", "2026-11-25T10:00:00.123456Z"),
        ("2026-11-25T10:00:00.9999995Z", "2026-11-25T10:00:00.999999Z"),  # never the next second
        ("2026-11-25T10:00:00.1234560Z", "2026-11-25T10:00:00.123456Z"),
    ],
)
def test_a_fraction_beyond_microseconds_is_accepted_and_cut_to_six_digits(
    given: str, written: str
) -> None:
    body = b'{"event_id": "e", "entity_id": "u", "event_time": "%s"}' % given.encode()
    event = InputEvent.model_validate_json(body)
    assert event.event_time is not None
    assert format_time(event.event_time) == written
