"""Validation errors as field problems: the same locations and messages at both doors."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from schemas import InputEvent, capped, format_time
from schemas.validation import TIME_SHAPE, FieldProblem, field_problems


def _problems(raw: object) -> list[FieldProblem]:
    with pytest.raises(ValidationError) as caught:
        InputEvent.model_validate(raw)
    return field_problems(caught.value)


def _json_problems(raw: object) -> list[FieldProblem]:
    with pytest.raises(ValidationError) as caught:
        InputEvent.model_validate_json(json.dumps(raw))
    return field_problems(caught.value)


def test_locations_are_dotted_and_our_messages_lose_pydantics_prefix() -> None:
    problems = _problems({"event_id": "e", "entity_id": {"$ne": None}, "features": {"a": "x"}})

    assert problems == [
        FieldProblem("entity_id", "Input should be a valid string", "string_type"),
        FieldProblem("features.a", "must be a number or null, not str", "float_type"),
    ]
    assert not any(p.not_an_object for p in problems)


def test_a_value_that_is_not_an_object_is_said_so() -> None:
    (problem,) = _problems([1, 2])

    assert problem.location == ""
    assert problem.not_an_object


def test_the_rejected_input_is_never_in_the_message() -> None:
    problems = _problems({"event_id": "e", "entity_id": "x" * 200 + "SECRET"})

    assert problems == [
        FieldProblem("entity_id", "String should have at most 128 characters", "string_too_long")
    ]


def test_invalid_json_keeps_its_kind() -> None:
    with pytest.raises(ValidationError) as caught:
        InputEvent.model_validate_json(b"{not json")
    (problem,) = field_problems(caught.value)

    assert problem.kind == "json_invalid"
    assert problem.message.startswith("Invalid JSON")


@pytest.mark.parametrize(
    ("event_time", "message"),
    [
        (
            1764064800,
            "must be an ISO-8601 date-time string such as 2026-11-25T10:00:00Z, not a number",
        ),
        (
            "1764064800",
            "must be an ISO-8601 date-time string such as 2026-11-25T10:00:00Z, not a number",
        ),
        (
            "20261125",
            "must be an ISO-8601 date-time string such as 2026-11-25T10:00:00Z, not a number",
        ),
        (
            " -1.5E3 ",
            "must be an ISO-8601 date-time string such as 2026-11-25T10:00:00Z, not a number",
        ),
        (True, "must be an ISO-8601 date-time string such as 2026-11-25T10:00:00Z"),
        ({"$date": 1}, "must be an ISO-8601 date-time string such as 2026-11-25T10:00:00Z"),
        ("yesterday", "must be an ISO-8601 date-time string such as 2026-11-25T10:00:00Z"),
        ("0001-01-01T00:00:00+01:00", "is out of range once converted to UTC"),
        ("9999-12-31T23:00:00-02:00", "is out of range once converted to UTC"),
    ],
)
def test_event_time_problems_say_what_a_time_must_be(event_time: object, message: str) -> None:
    for problems in (
        _problems({"event_id": "e", "entity_id": "u", "event_time": event_time}),
        _json_problems({"event_id": "e", "entity_id": "u", "event_time": event_time}),
    ):
        assert [(p.location, p.message) for p in problems] == [("event_time", message)]


@pytest.mark.parametrize(
    ("event_time", "reason"),
    [
        ("2026-13-01", "month value is outside expected range of 1-12"),
        ("2026-02-30", "day value is outside expected range"),
        ("2026-11-25T10:00:00+5", "unexpected extra characters at the end of the input"),
        ("2026-12-31T23:59:60Z", "unexpected extra characters at the end of the input"),
        ("2026-11-25T24:00:00Z", "unexpected extra characters at the end of the input"),
    ],
)
def test_a_malformed_time_says_what_a_time_looks_like_and_why_not(
    event_time: str, reason: str
) -> None:
    for problems in (
        _problems({"event_id": "e", "entity_id": "u", "event_time": event_time}),
        _json_problems({"event_id": "e", "entity_id": "u", "event_time": event_time}),
    ):
        [problem] = problems
        assert problem.location == "event_time"
        assert problem.message == f"{TIME_SHAPE}: {reason}"
        assert "seconds 00-59" in problem.message
        assert "+HH:MM" in problem.message


@pytest.mark.parametrize(
    ("sent", "utc"),
    [
        ("2026-11-25T10:00:00Z", datetime(2026, 11, 25, 10, tzinfo=UTC)),
        ("2026-11-25T10:00:00+00:00", datetime(2026, 11, 25, 10, tzinfo=UTC)),
        ("2026-11-25T10:00:00", datetime(2026, 11, 25, 10, tzinfo=UTC)),
        ("2026-11-25T12:30:00+02:30", datetime(2026, 11, 25, 10, tzinfo=UTC)),
        ("2026-11-25T05:00:00-05:00", datetime(2026, 11, 25, 10, tzinfo=UTC)),
        ("2026-11-25", datetime(2026, 11, 25, tzinfo=UTC)),
        ("0001-01-01T00:00:00Z", datetime(1, 1, 1, tzinfo=UTC)),
    ],
)
def test_every_accepted_time_is_utc_and_formats_with_z(sent: str, utc: datetime) -> None:
    raw = json.dumps({"event_id": "e", "entity_id": "u", "event_time": sent})
    for parsed in (InputEvent.model_validate_json(raw), InputEvent.model_validate(json.loads(raw))):
        assert parsed.event_time == utc
        assert parsed.event_time is not None
        assert parsed.event_time.utcoffset() == timedelta(0)
        assert format_time(parsed.event_time) == utc.isoformat()[:-6] + "Z"


def test_a_datetime_from_python_is_taken_as_is_then_made_utc() -> None:
    naive = InputEvent.model_validate(
        {"event_id": "e", "entity_id": "u", "event_time": datetime(2026, 1, 1)}
    )

    assert naive.event_time == datetime(2026, 1, 1, tzinfo=UTC)


def test_only_the_first_problems_are_worded_when_asked() -> None:
    features = {f"f{i}": "x" for i in range(5_000)}
    with pytest.raises(ValidationError) as caught:
        InputEvent.model_validate({"event_id": "e", "entity_id": "u", "features": features})

    assert caught.value.error_count() == 5_000
    assert [p.location for p in field_problems(caught.value, 3)] == [
        "features.f0",
        "features.f1",
        "features.f2",
    ]


def test_over_the_cap_with_valid_values_is_worded_with_the_count() -> None:
    features = {f"f{i}": 1.0 for i in range(12)}
    with pytest.raises(ValidationError) as caught:
        capped(InputEvent, 10).model_validate(
            {"event_id": "e", "entity_id": "u", "features": features}
        )

    assert [(p.location, p.message) for p in field_problems(caught.value)] == [
        ("features", "at most 10 features per event, got 12")
    ]


def test_null_features_are_none() -> None:
    parsed = InputEvent.model_validate_json('{"event_id": "e", "entity_id": "u", "features": null}')

    assert parsed.features == {}
    assert parsed.sent_features is None
