"""The sidecar under abuse: event-loop stalls from hostile bodies, and load shedding at 4x.

    .venv/bin/python -m bench.sidecar_abuse [--model models/model.txt] [--part all|attack|shed]
                                            [--json bench/results/sidecar_abuse.json]

The sidecar runs in its own process (uvicorn, one worker), as ``streamscore api`` does, but on an
in-memory feature store with a fixed latency instead of MongoDB, so that what is measured is the
sidecar and the store's speed is a known constant:

* **attack**: a probe asks ``GET /healthz`` every 20 ms on its own connection (its latency shows
  every stall of the event loop) while 8 clients send, back to back, 1 MB bodies holding 100,000
  invalid feature values: as one event, and as 1,000 events of 100 features each.
* **shed**: the store answers each query after 20 ms and at most 8 queries run at once
  (``STREAMSCORE_SCORING__MAX_CONCURRENT_QUERIES``), batching off and no cache, so the sidecar's
  capacity is about 400 requests/s. First closed-loop clients as many as ``max_in_flight``
  (at capacity), then an open-loop arrival rate of 4x the measured capacity.
* **deadline**: one request against a store that takes 30 s.

The HTTP client is a minimal HTTP/1.1 client on asyncio streams (keep-alive connections,
pre-built requests) so that the load generator costs far less CPU than the server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.abuse_client import Outcomes, Pool, get, post, timed
from bench.abuse_server import serve, sidecar
from bench.results import percentiles

# ------------------------------------------------------------------------------ attack


def attack_bodies(max_bytes: int) -> dict[str, bytes]:
    """~1 MB bodies with 100,000 feature values that are all invalid (strings)."""
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    names = [a + b + c for a in alphabet for b in alphabet for c in alphabet][:100_000]
    one = '{"entity_id":"user-1","features":{' + ",".join(f'"{n}":""' for n in names) + "}}"
    events = [
        '{"entity_id":"user-1","features":{'
        + ",".join(f'"{n}":""' for n in names[i * 100 : (i + 1) * 100])
        + "}}"
        for i in range(1_000)
    ]
    many = "[" + ",".join(events) + "]"
    bodies = {"one event, 100k invalid features": one, "1,000 events x 100": many}
    for name, body in bodies.items():
        assert len(body) <= max_bytes, (name, len(body))
    return {name: body.encode() for name, body in bodies.items()}


async def probe(port: int, seconds: float, out: Outcomes) -> None:
    pool = Pool(port)
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        await timed(pool, get("/healthz"), out)
        await asyncio.sleep(0.02)
    out.ended = time.perf_counter()
    await pool.close()


async def attacker(port: int, body: bytes, seconds: float, out: Outcomes, sizes: list[int]) -> None:
    pool = Pool(port)
    raw = post("/predict", body)
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        answer = await timed(pool, raw, out)
        if answer is not None:
            sizes.append(len(answer[1]))
    out.ended = time.perf_counter()
    await pool.close()


async def run_attack(model_path: Path) -> dict[str, Any]:
    results: dict[str, Any] = {}
    async with sidecar(model_path, 0.0, {}) as port:
        quiet = Outcomes()
        await probe(port, 3.0, quiet)
        results["healthz, no attack"] = quiet.summary()
        for name, body in attack_bodies(1_048_576).items():
            seen, hostile = Outcomes(), Outcomes()
            sizes: list[int] = []
            await asyncio.gather(
                probe(port, 8.0, seen),
                *(attacker(port, body, 8.0, hostile, sizes) for _ in range(8)),
            )
            hostile.ended = max(hostile.ended, seen.ended)
            results[f"8 clients: {name}"] = {
                "body_bytes": len(body),
                "healthz": seen.summary(),
                "hostile": hostile.summary(),
                "response_bytes_max": max(sizes, default=0),
            }
    return results


# ------------------------------------------------------------------------------ shedding


async def closed_loop(port: int, clients: int, seconds: float) -> Outcomes:
    out = Outcomes()
    raw = post("/predict", b'{"entity_id": "user-1", "features": {"amount": 12.5}}')
    end = time.perf_counter() + seconds

    async def client() -> None:
        pool = Pool(port)
        while time.perf_counter() < end:
            await timed(pool, raw, out)
        await pool.close()

    await asyncio.gather(*(client() for _ in range(clients)))
    out.ended = time.perf_counter()
    return out


async def open_loop(port: int, rate: float, seconds: float) -> Outcomes:
    """Arrivals at ``rate`` per second (Poisson), each on an idle or a new connection."""
    out = Outcomes()
    pool = Pool(port)
    raw = post("/predict", b'{"entity_id": "user-1", "features": {"amount": 12.5}}')
    rng = random.Random(7)
    tasks: set[asyncio.Task[Any]] = set()
    start = time.perf_counter()
    next_at = start
    while next_at < start + seconds:
        delay = next_at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(timed(pool, raw, out))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        next_at += rng.expovariate(rate)
    await asyncio.gather(*tasks)
    out.ended = time.perf_counter()
    await pool.close()
    return out


async def run_shed(model_path: Path) -> dict[str, Any]:
    in_flight = 16
    env = {
        "STREAMSCORE_API__BATCHING_ENABLED": "false",
        "STREAMSCORE_API__MAX_IN_FLIGHT": str(in_flight),
        "STREAMSCORE_API__REQUEST_TIMEOUT_S": "2",
        "STREAMSCORE_SCORING__MAX_CONCURRENT_QUERIES": "8",
    }
    async with sidecar(model_path, 0.020, env) as port:
        await closed_loop(port, in_flight, 2.0)  # warm-up
        at_capacity = await closed_loop(port, in_flight, 10.0)
        capacity = at_capacity.rate(200)
        overload = await open_loop(port, 4 * capacity, 10.0)
    p99_cap = percentiles(at_capacity.latencies_ms.get(200, []), (99,))["p99"]
    p99_over = percentiles(overload.latencies_ms.get(200, []), (99,))["p99"]
    shed = percentiles(overload.latencies_ms.get(503, []), (50, 99, 100))
    return {
        "capacity_rps": round(capacity, 1),
        "at capacity": at_capacity.summary(),
        "offered_rps_at_4x": round(4 * capacity, 1),
        "at 4x capacity": overload.summary(),
        "accepted_p99_ms": {"at capacity": p99_cap, "at 4x": p99_over},
        "accepted_p99_ratio": round(p99_over / p99_cap, 2) if p99_cap and p99_over else None,
        "shed_ms": shed,
    }


async def run_deadline(model_path: Path) -> dict[str, Any]:
    env = {"STREAMSCORE_API__REQUEST_TIMEOUT_S": "1"}
    async with sidecar(model_path, 30.0, env) as port:
        out = Outcomes()
        pool = Pool(port)
        answer = await timed(pool, post("/predict", b'{"entity_id": "user-1"}'), out)
        await pool.close()
    status, body = answer if answer is not None else (0, b"")
    ms = next(iter(out.latencies_ms.values()), [0.0])[0]
    return {
        "store_latency_s": 30,
        "status": status,
        "answered_after_ms": round(ms, 1),
        "body": body[:200].decode(errors="replace"),
    }


# ------------------------------------------------------------------------------ main


def ensure_model(path: Path) -> Path:
    if path.is_file():
        return path
    from streamscore_cli.train import train

    target = Path(tempfile.mkdtemp(prefix="sidecar-abuse-")) / "model.txt"
    train(target, rows=20_000, trees=40)
    return target


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    model_path = ensure_model(Path(args.model))
    results: dict[str, Any] = {}
    if args.part in {"all", "attack"}:
        results["attack"] = await run_attack(model_path)
        print(json.dumps({"attack": results["attack"]}, indent=1), flush=True)
    if args.part in {"all", "shed"}:
        results["shed"] = await run_shed(model_path)
        print(json.dumps({"shed": results["shed"]}, indent=1), flush=True)
    if args.part in {"all", "deadline"}:
        results["deadline"] = await run_deadline(model_path)
        print(json.dumps({"deadline": results["deadline"]}, indent=1), flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--model", default="models/model.txt")
    parser.add_argument("--part", choices=["all", "attack", "shed", "deadline"], default="all")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--store-latency-ms", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, Path(args.model), args.store_latency_ms / 1000)
        return
    results = asyncio.run(main_async(args))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
