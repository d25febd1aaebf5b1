"""librdkafka configuration derived from the settings (``STREAMSCORE_KAFKA__CLIENT=confluent``).

The same settings as the aiokafka client, in librdkafka's names: endpoints, security (TLS,
SASL PLAIN/SCRAM/GSSAPI/OAUTHBEARER) and the producer's safe defaults (``acks=all``,
idempotence, the codec, ``message.max.bytes`` = ``max_request_size``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from settings import KafkaSettings
from streams.kafka_options import token_provider

log = logging.getLogger(__name__)

OAUTH_TOKEN_LIFETIME_S = 300.0
"""How long librdkafka keeps a token from the provider before it asks again (the aiokafka
provider interface does not say when a token expires)."""


def client_config(kafka: KafkaSettings) -> dict[str, Any]:
    """Endpoints, client id, timeouts and security, shared by consumer, producer and admin."""
    config: dict[str, Any] = {
        "bootstrap.servers": kafka.bootstrap_servers,
        "client.id": kafka.client_id,
        "security.protocol": kafka.security_protocol.lower(),
        "socket.timeout.ms": kafka.request_timeout_ms,
    }
    if kafka.ssl_cafile:
        config["ssl.ca.location"] = str(kafka.ssl_cafile)
    if kafka.ssl_certfile:
        config["ssl.certificate.location"] = str(kafka.ssl_certfile)
    if kafka.ssl_keyfile:
        config["ssl.key.location"] = str(kafka.ssl_keyfile)
    if kafka.sasl_mechanism:
        config["sasl.mechanism"] = kafka.sasl_mechanism
        if kafka.sasl_username:
            config["sasl.username"] = kafka.sasl_username
        if kafka.sasl_password is not None:
            config["sasl.password"] = kafka.sasl_password.get_secret_value()
        if (provider := token_provider(kafka)) is not None:
            config["oauth_cb"] = _oauth_callback(provider)
    return config


def producer_config(kafka: KafkaSettings) -> dict[str, Any]:
    """Safe producer defaults: every write acknowledged by all in-sync replicas, idempotent,
    with the delivery bounded by ``delivery_timeout_s`` (the delivery layer re-sends after).
    A keyed record goes to the partition of Java's default partitioner (murmur2 of the key),
    as from aiokafka (:mod:`streams.partitioner`); librdkafka's own default hashes keys with
    CRC32, which would put an entity's predictions elsewhere."""
    return client_config(kafka) | {
        "error_cb": _log_client_error,
        "partitioner": "murmur2_random",
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": kafka.linger_ms,
        "compression.type": kafka.compression_type or "none",
        "message.max.bytes": kafka.max_request_size,
        "request.timeout.ms": kafka.request_timeout_ms,
        "delivery.timeout.ms": int(kafka.delivery_timeout_s * 1000),
    }


def _log_client_error(error: Any) -> None:
    """librdkafka's client-level errors (a broker down, a fatal producer error). Without this
    callback confluent-kafka raises them from ``poll``, which would end the thread polling
    for delivery reports; the records concerned fail through their reports instead."""
    fatal = bool(error.fatal())
    log.log(
        logging.ERROR if fatal else logging.WARNING,
        "Kafka client %s: %s",
        "fatal error" if fatal else "error",
        error.str(),
        extra={"event": "kafka_error", "code": error.name()},
    )


def _oauth_callback(provider: Any) -> Any:
    """librdkafka asks for tokens from its own thread: run the provider's coroutine there."""

    def callback(_config: str) -> tuple[str, float]:
        token = provider.token()
        if asyncio.iscoroutine(token):
            token = asyncio.run(token)
        return str(token), time.time() + OAUTH_TOKEN_LIFETIME_S

    return callback
