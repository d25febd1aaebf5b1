"""The MongoDB-compatible server under test runs every operation the product and the CLI use.

The local servers are not MongoDB (see the README, "Local servers are not MongoDB"), so these
tests pin down what streamscore needs from one, with the sync and the async PyMongo API alike:
the scorer's ``$in`` on ``_id`` with a dotted projection and a client-side timeout (sent as
``maxTimeMS``), ``ping``; the CLI's seed (``delete_many``, unordered ``insert_many`` in chunks,
``count_documents``); what tests, bench and operators use (``find_one``, ``buildInfo``, bulk
upserts, ``create_index``, ``drop_database``). They run on whichever server ``mongo_url`` gives,
so ``.ci/run`` runs them on FerretDB too. Plus: the local server keeps its data across a restart.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from bson import Decimal128, Int64
from pymongo import AsyncMongoClient, MongoClient, UpdateOne
from pymongo.errors import BulkWriteError, PyMongoError

from scoring.feature_store import EntityFeatureStore
from scoring.resources import mongo_client
from settings import MongoSettings
from streamscore_cli import demo_data
from streamscore_cli.seed import entity_documents, seed
from tests.support.names import Names
from tests.support.private_servers import PrivateMongo

pytestmark = pytest.mark.integration

ENTITIES = 3_000
"""More than one seed chunk (2,000), so chunked unordered inserts are exercised."""


def _settings(mongo_url: str, names: Names) -> MongoSettings:
    return MongoSettings(url=mongo_url, database=names.database)


async def test_async_operations_of_the_scorer_and_the_cli(mongo_url: str, names: Names) -> None:
    mongo = _settings(mongo_url, names)
    client = mongo_client(mongo)  # the scorer's own client: every timeout set, timeoutMS too
    try:
        assert await seed(mongo, ENTITIES) == ENTITIES
        collection = client[mongo.database][mongo.collection]
        await collection.insert_one({"_id": "someone-else", "features": {"x": 1.0}})
        assert await seed(mongo, ENTITIES) == ENTITIES  # a second seed replaces, not appends
        assert await collection.count_documents({}) == ENTITIES + 1  # others' documents stay

        store = EntityFeatureStore(collection, demo_data.FEATURE_NAMES)
        await store.ping()
        expected = entity_documents(demo_data.make_entities(ENTITIES))
        wanted = [demo_data.entity_id(i) for i in range(0, ENTITIES, 6)]  # 500 ids
        found = await store.fetch([*wanted, "user-absent"])
        assert sorted(found) == sorted(wanted)
        for doc in expected[::6]:
            assert found[doc["_id"]] == pytest.approx(doc["features"])

        one = await collection.find_one({"_id": wanted[1]}, {"features.avg_amount_30d": 1})
        assert one == {
            "_id": wanted[1],
            "features": {"avg_amount_30d": expected[6]["features"]["avg_amount_30d"]},
        }
        assert await collection.find_one({"_id": "user-absent"}) is None

        build_info = await client.admin.command("buildInfo")
        assert isinstance(build_info["version"], str)
        assert build_info["ok"] == 1
    finally:
        await client.drop_database(mongo.database)
        await client.close()


async def test_async_writes_an_operator_uses(mongo_db: Any) -> None:
    collection = mongo_db["entity_features"]
    await collection.insert_many([{"_id": f"e-{i}", "features": {"x": i}} for i in range(10)])

    result = await collection.bulk_write(
        [
            UpdateOne({"_id": "e-1"}, {"$set": {"features.x": 100}}, upsert=True),
            UpdateOne({"_id": "e-new"}, {"$set": {"features": {"x": -1}}}, upsert=True),
        ],
        ordered=False,
    )
    assert (result.matched_count, result.modified_count, result.upserted_count) == (1, 1, 1)
    assert await collection.find_one({"_id": "e-1"}) == {"_id": "e-1", "features": {"x": 100}}
    assert await collection.find_one({"_id": "e-new"}) == {"_id": "e-new", "features": {"x": -1}}

    # A duplicate _id in an unordered insert is refused, and the others are inserted
    # (mongo-java-server reports a wrong nInserted here, so only the outcome is checked).
    with pytest.raises(BulkWriteError):
        await collection.insert_many(
            [{"_id": "e-2"}, {"_id": "e-20"}, {"_id": "e-21"}], ordered=False
        )
    assert await collection.count_documents({}) == 13
    assert await collection.find_one({"_id": "e-2"}) == {"_id": "e-2", "features": {"x": 2}}

    name = await collection.create_index("features.x")
    assert name in await collection.index_information()
    assert await collection.count_documents({"features.x": {"$gte": 5}}) == 6


@pytest.fixture
def sync_database(mongo_url: str, names: Names) -> Iterator[Any]:
    client: MongoClient[dict[str, Any]] = MongoClient(
        mongo_url, serverSelectionTimeoutMS=5_000, timeoutMS=10_000
    )
    try:
        yield client[names.database]
    finally:
        client.drop_database(names.database)
        client.close()


def test_sync_operations(sync_database: Any) -> None:
    collection = sync_database["entity_features"]
    docs = entity_documents(demo_data.make_entities(ENTITIES))
    collection.delete_many({})
    for start in range(0, len(docs), 2_000):
        collection.insert_many(docs[start : start + 2_000], ordered=False)
    assert collection.count_documents({}) == ENTITIES

    wanted = [d["_id"] for d in docs[::6]]
    projection = {f"features.{n}": 1 for n in demo_data.ENTITY_FEATURES}
    found = {d["_id"]: d for d in collection.find({"_id": {"$in": wanted}}, projection)}
    assert sorted(found) == sorted(wanted)
    assert all(found[d["_id"]]["features"] == d["features"] for d in docs[::6])
    assert all("updated_at" not in d for d in found.values())

    assert collection.find_one({"_id": docs[7]["_id"]}) == docs[7]
    result = collection.bulk_write(
        [UpdateOne({"_id": docs[0]["_id"]}, {"$set": {"features.txn_count_30d": 99}}, upsert=True)]
    )
    assert result.modified_count == 1
    assert collection.find_one({"_id": docs[0]["_id"]})["features"]["txn_count_30d"] == 99
    assert sync_database.command("ping")["ok"] == 1
    assert isinstance(sync_database.client.admin.command("buildInfo")["version"], str)
    collection.drop()
    assert collection.count_documents({}) == 0


async def test_the_local_server_keeps_documents_across_a_restart(
    private_mongo: PrivateMongo,
) -> None:
    docs = entity_documents(demo_data.make_entities(2_500))
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        private_mongo.url, serverSelectionTimeoutMS=10_000
    )
    try:
        await client["persist"]["entity_features"].insert_many(docs, ordered=False)
        await client["persist"]["entity_features"].update_one(
            {"_id": docs[3]["_id"]}, {"$set": {"features.chargebacks_90d": 7}}
        )
    finally:
        await client.close()

    await private_mongo.arestart()

    client = AsyncMongoClient(private_mongo.url, serverSelectionTimeoutMS=10_000)
    try:
        collection = client["persist"]["entity_features"]
        assert await collection.count_documents({}) == len(docs)
        ids = [docs[i]["_id"] for i in (0, 3, 2_499)]
        back = {d["_id"]: d async for d in collection.find({"_id": {"$in": ids}})}
        assert back[docs[0]["_id"]] == docs[0]
        assert back[docs[2_499]["_id"]] == docs[2_499]
        assert back[docs[3]["_id"]]["features"]["chargebacks_90d"] == 7
    finally:
        await client.close()


async def _insert_where_supported(collection: Any, doc: dict[str, Any]) -> bool:
    """Insert ``doc``; False when the server refuses it, which only FerretDB v1 may do (it
    closes the connection on a decimal or a NaN double; MongoDB and mongo-java-server store
    both)."""
    try:
        await collection.insert_one(doc)
    except PyMongoError:
        assert os.environ.get("STREAMSCORE_LOCAL_MONGO") == "ferretdb"
        return False
    return True


async def test_stored_values_of_every_bson_number_type_are_features(
    mongo_url: str, names: Names
) -> None:
    """Doubles, 32/64-bit integers and decimals are numbers; anything else, NaN and values
    beyond a double are left out (the entity's other features are still used)."""
    mongo = _settings(mongo_url, names)
    client = mongo_client(mongo)
    try:
        collection = client[mongo.database][mongo.collection]
        features: dict[str, Any] = {
            "double": 0.25,
            "int32": 7,
            "int64": Int64(2**40),
            "bool": True,
            "string": "3.5",
            "list": [1.0],
            "null": None,
        }
        decimals = {
            "decimal": Decimal128("41.20"),
            "decimal_nan": Decimal128("NaN"),
            "decimal_inf": Decimal128("-Infinity"),
            "decimal_huge": Decimal128("1E+6000"),
        }
        with_nan = {"nan": float("nan"), "double": 1.5}
        stored = {
            "with-decimals": await _insert_where_supported(
                collection, {"_id": "with-decimals", "features": decimals}
            ),
            "with-nan": await _insert_where_supported(
                collection, {"_id": "with-nan", "features": with_nan}
            ),
        }
        await collection.insert_one({"_id": "mixed", "features": features})
        store = EntityFeatureStore(collection, [*features, *decimals, *with_nan])
        found = await store.fetch(["mixed", "with-decimals", "with-nan"])
        assert found["mixed"] == {"double": 0.25, "int32": 7.0, "int64": float(2**40)}
        assert sorted(found) == sorted(["mixed", *(k for k, ok in stored.items() if ok)])
        if stored["with-decimals"]:
            assert found["with-decimals"] == {"decimal": 41.2}
        if stored["with-nan"]:
            assert found["with-nan"] == {"double": 1.5}
    finally:
        await client.drop_database(mongo.database)
        await client.close()
