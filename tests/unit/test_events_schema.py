"""The input event contract: what is accepted, what is rejected and why."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from schemas import InputEvent, Prediction
from schemas.validation import field_problems


def event(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = {
        "event_id": "e-1",
        "entity_id": "user-42",
        "event_time": "2026-11-25T10:00:00Z",
        "features": {"amount": 129.9, "hour": 23},
    }
    base.update(overrides)
    return base


def test_contract_example_parses() -> None:
    parsed = InputEvent.model_validate_json(json.dumps(event()))
    assert parsed.entity_id == "user-42"
    assert parsed.features == {"amount": 129.9, "hour": 23.0}
    assert parsed.event_time == datetime(2026, 11, 25, 10, tzinfo=UTC)


def test_extra_fields_and_unknown_features_are_kept_out_of_the_way() -> None:
    parsed = InputEvent.model_validate(
        event(source="checkout", features={"amount": 1, "brand_new_feature": 3})
    )
    assert parsed.features["brand_new_feature"] == 3.0
    assert parsed.model_extra == {"source": None}  # the name only, to be counted
    assert "source" not in type(parsed).model_fields


def test_many_and_long_unknown_feature_names_are_tolerated() -> None:
    features: dict[str, object] = {f"f{i}": i for i in range(3_000)}
    features["x" * 5_000] = 1.0
    parsed = InputEvent.model_validate(event(features=features))
    assert len(parsed.features) == 3_001


def test_optional_parts_may_be_absent() -> None:
    parsed = InputEvent.model_validate({"event_id": "e", "entity_id": "u"})
    assert parsed.event_time is None
    assert parsed.features == {}


def test_naive_time_is_utc_and_offsets_are_converted() -> None:
    naive = InputEvent.model_validate(event(event_time="2026-11-25T10:00:00"))
    shifted = InputEvent.model_validate(event(event_time="2026-11-25T12:00:00+02:00"))
    assert naive.event_time == shifted.event_time == datetime(2026, 11, 25, 10, tzinfo=UTC)


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (event(entity_id={"$ne": None}), "entity_id"),
        (event(entity_id=42), "entity_id"),
        (event(entity_id=""), "entity_id"),
        (event(entity_id="x" * 129), "entity_id"),
        (event(event_id=["e"]), "event_id"),
        (event(event_id=None), "event_id"),
        ({"entity_id": "u"}, "event_id"),
        (event(features={"amount": "12.5"}), "features.amount"),
        (event(features={"amount": True}), "features.amount"),
        (event(features={"amount": {"$gt": 1}}), "features.amount"),
        (event(features=[1, 2]), "features"),
        (event(event_time=1732528800), "event_time"),
        (event(event_time="yesterday"), "event_time"),
        # strings pydantic would read as Unix seconds, one an ISO-8601 basic date
        (event(event_time="1764064800"), "event_time"),
        (event(event_time="20261125"), "event_time"),
        (event(event_time="-5"), "event_time"),
        (event(event_time="1764064800.5"), "event_time"),
        (event(event_time=".5"), "event_time"),
        (event(event_time="1.5e9"), "event_time"),
        (event(event_time="-1.5E3"), "event_time"),
        (event(event_time=" 1764064800 "), "event_time"),
    ],
)
def test_invalid_events_name_the_field(raw: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        InputEvent.model_validate(raw)
    locations = {".".join(str(p) for p in e["loc"]) for e in info.value.errors()}
    assert field in locations


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999", "1" + "0" * 400])
def test_non_finite_numbers_are_rejected(literal: str) -> None:
    raw = '{"event_id":"e","entity_id":"u","features":{"amount":' + literal + "}}"
    with pytest.raises(ValidationError) as info:
        InputEvent.model_validate_json(raw)
    [problem] = field_problems(info.value)
    assert problem.location == "features.amount"
    assert problem.message.startswith("must be a finite number")


def test_null_feature_is_allowed() -> None:
    parsed = InputEvent.model_validate(event(features={"amount": None}))
    assert parsed.features == {"amount": None}


def test_prediction_serialises_times_in_utc_with_z_as_precise_as_they_are() -> None:
    prediction = Prediction.model_validate(
        {
            "event_id": "e",
            "entity_id": "u",
            "score": 0.5,
            "model": {"name": "fraud", "version": "3"},
            "enrichment": "hit",
            "event_time": datetime(2026, 11, 25, 10, 0, 0, 12_345, tzinfo=UTC),
            "scored_at": datetime(2026, 11, 25, 10, 0, 1, tzinfo=UTC),
        }
    )
    out = json.loads(prediction.model_dump_json())
    assert out["event_time"] == "2026-11-25T10:00:00.012345Z"
    assert out["scored_at"] == "2026-11-25T10:00:01Z"
    assert out["model"] == {"name": "fraud", "version": "3"}
    assert out["enrichment"] == "hit"
