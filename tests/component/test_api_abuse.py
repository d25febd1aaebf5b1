"""The sidecar's defences, in process: key, content type, caps, label sets, shedding, deadline,
leaks and malformed model metadata."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import re
import shutil
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

import api.body
from api.parsing import Limits, parse_body
from scoring import StoredFeatures
from scoring.model import metadata_path
from tests.component.test_api_in_memory import KEY, STORED, running_api, sample
from tests.support.helpers import MemoryFeatures
from tests.support.names import Names

JSON = {"Content-Type": "application/json"}
AUTH = {"X-API-Key": KEY, **JSON}


class GatedFeatures(MemoryFeatures):
    """Holds every fetch until ``gate`` is set (a store that has stopped answering)."""

    def __init__(self) -> None:
        super().__init__(STORED)
        self.gate = asyncio.Event()
        self.waiting = 0

    async def fetch(self, entity_ids: Sequence[str]) -> dict[str, StoredFeatures]:
        self.waiting += 1
        try:
            await self.gate.wait()
        finally:
            self.waiting -= 1
        return await super().fetch(entity_ids)


async def until(check: Any, timeout_s: float = 10.0) -> None:
    for _ in range(int(timeout_s / 0.01)):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the condition never held")


# ------------------------------------------------------------------------------ key and admin


async def test_admin_routes_are_not_served_without_a_key(names: Names, model_path: Path) -> None:
    async with running_api(names, model_path) as running:
        response = await running.client.post("/admin/reload-model", json={})
        assert response.status_code == 404
        assert running.sidecar.service.reloader.stats.loaded == 0
        # The other routes stay open without a key.
        assert (await running.client.post("/predict", json={"entity_id": "u"})).status_code == 200


async def test_admin_routes_need_the_key_and_json(names: Names, model_path: Path) -> None:
    async with running_api(names, model_path, api={"api_key": KEY}) as running:
        client, reloader = running.client, running.sidecar.service.reloader
        assert (await client.post("/admin/reload-model", json={})).status_code == 401
        # A cross-site form post cannot reach it even with the key (browsers send forms).
        form = await client.post(
            "/admin/reload-model",
            content=b"a=1",
            headers={"X-API-Key": KEY, "Content-Type": "application/x-www-form-urlencoded"},
        )
        assert form.status_code == 415
        assert reloader.stats.loaded == 0
        ok = await client.post("/admin/reload-model", content=b"{}", headers=AUTH)
        assert ok.status_code == 200, ok.text
        assert reloader.stats.loaded == 1


# ------------------------------------------------------------------------------ content type


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; b=x", "json"],
)
async def test_predict_takes_only_json(
    names: Names, model_path: Path, content_type: str | None
) -> None:
    async with running_api(names, model_path) as running:
        headers = {"Content-Type": content_type} if content_type else {}
        raw = json.dumps({"entity_id": "user-1"}).encode()
        response = await running.client.post("/predict", content=raw, headers=headers)
        assert response.status_code == 415
        assert "application/json" in response.json()["detail"]
        assert running.pipeline.stats.model_calls == 0


async def test_json_with_a_charset_is_json(names: Names, model_path: Path) -> None:
    async with running_api(names, model_path) as running:
        response = await running.client.post(
            "/predict",
            content=b'{"entity_id": "user-1"}',
            headers={"Content-Type": "Application/JSON; charset=utf-8"},
        )
        assert response.status_code == 200, response.text


# ------------------------------------------------------------------------------ caps


async def test_an_event_over_the_features_cap_is_a_422_naming_features(
    names: Names, model_path: Path
) -> None:
    async with running_api(names, model_path, api={"max_features_per_event": 10}) as running:
        at_cap = {"entity_id": "user-1", "features": {f"f{i}": 1.0 for i in range(10)}}
        assert (await running.client.post("/predict", json=at_cap)).status_code == 200
        # Over the cap, and every value invalid: one error, counted before any value is read.
        over = {"entity_id": "user-1", "features": {f"f{i}": "bad" for i in range(11)}}
        response = await running.client.post("/predict", json=[at_cap, over])
        assert response.status_code == 422
        body = response.json()
        assert body["errors"] == [
            {"field": "body[1].features", "message": "at most 10 features per event, got 11"}
        ]
        assert body["error_count"] == 1
        assert running.pipeline.stats.model_calls == 1


async def test_a_422_lists_the_first_errors_and_counts_them_all(
    names: Names, model_path: Path
) -> None:
    settings = {"max_errors_reported": 3, "max_events_per_request": 100}
    async with running_api(names, model_path, api=settings) as running:
        events = [{"entity_id": "u", "features": {"a": "x", "b": "y"}} for _ in range(50)]
        response = await running.client.post("/predict", json=events)
        assert response.status_code == 422
        body = response.json()
        assert [e["field"] for e in body["errors"]] == [
            "body[0].features.a",
            "body[0].features.b",
            "body[1].features.a",
        ]
        assert body["error_count"] == 100
        assert "(and 95 more)" in body["detail"]


async def test_large_bodies_are_parsed_in_a_worker_thread(
    names: Names, model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: list[str] = []

    def recording(raw: bytes, limits: Limits) -> Any:
        threads.append(threading.current_thread().name)
        return parse_body(raw, limits)

    monkeypatch.setattr(api.body, "parse_body", recording)
    async with running_api(names, model_path, api={"parse_in_thread_bytes": 100}) as running:
        small = await running.client.post("/predict", json={"entity_id": "user-1"})
        large = await running.client.post(
            "/predict", json={"entity_id": "user-1", "features": {f"f{i}": 1 for i in range(20)}}
        )
        invalid = await running.client.post(
            "/predict", json={"entity_id": "user-1", "features": {f"f{i}": "x" for i in range(20)}}
        )
    assert [small.status_code, large.status_code, invalid.status_code] == [200, 200, 422]
    assert invalid.json()["error_count"] == 20
    assert threads[0] == threading.current_thread().name  # small: on the loop, no hop
    assert all(name.startswith("streamscore-parse") for name in threads[1:])
    assert len(threads) == 3


# ------------------------------------------------------------------------------ metric labels


async def test_no_request_can_add_a_metric_series(names: Names, model_path: Path) -> None:
    async with running_api(names, model_path, api={"api_key": KEY}) as running:
        client = running.client
        for i in range(60):
            method = ["GET", "POST", "PUT", "DELETE", "PATCH", f"X{i}", "OPTIONS"][i % 7]
            path = ["/predict", "/model", f"/nope/{i}", f"/admin/{i}", "/metrics"][i % 5]
            headers = {"X-API-Key": KEY} if i % 2 else {}
            response = await client.request(method, path, headers=headers)
            assert response.status_code < 500, (method, path, response.text)
        before = (await client.get("/metrics", headers=AUTH)).text
        for i in range(60, 120):
            await client.request(f"Y{i}", f"/other/{i}", headers={"X-API-Key": KEY})
            await client.request("PATCH", f"/elsewhere/{i}")
        after = (await client.get("/metrics", headers=AUTH)).text

    known = {"/predict", "/healthz", "/readyz", "/model", "/metrics", "/admin/reload-model"}
    known |= {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}

    def series(text: str) -> set[tuple[str, str, str]]:
        found = set()
        for line in text.splitlines():
            if line.startswith("streamscore_http_requests_total{"):
                labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
                found.add((labels["method"], labels["route"], labels["status"]))
        return found

    seen = series(after)
    assert {m for m, _, _ in seen} <= {"GET", "POST", "OTHER"}
    assert {r for _, r, _ in seen} <= known | {"unmatched"}
    assert ("OTHER", "unmatched", "401") in seen
    # 120 more hostile requests with fresh methods and paths added no series.
    assert series(after) - series(before) <= {("OTHER", "unmatched", "401")}
    assert (
        sample(
            after,
            "streamscore_http_requests_total",
            method="OTHER",
            route="unmatched",
            status="401",
        )
        >= 60
    )


# ------------------------------------------------------------------------------ shedding


async def test_requests_beyond_max_in_flight_get_503_at_once(
    names: Names, model_path: Path
) -> None:
    source = GatedFeatures()
    settings = {"max_in_flight": 2, "batching_enabled": False, "retry_after_s": 4}
    async with running_api(names, model_path, source, api=settings) as running:
        client = running.client
        held = [
            asyncio.create_task(client.post("/predict", json={"entity_id": f"user-{i}"}))
            for i in (1, 2)
        ]
        await until(lambda: source.waiting == 2)
        shed = await client.post("/predict", json={"entity_id": "user-1"})
        assert shed.status_code == 503
        assert shed.headers["Retry-After"] == "4"
        assert "overloaded" in shed.json()["detail"]
        # Other routes are not bounded by it.
        assert (await client.get("/healthz")).status_code == 200
        source.gate.set()
        assert [r.status_code for r in await asyncio.gather(*held)] == [200, 200]
        assert (await client.post("/predict", json={"entity_id": "user-1"})).status_code == 200
        text = (await client.get("/metrics")).text
    assert sample(text, "streamscore_http_shed_total", reason="in_flight") == 1
    assert sample(text, "streamscore_http_shed_total", reason="queue") == 0


async def test_a_full_batcher_queue_is_a_503_at_once(names: Names, model_path: Path) -> None:
    source = GatedFeatures()
    settings = {"max_in_flight": 50, "max_events_per_request": 3, "max_queued_events": 4}
    async with running_api(names, model_path, source, api=settings) as running:
        client = running.client
        first = asyncio.create_task(
            client.post("/predict", json=[{"entity_id": f"a-{i}"} for i in range(3)])
        )
        await until(lambda: source.waiting == 1)
        second = await client.post("/predict", json=[{"entity_id": "b-1"}, {"entity_id": "b-2"}])
        assert second.status_code == 503
        assert "Retry-After" in second.headers
        one_more = asyncio.create_task(client.post("/predict", json={"entity_id": "c"}))
        await until(lambda: running.sidecar.batcher.queued == 4)
        source.gate.set()
        assert (await first).status_code == 200
        assert (await one_more).status_code == 200
        text = (await client.get("/metrics")).text
    assert sample(text, "streamscore_http_shed_total", reason="queue") == 1


async def test_a_request_past_its_deadline_gets_a_503_not_a_hang(
    names: Names, model_path: Path
) -> None:
    source = GatedFeatures()
    settings = {"request_timeout_s": 0.3, "retry_after_s": 2}
    async with running_api(names, model_path, source, api=settings) as running:
        client = running.client
        response = await asyncio.wait_for(
            client.post("/predict", json={"entity_id": "user-1"}), timeout=30
        )
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "2"
        assert "too long" in response.json()["detail"]
        source.gate.set()
        assert (await client.post("/predict", json={"entity_id": "user-2"})).status_code == 200
        text = (await client.get("/metrics")).text
    assert sample(text, "streamscore_http_shed_total", reason="deadline") == 1
    assert sample(text, "streamscore_http_in_flight") == 0


# ------------------------------------------------------------------------------ leaks


async def test_errors_give_generic_reasons_and_details_go_to_the_log(
    names: Names, model_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = MemoryFeatures(STORED, failures=3)
    caplog.set_level(logging.WARNING, logger="api.app")
    async with running_api(names, model_path, source) as running:
        predict = await running.client.post("/predict", json={"entity_id": "user-1"})
        ready = await running.client.get("/readyz")
        model = await running.client.get("/model")
    assert predict.status_code == ready.status_code == 503
    assert predict.json() == {"detail": "MongoDB unavailable", "errors": [], "error_count": 0}
    assert ready.json()["detail"] == "not ready: MongoDB unavailable"
    for response in (predict, ready):
        assert "simulated" not in response.text
    assert str(model_path.parent) not in model.text
    assert any("simulated outage" in r.getMessage() for r in caplog.records)


# ------------------------------------------------------------------------------ model metadata


@pytest.mark.parametrize(
    "metadata",
    [
        {"name": "fraud", "version": "2", "feature_names": 5},
        {"name": "fraud", "version": "2", "feature_names": [1, 2]},
        {"name": ["fraud"], "version": "2"},
        {"name": "fraud", "version": {"v": 2}},
        ["not", "an", "object"],
    ],
    ids=["feature_names int", "feature_names ints", "name list", "version object", "a list"],
)
async def test_malformed_model_metadata_is_a_refused_model(
    names: Names,
    model_path: Path,
    tmp_path: Path,
    metadata: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    path = tmp_path / "model.txt"
    shutil.copy(model_path, path)
    shutil.copy(metadata_path(model_path), metadata_path(path))
    async with running_api(names, path, api={"api_key": KEY}) as running:
        reloader = running.sidecar.service.reloader
        metadata_path(path).write_text(json.dumps(metadata), encoding="utf-8")
        caplog.set_level(logging.ERROR, logger="scoring.model_reload")

        response = await running.client.post("/admin/reload-model", json={}, headers=AUTH)
        assert response.status_code == 409, response.text
        assert "refused" in response.json()["detail"]
        assert str(tmp_path) not in response.text
        assert reloader.stats.refused == 1
        # The poll path does not try the same files again.
        for _ in range(3):
            await reloader.check()
        assert reloader.stats.refused == 1
        refusals = [r for r in caplog.records if getattr(r, "event", None) == "model_refused"]
        assert len(refusals) == 1
        assert refusals[0].exc_info is None  # a reason, not a traceback
        # The old model keeps serving.
        assert (
            await running.client.post("/predict", json={"entity_id": "u"}, headers=AUTH)
        ).status_code == 200


async def test_large_bodies_beyond_the_parser_backlog_get_503_at_once(
    names: Names, model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()
    started = threading.Semaphore(0)

    def slow(raw: bytes, limits: Limits) -> Any:
        started.release()
        release.wait(30)
        return parse_body(raw, limits)

    monkeypatch.setattr(api.body, "parse_body", slow)
    async with running_api(names, model_path, api={"parse_in_thread_bytes": 0}) as running:
        client = running.client
        held = [
            asyncio.create_task(client.post("/predict", json={"entity_id": "user-1"}))
            for _ in range(api.body.LARGE_BODIES_AT_ONCE)
        ]
        await until(lambda: started.acquire(blocking=False))  # the parser thread is busy
        await asyncio.sleep(0.05)  # the others are queued behind it
        shed = await client.post("/predict", json={"entity_id": "user-1"})
        assert shed.status_code == 503
        assert "Retry-After" in shed.headers
        release.set()
        assert [r.status_code for r in await asyncio.gather(*held)] == [200, 200]
        text = (await client.get("/metrics")).text
    assert sample(text, "streamscore_http_shed_total", reason="parse") == 1


async def test_the_key_is_also_taken_as_a_bearer_token(names: Names, model_path: Path) -> None:
    async with running_api(names, model_path, api={"api_key": KEY}) as running:
        client = running.client
        ok = await client.get("/metrics", headers={"Authorization": f"Bearer {KEY}"})
        assert ok.status_code == 200
        wrong = await client.get("/metrics", headers={"Authorization": f"Bearer {KEY}x"})
        assert wrong.status_code == 401
        basic = await client.get("/metrics", headers={"Authorization": f"Basic {KEY}"})
        assert basic.status_code == 401


@pytest.mark.parametrize(
    ("header", "compressed", "plain"),
    [("Content-Encoding", "gzip", "identity"), ("Transfer-Encoding", "gzip, chunked", "Chunked")],
)
async def test_a_compressed_body_is_415_naming_its_coding(
    names: Names, model_path: Path, header: str, compressed: str, plain: str
) -> None:
    body = gzip.compress(b'{"entity_id": "u"}')
    json_type = ("Content-Type", "application/json")
    async with running_api(names, model_path) as running:
        response = await running.client.post(
            "/predict", content=body, headers=[json_type, (header, compressed)]
        )
        uncompressed = await running.client.post(
            "/predict", content=b'{"entity_id": "u"}', headers=[json_type, (header, plain)]
        )
        both = await running.client.post(
            "/predict", content=body, headers=[json_type, (header, compressed), (header, plain)]
        )
    assert response.status_code == 415
    assert both.status_code == 415  # the last header does not hide the first
    assert f"{header} gzip" in response.json()["detail"]
    assert uncompressed.status_code == 200


async def test_every_get_route_answers_head(names: Names, model_path: Path) -> None:
    async with running_api(names, model_path, api={"api_key": KEY}) as running:
        live = await running.client.head("/healthz")
        ready = await running.client.head("/readyz", headers={"X-API-Key": KEY})
        model = await running.client.head("/model", headers={"X-API-Key": KEY})
        metrics = await running.client.head("/metrics", headers={"X-API-Key": KEY})
        model_get = await running.client.get("/model", headers={"X-API-Key": KEY})
        anonymous = await running.client.head("/model")
    assert live.status_code == 200
    assert ready.status_code in {200, 503}  # as GET would say; never 405
    assert model.status_code == metrics.status_code == 200
    assert live.content == model.content == metrics.content == b""
    assert model.headers["content-length"] == model_get.headers["content-length"]
    assert metrics.headers["content-type"].startswith("text/plain")
    assert anonymous.status_code == 401  # HEAD needs the key as GET does


# ------------------------------------------------------------------------------ slow or gone


async def test_a_client_that_goes_away_mid_body_is_counted_499_not_a_server_error(
    names: Names, model_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_api(names, model_path) as running:
        incoming: list[dict[str, Any]] = [
            {"type": "http.request", "body": b'{"entity_id": "us', "more_body": True},
            {"type": "http.disconnect"},
        ]
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return incoming.pop(0) if incoming else {"type": "http.disconnect"}

        async def send(message: Any) -> None:
            sent.append(dict(message))

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/predict",
            "raw_path": b"/predict",
            "root_path": "",
            "query_string": b"",
            "headers": [(b"content-type", b"application/json"), (b"content-length", b"100")],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000),
        }
        with caplog.at_level(logging.INFO, logger="api.guard"):
            await asyncio.wait_for(running.app(scope, receive, send), timeout=10)  # no raise
        assert sent == []  # nobody to answer
        text = (await running.client.get("/metrics")).text
    assert sample(text, "streamscore_http_requests_total", route="/predict", status="499") == 1
    assert 'status="500"' not in text
    assert any(getattr(r, "event", None) == "client_disconnected" for r in caplog.records)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_body_that_does_not_arrive_in_time_is_a_408_not_a_503(
    names: Names, model_path: Path
) -> None:
    async def slowly() -> Any:
        yield b'{"entity_id": '
        await asyncio.sleep(1.0)
        yield b'"user-1"}'

    settings = {"request_timeout_s": 0.3}
    async with running_api(names, model_path, api=settings) as running:
        response = await asyncio.wait_for(
            running.client.post("/predict", content=slowly(), headers=JSON), timeout=10
        )
        assert response.status_code == 408
        assert response.headers["connection"] == "close"
        assert "did not arrive within 0.3 s" in response.json()["detail"]
        # A body that arrives in time is scored as usual.
        assert (
            await running.client.post("/predict", json={"entity_id": "user-1"})
        ).status_code == 200
        text = (await running.client.get("/metrics")).text
    assert sample(text, "streamscore_http_shed_total", reason="deadline") == 0


async def test_a_long_feature_name_is_cut_in_the_422(names: Names, model_path: Path) -> None:
    name = "k" * 100_000
    async with running_api(names, model_path) as running:
        response = await running.client.post(
            "/predict", json={"entity_id": "user-1", "features": {name: "x", "ok": True}}
        )
    assert response.status_code == 422
    assert len(response.content) < 2_000
    fields = [e["field"] for e in response.json()["errors"]]
    assert f"body.features.{'k' * 61}..." in fields
    assert "body.features.ok" in fields


async def test_a_413_closes_the_connection(names: Names, model_path: Path) -> None:
    async def chunked() -> Any:  # no Content-Length: refused while reading
        for _ in range(4):
            yield b"u" * 2_000

    async with running_api(names, model_path, api={"max_body_bytes": 4_096}) as running:
        declared = await running.client.post(
            "/predict", content=b'{"entity_id": "' + b"u" * 5_000 + b'"}', headers=JSON
        )
        streamed = await running.client.post("/predict", content=chunked(), headers=JSON)
    for response in (declared, streamed):
        assert response.status_code == 413
        assert response.headers["connection"] == "close"
