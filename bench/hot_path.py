"""The per-event Python path and the sidecar under closed-loop load, before against after.

    .venv/bin/python -m bench.hot_path events [--reps 5] [--events 5000]
    .venv/bin/python -m bench.hot_path sidecar [--runs 3] [--seconds 8]
                                              [--base DIR [--base-as-served]]

``events``: what the scorer does per event on its Python threads, step by step (parse +
validate a record, build the feature vector, the model, the prediction's JSON). Median of
``--reps`` passes over ``--events`` events (min-max), in µs per event. With ``--base DIR``
the same steps of that copy of the sources are measured first ("before").

``sidecar``: ``POST /predict`` at concurrency 1, 16 and 64 (the bench's minimal keep-alive
client, :func:`bench.http_load.http_level`), ``--runs`` times, median (min-max) of req/s,
p50 / p99, the sidecar's own loop-lag p99 (the upper bound of the histogram bucket holding
it, as ``make bench`` reads it) and the server process's CPU time per request. With ``--base
DIR`` (a copy of the sources to compare with, e.g. ``git archive HEAD | tar -x -C DIR``) each
run measures that copy first, on uvicorn's h11 parser and the asyncio loop it ran on (with
``--base-as-served``: on the same server as this checkout), then this checkout as
``streamscore api`` runs it.
The feature store is the server ``STREAMSCORE_MONGO__URL`` names, database
``STREAMSCORE_MONGO__DATABASE`` (seed it with ``streamscore seed``); the sidecar's cache is
filled through its own API before each server is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench.http_load import http_bodies, http_level
from bench.sidecar import bucket_p99, free_port, lag_buckets, warm_cache
from bench.worker_proc import log

LEVELS = (1, 16, 64)
ROOT = Path(__file__).resolve().parent.parent

SERVER = """
import sys, uvicorn
uvicorn.run("api.main:app_from_environment", factory=True, host="127.0.0.1",
            port=int(sys.argv[1]), log_config=None, access_log=False,
            http=sys.argv[2], loop=sys.argv[3])
"""


# ---------------------------------------------------------------------------------------------
# figures


def spread(values: Sequence[float], digits: int = 1) -> str:
    """``median (min-max)``."""
    if not values:
        return "-"
    med = statistics.median(values)
    return f"{med:,.{digits}f} ({min(values):,.{digits}f}-{max(values):,.{digits}f})"


# ---------------------------------------------------------------------------------------------
# events: the per-event Python path


def _records(count: int) -> list[bytes]:
    """Event records as the demo producer writes them (5% unknown entities)."""
    return [b.replace(b'"h-', b'"e-') for b in http_bodies(count, seed=7)]


def _per_event(step: Callable[[], object], count: int, reps: int) -> list[float]:
    """µs per event of ``step`` (which handles ``count`` events), one figure per pass."""
    step()  # warm
    out = []
    for _ in range(reps):
        started = time.perf_counter()
        step()
        out.append((time.perf_counter() - started) / count * 1e6)
    return out


def _stream_outputs(model: Any, now: datetime) -> Callable[..., list[bytes]]:
    """Predictions as the stream makes them and their JSON, from one batch's scores: through
    :mod:`scoring.rows` when the sources have it, else (earlier sources) validated
    ``Prediction`` objects and ``model_dump_json``."""
    try:
        from scoring.compute import _rows  # type: ignore[attr-defined,unused-ignore]

        def rows(batch: Any, scores: Any, hits: Any, times: Any) -> list[bytes]:
            encoded: list[bytes] = _rows(model, batch, scores, hits, times, now, None).encoded
            return encoded

        return rows
    except ImportError:
        from scoring.compute import _build  # type: ignore[attr-defined,unused-ignore]

        def objects(batch: Any, scores: Any, hits: Any, times: Any) -> list[bytes]:
            built = _build(model, batch, scores, hits, times, now, None)
            return [p.model_dump_json().encode() for p in built]

        return objects


def events_bench(count: int, reps: int, model_path: Path) -> dict[str, list[float]]:
    """Each step of the scorer's per-event Python path, the way the sources at hand do it
    (batches of 500, the stream's default)."""
    import schemas
    from schemas import Enrichment, InputEvent
    from scoring import load_model
    from scoring.vectors import assemble
    from streams.records import parse_record
    from streamscore_cli import demo_data

    records = _records(count)
    model = load_model(model_path)
    if hasattr(schemas, "capped"):  # the cap is a class of its own
        capped = schemas.capped(InputEvent, 1000)
        events = [capped.model_validate_json(r) for r in records]
    else:  # sources from before 2026-11-29 evening: the cap is a validation context
        limits = schemas.event_limits(1000)  # type: ignore[attr-defined]
        events = [InputEvent.model_validate_json(r, context=limits) for r in records]
    entities = demo_data.make_entities()
    stored: dict[str, Mapping[str, float] | None] = {
        entity_id: dict(zip(demo_data.ENTITY_FEATURES, map(float, row), strict=True))
        for entity_id, row in zip(entities.ids, entities.features, strict=True)
    }
    batches = [events[i : i + 500] for i in range(0, len(events), 500)]
    lookups = [{e.entity_id: stored.get(e.entity_id) for e in batch} for batch in batches]
    matrices = [
        assemble(b, lk, model.feature_names)[0] for b, lk in zip(batches, lookups, strict=True)
    ]
    scores = [model.predict(m) for m in matrices]
    outputs = _stream_outputs(model, datetime.now(UTC))
    hits = [
        [Enrichment.HIT if lookup.get(e.entity_id) else Enrichment.MISS for e in batch]
        for batch, lookup in zip(batches, lookups, strict=True)
    ]
    times = [[e.event_time for e in batch] for batch in batches]

    def predictions_json() -> list[bytes]:
        out: list[bytes] = []
        for i, batch in enumerate(batches):
            out.extend(outputs(batch, scores[i], hits[i], times[i]))
        return out

    steps: dict[str, Callable[[], object]] = {
        "parse + validate (streams.records.parse_record)": lambda: [
            parse_record(r, 1 << 20, 1000) for r in records
        ],
        "feature vectors (scoring.vectors.assemble)": lambda: [
            assemble(b, lk, model.feature_names) for b, lk in zip(batches, lookups, strict=True)
        ],
        "model (Booster.predict; for scale)": lambda: [model.predict(m) for m in matrices],
        "predictions and their JSON (what the stream sends)": predictions_json,
    }
    return {name: _per_event(step, count, reps) for name, step in steps.items()}


def _events_in(source: Path, args: argparse.Namespace) -> dict[str, list[float]]:
    """The events figures of the sources in ``source``, measured in a child process."""
    argv = [sys.executable, str(Path(__file__).resolve()), "events", "--raw"]
    argv += ["--events", str(args.events), "--reps", str(args.reps), "--model", str(args.model)]
    paths = [str(source), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, paths))}
    done = subprocess.run(argv, cwd=source, env=env, capture_output=True, check=True)
    figures: dict[str, list[float]] = json.loads(done.stdout)
    return figures


