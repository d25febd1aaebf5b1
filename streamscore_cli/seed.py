"""``streamscore seed``: write the demo entities' features into MongoDB."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from scoring.resources import mongo_client
from settings import MongoSettings
from streamscore_cli import demo_data


def entity_documents(entities: demo_data.Entities) -> list[dict[str, Any]]:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    docs = []
    for entity_id, row in zip(entities.ids, entities.features, strict=True):
        features = {
            name: (
                int(v)
                if name in {"account_age_days", "txn_count_30d", "chargebacks_90d"}
                else float(v)
            )
            for name, v in zip(demo_data.ENTITY_FEATURES, row, strict=True)
        }
        docs.append({"_id": entity_id, "features": features, "updated_at": now})
    return docs


async def seed(mongo: MongoSettings, count: int = demo_data.DEFAULT_ENTITIES) -> int:
    """Replace the collection's contents with ``count`` demo entities. Returns the count."""
    docs = entity_documents(demo_data.make_entities(count))
    client = mongo_client(mongo.model_copy(update={"operation_timeout_ms": 120_000}))
    try:
        collection = client[mongo.database][mongo.collection]
        await collection.delete_many({})
        for start in range(0, len(docs), 2_000):
            await collection.insert_many(docs[start : start + 2_000], ordered=False)
        return await collection.count_documents({})
    finally:
        await client.close()
