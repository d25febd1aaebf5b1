"""Running the scorer until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from aiokafka.errors import KafkaError
from confluent_kafka import KafkaException
from faststream import FastStream

from scoring import ModelLoadError
from settings import Settings
from streams import early_stop
from streams.app import build_app
from streams.exit_codes import ExitCode
from streams.refusals import refused_setting
from streams.runtime import StreamRuntime
from streams.topics import TopicsRefused

log = logging.getLogger(__name__)


def _reload_now(runtime: StreamRuntime) -> None:
    """SIGHUP: look at the model files (the main model's, the challenger's) now instead of
    waiting for the next poll."""
    if runtime.started is not None:
        task = asyncio.get_running_loop().create_task(runtime.started.scoring.reload_models())
        task.add_done_callback(lambda t: t.cancelled() or t.exception())


def _stop_if_held(app: FastStream | None = None) -> bool:
    """Whether a SIGTERM came before FastStream's handlers; stops ``app`` if so."""
    if not early_stop.held():
        return False
    log.info("SIGTERM during start-up: stopping before reading anything")
    if app is not None:
        app.exit()
    return True


async def run_scorer(settings: Settings) -> int:
    """Run the scorer; returns the process exit code.

    On SIGTERM/SIGINT it stops fetching, finishes (publishes and commits) the batch in hand
    within ``STREAMSCORE_STREAM__SHUTDOWN_TIMEOUT_S``, then closes its connections.
    """
    app, _broker, runtime = build_app(settings)
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGHUP, lambda: _reload_now(runtime))
    # A SIGTERM that came while importing and loading: stop now. The call_soon runs once
    # app.run() has installed FastStream's signal handlers, for one that comes in between.
    if _stop_if_held():
        return ExitCode.OK
    loop.call_soon(_stop_if_held, app)
    return await _run(app, runtime, settings)


async def _run_and_close(app: FastStream, runtime: StreamRuntime) -> None:
    try:
        await app.run()
    except BaseException:
        # A failed start (FastStream runs no shutdown hooks then): what the runtime opened is
        # closed while the loop runs, not left to asyncio.run's clean-up of generators.
        await runtime.close()
        raise


async def _run(app: FastStream, runtime: StreamRuntime, settings: Settings) -> int:
    """``app.run()``, with Kafka's refusals as exit codes."""
    try:
        await _run_and_close(app, runtime)
    except ModelLoadError:
        raise
    except TopicsRefused as exc:
        log.error("%s", exc, extra={"event": "halt", "exit_code": int(ExitCode.CONFIGURATION)})
        return ExitCode.CONFIGURATION
    except (KafkaError, KafkaException) as exc:
        if not refused_setting(exc):
            log.error("cannot use Kafka at %s: %r", settings.kafka.bootstrap_servers, exc)
            return 1
        log.error(
            "Kafka at %s refused a setting: %r",
            settings.kafka.bootstrap_servers,
            exc,
            extra={"event": "halt", "exit_code": int(ExitCode.CONFIGURATION)},
        )
        return ExitCode.CONFIGURATION
    return runtime.exit_code