def print_events(runs: dict[str, dict[str, list[float]]], reps: int, count: int) -> None:
    print(f"µs per event: median of {reps} passes over {count} events (min-max)")
    names = list(dict.fromkeys(name for figures in runs.values() for name in figures))
    print("| step | " + " | ".join(runs) + " |")
    print("|---|" + "---:|" * len(runs))
    for name in names:
        cells = [spread(figures.get(name, []), 2) for figures in runs.values()]
        print(f"| {name} | " + " | ".join(cells) + " |")


# ---------------------------------------------------------------------------------------------
# sidecar


async def _start(
    name: str, source: Path, http: str, loop: str, port: int, log_dir: Path
) -> asyncio.subprocess.Process:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(source), os.environ.get("PYTHONPATH")])),
        "STREAMSCORE_LOG_LEVEL": "WARNING",
    }
    out = (log_dir / f"{name}-{port}.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        SERVER,
        str(port),
        http,
        loop,
        cwd=source,
        env=env,
        stdout=out,
        stderr=out,
    )
    deadline = time.monotonic() + 60
    async with httpx.AsyncClient(timeout=2.0) as client:
        while time.monotonic() < deadline and proc.returncode is None:
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200:
                    return proc
            await asyncio.sleep(0.2)
    proc.terminate()
    raise RuntimeError(f"{name} did not become ready; see {log_dir}")


