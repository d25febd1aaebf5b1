"""Kafka client options derived from the settings (shared by broker, admin and CLI tools)."""

from __future__ import annotations

import ssl
from typing import Any

from settings import KafkaSettings


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
    return options


def producer_options(kafka: KafkaSettings) -> dict[str, Any]:
    """Safe producer defaults: every write acknowledged by all in-sync replicas, idempotent."""
    return {
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": kafka.linger_ms,
        "compression_type": kafka.compression_type,
    }
