"""``python -m bench.workers VARIANT``: one consumer of the comparison, in its own process.

Every address, topic, group and database comes from the product's own settings
(``STREAMSCORE_*`` variables, read with :func:`settings.load_settings`): the bench sets them for
each child. VARIANT is one of ``relay``, ``relay_confluent`` (librdkafka), ``naive``,
``naive_executor``, ``cached`` (per-message, cached) and ``streamscore`` (either Kafka client,
by ``STREAMSCORE_KAFKA__CLIENT``); :mod:`bench.variants` says what each one is.

The process prints :mod:`bench.protocol` lines on stdout; SIGTERM/SIGINT stop it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import logging
import sys
from pathlib import Path

from bench.protocol import emit
from bench.variants.reporter import Reporter
from settings import load_settings

VARIANTS = ("relay", "relay_confluent", "naive", "naive_executor", "cached", "streamscore")


async def amain(args: argparse.Namespace) -> None:
    settings = load_settings()
    rep = Reporter(args.tick_s, args.lag_interval_s)
    ticker = asyncio.create_task(rep.run())
    preload: list[str] = args.preload
    try:
        if args.variant == "relay":
            from bench.variants.relay import run_relay

            await run_relay(settings, rep)
        elif args.variant == "relay_confluent":
            from bench.variants.relay_confluent import run_relay_confluent

            await run_relay_confluent(settings, rep)
        elif args.variant in ("naive", "naive_executor"):
            from bench.variants.naive import run_naive

            await run_naive(settings, rep, executor=args.variant == "naive_executor")
        elif args.variant == "cached":
            from bench.variants.cached import run_cached

            await run_cached(settings, rep, preload)
        else:
            from bench.variants.scorer import run_scorer

            await run_scorer(settings, rep, preload)
    finally:
        rep.tick()
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker
        emit("stopped")


def profiled(args: argparse.Namespace) -> None:
    """Run under cProfile (``.prof``) or pyinstrument (``.txt``/``.html``)."""
    path: str = args.profile
    if path.endswith(".prof"):
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
        try:
            asyncio.run(amain(args))
        finally:
            profiler.disable()
            profiler.dump_stats(path)
        return
    pyinstrument = importlib.import_module("pyinstrument")  # optional: not a dependency
    sampler = pyinstrument.Profiler(async_mode="disabled", interval=0.0005)
    sampler.start()
    try:
        asyncio.run(amain(args))
    finally:
        sampler.stop()
        html = path.endswith(".html")
        text = sampler.output_html() if html else sampler.output_text(unicode=False, show_all=True)
        Path(path).write_text(str(text), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.workers")
    parser.add_argument("variant", choices=VARIANTS)
    parser.add_argument(
        "--preload-ids",
        help="streamscore, cached: file of entity ids to load into the entity cache before "
        "consuming (streamscore: again, after clearing it, on SIGUSR1)",
    )
    parser.add_argument("--tick-s", type=float, default=0.5)
    parser.add_argument("--lag-interval-s", type=float, default=0.01)
    parser.add_argument("--profile", help="write a profile here (.prof, .txt or .html)")
    args = parser.parse_args(argv)
    args.preload = Path(args.preload_ids).read_text().split() if args.preload_ids else []
    if args.variant != "streamscore":
        logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    if args.profile:
        profiled(args)
    else:
        asyncio.run(amain(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
