"""The sidecar's dependencies: typed, and a clear 503 before the lifespan has started."""

from __future__ import annotations

from pathlib import Path

import httpx
from fastapi import FastAPI

from api.app import create_app
from tests.support.names import Names, settings_for


async def test_routes_answer_503_not_500_before_the_lifespan_started(
    names: Names, model_path: Path
) -> None:
    app: FastAPI = create_app(settings_for(names, model_path))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://sidecar") as client:
        for path in ("/readyz", "/model", "/metrics"):
            response = await client.get(path)
            assert response.status_code == 503, path
            assert response.json() == {
                "detail": "not ready: the model is not loaded",
                "errors": [],
                "error_count": 0,
            }
        assert (await client.get("/healthz")).status_code == 200
