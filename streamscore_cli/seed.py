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
    """Write ``count`` demo entities (each replaces the document of its id, if any; other
    documents are left alone). Returns how many were written.

    MongoDB is first asked to answer within the configured timeouts (a server that is down
    fails in seconds); the writes then get a generous timeout of their own."""
    docs = entity_documents(demo_data.make_entities(count))
    quick = mongo_client(mongo)
    try:
        await quick[mongo.database].command("ping")
    finally:
        await quick.close()
    client = mongo_client(mongo.model_copy(update={"operation_timeout_ms": 120_000}))
    try:
        collection = client[mongo.database][mongo.collection]
        written = 0
        for start in range(0, len(docs), 2_000):
            # The chunk's ids deleted, then inserted: two statements per chunk (one upsert
            # per document took minutes on servers without an _id index, FerretDB v1).
            chunk = docs[start : start + 2_000]
            await collection.delete_many({"_id": {"$in": [d["_id"] for d in chunk]}})
            result = await collection.insert_many(chunk, ordered=False)
            written += len(result.inserted_ids)
        return written
    finally:
        await client.close()
