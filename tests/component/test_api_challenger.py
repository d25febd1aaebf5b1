"""The sidecar with a challenger and reason codes: ``?challenger=true`` answers with both
predictions, reasons equal offline ``pred_contrib``, promotion over ``/admin``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.app import create_app
from scoring import EntityCache, LoadedModel, ScoringPipeline, load_model
from scoring.reasons import ReasonPolicy
from settings import Settings
from tests.support.challenger import (
    CHALLENGER_NAME,
    copy_model,
    offline_reasons,
    train_challenger,
    unfillable_model,
    vectors,
)
from tests.support.helpers import MemoryFeatures, offline_scores
from tests.support.names import Names, settings_for

STORED = {
    "user-1": {"account_age_days": 12.0, "avg_amount_30d": 30.0, "country_risk": 0.8},
    "user-2": {"account_age_days": 2_000.0, "txn_count_30d": 40.0},
}
EVENTS: list[dict[str, Any]] = [
    {"event_id": f"h{i}", "entity_id": f"user-{i % 3}", "features": {"amount": 3.0 * i, "hour": i}}
    for i in range(12)
]
KEY = "s3cret-key-for-tests"
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def challenger_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_challenger(tmp_path_factory.mktemp("challenger") / "challenger.txt")


@asynccontextmanager
async def sidecar(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    @asynccontextmanager
    async def factory(_: Settings) -> AsyncIterator[ScoringPipeline]:
        with ThreadPoolExecutor(2) as executor:
            yield ScoringPipeline(
                load_model(settings.model.path),
                MemoryFeatures(STORED),
                executor,
                cache=EntityCache(1_000, 60),
                reasons=ReasonPolicy(settings.model.reasons, settings.model.reasons_min_score),
            )

    app = create_app(settings, factory)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://sidecar") as client:
            yield client


async def test_challenger_true_answers_both_predictions_of_the_same_vector(
    names: Names, model_path: Path, model: LoadedModel, challenger_path: Path
) -> None:
    settings = settings_for(names, model_path, challenger={"path": challenger_path})
    challenger = load_model(challenger_path)
    main, shadow = offline_scores(model, EVENTS, STORED), offline_scores(challenger, EVENTS, STORED)
    async with sidecar(settings) as client:
        both = (await client.post("/predict?challenger=true", json=EVENTS)).json()
        one = (await client.post("/predict?challenger=true", json=EVENTS[0])).json()
        plain = (await client.post("/predict", json=EVENTS)).json()
        off = (await client.post("/predict?challenger=false", json=EVENTS)).json()
        vague = await client.post("/predict?challenger=maybe", json=EVENTS)
        twice = await client.post("/predict?challenger=false&challenger=true", json=EVENTS)
        again = await client.post("/predict?challenger=true&challenger=1", json=EVENTS)

    assert vague.status_code == 422  # never silently the plain answer
    assert twice.status_code == 422  # two meanings: neither is picked silently
    assert again.json()
    assert all("challenger" in a for a in again.json())
    assert vague.json()["errors"][0]["field"] == "query.challenger"
    assert [p["score"] for p in off] == [p["score"] for p in plain]  # the plain answer
    assert all("challenger" not in p for p in off)

    assert [b["prediction"]["score"] for b in both] == [main[e["event_id"]] for e in EVENTS]
    assert [b["challenger"]["score"] for b in both] == [shadow[e["event_id"]] for e in EVENTS]
    for b in both:
        assert b["challenger"]["model"] == {"name": CHALLENGER_NAME, "version": "c1"}
        assert b["prediction"]["model"] == {"name": model.name, "version": model.version}
        assert b["challenger"]["enrichment"] == b["prediction"]["enrichment"]
        assert b["challenger"]["event_id"] == b["prediction"]["event_id"]
    assert one["prediction"]["score"] == main["h0"]
    assert one["challenger"]["score"] == shadow["h0"]
    assert [p["score"] for p in plain] == [main[e["event_id"]] for e in EVENTS]
    assert all("challenger" not in p for p in plain)


async def test_without_a_challenger_the_answer_says_null(
    names: Names, model_path: Path, model: LoadedModel
) -> None:
    async with sidecar(settings_for(names, model_path)) as client:
        body = (await client.post("/predict?challenger=true", json=EVENTS[1])).json()
    assert body["challenger"] is None
    assert body["prediction"]["score"] == offline_scores(model, EVENTS[1:2], STORED)["h1"]


async def test_reason_codes_in_the_sidecar_equal_offline_pred_contrib(
    names: Names, model_path: Path, model: LoadedModel
) -> None:
    settings = settings_for(names, model_path, model={"reasons": 4})
    async with sidecar(settings) as client:
        body = (await client.post("/predict", json=EVENTS)).json()
    expected = offline_reasons(model, vectors(model, EVENTS, STORED), 4)
    assert [p["reasons"] for p in body] == expected


def _main_and_challenger(
    names: Names, model_path: Path, challenger_path: Path, tmp_path: Path
) -> tuple[Path, Path, Settings]:
    """Copies of both models, and settings with a key that reload only when asked."""
    main = copy_model(model_path, tmp_path / "models" / "model.txt")
    shadow = copy_model(challenger_path, tmp_path / "shadow" / "challenger.txt")
    settings = settings_for(
        names,
        main,
        challenger={"path": shadow},
        api={"api_key": KEY},
        model={"reload_interval_s": 0},
    )
    return main, shadow, settings


async def test_promote_challenger_over_admin(
    names: Names, model_path: Path, challenger_path: Path, tmp_path: Path
) -> None:
    main, shadow, settings = _main_and_challenger(names, model_path, challenger_path, tmp_path)
    async with sidecar(settings) as client:
        refused = await client.post("/admin/promote-challenger", headers=JSON)
        assert refused.status_code == 401
        good = {**JSON, "X-API-Key": KEY}
        promoted = await client.post("/admin/promote-challenger", headers=good)
        assert promoted.status_code == 200, promoted.text
        assert promoted.json() == {
            "main": {"name": CHALLENGER_NAME, "version": "c1"},
            "challenger": {"name": "fraud", "version": "1"},
        }
        model = (await client.get("/model", headers=good)).json()
        assert model["name"] == CHALLENGER_NAME
        both = (await client.post("/predict?challenger=true", json=EVENTS[2], headers=good)).json()
        assert both["prediction"]["model"]["name"] == CHALLENGER_NAME
        assert both["challenger"]["model"]["name"] == "fraud"

        unfillable_model(tmp_path / "dotted.txt")
        copy_model(tmp_path / "dotted.txt", shadow)
        before = main.read_bytes()
        again = await client.post("/admin/promote-challenger", headers=good)
        assert again.status_code == 409
        assert "reason in the log" in again.json()["detail"]
        assert main.read_bytes() == before


async def test_promote_without_a_challenger_is_409(names: Names, model_path: Path) -> None:
    settings = settings_for(names, model_path, api={"api_key": KEY})
    async with sidecar(settings) as client:
        response = await client.post(
            "/admin/promote-challenger", headers={**JSON, "X-API-Key": KEY}
        )
    assert response.status_code == 409


async def test_reload_over_admin_reads_the_challengers_file_too(
    names: Names, model_path: Path, challenger_path: Path, tmp_path: Path
) -> None:
    """After ``streamscore promote`` both files changed: one reload picks both up."""
    main, shadow, settings = _main_and_challenger(names, model_path, challenger_path, tmp_path)
    good = {**JSON, "X-API-Key": KEY}
    async with sidecar(settings) as client:
        copy_model(challenger_path, main)  # the files swapped, as promote does
        copy_model(model_path, shadow)
        reloaded = await client.post("/admin/reload-model", headers=good)
        assert reloaded.status_code == 200, reloaded.text
        assert reloaded.json() == {"name": CHALLENGER_NAME, "version": "c1"}
        both = (await client.post("/predict?challenger=true", json=EVENTS[2], headers=good)).json()
        assert both["prediction"]["model"]["name"] == CHALLENGER_NAME
        assert both["challenger"]["model"]["name"] == "fraud"
