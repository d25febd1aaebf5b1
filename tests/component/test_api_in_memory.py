"""The FastAPI sidecar in process: ASGI transport, real lifespan, in-memory feature source."""

from __future__ import annotations

import asyncio
import json
import math
import random
import re
from collections.abc import AsyncIterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import FastAPI

from api.app import create_app
from api.deps import Sidecar, sidecar_of
from scoring import EntityCache, LoadedModel, ScoringPipeline, StoredFeatures, load_model
from settings import Settings
from tests.support.helpers import MemoryFeatures
from tests.support.names import Names, settings_for

STORED: dict[str, StoredFeatures] = {
    "user-1": {"account_age_days": 12.0, "avg_amount_30d": 30.0, "country_risk": 0.8},
    "user-2": {"account_age_days": 2_000.0, "txn_count_30d": 40.0},
}
KEY = "s3cret-key-for-tests"
JSON = {"Content-Type": "application/json"}


@dataclass
class Api:
    app: FastAPI
    client: httpx.AsyncClient
    source: MemoryFeatures
    settings: Settings

    @property
    def sidecar(self) -> Sidecar:
        return sidecar_of(self.app)

    @property
    def pipeline(self) -> ScoringPipeline:
        return self.sidecar.service.pipeline


@asynccontextmanager
async def running_api(
    names: Names,
    model_path: Path,
    source: MemoryFeatures | None = None,
    **sections: Any,
) -> AsyncIterator[Api]:
    """The app with its lifespan running and a client on the ASGI transport.

    The transport does not re-raise app exceptions: an unhandled error shows as a 500, which
    the tests assert never happens for caller input.
    """
    settings = settings_for(names, model_path, **sections)
    features = source if source is not None else MemoryFeatures(STORED)

    @asynccontextmanager
    async def factory(_: Settings) -> AsyncIterator[ScoringPipeline]:
        with ThreadPoolExecutor(2) as executor:
            yield ScoringPipeline(
                load_model(model_path),
                features,
                executor,
                cache=EntityCache(1_000, 60),
                score_without_features_on_error=settings.scoring.score_without_features_on_error,
            )

    app = create_app(settings, factory)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://sidecar") as client:
            yield Api(app, client, features, settings)


@pytest.fixture
async def api(names: Names, model_path: Path) -> AsyncIterator[Api]:
    async with running_api(
        names, model_path, api={"max_events_per_request": 5, "max_body_bytes": 4_096}
    ) as running:
        yield running


def offline(model: LoadedModel, event: Mapping[str, Any]) -> float:
    """Booster.predict of the contract's vector: event value, else stored, else NaN."""
    stored = STORED.get(event["entity_id"], {})
    row = []
    for name in model.feature_names:
        value = event.get("features", {}).get(name)
        if value is None:
            value = stored.get(name)
        row.append(math.nan if value is None else float(value))
    return float(model.booster.predict(np.array([row], dtype=np.float64))[0])


# ------------------------------------------------------------------------------ happy paths


async def test_single_event_without_event_id_gets_a_generated_one(
    api: Api, model: LoadedModel
) -> None:
    event = {"entity_id": "user-1", "features": {"amount": 250.0, "hour": 3}}
    response = await api.client.post("/predict", json=event)

    assert response.status_code == 200, response.text
    body = response.json()
    assert isinstance(body, dict)
    assert isinstance(body["event_id"], str)
    assert body["event_id"].strip()
    assert body["entity_id"] == "user-1"
    assert body["enrichment"] == "hit"
    assert body["score"] == offline(model, event)
    assert body["model"] == {"name": model.name, "version": model.version}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", body["scored_at"])

    again = await api.client.post("/predict", json=event)
    assert again.json()["event_id"] != body["event_id"]  # generated per event


