"""The naive HTTP baseline: the "tutorial" FastAPI scorer the sidecar is compared with.

One request = one pydantic-validated event, ``await collection.find_one({"_id": ...})``, a
one-row ``Booster.predict`` inline on the event loop, the prediction as the response. No
batching, no cache. Run: ``uvicorn bench.naive_api:app`` with ``BENCH_MONGO_URL``,
``BENCH_DATABASE`` and ``BENCH_MODEL`` set.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
from fastapi import FastAPI
from pymongo import AsyncMongoClient

from schemas import Enrichment, InputEvent, ModelRef, Prediction

state: dict[str, Any] = {}


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    model = Path(os.environ.get("BENCH_MODEL", "models/model.txt"))
    booster = lgb.Booster(model_file=str(model))
    meta = json.loads(model.with_suffix(".json").read_text(encoding="utf-8"))
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        os.environ.get("BENCH_MONGO_URL", "mongodb://127.0.0.1:27017")
    )
    state.update(
        booster=booster,
        names=list(booster.feature_name()),
        ref=ModelRef(name=str(meta["name"]), version=str(meta["version"])),
        collection=client[os.environ.get("BENCH_DATABASE", "streamscore")]["entity_features"],
    )
    try:
        yield
    finally:
        await client.close()


app = FastAPI(lifespan=lifespan)


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/predict")
async def predict(event: InputEvent) -> Prediction:
    doc = await state["collection"].find_one({"_id": event.entity_id})
    stored = (doc or {}).get("features") or {}
    row = []
    for name in state["names"]:
        value = event.features.get(name)
        if value is None:
            value = stored.get(name)
        row.append(float("nan") if value is None else float(value))
    # num_threads=1 as the product uses: LightGBM's default (all cores) costs ~2.5 ms per
    # one-row call on this machine, which would make the baseline look worse than it is.
    score = float(state["booster"].predict(np.array([row]), num_threads=1)[0])
    now = datetime.now(UTC)
    return Prediction(
        event_id=event.event_id,
        entity_id=event.entity_id,
        score=score,
        model=state["ref"],
        enrichment=Enrichment.HIT if doc is not None else Enrichment.MISS,
        event_time=event.event_time or now,
        scored_at=now,
    )
