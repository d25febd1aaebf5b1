"""The abuse benchmark's sidecar: the real app in its own process, on an in-memory feature store
with a fixed latency instead of MongoDB (so the store's speed is a known constant)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path

from bench.abuse_client import KEY, Conn, get
from scoring.feature_store import StoredFeatures

STORED = {"user-1": {"account_age_days": 12.0, "avg_amount_30d": 30.0}}


class SlowStore:
    """A feature source that answers after a fixed delay (stands in for MongoDB)."""

    def __init__(self, latency_s: float) -> None:
        self.latency_s = latency_s

    async def fetch(self, entity_ids: Sequence[str]) -> dict[str, StoredFeatures]:
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        return {i: STORED[i] for i in entity_ids if i in STORED}

    async def ping(self) -> None:
        return None

    def use_features(self, feature_names: Sequence[str]) -> None:
        return None


def serve(port: int, model_path: Path, store_latency_s: float) -> None:
    """Run the sidecar on ``127.0.0.1:port`` (settings from the environment)."""
    import uvicorn

    from api.app import create_app
    from scoring import ScoringPipeline, load_model
    from settings import Settings, load_settings
    from telemetry import logs

    settings = load_settings(model={"path": model_path})
    logs.configure("WARNING")

    @asynccontextmanager
    async def factory(s: Settings) -> AsyncIterator[ScoringPipeline]:
        with ThreadPoolExecutor(s.scoring.executor_threads) as executor:
            yield ScoringPipeline(
                load_model(model_path),
                SlowStore(store_latency_s),
                executor,
                cache=None,
                max_concurrent_queries=s.scoring.max_concurrent_queries,
            )

    app = create_app(settings, factory)
    uvicorn.run(app, host="127.0.0.1", port=port, log_config=None, access_log=False)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@asynccontextmanager
async def sidecar(
    model_path: Path, store_latency_s: float, env: Mapping[str, str]
) -> AsyncIterator[int]:
    port = free_port()
    process = subprocess.Popen(  # noqa: ASYNC220 (started once, before any load)
        [
            sys.executable,
            "-m",
            "bench.sidecar_abuse",
            "--serve",
            str(port),
            "--model",
            str(model_path),
            "--store-latency-ms",
            str(store_latency_s * 1000),
        ],
        env={**os.environ, "STREAMSCORE_API__API_KEY": KEY, **env},
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(OSError):
                conn = await Conn.open(port)
                status, _ = await conn.request(get("/healthz"))
                await conn.close()
                if status == 200:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the sidecar did not start")
            await asyncio.sleep(0.2)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
