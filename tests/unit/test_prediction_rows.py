"""A batch's predictions as columns: the JSON the stream sends is the contract's, byte for byte."""

from __future__ import annotations

import json
import math
import random
from datetime import UTC, datetime, timedelta, timezone

from schemas import Enrichment, InputEvent, ModelRef, Prediction, Reason
from scoring.rows import PredictionRows, no_rows

NOW = datetime(2026, 11, 28, 15, 0, 0, 123_000, tzinfo=UTC)  # scoring_time(): milliseconds

AWKWARD_IDS = [
    "plain",
    'quote " and backslash \\',
    "new\nline\ttab\r\x00\x1f\x7f",
    "é ü ß 漢字 🙂",
    "</script>",
    "\u2028\u2029",
    "x" * 120,
]


def _events(count: int, seed: int) -> list[InputEvent]:
    rng = random.Random(seed)
    return [
        InputEvent(
            event_id=rng.choice(AWKWARD_IDS) + str(i),
            entity_id=rng.choice(AWKWARD_IDS),
            features={},
        )
        for i in range(count)
    ]


def _times(count: int, seed: int) -> list[datetime]:
    rng = random.Random(seed)
    zones = [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))]
    return [
        datetime(2026, 1, 1, tzinfo=UTC).astimezone(rng.choice(zones))
        + timedelta(microseconds=rng.randrange(10**12))
        for _ in range(count)
    ]


def _rows(count: int, seed: int, reasons: bool = False) -> PredictionRows:
    rng = random.Random(seed)
    specials = [0.0, -0.0, 1.0, 5e-324, 1e-7, 0.1 + 0.2, 1e300, math.nan, 0.9999999999999999]
    scores = [rng.choice(specials) if i % 3 == 0 else rng.random() for i in range(count)]
    enrichment = [rng.choice(list(Enrichment)) for _ in range(count)]
    explained = (
        [[Reason(feature="amount", value=rng.random(), contribution=-0.5)] for _ in range(count)]
        if reasons
        else None
    )
    return PredictionRows(
        ModelRef(name='fraud "v"', version="3.1-é"),
        _events(count, seed),
        scores,
        enrichment,
        _times(count, seed),
        NOW,
        explained,
    )


def test_encoded_is_model_dump_json_byte_for_byte() -> None:
    rows = _rows(600, seed=1)
    built = [
        Prediction(
            event_id=event.event_id,
            entity_id=event.entity_id,
            score=rows.scores[i],
            model=rows.model,
            enrichment=rows.enrichment[i],
            event_time=rows.times[i],
            scored_at=NOW,
        )
        for i, event in enumerate(rows.events)
    ]
    assert rows.encoded == [p.model_dump_json().encode() for p in built]
    assert "predictions" not in rows.__dict__  # the objects were never needed


def test_the_objects_and_the_json_agree() -> None:
    rows = _rows(200, seed=2)
    encoded = rows.encoded
    assert [p.model_dump_json().encode() for p in rows.predictions] == encoded
    first = json.loads(encoded[0])
    assert first["scored_at"] == "2026-11-28T15:00:00.123Z"
    assert first["event_id"] == rows.events[0].event_id
    assert rows.keys == [e.entity_id.encode() for e in rows.events]


def test_a_nan_score_is_null_as_in_the_objects() -> None:
    rows = _rows(30, seed=3)
    nan_rows = [i for i, s in enumerate(rows.scores) if math.isnan(s)]
    assert nan_rows
    assert all(json.loads(rows.encoded[i])["score"] is None for i in nan_rows)


def test_with_reasons_the_json_carries_them() -> None:
    rows = _rows(20, seed=4, reasons=True)
    encoded = rows.encoded
    assert encoded == [p.model_dump_json().encode() for p in rows.predictions]
    assert json.loads(encoded[0])["reasons"][0]["feature"] == "amount"


def test_no_rows() -> None:
    rows = no_rows(ModelRef(name="m", version="1"), NOW)
    assert len(rows) == 0
    assert rows.encoded == []
    assert rows.predictions == []