async def _stop(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(2)
    try:
        await asyncio.wait_for(proc.wait(), 15)
    except TimeoutError:
        proc.kill()
        await proc.wait()


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _measure(
    name: str, source: Path, http: str, loop: str, args: argparse.Namespace, bodies: list[bytes]
) -> dict[int, dict[str, Any]]:
    port = free_port()
    proc = await _start(name, source, http, loop, port, args.log_dir)
    base = f"http://127.0.0.1:{port}"
    try:
        entity_ids = sorted({str(json.loads(b)["entity_id"]) for b in bodies})
        await warm_cache(base, entity_ids)
        await http_level(base + "/predict", 16, args.warmup, bodies, offset=7_000)
        out: dict[int, dict[str, Any]] = {}
        for i, concurrency in enumerate(LEVELS):
            before = await lag_buckets(base)
            cpu_before = _cpu_seconds(proc.pid)
            level = await http_level(
                base + "/predict", concurrency, args.seconds, bodies, offset=i * 1_000
            )
            cpu = _cpu_seconds(proc.pid) - cpu_before
            lag = bucket_p99(before, await lag_buckets(base))
            out[concurrency] = {
                "rps": level.rps,
                "p50": level.latency_ms.p50,
                "p99": level.latency_ms.p99,
                "lag_p99": lag,
                "cpu_us": cpu / max(level.rps * args.seconds, 1) * 1e6,
                "statuses": level.statuses,
            }
            log(
                f"  {name} c={concurrency}: {level.rps:,.0f} req/s, p50 {level.latency_ms.p50} "
                f"p99 {level.latency_ms.p99} ms, loop lag p99 <= {lag} ms, {level.statuses}"
            )
        return out
    finally:
        await _stop(proc)


async def sidecar_bench(args: argparse.Namespace) -> dict[str, list[dict[int, dict[str, Any]]]]:
    bodies = http_bodies(5_000, seed=123)
    variants: list[tuple[str, Path, str, str]] = []
    if args.base is not None:
        server = ("auto", "auto") if args.base_as_served else ("h11", "asyncio")
        variants.append(("before", args.base.resolve(), *server))
    if args.also_h11:
        variants.append(("after, h11 + asyncio loop", ROOT, "h11", "asyncio"))
    variants.append(("after", ROOT, "auto", "auto"))
    runs: dict[str, list[dict[int, dict[str, Any]]]] = {name: [] for name, *_ in variants}
    for run in range(args.runs):
        for name, source, http, loop in variants:
            log(f"run {run + 1}/{args.runs}: {name} ({source}, http={http}, loop={loop})")
            runs[name].append(await _measure(name, source, http, loop, args, bodies))
    return runs


def print_sidecar(runs: dict[str, list[dict[int, dict[str, Any]]]]) -> None:
    print(
        "| variant | concurrency | req/s | p50 ms | p99 ms | loop lag p99 ms (bucket) "
        "| server CPU µs / request |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, results in runs.items():
        for c in LEVELS:
            got = [r[c] for r in results]

            def col(key: str, got: list[dict[str, Any]] = got) -> list[float]:
                return [float(g[key]) for g in got if g[key] is not None]

            print(
                f"| {name} | {c} | {spread(col('rps'), 0)} | {spread(col('p50'))} "
                f"| {spread(col('p99'))} | {spread(col('lag_p99'))} | {spread(col('cpu_us'), 0)} |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.hot_path", description=__doc__)
    sub = parser.add_subparsers(dest="what", required=True)
    ev = sub.add_parser("events", help="per-event µs of each step")
    ev.add_argument("--events", type=int, default=5_000)
    ev.add_argument("--reps", type=int, default=5)
    ev.add_argument("--model", type=Path, default=None)
    ev.add_argument("--base", type=Path, default=None, help="sources to compare with")
    ev.add_argument("--raw", action="store_true", help=argparse.SUPPRESS)
    sc = sub.add_parser("sidecar", help="POST /predict at concurrency 1, 16, 64")
    sc.add_argument("--runs", type=int, default=3)
    sc.add_argument("--seconds", type=float, default=8.0)
    sc.add_argument("--warmup", type=float, default=5.0)
    sc.add_argument("--base", type=Path, default=None, help="sources to compare with")
    sc.add_argument(
        "--base-as-served",
        action="store_true",
        help="measure --base on the server this checkout uses (httptools, uvloop), not h11",
    )
    sc.add_argument(
        "--also-h11",
        action="store_true",
        help="also measure this checkout on uvicorn's h11 parser and the asyncio loop",
    )
    sc.add_argument("--log-dir", type=Path, default=Path("/tmp/bench-hot-path"))
    sc.add_argument("--json", type=Path, default=None, help="also write the raw figures here")
    args = parser.parse_args()
    stamp = f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, load average {os.getloadavg()[0]:.1f}"
    if args.what == "events":
        if args.model is None:
            from settings import load_settings

            args.model = load_settings().model.path
        args.model = Path(args.model).resolve()
        if args.raw:
            print(json.dumps(events_bench(args.events, args.reps, args.model)))
            return
        runs: dict[str, dict[str, list[float]]] = {}
        if args.base is not None:
            runs["before"] = _events_in(args.base.resolve(), args)
        runs["after"] = _events_in(ROOT, args)
        print(stamp)
        print_events(runs, args.reps, args.events)
        return
    args.log_dir.mkdir(parents=True, exist_ok=True)
    results = asyncio.run(sidecar_bench(args))
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))
    print(stamp)
    print_sidecar(results)


if __name__ == "__main__":
    main()
