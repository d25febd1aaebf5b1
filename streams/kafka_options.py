"""Kafka client options derived from the settings (shared by broker, admin and CLI tools)."""

from __future__ import annotations

import importlib
import ssl
from typing import Any

from faststream.security import (
    SASLGSSAPI,
    BaseSecurity,
    SASLOAuthBearer,
    SASLPlaintext,
    SASLScram256,
    SASLScram512,
)

from settings import KafkaSettings
from streams.partitioner import KeyHashPartitioner


def token_provider(kafka: KafkaSettings) -> Any:
    """The OAUTHBEARER token provider named by ``sasl_oauth_token_provider``
    (``package.module:attribute``: an aiokafka ``AbstractTokenProvider`` instance, or a class
    or factory called without arguments); None unless the mechanism is OAUTHBEARER."""
    path = kafka.sasl_oauth_token_provider
    if kafka.sasl_mechanism != "OAUTHBEARER" or not path:
        return None
    module, _, attribute = path.partition(":")
    provider = getattr(importlib.import_module(module), attribute)
    if isinstance(provider, type) or (callable(provider) and not hasattr(provider, "token")):
        return provider()
    return provider


def client_options(kafka: KafkaSettings) -> dict[str, Any]:
    """aiokafka keyword options: endpoints, client id and the security pass-through."""
    options: dict[str, Any] = {
        "bootstrap_servers": kafka.bootstrap_servers,
        "security_protocol": kafka.security_protocol,
        "request_timeout_ms": kafka.request_timeout_ms,
    }
    if kafka.security_protocol in {"SSL", "SASL_SSL"}:
        context = ssl.create_default_context(
            cafile=str(kafka.ssl_cafile) if kafka.ssl_cafile else None
        )
        if kafka.ssl_certfile:
            context.load_cert_chain(
                str(kafka.ssl_certfile), str(kafka.ssl_keyfile) if kafka.ssl_keyfile else None
            )
        options["ssl_context"] = context
    if kafka.sasl_mechanism:
        options["sasl_mechanism"] = kafka.sasl_mechanism
        if kafka.sasl_username:
            options["sasl_plain_username"] = kafka.sasl_username
        if kafka.sasl_password is not None:
            options["sasl_plain_password"] = kafka.sasl_password.get_secret_value()
        if (provider := token_provider(kafka)) is not None:
            options["sasl_oauth_token_provider"] = provider
    return options


RECORD_BATCH_BYTES = 256 * 1024
"""Bytes per record batch and partition (aiokafka's ``max_batch_size``, 16 KiB by default).
A scored batch of 500 puts about 32 KiB of predictions on each of 4 partitions; aiokafka adds
a batch for a partition only once the one before it was drained into a request, so with 16
KiB batches a partition's second and third waited for a broker round trip each."""


def record_batch_bytes(kafka: KafkaSettings) -> int:
    """:data:`RECORD_BATCH_BYTES`, never more than the producer's request limit."""
    return min(RECORD_BATCH_BYTES, kafka.max_request_size)


def producer_options(kafka: KafkaSettings) -> dict[str, Any]:
    """Safe producer defaults: every write acknowledged by all in-sync replicas, idempotent;
    keys partitioned as Kafka's default partitioner does, each key hashed once."""
    return {
        "acks": "all",
        "partitioner": KeyHashPartitioner(),
        "max_batch_size": record_batch_bytes(kafka),
        "enable_idempotence": True,
        "linger_ms": kafka.linger_ms,
        "compression_type": kafka.compression_type,
        "max_request_size": kafka.max_request_size,
    }


def broker_security(kafka: KafkaSettings) -> BaseSecurity | None:
    """The same security options, in the form FastStream's ``KafkaBroker`` takes them."""
    options = client_options(kafka)
    context = options.get("ssl_context")
    username = kafka.sasl_username or ""
    password = kafka.sasl_password.get_secret_value() if kafka.sasl_password else ""
    match kafka.sasl_mechanism:
        case "PLAIN":
            return SASLPlaintext(username, password, ssl_context=context)
        case "SCRAM-SHA-256":
            return SASLScram256(username, password, ssl_context=context)
        case "SCRAM-SHA-512":
            return SASLScram512(username, password, ssl_context=context)
        case "OAUTHBEARER":
            return SASLOAuthBearer(ssl_context=context)
        case "GSSAPI":
            return SASLGSSAPI(ssl_context=context)
    return BaseSecurity(ssl_context=context) if context is not None else None
