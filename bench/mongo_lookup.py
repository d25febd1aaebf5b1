"""Benchmark batched vs. per-id feature lookups by ``_id`` against a MongoDB-compatible server.

For each collection size N this script creates a throw-away database, fills it with N feature
documents, and times:

* ``find_in``: one ``find({"_id": {"$in": ids}}, projection={"features": 1})``, drained with
  ``to_list``;
* ``find_one_gather``: one ``find_one({"_id": id})`` per id, all gathered at once;
* ``find_one_gather_sem100``: the same, with at most 100 calls in flight (semaphore);
* ``find_one_single``: a single ``find_one`` by ``_id``, for reference.

Each method is warmed up once, then timed ``--repeats`` times; median and min are reported.
Note that the client's connection pool (``maxPoolSize``, default 100) also bounds how many
requests are actually on the wire at once in the ungated variant.

Usage::

    .venv/bin/python bench/mongo_lookup.py [--url mongodb://127.0.0.1:27017] \
        [--sizes 20000,100000] [--ids 500] [--repeats 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import PyMongoError, ServerSelectionTimeoutError

SERVER_SELECTION_TIMEOUT_MS = 5000
INSERT_CHUNK = 5000
CONCURRENCY_LIMIT = 100
RESULTS_PATH = Path(__file__).resolve().parent / "results" / "mongo_lookup.json"

Doc = dict[str, Any]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--url", default="mongodb://127.0.0.1:27017", help="MongoDB URL")
    parser.add_argument(
        "--sizes",
        default="20000,100000",
        help="comma-separated collection sizes (default: 20000,100000)",
    )
    parser.add_argument("--ids", type=int, default=500, help="ids looked up per batch")
    parser.add_argument("--repeats", type=int, default=5, help="timed repetitions per method")
    parser.add_argument("--seed", type=int, default=42, help="random seed for data and ids")
    args = parser.parse_args(argv)
    try:
        args.sizes = [int(s) for s in str(args.sizes).split(",") if s.strip()]
    except ValueError:
        parser.error(f"--sizes must be comma-separated integers, got {args.sizes!r}")
    if not args.sizes or any(n <= 0 for n in args.sizes):
        parser.error("--sizes must contain positive integers")
    if args.ids <= 0 or args.repeats <= 0:
        parser.error("--ids and --repeats must be positive")
    if any(args.ids > n for n in args.sizes):
        parser.error("--ids must not exceed the smallest collection size")
    return args


def make_doc(i: int, rng: random.Random, now: datetime) -> Doc:
    return {
        "_id": f"user-{i}",
        "features": {
            "account_age_days": rng.randint(0, 3650),
            "avg_amount_30d": round(rng.uniform(1.0, 500.0), 2),
            "txn_count_30d": rng.randint(0, 300),
            "country_risk": round(rng.random(), 4),
        },
        "updated_at": (now - timedelta(seconds=rng.randint(0, 86_400))).isoformat(),
    }


async def populate(coll: AsyncCollection[Doc], n: int, rng: random.Random) -> float:
    now = datetime.now(UTC)
    start = time.perf_counter()
    for lo in range(0, n, INSERT_CHUNK):
        chunk = [make_doc(i, rng, now) for i in range(lo, min(lo + INSERT_CHUNK, n))]
        await coll.insert_many(chunk, ordered=False)
    return time.perf_counter() - start


async def time_method(fn: Callable[[], Awaitable[int]], expected: int, repeats: int) -> list[float]:
    """Run ``fn`` once as warm-up, then ``repeats`` timed times; returns durations in ms."""
    got = await fn()
    if got != expected:
        raise RuntimeError(f"lookup returned {got} documents, expected {expected}")
    durations: list[float] = []
    for _ in range(repeats):
        start = time.perf_counter()
        got = await fn()
        durations.append((time.perf_counter() - start) * 1000.0)
        if got != expected:
            raise RuntimeError(f"lookup returned {got} documents, expected {expected}")
    return durations


def summarize(method: str, n: int, ids_per_call: int, durations: list[float]) -> Doc:
    median = statistics.median(durations)
    return {
        "size": n,
        "method": method,
        "ids": ids_per_call,
        "median_ms": median,
        "min_ms": min(durations),
        "ms_per_id": median / ids_per_call,
        "samples_ms": durations,
    }


async def bench_size(
    client: AsyncMongoClient[Doc], n: int, n_ids: int, repeats: int, rng: random.Random
) -> list[Doc]:
    db_name = f"bench_lookup_{uuid.uuid4().hex[:10]}"
    db = client[db_name]
    coll: AsyncCollection[Doc] = db["features"]
    try:
        insert_s = await populate(coll, n, rng)
        count = await coll.count_documents({})
        if count != n:
            raise RuntimeError(f"{db_name}: inserted {count} documents, expected {n}")
        print(f"[{n}] inserted {n} docs into {db_name} in {insert_s:.1f}s", file=sys.stderr)

        ids = [f"user-{i}" for i in rng.sample(range(n), n_ids)]
        projection = {"features": 1}

        async def find_in() -> int:
            docs = await coll.find({"_id": {"$in": ids}}, projection=projection).to_list(None)
            return len(docs)

        async def find_one_gather() -> int:
            docs = await asyncio.gather(*(coll.find_one({"_id": i}, projection) for i in ids))
            return sum(d is not None for d in docs)

        sem = asyncio.Semaphore(CONCURRENCY_LIMIT)

        async def gated_find_one(doc_id: str) -> Doc | None:
            async with sem:
                return await coll.find_one({"_id": doc_id}, projection)

        async def find_one_gather_sem() -> int:
            docs = await asyncio.gather(*(gated_find_one(i) for i in ids))
            return sum(d is not None for d in docs)

        async def find_one_single() -> int:
            doc = await coll.find_one({"_id": ids[0]}, projection)
            return int(doc is not None)

        methods: list[tuple[str, Callable[[], Awaitable[int]], int]] = [
            ("find_in", find_in, n_ids),
            ("find_one_gather", find_one_gather, n_ids),
            (f"find_one_gather_sem{CONCURRENCY_LIMIT}", find_one_gather_sem, n_ids),
            ("find_one_single", find_one_single, 1),
        ]
        rows: list[Doc] = []
        for name, fn, expected in methods:
            durations = await time_method(fn, expected, repeats)
            row = summarize(name, n, expected, durations)
            row["insert_s"] = insert_s
            rows.append(row)
            print(f"[{n}] {name}: median {row['median_ms']:.2f} ms", file=sys.stderr)
        return rows
    finally:
        await client.drop_database(db_name)


def markdown_table(rows: list[Doc]) -> str:
    lines = [
        "| size | method | median ms | min ms | ms per id |",
        "|---:|---|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['size']} | {r['method']} | {r['median_ms']:.2f} | {r['min_ms']:.2f} "
            f"| {r['ms_per_id']:.3f} |"
        )
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> int:
    client: AsyncMongoClient[Doc] = AsyncMongoClient(
        args.url, serverSelectionTimeoutMS=SERVER_SELECTION_TIMEOUT_MS
    )
    try:
        try:
            await client.admin.command("ping")
            build_info = await client.admin.command("buildInfo")
        except ServerSelectionTimeoutError as exc:
            print(
                f"error: no MongoDB server answered at {args.url} within "
                f"{SERVER_SELECTION_TIMEOUT_MS} ms (is it running? try "
                f"`infra/local-servers.sh up mongo`): {exc}",
                file=sys.stderr,
            )
            return 2
        except PyMongoError as exc:
            print(f"error: server at {args.url} rejected ping/buildInfo: {exc}", file=sys.stderr)
            return 2

        version = str(build_info.get("version", "unknown"))
        ferretdb_version = build_info.get("ferretdbVersion")
        version_str = (
            f"{version} (ferretdbVersion {ferretdb_version})" if ferretdb_version else version
        )

        rng = random.Random(args.seed)
        rows: list[Doc] = []
        for n in args.sizes:
            rows.extend(await bench_size(client, n, args.ids, args.repeats, rng))

        print(f"server buildInfo version: {version_str}")
        print()
        print(markdown_table(rows))

        RESULTS_PATH.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "url": args.url,
            "server_version": version,
            "ferretdb_version": ferretdb_version,
            "build_info": {k: v for k, v in build_info.items() if k != "ok"},
            "params": {
                "sizes": args.sizes,
                "ids": args.ids,
                "repeats": args.repeats,
                "seed": args.seed,
                "concurrency_limit": CONCURRENCY_LIMIT,
                "insert_chunk": INSERT_CHUNK,
                "max_pool_size": client.options.pool_options.max_pool_size,
            },
            "created_at": datetime.now(UTC).isoformat(),
            "results": rows,
        }
        RESULTS_PATH.write_text(json.dumps(payload, indent=2, default=str) + "\n")
        print(f"\nresults written to {RESULTS_PATH}", file=sys.stderr)
        return 0
    finally:
        await client.close()


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(run(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
