"""Running the scorer until SIGTERM/SIGINT."""

from __future__ import annotations

import logging

from aiokafka.errors import KafkaError

from scoring import ModelLoadError
from settings import Settings
from streams.app import build_app

log = logging.getLogger(__name__)


async def run_scorer(settings: Settings) -> int:
    """Run the scorer; returns the process exit code.

    On SIGTERM/SIGINT it stops fetching, finishes (publishes and commits) the batch in hand
    within ``STREAMSCORE_STREAM__SHUTDOWN_TIMEOUT_S``, then closes its connections.
    """
    app, _broker, runtime = build_app(settings)
    try:
        await app.run()
    except ModelLoadError:
        raise
    except KafkaError as exc:
        log.error("cannot use Kafka at %s: %r", settings.kafka.bootstrap_servers, exc)
        return 1
    return runtime.exit_code
