"""``POST /predict`` answered past FastAPI's router: the same answers and metrics as routed."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from api.app import create_app
from api.parsing import Limits, parse_body
from api.requests import PredictEvent
from tests.component.test_api_in_memory import running_api, sample
from tests.support.names import Names, settings_for

JSON = {"Content-Type": "application/json"}


async def test_predict_before_the_lifespan_started_is_the_same_503(
    names: Names, model_path: Path
) -> None:
    app: FastAPI = create_app(settings_for(names, model_path))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://sidecar") as client:
        response = await client.post("/predict", json={"entity_id": "user-1"})
    assert response.status_code == 503
    assert response.json() == {
        "detail": "not ready: the model is not loaded",
        "errors": [],
        "error_count": 0,
    }


async def test_other_methods_and_paths_still_go_through_the_router(
    names: Names, model_path: Path
) -> None:
    async with running_api(names, model_path) as api:
        wrong_method = await api.client.get("/predict")
        assert wrong_method.status_code == 405
        assert wrong_method.json() == {
            "detail": "Method Not Allowed",
            "errors": [],
            "error_count": 0,
        }
        assert wrong_method.headers["allow"] == "POST"
        unknown = await api.client.get("/nowhere")
        assert unknown.status_code == 404
        assert unknown.json() == {"detail": "Not Found", "errors": [], "error_count": 0}
        slash = await api.client.post("/predict/", json={"entity_id": "user-1"})
        assert slash.status_code == 307  # the router's redirect to /predict
        routed = await api.client.post("/predict?challenger=true", json={"entity_id": "user-1"})
        assert routed.status_code == 200
        assert set(routed.json()) == {"prediction", "challenger"}
        text = (await api.client.get("/metrics")).text
    labels = {"method": "POST", "route": "/predict", "status": "200"}
    assert sample(text, "streamscore_http_requests_total", **labels) == 1
    assert sample(text, "streamscore_http_requests_total", method="GET", status="405") == 1
    assert sample(text, "streamscore_http_in_flight") == 0


async def test_each_request_counted_once_under_its_route(names: Names, model_path: Path) -> None:
    async with running_api(names, model_path) as api:
        for _ in range(3):
            ok = await api.client.post("/predict", json={"entity_id": "user-1"})
            assert ok.status_code == 200
        bad = await api.client.post("/predict", content=b"{", headers=JSON)
        assert bad.status_code == 422
        text = (await api.client.get("/metrics")).text
    ok_labels = {"method": "POST", "route": "/predict", "status": "200"}
    assert sample(text, "streamscore_http_requests_total", **ok_labels) == 3
    assert sample(text, "streamscore_http_request_duration_seconds_count", **ok_labels) == 3
    bad_labels = {"method": "POST", "route": "/predict", "status": "422"}
    assert sample(text, "streamscore_http_requests_total", **bad_labels) == 1


BODIES = [
    b'{"entity_id": "user-1"}',
    b'{"event_id": "e-1", "entity_id": "user-1", "event_time": "2026-11-25T10:00:00+02:00",'
    b' "features": {"amount": 12, "hour": null, "other": 1e5}, "extra": [1, 2]}',
    b'{"entity_id": "a", "entity_id": "b"}',
    b'{"entity_id": "u", "features": {"x": 123456789012345678901234567890}}',
    b'{"entity_id": "u", "features": {"x": 1e400}}',
    b'{"entity_id": "u", "features": {"x": NaN}}',
    b'{"entity_id": "u", "features": {"x": true, "y": "1"}}',
    b'{"entity_id": {"$ne": null}}',
    b'{"event_id": "\\ud800", "entity_id": "u"}',
    b'{"entity_id": "u", "event_time": 12}',
    b'{"entity_id": "u", "event_time": "not a time"}',
    b'{"entity_id": ""}',
    b'{"entity_id": "u", "features": {"a": 1, "b": 2, "c": 3, "d": 4}}',
    b"{",
    b'{"entity_id": "u"} trailing',
    b"\xef\xbb\xbf" + b'{"entity_id": "u"}',
    b'{"entity_id": "\xff"}',
    b"[" * 10_000,
]


@pytest.mark.parametrize("raw", BODIES)
def test_one_pass_parsing_gives_what_two_passes_give(raw: bytes) -> None:
    one_pass = Limits(10, 3, 20)
    two_passes = Limits(10, 3, 20, one_pass_below=0)

    def outcome(limits: Limits) -> object:
        try:
            events, many = parse_body(raw, limits)
        except Exception as exc:
            return (
                type(exc).__name__,
                str(exc),
                [e.model_dump() for e in getattr(exc, "errors", [])],
            )
        return [_comparable(e) for e in events], many

    assert outcome(one_pass) == outcome(two_passes)


def _comparable(event: PredictEvent) -> str:
    data = event.model_dump(mode="json")
    if data["event_id"].startswith("http-"):
        data["event_id"] = "generated"
    return json.dumps(data, sort_keys=True)
