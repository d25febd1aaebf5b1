"""The naive HTTP baseline: the "tutorial" FastAPI scorer the sidecar is compared with.

One request = one pydantic-validated event, ``await collection.find_one({"_id": ...})``, a
one-row ``Booster.predict`` inline on the event loop, the prediction as the response. No
batching, no cache. Run: ``uvicorn bench.naive_api:app``; MongoDB and the model come from the
product's settings (``STREAMSCORE_MONGO__URL``, ``STREAMSCORE_MONGO__DATABASE``,
``STREAMSCORE_MODEL__PATH``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection

from bench.variants.one_row import OneRowModel, stored_features
from schemas import InputEvent, Prediction
from settings import load_settings


@dataclass(frozen=True)
class Resources:
    model: OneRowModel
    collection: AsyncCollection[dict[str, Any]]


opened: list[Resources] = []


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    settings = load_settings()
    mongo = settings.mongo
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo.url.get_secret_value())
    opened.append(
        Resources(OneRowModel(settings.model.path), client[mongo.database][mongo.collection])
    )
    try:
        yield
    finally:
        opened.clear()
        await client.close()


app = FastAPI(lifespan=lifespan)


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/predict")
async def predict(event: InputEvent) -> Prediction:
    res = opened[-1]
    doc = await res.collection.find_one({"_id": event.entity_id})
    score = res.model.predict(res.model.row(event, stored_features(doc)))
    return res.model.prediction(event, score, doc is not None)