async def test_a_list_comes_back_in_the_same_order(api: Api, model: LoadedModel) -> None:
    events: list[dict[str, Any]] = [
        {"event_id": "e-3", "entity_id": "user-2", "features": {"amount": 5.0}},
        {"event_id": "e-1", "entity_id": "nobody", "features": {"amount": 900.0, "hour": 2}},
        {"event_id": "e-2", "entity_id": "user-1", "event_time": "2026-11-25T10:00:00Z"},
        {"entity_id": "user-1", "features": {"amount": None, "unused": 1.0}},
    ]
    response = await api.client.post("/predict", json=events)

    assert response.status_code == 200, response.text
    body = response.json()
    assert isinstance(body, list)
    assert [p["event_id"] for p in body[:3]] == ["e-3", "e-1", "e-2"]
    assert body[3]["event_id"]
    assert [p["enrichment"] for p in body] == ["hit", "miss", "hit", "hit"]
    assert [p["score"] for p in body] == [offline(model, e) for e in events]
    assert body[2]["event_time"] == "2026-11-25T10:00:00Z"
    assert api.pipeline.stats.ignored_features == 1


async def test_a_one_element_list_gets_a_list(api: Api) -> None:
    response = await api.client.post("/predict", json=[{"event_id": "x", "entity_id": "u"}])
    assert response.status_code == 200
    assert [p["event_id"] for p in response.json()] == ["x"]


# ------------------------------------------------------------------------------ 422

INVALID: list[tuple[str, bytes, str, set[str]]] = [
    # (case, raw body, words the detail must contain, fields errors[] must name)
    ("invalid JSON", b'{"entity_id": "u",', "not valid JSON", {"body"}),
    ("operator object", b'{"entity_id": {"$ne": null}}', "body.entity_id", {"body.entity_id"}),
    (
        "NaN",
        b'{"entity_id": "u", "features": {"amount": NaN}}',
        "body.features.amount",
        {"body.features.amount"},
    ),
    (
        "Infinity in a list",
        b'[{"entity_id": "u"}, {"entity_id": "v", "features": {"amount": -Infinity}}]',
        "body[1].features.amount",
        {"body[1].features.amount"},
    ),
    (
        "wrong type",
        b'[{"entity_id": "u"}, {"entity_id": "v", "features": {"amount": "12"}}]',
        "body[1].features.amount",
        {"body[1].features.amount"},
    ),
    (
        "boolean feature",
        b'{"entity_id": "u", "features": {"hour": true}}',
        "body.features.hour",
        {"body.features.hour"},
    ),
    ("missing entity", b'{"event_id": "e"}', "body.entity_id", {"body.entity_id"}),
    ("number id", b'{"entity_id": 42}', "body.entity_id", {"body.entity_id"}),
    ("empty id", b'{"entity_id": ""}', "body.entity_id", {"body.entity_id"}),
    ("long id", b'{"entity_id": "' + b"x" * 129 + b'"}', "body.entity_id", {"body.entity_id"}),
    ("features a list", b'{"entity_id": "u", "features": [1]}', "body.features", {"body.features"}),
    (
        "bad time",
        b'{"entity_id": "u", "event_time": "yesterday"}',
        "body.event_time",
        {"body.event_time"},
    ),
    (
        "digits as a time",
        b'{"entity_id": "u", "event_time": "20261125"}',
        "body.event_time",
        {"body.event_time"},
    ),
    (
        "two bad items",
        b'[{"entity_id": 1}, {"entity_id": "ok"}, {"event_id": [], "entity_id": "u"}]',
        "body[0].entity_id",
        {"body[0].entity_id", "body[2].event_id"},
    ),
    ("item not an object", b'[{"entity_id": "u"}, 7]', "body[1]", {"body[1]"}),
    ("empty list", b"[]", "empty list", {"body"}),
    ("too many events", json.dumps([{"entity_id": "u"}] * 6).encode(), "at most 5", {"body"}),
    ("a number", b"5", "event object or a list", {"body"}),
    ("a string", b'"x"', "event object or a list", {"body"}),
    ("null", b"null", "event object or a list", {"body"}),
    ("empty body", b"", "not valid JSON", {"body"}),
    ("not UTF-8", b'{"entity_id": "\xff"}', "not valid JSON", {"body"}),
]


