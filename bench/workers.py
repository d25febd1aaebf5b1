"""The consumers the benchmark compares, each run as its own process.

``python -m bench.workers VARIANT [options]`` with VARIANT one of:

* ``relay``: plain aiokafka; consume a batch (<= 500 records), re-publish the same bytes with
  the same producer options as streamscore, wait for the acks, commit. No parsing, no
  enrichment, no model: the ceiling for this machine and broker.
* ``naive``: the "tutorial pattern": a FastStream ``KafkaBroker`` subscriber (not batched),
  one event per handler call, pydantic parsing, ``await collection.find_one({"_id": ...})``,
  a one-row ``Booster.predict`` inline on the event loop, ``await broker.publish`` of the
  prediction, then FastStream commits the offset (``AckPolicy.ACK``).
* ``naive_executor``: the same with the one-row predict in the default thread executor.
* ``streamscore``: the real scorer: ``streams.app.build_app`` with ``scoring.resources
  .open_pipeline``, configured like ``streamscore run`` from ``STREAMSCORE_*`` variables. The
  only additions are a :class:`scoring.loop_lag.LoopLagMonitor` on the same event loop, and a
  pipeline factory that wraps ``open_pipeline`` unchanged to read the pipeline's stats.

Every process prints JSON lines on stdout: ``{"type": "ready"}`` once it consumes, then a
``{"type": "tick"}`` every ``--tick-s`` seconds with the events handled so far, the loop-lag
samples (ms) since the previous tick and variant-specific counters. SIGTERM/SIGINT stop it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from scoring.loop_lag import LoopLagMonitor

VARIANTS = ("relay", "naive", "naive_executor", "streamscore")


def emit(kind: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"type": kind, "t": time.time(), **fields}) + "\n")
    sys.stdout.flush()


class Reporter:
    """Counts handled events, gathers loop-lag samples and prints ticks."""

    def __init__(self, tick_s: float, lag_interval_s: float) -> None:
        self.count = 0
        self._lags: list[float] = []
        self._tick_s = tick_s
        self.monitor = LoopLagMonitor(lag_interval_s, on_sample=self._lags.append)
        self.extra: Callable[[], dict[str, Any]] = dict
        self.assigned: Callable[[], int] = lambda: 0

    def tick(self) -> None:
        lags, self._lags[:] = [round(x * 1000, 3) for x in self._lags], []
        stats = self.extra()
        emit("tick", n=self.count, lag=lags, assigned=self.assigned(), stats=stats)

    async def _watch_ready(self) -> None:
        """Say "ready" as soon as partitions are assigned (the drain clock starts there)."""
        while True:
            try:
                assigned = self.assigned()
            except Exception:
                assigned = 0
            if assigned:
                emit("ready", pid=os.getpid(), assigned=assigned)
                return
            await asyncio.sleep(0.005)

    async def run(self) -> None:
        self.monitor.start()
        ready = asyncio.create_task(self._watch_ready())
        try:
            while True:
                await asyncio.sleep(self._tick_s)
                self.tick()
        finally:
            ready.cancel()
            await self.monitor.stop()


async def _until_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def _read_json(path: str) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _read_lines(path: str) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f]


def _producer_kwargs(bootstrap: str) -> dict[str, Any]:
    from settings import KafkaSettings
    from streams.kafka_options import producer_options

    return producer_options(KafkaSettings(bootstrap_servers=bootstrap))


# ------------------------------------------------------------------------------------ relay
async def run_relay(args: argparse.Namespace, rep: Reporter) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    consumer = AIOKafkaConsumer(
        args.input,
        bootstrap_servers=args.bootstrap,
        group_id=args.group,
        client_id="bench-relay",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=args.max_batch,
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=args.bootstrap,
        client_id="bench-relay",
        **_producer_kwargs(args.bootstrap),
    )
    await producer.start()
    await consumer.start()
    rep.assigned = lambda: len(consumer.assignment())

    async def loop() -> None:
        while True:
            batches = await consumer.getmany(timeout_ms=100, max_records=args.max_batch)
            if not batches:
                continue
            pending = [
                await producer.send(args.output, r.value, key=r.key)
                for records in batches.values()
                for r in records
            ]
            await asyncio.gather(*pending)
            await consumer.commit({tp: records[-1].offset + 1 for tp, records in batches.items()})
            rep.count += len(pending)

    task = asyncio.create_task(loop())
    try:
        await _until_signal()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await consumer.stop()
        await producer.stop()


# ------------------------------------------------------------------------------------ naive
async def run_naive(args: argparse.Namespace, rep: Reporter, *, executor: bool) -> None:
    import lightgbm as lgb
    import numpy as np
    from faststream import AckPolicy
    from faststream.kafka import KafkaBroker
    from pymongo import AsyncMongoClient

    from schemas import Enrichment, InputEvent, ModelRef, Prediction

    booster = lgb.Booster(model_file=args.model)
    names = list(booster.feature_name())
    meta = _read_json(os.path.splitext(args.model)[0] + ".json")
    ref = ModelRef(name=str(meta["name"]), version=str(meta["version"]))
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(args.mongo_url)
    collection = client[args.database]["entity_features"]
    broker = KafkaBroker(args.bootstrap, log_level=logging.DEBUG)

    def predict_one(row: list[float]) -> float:
        # num_threads=1 as the product uses (LightGBM's default, all cores, costs ~2.5 ms per
        # one-row call here: the baseline would look worse than it needs to).
        return float(booster.predict(np.array([row], dtype=np.float64), num_threads=1)[0])

    @broker.subscriber(  # type: ignore[untyped-decorator]
        args.input,
        group_id=args.group,
        auto_offset_reset="earliest",
        ack_policy=AckPolicy.ACK,
    )
    async def handle(event: InputEvent) -> None:
        doc = await collection.find_one({"_id": event.entity_id})
        stored = (doc or {}).get("features") or {}
        row = []
        for name in names:
            value = event.features.get(name)
            if value is None:
                value = stored.get(name)
            row.append(float("nan") if value is None else float(value))
        if executor:
            score = await asyncio.get_running_loop().run_in_executor(None, predict_one, row)
        else:
            score = predict_one(row)
        now = datetime.now(UTC)
        prediction = Prediction(
            event_id=event.event_id,
            entity_id=event.entity_id,
            score=score,
            model=ref,
            enrichment=Enrichment.HIT if doc is not None else Enrichment.MISS,
            event_time=event.event_time or now,
            scored_at=now,
        )
        await broker.publish(prediction, args.output, key=event.entity_id.encode())
        rep.count += 1

    await broker.start()
    subscriber = broker.subscribers[0]

    def assigned() -> int:
        consumer = getattr(subscriber, "consumer", None)
        return len(consumer.assignment()) if consumer is not None else 0

    rep.assigned = assigned
    try:
        await _until_signal()
    finally:
        await broker.stop()
        await client.close()


# ------------------------------------------------------------------------------ streamscore
async def run_streamscore(args: argparse.Namespace, rep: Reporter) -> None:
    from scoring import ScoringPipeline
    from scoring.resources import open_pipeline
    from settings import Settings, load_settings
    from streams.app import build_app
    from streamscore_cli import logs

    settings = load_settings()
    logs.configure(settings.log_level)
    holder: dict[str, ScoringPipeline] = {}

    preload_ids: list[str] = []
    if args.preload_ids:
        preload_ids = [x for x in _read_lines(args.preload_ids) if x]

    def cache_of(pipeline: ScoringPipeline) -> Any:
        cache = getattr(pipeline, "cache", None)
        return cache if cache is not None else getattr(pipeline, "_cache", None)

    async def preload(pipeline: ScoringPipeline) -> None:
        """Fill the pipeline's own entity cache with ``preload_ids`` (bench-only: "warm").

        Through the cache's public ``get_many`` with the product's ``EntityFeatureStore``, on a
        client whose timeout allows FerretDB's slow ``$in`` (the product's 2 s would not)."""
        from pymongo import AsyncMongoClient

        from scoring.feature_store import EntityFeatureStore

        cache = cache_of(pipeline)
        if cache is None or not preload_ids:
            return
        started = time.monotonic()
        cache.clear()  # reloaded entries get a fresh TTL
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            settings.mongo.url.get_secret_value(), timeoutMS=300_000
        )
        try:
            store = EntityFeatureStore(
                client[settings.mongo.database][settings.mongo.collection],
                pipeline.model.feature_names,
            )
            for i in range(0, len(preload_ids), 25_000):
                await cache.get_many(preload_ids[i : i + 25_000], store.fetch)
        finally:
            await client.close()
        emit("preloaded", entries=len(cache), seconds=round(time.monotonic() - started, 2))

    @asynccontextmanager
    async def factory(s: Settings) -> AsyncIterator[ScoringPipeline]:
        async with open_pipeline(s) as pipeline:
            holder["pipeline"] = pipeline
            await preload(pipeline)  # before the subscriber starts consuming
            yield pipeline

    def on_usr1() -> None:
        pipeline = holder.get("pipeline")
        if pipeline is not None:
            task = asyncio.get_running_loop().create_task(preload(pipeline))
            background.add(task)
            task.add_done_callback(background.discard)

    background: set[asyncio.Task[None]] = set()
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, on_usr1)
    app, broker, runtime = build_app(settings, pipeline_factory=factory)
    subscriber = broker.subscribers[0]

    def assigned() -> int:
        consumer = getattr(subscriber, "consumer", None)
        if consumer is None or runtime.processor is None:
            return 0
        return len(consumer.assignment())

    def extra() -> dict[str, Any]:
        # read defensively: the product's internals move while this bench is in use
        out: dict[str, Any] = {}
        processor = runtime.processor
        if processor is not None:
            s = processor.stats
            out.update(consumed=s.consumed, scored=s.scored, commits=s.commits, retries=s.retries)
            stages = getattr(s, "stage_seconds", None)
            if stages:
                out.update({f"stage_{k}_s": round(v, 4) for k, v in stages.items()})
            rep.count = s.scored + sum(s.dead_lettered.values())
        pipeline = holder.get("pipeline")
        if pipeline is not None:
            p = pipeline.stats
            out.update(
                batches=p.batches,
                events=p.events,
                enrich_s=round(p.enrich_seconds, 4),
                score_s=round(p.score_seconds, 4),
                hits=p.hits,
                misses=p.misses,
            )
            cache = cache_of(pipeline)
            if cache is not None:
                out.update(
                    cache_hits=cache.stats.hits,
                    cache_misses=cache.stats.misses,
                    cache_loads=cache.stats.loads,
                    cache_size=len(cache),
                )
        return out

    rep.assigned = assigned
    rep.extra = extra
    await app.run()


async def amain(args: argparse.Namespace) -> None:
    rep = Reporter(args.tick_s, args.lag_interval_s)
    ticker = asyncio.create_task(rep.run())
    try:
        if args.variant == "relay":
            await run_relay(args, rep)
        elif args.variant == "naive":
            await run_naive(args, rep, executor=False)
        elif args.variant == "naive_executor":
            await run_naive(args, rep, executor=True)
        else:
            await run_streamscore(args, rep)
    finally:
        rep.tick()
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker
        emit("stopped")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.workers")
    parser.add_argument("variant", choices=VARIANTS)
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--input", help="input topic (not for streamscore: STREAMSCORE_*)")
    parser.add_argument("--output", help="output topic")
    parser.add_argument("--group", help="consumer group")
    parser.add_argument("--mongo-url", default="mongodb://127.0.0.1:27017")
    parser.add_argument("--database")
    parser.add_argument("--model", default="models/model.txt")
    parser.add_argument("--max-batch", type=int, default=500)
    parser.add_argument(
        "--preload-ids",
        help="streamscore: file of entity ids to load into the entity cache before consuming "
        "(and again, after clearing it, on SIGUSR1)",
    )
    parser.add_argument("--tick-s", type=float, default=0.5)
    parser.add_argument("--lag-interval-s", type=float, default=0.01)
    parser.add_argument(
        "--profile", help="write a profile here (.prof: cProfile; .html/.txt: pyinstrument)"
    )
    args = parser.parse_args(argv)
    if args.variant != "streamscore":
        logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    if not args.profile:
        asyncio.run(amain(args))
        return 0
    if args.profile.endswith(".prof"):
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
        try:
            asyncio.run(amain(args))
        finally:
            profiler.disable()
            profiler.dump_stats(args.profile)
        return 0
    from pyinstrument import Profiler  # type: ignore[import-not-found, unused-ignore]

    profiler_pi = Profiler(async_mode="disabled", interval=0.0005)
    profiler_pi.start()
    try:
        asyncio.run(amain(args))
    finally:
        profiler_pi.stop()
        with open(args.profile, "w", encoding="utf-8") as out:
            if args.profile.endswith(".html"):
                out.write(profiler_pi.output_html())
            else:
                out.write(profiler_pi.output_text(unicode=False, show_all=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
