"""One run's world: its names, its input, its child processes, and its clean-up.

Every name carries the prefix ``bench-<run id>`` (topics, consumer groups, database); all of
them are deleted at the end unless ``--keep``.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import re
import secrets
import sys
import time
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from pymongo import AsyncMongoClient

from bench.config import RELAYS, SCORERS, STREAM_KEYS, BenchConfig
from bench.kafka_probe import Template, event_templates, fill
from bench.offsets import Offsets, Positions, total
from bench.results import Servers
from bench.worker_proc import ROOT, Worker, log, start_worker
from scoring import load_model
from scoring.compiled import BackendChoice, compiler_missing
from settings import Settings
from streams.kafka_options import producer_options
from streams.topics import ensure_topics
from streamscore_cli.seed import seed

STEADY_KEY = "steady"
"""The steady-state passes' output topic (``streamscore_1p``'s settings otherwise)."""


class RunContext:
    def __init__(self, config: BenchConfig) -> None:
        self.config = config
        self.run_id = f"bench-{time.strftime('%m%d%H%M%S')}{secrets.token_hex(2)}"
        self.input = f"{self.run_id}-events"
        self.log_dir = Path(config.log_dir or f"/tmp/{self.run_id}")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.settings: Settings = config.settings.model_copy(
            update={
                "kafka": config.settings.kafka.model_copy(
                    update={"input_topic": self.input, "client_id": "bench"}
                ),
                "mongo": config.settings.mongo.model_copy(update={"database": self.run_id}),
            }
        )
        self.offsets = Offsets(self.settings.kafka)
        self.topics = [self.input]
        self.workers: list[Worker] = []
        self.partitions: list[int] = []
        self.input_end: Positions = {}
        self.templates: list[Template] = []
        self.preload_file = self.log_dir / "preload_ids.txt"
        self.repetition = 0
        """Which repetition runs now (``--runs``): part of every group and probe id."""

    # ------------------------------------------------------------------ names
    def out_topic(self, key: str) -> str:
        return f"{self.run_id}-{key}-out"

    def group(self, key: str, suffix: str = "") -> str:
        return f"{self.run_id}-{key}{suffix}-r{self.repetition}"

    def child_env(self, key: str, group: str) -> dict[str, str]:
        """The product's settings for one child: the same servers, this run's names, and for
        a scorer the Kafka client of its variant (``STREAMSCORE_KAFKA__CLIENT``)."""
        env = {
            "STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS": self.config.bootstrap,
            "STREAMSCORE_KAFKA__INPUT_TOPIC": self.input,
            "STREAMSCORE_KAFKA__OUTPUT_TOPIC": self.out_topic(key),
            "STREAMSCORE_KAFKA__DLQ_TOPIC": f"{self.run_id}-{key}-dlq",
            "STREAMSCORE_KAFKA__GROUP_ID": group,
            "STREAMSCORE_KAFKA__CLIENT_ID": f"{self.run_id}-{key}",
            "STREAMSCORE_KAFKA__CREATE_TOPICS": "false",
            "STREAMSCORE_KAFKA__AUTO_OFFSET_RESET": "earliest",
            "STREAMSCORE_MONGO__URL": self.config.mongo_url,
            "STREAMSCORE_MONGO__DATABASE": self.run_id,
            "STREAMSCORE_MODEL__PATH": str(self.settings.model.path),
            "STREAMSCORE_LOG_LEVEL": "INFO",
            "STREAMSCORE_STREAM__METRICS_PORT": "0",  # any free port: processes side by side
        }
        if self.config.cache_ttl_s is not None:
            env["STREAMSCORE_SCORING__CACHE_TTL_S"] = str(self.config.cache_ttl_s)
        if key in SCORERS:
            env["STREAMSCORE_KAFKA__CLIENT"] = SCORERS[key].client
            env["STREAMSCORE_MODEL__BACKEND"] = SCORERS[key].backend
        elif key in RELAYS:  # the batch size the product uses with that client (settings)
            env["STREAMSCORE_KAFKA__CLIENT"] = RELAYS[key].client
        return env

    async def spawn(
        self,
        name: str,
        variant: str,
        group: str,
        key: str,
        extra: list[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> Worker:
        """Start a ``bench.workers`` process for ``variant`` writing to ``key``'s topic
        (``env`` over the child's settings)."""
        argv = [sys.executable, "-m", "bench.workers", variant, *(extra or [])]
        full_env = self.child_env(key, group) | (env or {})
        name = f"r{self.repetition}-{name}"
        worker = await start_worker(name, argv, self.log_dir, full_env)
        self.workers.append(worker)
        return worker

    # ------------------------------------------------------------------ servers and input
    async def servers(self) -> Servers:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            self.config.mongo_url, serverSelectionTimeoutMS=5000
        )
        try:
            info = await client.admin.command("buildInfo")
        finally:
            await client.close()
        version = str(info.get("version"))
        if info.get("ferretdbVersion"):
            server = f"FerretDB {info['ferretdbVersion']}"
        elif "gitVersion" not in info:  # every MongoDB answers with its git version
            server = f"mongo-java-server {mongo_java_server_version()}"
        else:
            server = f"MongoDB {version}"
        return Servers(
            kafka_bootstrap=self.config.bootstrap,
            kafka_version=kafka_version(),
            mongo_hosts=re.sub(r"//[^@/]*@", "//", self.config.mongo_url),
            mongo_server=server,
            mongo_version=version,
            lookup_ms={},
        )

    async def prepare(self) -> None:
        """Topics, entities, and the input: ``events`` events from the demo generator."""
        self.topics += [self.out_topic(key) for key in (*STREAM_KEYS, STEADY_KEY)]
        self.topics += [f"{self.run_id}-{k}-dlq" for k in (*SCORERS, STEADY_KEY)]
        created = await ensure_topics(self.settings.kafka, names=self.topics)
        log(f"created {len(created)} topics {self.run_id}-* (4 partitions)")
        t = time.monotonic()
        count = await seed(self.settings.mongo, self.config.entities)
        log(f"seeded {count} entities into {self.run_id} in {time.monotonic() - t:.1f}s")
        await self.offsets.start()
        self.partitions = sorted(await self.offsets.end_offsets(self.input))
        # every copy re-sends the same events (same generator and seed, so the same entities)
        self.templates = event_templates(self.config.profile.events, seed=11)
        _, self.input_end = await self.send_copy("input", len(self.templates))
        entity_ids = sorted({key.decode() for key, _ in self.templates})
        self.preload_file.write_text("\n".join(entity_ids) + "\n")
        log(f"input touches {len(entity_ids)} distinct entity ids (incl. unknown ones)")
        await self.compile_model()

    async def compile_model(self) -> None:
        """Compile the model into the scorers' cache now (when this machine can), so that no
        scorer pass spends its first seconds in the compiler."""
        if compiler_missing() is not None:
            return
        model = self.settings.model
        choice = BackendChoice("compiled", ROOT / model.compiled_cache_dir)
        loaded = await asyncio.to_thread(load_model, ROOT / model.path, backend=choice)
        log(f"model backend when compiled trees are asked for: {loaded.backend}")

    async def lookup_costs(self) -> dict[str, float]:
        """What one lookup by ``_id`` costs on this server, on the seeded collection (median
        of 3): ``find_one`` and ``$in`` of one id from the middle of the collection (a scan that
        stops at the first match is then not flattered), and ``$in`` of 500 ids spread over it."""
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            self.config.mongo_url, timeoutMS=60_000
        )
        collection = client[self.run_id][self.settings.mongo.collection]
        ids = [f"user-{i:06d}" for i in range(0, self.config.entities, 40)][:500]
        middle = ids[len(ids) // 2]

        async def timed(query: dict[str, Any], one: bool) -> float:
            runs = []
            for _ in range(3):
                t = time.perf_counter()
                if one:
                    await collection.find_one(query)
                else:
                    await collection.find(query).to_list(None)
                runs.append((time.perf_counter() - t) * 1000)
            return round(sorted(runs)[1], 2)

        try:
            return {
                "find_one": await timed({"_id": middle}, one=True),
                "in_1_id": await timed({"_id": {"$in": [middle]}}, one=False),
                f"in_{len(ids)}_ids": await timed({"_id": {"$in": ids}}, one=False),
            }
        finally:
            await client.close()

    async def send_copy(
        self, label: str, limit: int, templates: list[Template] | None = None
    ) -> tuple[Positions, Positions]:
        """Append the first ``limit`` events again (same keys, entities and features; new event
        ids and times), or ``limit`` events cycling through ``templates``. Returns the (start,
        end) offsets of the copy."""
        templates = templates or self.templates[:limit]
        start = await self.offsets.end_offsets(self.input)
        kafka = self.settings.kafka
        producer = AIOKafkaProducer(
            client_id="bench-copy",
            bootstrap_servers=kafka.bootstrap_servers,
            **producer_options(kafka),
        )
        await producer.start()
        t = time.monotonic()
        try:
            pending: list[asyncio.Future[Any]] = []
            now = time.time()
            for i in range(limit):
                key, template = templates[i % len(templates)]
                value = fill(template, f"{self.run_id}-{label}-{i:07d}", now)
                pending.append(await producer.send(self.input, value, key=key))
                if len(pending) >= 2_000:
                    await asyncio.gather(*pending)
                    pending.clear()
                    now = time.time()
            await asyncio.gather(*pending)
        finally:
            await producer.stop()
        end = await self.offsets.end_offsets(self.input)
        log(
            f"  appended {label}: {total(end) - total(start)} events in {time.monotonic() - t:.1f}s"
        )
        return start, end

    async def cleanup(self) -> None:
        for w in self.workers:
            with contextlib.suppress(Exception):
                await w.stop()
        if self.config.keep:
            log(f"--keep: leaving topics {self.run_id}-* and database {self.run_id}")
        else:
            with contextlib.suppress(Exception):
                log(f"deleted {len(await self.offsets.delete_topics(self.topics))} topics")
            with contextlib.suppress(Exception):
                mine = await self.offsets.groups_with_prefix(self.run_id)
                log(f"deleted {await self.offsets.delete_groups(mine)} consumer groups")
            client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
                self.config.mongo_url, serverSelectionTimeoutMS=5000
            )
            try:
                await client.drop_database(self.run_id)
                log(f"dropped database {self.run_id}")
            except Exception as exc:
                log(f"could not drop database {self.run_id}: {exc!r}")
            finally:
                await client.close()
        await self.offsets.close()


def kafka_version() -> str:
    local = os.environ.get("STREAMSCORE_LOCAL_DIR", str(ROOT / ".local"))
    for jar in glob.glob(os.path.join(local, "kafka", "libs", "kafka_2.13-*.jar")):
        if match := re.search(r"kafka_2\.13-([\w.]+)\.jar$", jar):
            return match.group(1)
    return "unknown (not the local servers)"


def mongo_java_server_version() -> str:
    pom = ROOT / "infra" / "mongo-java-server" / "pom.xml"
    with contextlib.suppress(OSError):
        found = re.search(r"<mongo-java-server.version>([^<]+)<", pom.read_text())
        if found:
            return found.group(1)
    return "(version unknown)"
