"""The scorer as a FastStream app: a batched subscriber around :class:`StreamRuntime`."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from aiokafka.structs import ConsumerRecord
from faststream import AckPolicy, FastStream
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage

from scoring.resources import open_pipeline
from scoring.service import PipelineFactory
from settings import Settings
from streams.fetch_guard import GuardedKafkaBroker
from streams.kafka_options import broker_security, token_provider
from streams.outputs import OutputsFactory, kafka_producer_outputs
from streams.runtime import StreamRuntime

log = logging.getLogger(__name__)


async def headerless_batch_parser(records: tuple[Any, ...], original: Any) -> Any:
    """Build FastStream's batch message without letting it read any header.

    FastStream's batch parser decodes every header value as UTF-8 and raises on a null or
    binary one; its consume loop then logs and drops the whole batch, and the next commit would
    move past it. Headers are not part of the event contract, so FastStream gets header-less
    stand-ins of the first and last record (all it reads besides headers) and the handler gets
    the original records, headers untouched.
    """
    ends = (records[0], records[-1]) if records else ()
    message = await original(
        tuple(replace(r, headers=()) if isinstance(r, ConsumerRecord) else r for r in ends)
    )
    message.raw_message = records
    return message


async def no_body(_message: Any) -> None:
    """The processor reads raw record bytes itself; FastStream decodes nothing."""
    return


def build_app(
    settings: Settings,
    pipeline_factory: PipelineFactory = open_pipeline,
    broker: KafkaBroker | None = None,
    outputs: OutputsFactory = kafka_producer_outputs,
) -> tuple[FastStream, KafkaBroker, StreamRuntime]:
    """The scorer as a FastStream app.

    FastStream's broker only consumes (through the fetch guard); outputs go through
    ``outputs`` (one idempotent aiokafka producer by default). Tests inject FastStream's
    in-memory broker and :func:`streams.testing.broker_outputs`.
    """
    kafka, stream = settings.kafka, settings.stream
    runtime = StreamRuntime(settings, pipeline_factory, outputs, exit_app=lambda: app.exit())
    broker = broker or GuardedKafkaBroker(
        kafka.bootstrap_servers,
        guard=runtime.fetch_guard,
        client_id=kafka.client_id,
        request_timeout_ms=kafka.request_timeout_ms,
        security=broker_security(kafka),
        sasl_oauth_token_provider=token_provider(kafka),
        allow_auto_create_topics=False,
        graceful_timeout=stream.shutdown_timeout_s,
        logger=log,
        log_level=logging.DEBUG,
        consumer_only=True,
    )

    @broker.subscriber(
        kafka.input_topic,
        batch=True,
        group_id=kafka.group_id,
        max_records=stream.max_batch_size,
        batch_timeout_ms=stream.max_batch_wait_ms,
        auto_offset_reset=kafka.auto_offset_reset,
        session_timeout_ms=kafka.session_timeout_ms,
        max_poll_interval_ms=kafka.max_poll_interval_ms,
        ack_policy=AckPolicy.MANUAL,
        parser=headerless_batch_parser,
        decoder=no_body,
    )
    async def score_batch(msg: KafkaMessage) -> None:
        await runtime.handle(msg.raw_message, msg.consumer, msg.ack, msg.nack)

    async def on_startup() -> None:
        await runtime.start(broker)

    app = FastStream(
        broker,
        logger=log,
        on_startup=[on_startup],
        on_shutdown=[runtime.drain],
        after_shutdown=[runtime.close],
    )
    return app, broker, runtime
