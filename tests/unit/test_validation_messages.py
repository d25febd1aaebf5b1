"""Validation errors as field problems: the same locations and messages at both doors."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from schemas import InputEvent
from schemas.validation import FieldProblem, field_problems


def _problems(raw: object) -> list[FieldProblem]:
    with pytest.raises(ValidationError) as caught:
        InputEvent.model_validate(raw)
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