@pytest.mark.parametrize(
    ("raw", "words", "fields"),
    [pytest.param(raw, words, fields, id=case) for case, raw, words, fields in INVALID],
)
async def test_invalid_input_is_a_422_naming_the_field(
    api: Api, raw: bytes, words: str, fields: set[str]
) -> None:
    response = await api.client.post(
        "/predict", content=raw, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422, response.text
    body = response.json()
    assert set(body) == {"detail", "errors", "error_count"}
    assert words in body["detail"]
    assert {e["field"] for e in body["errors"]} == fields
    assert body["error_count"] == len(body["errors"])
    assert all(e["message"] for e in body["errors"])
    assert api.pipeline.stats.model_calls == 0  # nothing invalid reaches the pipeline


@pytest.mark.parametrize("raw", [b"{", b"[]"], ids=["invalid JSON", "empty list"])
async def test_every_422_names_a_field_in_errors(api: Api, raw: bytes) -> None:
    response = await api.client.post("/predict", content=raw, headers=JSON)
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == ["body"]


@pytest.mark.parametrize("event_time", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
async def test_an_event_time_out_of_range_in_utc_is_a_422(api: Api, event_time: str) -> None:
    response = await api.client.post("/predict", json={"entity_id": "u", "event_time": event_time})
    assert response.status_code == 422, response.text
    assert [e["field"] for e in response.json()["errors"]] == ["body.event_time"]


async def test_an_early_event_time_is_formatted_as_iso_8601(api: Api) -> None:
    response = await api.client.post(
        "/predict", json={"entity_id": "u", "event_time": "0001-01-01T00:00:00Z"}
    )
    assert response.status_code == 200
    assert response.json()["event_time"] == "0001-01-01T00:00:00Z"


# ------------------------------------------------------------------------------ 413


async def test_a_body_over_the_limit_is_a_413_by_content_length(api: Api) -> None:
    raw = json.dumps({"entity_id": "u", "pad": "x" * 5_000}).encode()
    response = await api.client.post("/predict", content=raw, headers=JSON)
    assert response.status_code == 413
    assert "4096 bytes" in response.json()["detail"]
    assert api.pipeline.stats.model_calls == 0


async def test_a_streamed_body_over_the_limit_is_a_413(api: Api) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"entity_id": "u", "pad": "'
        for _ in range(50):
            yield b"x" * 512
        yield b'"}'

    response = await api.client.post("/predict", content=chunks(), headers=JSON)
    assert response.request.headers.get("transfer-encoding") == "chunked"
    assert "content-length" not in response.request.headers
    assert response.status_code == 413
    assert "4096 bytes" in response.json()["detail"]
    assert api.pipeline.stats.model_calls == 0


async def test_a_streamed_body_under_the_limit_is_scored(api: Api) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"event_id": "streamed", '
        yield b'"entity_id": "user-1"}'

    response = await api.client.post("/predict", content=chunks(), headers=JSON)
    assert response.status_code == 200
    assert response.json()["event_id"] == "streamed"


# ------------------------------------------------------------------------------ outages


async def test_a_feature_source_outage_is_a_503_with_retry_after(
    names: Names, model_path: Path
) -> None:
    source = MemoryFeatures(STORED, failures=2)
    async with running_api(names, model_path, source, api={"retry_after_s": 7}) as running:
        for _ in range(2):
            response = await running.client.post("/predict", json={"entity_id": "user-1"})
            assert response.status_code == 503
            assert response.headers["Retry-After"] == "7"
            assert response.json()["detail"] == "MongoDB unavailable"  # details go to the log
        assert running.pipeline.stats.enrichment_failures == 2
        assert running.pipeline.stats.model_calls == 0

        recovered = await running.client.post("/predict", json={"entity_id": "user-1"})
        assert recovered.status_code == 200
        assert recovered.json()["enrichment"] == "hit"
        assert len(source.calls) == 3


async def test_scoring_without_features_when_the_operator_chose_it(
    names: Names, model_path: Path, model: LoadedModel
) -> None:
    source = MemoryFeatures(STORED, failures=1)
    async with running_api(
        names, model_path, source, scoring={"score_without_features_on_error": True}
    ) as running:
        event = {"event_id": "e", "entity_id": "user-1", "features": {"amount": 80.0}}
        response = await running.client.post("/predict", json=event)

        assert response.status_code == 200, response.text
        body = response.json()
        assert body["enrichment"] == "error"
        # Scored on the event's own features only, as if the entity were unknown.
        assert body["score"] == offline(model, {**event, "entity_id": "nobody"})
        assert running.pipeline.stats.errors == 1


async def test_readyz_follows_the_feature_source(names: Names, model_path: Path) -> None:
    source = MemoryFeatures(STORED, failures=1)
    async with running_api(names, model_path, source) as running:
        down = await running.client.get("/readyz")
        assert down.status_code == 503
        assert down.json()["detail"] == "not ready: MongoDB unavailable"
        assert "simulated" not in down.text
        assert "Retry-After" in down.headers
        source.failures = 0
        up = await running.client.get("/readyz")
        assert up.status_code == 200
        assert up.json()["status"] == "ready"


# ------------------------------------------------------------------------------ API key


async def test_api_key_guards_everything_but_healthz(names: Names, model_path: Path) -> None:
    async with running_api(names, model_path, api={"api_key": KEY}) as running:
        client = running.client
        assert (await client.get("/healthz")).status_code == 200
        event = {"entity_id": "user-1"}
        for headers in [{}, {"X-API-Key": "wrong"}, {"X-API-Key": KEY + "x"}]:
            predict = await client.post("/predict", json=event, headers=headers)
            assert predict.status_code == 401
            assert "API key" in predict.json()["detail"]
            assert predict.headers["WWW-Authenticate"] == "X-API-Key"
            assert (await client.get("/metrics", headers=headers)).status_code == 401
            assert (await client.get("/model", headers=headers)).status_code == 401
        assert running.pipeline.stats.model_calls == 0

        good = {"X-API-Key": KEY}
        predict = await client.post("/predict", json=event, headers=good)
        assert predict.status_code == 200
        assert predict.json()["entity_id"] == "user-1"
        metrics = await client.get("/metrics", headers=good)
        assert metrics.status_code == 200
        assert "streamscore_http_requests_total" in metrics.text


async def test_rejected_requests_are_counted_under_their_route(
    names: Names, model_path: Path
) -> None:
    settings = {"api_key": KEY, "max_body_bytes": 100}
    async with running_api(names, model_path, api=settings) as running:
        client, good = running.client, {"X-API-Key": KEY}
        assert (await client.post("/predict", json={"entity_id": "u"})).status_code == 401
        too_big = await client.post("/predict", content=b"x" * 500, headers=good | JSON)
        assert too_big.status_code == 413
        text = (await client.get("/metrics", headers=good)).text
    route = {"method": "POST", "route": "/predict"}
    assert sample(text, "streamscore_http_requests_total", **route, status="401") == 1
    assert sample(text, "streamscore_http_requests_total", **route, status="413") == 1


# ------------------------------------------------------------------------------ metadata


async def test_model_metadata(api: Api, model: LoadedModel) -> None:
    response = await api.client.get("/model")
    assert response.status_code == 200
    body = response.json()
    assert body["name"] == model.name
    assert body["version"] == model.version
    assert body["feature_names"] == list(model.feature_names)
    assert body["feature_names"]
    assert set(body) == {"name", "version", "feature_names", "loaded_at"}  # no file paths
    assert body["loaded_at"].endswith("Z")  # as the predictions write times


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one Prometheus sample in exposition ``text`` (every label must match)."""
    for line in text.splitlines():
        match = re.fullmatch(r"([a-z_]+)(?:\{(.*)\})? (\S+)", line)
        if match is None or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(match.group(3))
    raise AssertionError(f"no sample {name}{labels} in:\n{text}")


async def test_metrics_count_requests_batches_enrichment_and_loop_lag(api: Api) -> None:
    events = [{"entity_id": "user-1"}, {"entity_id": "user-2"}, {"entity_id": "ghost"}]
    assert (await api.client.post("/predict", json=events)).status_code == 200
    assert (await api.client.post("/predict", json=events[0])).status_code == 200
    assert (await api.client.post("/predict", content=b"nope", headers=JSON)).status_code == 422
    await asyncio.sleep(0.12)  # the loop-lag monitor samples every 50 ms

    response = await api.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    route = {"method": "POST", "route": "/predict"}
    assert sample(text, "streamscore_http_requests_total", **route, status="200") == 2
    assert sample(text, "streamscore_http_requests_total", **route, status="422") == 1
    assert (
        sample(text, "streamscore_http_request_duration_seconds_count", **route, status="200") == 2
    )
    assert sample(text, "streamscore_pipeline_call_events_count") == 2
    assert sample(text, "streamscore_pipeline_call_events_sum") == 4
    assert sample(text, "streamscore_enrichment_total", outcome="hit") == 3
    assert sample(text, "streamscore_enrichment_total", outcome="miss") == 1
    assert sample(text, "streamscore_enrichment_total", outcome="error") == 0
    assert sample(text, "streamscore_model_calls_total") == 2
    assert sample(text, "streamscore_event_loop_lag_seconds_count") >= 1
    assert sample(text, "streamscore_model_info", version="1") == 1


async def test_an_unexpected_error_in_predict_is_a_counted_500_and_the_next_request_works(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(events: Any) -> Any:
        raise RuntimeError("a bug, not the caller's input")

    with monkeypatch.context() as patch:
        patch.setattr(api.sidecar.batcher, "submit", broken)
        failed = await api.client.post("/predict", json={"entity_id": "user-1"})
    assert failed.status_code == 500

    assert (await api.client.post("/predict", json={"entity_id": "user-1"})).status_code == 200
    text = (await api.client.get("/metrics")).text
    route = {"method": "POST", "route": "/predict"}
    assert sample(text, "streamscore_http_requests_total", **route, status="500") == 1
    assert sample(text, "streamscore_http_requests_total", **route, status="200") == 1
    assert sample(text, "streamscore_http_in_flight") == 0


async def test_openapi_documents_predict(api: Api) -> None:
    response = await api.client.get("/openapi.json")
    assert response.status_code == 200
    spec = response.json()
    predict = spec["paths"]["/predict"]["post"]

    body = predict["requestBody"]
    assert body["required"] is True
    choices = body["content"]["application/json"]["schema"]["anyOf"]
    assert {"$ref": "#/components/schemas/PredictEvent"} in choices
    array = next(c for c in choices if c.get("type") == "array")
    assert array["items"] == {"$ref": "#/components/schemas/PredictEvent"}
    assert array["minItems"] == 1
    assert array["maxItems"] == 5
    (challenger,) = [p for p in predict.get("parameters", []) if p["name"] == "challenger"]
    assert challenger["in"] == "query"
    assert challenger["schema"]["type"] == "boolean"

    for status in ("413", "422", "503"):
        schema = predict["responses"][status]["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/ErrorBody"}, status
    ok = json.dumps(predict["responses"]["200"])
    assert "#/components/schemas/Prediction" in ok

    components = spec["components"]["schemas"]
    assert {"PredictEvent", "Prediction", "ErrorBody", "FieldError"} <= set(components)
    event = components["PredictEvent"]
    assert event["required"] == ["entity_id"]  # event_id may be omitted
    assert {"event_id", "entity_id", "event_time", "features"} <= set(event["properties"])
    assert {"event_id", "entity_id", "score", "model", "enrichment"} <= set(
        components["Prediction"]["properties"]
    )
    assert {"type": "null"} in event["properties"]["event_id"]["anyOf"]  # null: one is generated
    (features,) = [f for f in event["properties"]["features"]["anyOf"] if f.get("type") == "object"]
    assert features == {**features, "type": "object", "maxProperties": 1_000}
    assert "#/components/schemas/PredictionWithChallenger" in ok  # ?challenger=true
    both = components["PredictionWithChallenger"]["properties"]
    assert both["prediction"] == {"$ref": "#/components/schemas/Prediction"}
    # Every reference resolves.
    refs = set(re.findall(r'"#/components/schemas/([^"]+)"', json.dumps(spec)))
    assert refs <= set(components)
    # The admin routes are documented only where they are served (with an API key).
    assert not [path for path in spec["paths"] if path.startswith("/admin/")]
    # Without a key nothing asks for one.
    assert "security" not in spec
    assert "securitySchemes" not in spec["components"]
    assert "401" not in predict["responses"]


async def test_openapi_documents_the_admin_routes_and_the_key_with_a_key(
    names: Names, model_path: Path
) -> None:
    """Every route but /healthz answers 401 without the key, and the schema says so: which
    headers carry the key (for Swagger's "Authorize" and generated clients), and a 401 on
    each of those routes."""
    async with running_api(names, model_path, api={"api_key": KEY}) as running:
        spec = (await running.client.get("/openapi.json", headers={"X-API-Key": KEY})).json()
        answered = {
            path: (await running.client.request(method.upper(), path)).status_code
            for path, operations in spec["paths"].items()
            for method in operations
        }
    assert {"/admin/reload-model", "/admin/promote-challenger"} <= set(spec["paths"])
    schemes = spec["components"]["securitySchemes"]
    assert schemes["ApiKey"] == {"type": "apiKey", "in": "header", "name": "X-API-Key"}
    assert schemes["Bearer"] == {"type": "http", "scheme": "bearer"}
    assert spec["security"] == [{"ApiKey": []}, {"Bearer": []}]
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            if path == "/healthz":
                assert operation["security"] == []
                assert "401" not in operation["responses"]
                assert answered[path] == 200
            else:
                assert answered[path] == 401, (method, path)
                body = operation["responses"]["401"]["content"]["application/json"]["schema"]
                assert body == {"$ref": "#/components/schemas/ErrorBody"}, (method, path)


# ------------------------------------------------------------------------------ fuzz


def _random_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(11 if depth < 3 else 8)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice([0, -1, 10**20, -(10**30), 2**63, 10**400, 1.5, -0.0, 1e308])
    if kind == 3:
        return rng.choice(["", "x", "é🙂", "\u0000", "\ud7ff", "a" * 300, "$ne", "2026-13-01"])
    if kind == 4:
        return "".join(chr(rng.randrange(1, 0xD7FF)) for _ in range(rng.randrange(1, 20)))
    if kind == 5:
        return rng.choice(["2026-11-25T10:00:00Z", "2026-11-25", "0", "1e10", "T", "-infinity"])
    if kind == 6:
        return rng.random() * 10 ** rng.randrange(-5, 300)
    if kind == 7:
        return {"$ne": None}
    if kind == 8:
        return [_random_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {_random_key(rng): _random_value(rng, depth + 1) for _ in range(rng.randrange(4))}


def _random_key(rng: random.Random) -> str:
    return rng.choice(["amount", "hour", "event_id", "entity_id", "", "a" * 300, "$gt", "x.y"])


def _random_event(rng: random.Random) -> Any:
    event: dict[str, Any] = {
        "event_id": f"f-{rng.randrange(10**6)}",
        "entity_id": rng.choice(["user-1", "user-2", "ghost"]),
        "features": {"amount": 10.0, "hour": 3},
    }
    for _ in range(rng.randrange(1, 4)):
        field = rng.choice(["event_id", "entity_id", "event_time", "features", "extra"])
        features = event.get("features")
        if field == "features" and isinstance(features, dict) and rng.random() < 0.7:
            features[_random_key(rng)] = _random_value(rng)
        else:
            event[field] = _random_value(rng)
    if rng.random() < 0.2:
        del event[rng.choice(list(event))]
    return event


def _fuzz_bodies(rng: random.Random, count: int) -> list[bytes]:
    bodies: list[bytes] = []
    depth = rng.choice([10, 500, 5_000, 100_000])
    fixed = [
        b"[" * depth + b"]" * depth,
        b'{"entity_id": "u", "features": {"amount": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}",
        b'{"entity_id": "u", "features": {"amount": 1' + b"0" * 5_000 + b"}}",
        b'{"entity_id": "u", "features": {"amount": 1e999}}',
        b'{"entity_id": "u", "features": {"amount": -1e999}}',
        b'{"entity_id": "\\ud800"}',
        b'{"entity_id": "u", "features": {"\\udfff": 1}}',
        b'\xef\xbb\xbf{"entity_id": "u"}',
        '{"entity_id": "ü"}'.encode("utf-16"),
        b'{"entity_id": "u"}{"entity_id": "v"}',
        b'{"entity_id": "u", "entity_id": {"$ne": null}}',
        json.dumps({"entity_id": "u", "features": {f"f{i}": i for i in range(1_100)}}).encode(),
        json.dumps([{"entity_id": "u", "event_time": "2026-11-25T10:00:00+14:00"}]).encode(),
    ]
    bodies.extend(fixed)
    while len(bodies) < count:
        roll = rng.random()
        if roll < 0.15:
            bodies.append(rng.randbytes(rng.randrange(0, 200)))
        elif roll < 0.25:
            bodies.append(json.dumps(_random_value(rng)).encode())
        elif roll < 0.7:
            bodies.append(json.dumps(_random_event(rng)).encode())
        else:
            items = [_random_event(rng) for _ in range(rng.randrange(1, 4))]
            bodies.append(json.dumps(items).encode())
    return bodies


async def test_no_caller_input_gets_a_500(names: Names, model_path: Path) -> None:
    rng = random.Random(20261125)
    bodies = _fuzz_bodies(rng, 200)
    failures: list[tuple[int, bytes, str]] = []
    statuses: set[int] = set()
    async with running_api(names, model_path, api={"max_body_bytes": 200_000}) as running:
        for raw in bodies:
            response = await running.client.post(
                "/predict", content=raw, headers={"Content-Type": "application/json"}
            )
            statuses.add(response.status_code)
            if response.status_code not in {200, 413, 422}:
                failures.append((response.status_code, raw[:200], response.text[:200]))
            elif response.status_code != 200:
                assert response.json()["detail"], raw[:200]
    assert failures == []
    assert {200, 422} <= statuses  # the fuzz reached both the happy and the invalid paths


async def test_a_null_event_id_is_generated_like_an_absent_one(api: Api) -> None:
    response = await api.client.post(
        "/predict", json=[{"event_id": None, "entity_id": "u"}, {"entity_id": "v"}]
    )
    assert response.status_code == 200, response.text
    ids = [p["event_id"] for p in response.json()]
    assert all(i.startswith("http-") and len(i) == 37 for i in ids)
    assert len(set(ids)) == 2
    wrong = await api.client.post("/predict", json={"event_id": 5, "entity_id": "u"})
    assert wrong.status_code == 422
    assert [e["field"] for e in wrong.json()["errors"]] == ["body.event_id"]


async def test_either_key_header_passes_and_several_keys_are_refused(
    names: Names, model_path: Path
) -> None:
    async with running_api(names, model_path, api={"api_key": KEY}) as running:
        client, event = running.client, {"entity_id": "user-1"}
        bearer = {"Authorization": f"Bearer {KEY}"}
        passing = [
            bearer,
            {"X-API-Key": "wrong", **bearer},
            {"X-API-Key": KEY, "Authorization": "Bearer x"},
            {"X-API-Key": f"{KEY} \t"},  # whitespace around a header value is not part of it
        ]
        for headers in passing:
            response = await client.post("/predict", json=event, headers=headers)
            assert response.status_code == 200, (headers, response.text)
        for pairs in (
            [("X-API-Key", KEY), ("X-API-Key", "wrong")],
            [("X-API-Key", "wrong"), ("X-API-Key", KEY)],
            [("Authorization", f"Bearer {KEY}"), ("Authorization", f"Bearer {KEY}")],
            [("Authorization", "Basic Zm9vOmJhcg=="), ("Authorization", f"Bearer {KEY}")],
            [("Authorization", f"Bearer {KEY}"), ("Authorization", "Basic Zm9vOmJhcg==")],
        ):
            refused = await client.post("/predict", json=event, headers=pairs)
            assert refused.status_code == 401
            assert "more than one API key" in refused.json()["detail"]
        for types in (["text/plain", "application/json"], ["application/json", "text/plain"]):
            twice = [("X-API-Key", KEY), *(("Content-Type", t) for t in types)]
            response = await client.post("/predict", content=b'{"entity_id": "u"}', headers=twice)
            assert response.status_code == 415, types  # which one counts is not guessed
        assert (await client.get("/healthz/", follow_redirects=True)).status_code == 200
        assert (await client.get("/healthzz")).status_code == 401
