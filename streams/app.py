"""The scorer as a FastStream app: a batched subscriber around :class:`StreamRuntime`."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from aiokafka.structs import ConsumerRecord
from faststream import AckPolicy, FastStream
from faststream.confluent import KafkaBroker as ConfluentBroker
from faststream.confluent.annotations import KafkaMessage as ConfluentMessage
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage

from scoring.resources import open_pipeline
from scoring.service import PipelineFactory
from settings import Settings
from streams.fetch_guard import GuardedKafkaBroker
from streams.kafka_options import broker_security, token_provider
from streams.librdkafka_consumer import GuardedBatchMessage, GuardedConfluentBroker
from streams.librdkafka_options import client_config
from streams.librdkafka_outputs import librdkafka_producer_outputs
from streams.outputs import OutputsFactory, kafka_producer_outputs
from streams.runtime import StreamRuntime

log = logging.getLogger(__name__)

_NOT_CREATING = ("Auto create topics is disabled", "Topic creation is skipped")


class TopicsCreatedFilter(logging.Filter):
    """FastStream warns at every start that it does not create topics. With
    ``STREAMSCORE_KAFKA__CREATE_TOPICS`` (the default) the scorer creates its topics itself
    before it consumes (:func:`streams.topics.ensure_topics`), so the warning says nothing
    true: it is logged at DEBUG instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.WARNING and record.getMessage().startswith(_NOT_CREATING):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return log.isEnabledFor(logging.DEBUG)
        return True


TOPICS_CREATED = TopicsCreatedFilter()


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
    outputs: OutputsFactory | None = None,
) -> tuple[FastStream, KafkaBroker | ConfluentBroker, StreamRuntime]:
    """The scorer as a FastStream app, on the client ``settings.kafka.client`` names.

    FastStream's broker only consumes (through the fetch guard); outputs go through
    ``outputs`` (by default one idempotent producer of the same client). Tests inject
    FastStream's in-memory broker and :func:`streams.testing.broker_outputs`.
    """
    confluent = broker is None and settings.kafka.client == "confluent"
    if settings.kafka.create_topics:
        log.addFilter(TOPICS_CREATED)
    else:
        log.removeFilter(TOPICS_CREATED)
    if outputs is None:
        outputs = librdkafka_producer_outputs if confluent else kafka_producer_outputs
    runtime = StreamRuntime(settings, pipeline_factory, outputs, exit_app=lambda: app.exit())
    consuming = (
        _confluent_subscriber(settings, runtime)
        if confluent
        else _aiokafka_subscriber(settings, runtime, broker)
    )

    async def on_startup() -> None:
        await runtime.start(consuming)

    app = FastStream(
        consuming,
        logger=log,
        on_startup=[on_startup],
        on_shutdown=[runtime.drain],
        after_shutdown=[runtime.close],
    )
    return app, consuming, runtime


def _aiokafka_subscriber(
    settings: Settings, runtime: StreamRuntime, broker: KafkaBroker | None
) -> KafkaBroker:
    kafka, stream = settings.kafka, settings.stream
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
        isolation_level=kafka.input_isolation,
        session_timeout_ms=kafka.session_timeout_ms,
        max_poll_interval_ms=kafka.max_poll_interval_ms,
        ack_policy=AckPolicy.MANUAL,
        parser=headerless_batch_parser,
        decoder=no_body,
    )
    async def score_batch(msg: KafkaMessage) -> None:
        await runtime.handle(msg.raw_message, msg.consumer, msg.ack, msg.nack)

    return broker


def _confluent_subscriber(settings: Settings, runtime: StreamRuntime) -> ConfluentBroker:
    """FastStream's Confluent broker consuming through :class:`GuardedConfluentConsumer`."""
    kafka, stream = settings.kafka, settings.stream
    broker = GuardedConfluentBroker(
        kafka.bootstrap_servers,
        guard=runtime.fetch_guard,
        client_id=kafka.client_id,
        request_timeout_ms=kafka.request_timeout_ms,
        config=client_config(kafka),
        allow_auto_create_topics=False,
        graceful_timeout=stream.shutdown_timeout_s,
        logger=log,
        log_level=logging.DEBUG,
    )

    @broker.subscriber(
        kafka.input_topic,
        batch=True,
        group_id=kafka.group_id,
        max_records=stream.max_batch_size,
        polling_interval=stream.max_batch_wait_ms / 1000,
        auto_offset_reset=kafka.auto_offset_reset,
        isolation_level=kafka.input_isolation,
        session_timeout_ms=kafka.session_timeout_ms,
        max_poll_interval_ms=kafka.max_poll_interval_ms,
        ack_policy=AckPolicy.MANUAL,
        parser=broker.batch_parser,
        decoder=no_body,
    )
    async def score_batch(msg: ConfluentMessage) -> None:
        records = msg.records if isinstance(msg, GuardedBatchMessage) else ()
        await runtime.handle(records, msg.consumer, msg.ack, msg.nack)

    return broker
