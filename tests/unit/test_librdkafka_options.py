"""The settings in librdkafka's names: librdkafka itself accepts every mapped configuration
(it refuses unknown keys and bad values when a client is created), and the values are ours."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer

from settings import load_settings
from streams.librdkafka_options import client_config, producer_config


class StaticTokens:
    """A token provider as aiokafka expects one (``async token()``)."""

    async def token(self) -> str:
        return "t0ken"


SECURITY: dict[str, dict[str, Any]] = {
    "plaintext": {},
    "sasl-plain": {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "PLAIN",
        "sasl_username": "scorer",
        "sasl_password": "s3cret",
    },
    "sasl-scram-256-tls": {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-256",
        "sasl_username": "scorer",
        "sasl_password": "s3cret",
    },
    "sasl-scram-512": {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_username": "scorer",
        "sasl_password": "s3cret",
    },
    "oauthbearer": {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "OAUTHBEARER",
        "sasl_oauth_token_provider": f"{__name__}:StaticTokens",
    },
}


@pytest.mark.parametrize("name", SECURITY)
def test_librdkafka_accepts_the_mapped_configuration(name: str) -> None:
    kafka = load_settings(kafka={**SECURITY[name], "compression_type": "zstd"}).kafka
    Producer(producer_config(kafka)).flush(0)
    Consumer(client_config(kafka) | {"group.id": "g"}).close()


def test_producer_defaults_are_the_safe_ones() -> None:
    kafka = load_settings(kafka={"max_request_size": 2_000_000, "linger_ms": 7}).kafka
    config = producer_config(kafka)
    assert config["acks"] == "all"
    assert config["partitioner"] == "murmur2_random"  # Java's default, as aiokafka's
    assert config["enable.idempotence"] is True
    assert config["compression.type"] == "none"
    assert config["message.max.bytes"] == 2_000_000
    assert config["linger.ms"] == 7
    assert config["delivery.timeout.ms"] == int(kafka.delivery_timeout_s * 1000)


def test_sasl_and_tls_values_reach_librdkafka_names(tmp_path: Path) -> None:
    ca, cert, key = (tmp_path / n for n in ("ca.pem", "cert.pem", "key.pem"))
    for path in (ca, cert, key):
        path.write_text("-----BEGIN CERTIFICATE-----\n")  # files must exist to be taken
    kafka = load_settings(
        kafka={
            **SECURITY["sasl-scram-256-tls"],
            "ssl_cafile": ca,
            "ssl_certfile": cert,
            "ssl_keyfile": key,
        }
    ).kafka
    config = client_config(kafka)
    assert config["security.protocol"] == "sasl_ssl"
    assert config["sasl.mechanism"] == "SCRAM-SHA-256"
    assert (config["sasl.username"], config["sasl.password"]) == ("scorer", "s3cret")
    assert config["ssl.ca.location"] == str(ca)
    assert config["ssl.certificate.location"] == str(cert)
    assert config["ssl.key.location"] == str(key)


def test_oauthbearer_tokens_come_from_the_provider() -> None:
    kafka = load_settings(kafka=SECURITY["oauthbearer"]).kafka
    token, expires = client_config(kafka)["oauth_cb"]("")
    assert token == "t0ken"
    assert expires > 0


@pytest.mark.parametrize("transaction_timeout_ms", [1_000, 15_000, 60_000])
def test_librdkafka_takes_the_transactional_configuration_for_any_transaction_timeout(
    transaction_timeout_ms: int,
) -> None:
    """librdkafka refuses socket.timeout.ms above transaction.timeout.ms + 100, and a delivery
    timeout above the transaction timeout; the settings take any transaction timeout."""
    from confluent_kafka import Producer

    from streams.librdkafka_transactions import transactional_config

    settings = load_settings(
        kafka={"client": "confluent", "transaction_timeout_ms": transaction_timeout_ms},
        stream={"delivery": "exactly_once"},
    )
    config = transactional_config(settings, "t-1") | {"bootstrap.servers": "127.0.0.1:1"}
    Producer(config)  # raises KafkaException for a configuration librdkafka refuses
    assert config["socket.timeout.ms"] <= transaction_timeout_ms + 100
