"""The HTTP phase: the streamscore sidecar against the naive FastAPI endpoint
(:mod:`bench.naive_api`), closed-loop clients at each concurrency level."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import sys
import time
from dataclasses import replace

import httpx

from bench.config import HTTP_LEVELS
from bench.context import RunContext
from bench.http_load import http_bodies, http_level
from bench.results import SidecarResult, SidecarServer
from bench.sysinfo import memory_kb
from bench.worker_proc import Worker, log, start_worker

Buckets = dict[float, float]
LAG_BUCKET = re.compile(
    r'^streamscore_event_loop_lag_seconds_bucket\{le="([^"]+)"\} ([0-9.e+]+)$', re.M
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def lag_buckets(base: str) -> Buckets:
    async with httpx.AsyncClient(timeout=5.0) as client:
        text = (await client.get(base + "/metrics")).text
    return {float(m.group(1)): float(m.group(2)) for m in LAG_BUCKET.finditer(text)}


def bucket_p99(before: Buckets, after: Buckets) -> float | None:
    """The upper bound (ms) of the bucket holding the 99th percentile of the samples taken
    between two scrapes of a cumulative histogram."""
    delta = sorted((le, after[le] - before.get(le, 0.0)) for le in after)
    count = delta[-1][1] if delta else 0.0
    if count <= 0:
        return None
    return next((le * 1000 for le, cumulative in delta if cumulative >= 0.99 * count), None)


async def wait_http(server: Worker, url: str, limit_s: float) -> None:
    deadline = time.monotonic() + limit_s
    async with httpx.AsyncClient(timeout=2.0) as client:
        while time.monotonic() < deadline and server.alive:
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(url)).status_code == 200:
                    return
            await asyncio.sleep(0.2)
    raise RuntimeError(f"{server.name} did not answer {url} within {limit_s}s:\n{server.tail()}")


async def warm_cache(base: str, entity_ids: list[str]) -> float:
    """Fill the sidecar's entity cache through its own API: list requests of 500 events, one
    per entity the load will use (each one pipeline call, one ``$in``)."""
    started = time.monotonic()
    async with httpx.AsyncClient(timeout=60.0) as client:
        for i in range(0, len(entity_ids), 500):
            body = [
                {"event_id": f"warm-{i + j}", "entity_id": e, "features": {}}
                for j, e in enumerate(entity_ids[i : i + 500])
            ]
            for _attempt in range(3):
                if (await client.post(base + "/predict", json=body)).status_code == 200:
                    break
    seconds = time.monotonic() - started
    log(f"  sidecar cache warmed with {len(entity_ids)} entities in {seconds:.1f}s")
    return round(seconds, 2)


def server_argv(name: str, port: int) -> tuple[list[str], str]:
    if name == "streamscore":
        argv = [sys.executable, "-m", "streamscore_cli.main", "api", "--port", str(port)]
        return argv, "/readyz"
    app = ["bench.naive_api:app", "--host", "127.0.0.1", "--port", str(port)]
    quiet = ["--no-access-log", "--log-level", "warning"]
    return [sys.executable, "-m", "uvicorn", *app, *quiet], "/healthz"


async def sidecar(ctx: RunContext) -> SidecarResult:
    profile = ctx.config.profile
    bodies = http_bodies(profile.http_bodies, seed=123)
    entity_ids = sorted({str(json.loads(b)["entity_id"]) for b in bodies})
    result = SidecarResult(profile.http_warmup_s, len(bodies), len(entity_ids))
    for name in ("streamscore", "naive"):
        port = free_port()
        argv, ready_path = server_argv(name, port)
        env = {**ctx.child_env("sidecar", ctx.group("sidecar")), "STREAMSCORE_LOG_LEVEL": "WARNING"}
        log(f"sidecar {name} on port {port}")
        server = await start_worker(f"api-{name}", argv, ctx.log_dir, env)
        ctx.workers.append(server)
        base = f"http://127.0.0.1:{port}"
        await wait_http(server, base + ready_path, 60)
        if name == "streamscore":
            result.cache_warmup_s = await warm_cache(base, entity_ids)
        await http_level(base + "/predict", 16, profile.http_warmup_s, bodies, offset=7_000)
        levels = []
        for i, concurrency in enumerate(HTTP_LEVELS):
            before = await lag_buckets(base) if name == "streamscore" else {}
            cpu0 = server.cpu()
            level = await http_level(
                base + "/predict", concurrency, profile.http_duration_s, bodies, offset=i * 1_000
            )
            spent = server.cpu() - cpu0
            per_1k = round(spent / level.requests * 1000, 4) if level.requests else None
            lag = bucket_p99(before, await lag_buckets(base)) if name == "streamscore" else None
            levels.append(replace(level, server_cpu_s_per_1k=per_1k, loop_lag_p99_ms=lag))
            log(
                f"  {name} c={concurrency}: {level.rps:,.0f} req/s, p50 {level.latency_ms.p50} "
                f"p99 {level.latency_ms.p99} ms, statuses {level.statuses}"
            )
        server.sample_memory()
        hwm = max(server.peak_rss_kb, memory_kb(server.pid).get("VmHWM", 0))
        await server.stop()
        result.servers[name] = SidecarServer(levels, round(hwm / 1024, 1))
    return result
