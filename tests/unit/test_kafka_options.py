"""Kafka client options from the settings: the OAUTHBEARER token provider reaches the clients."""

from __future__ import annotations

from settings import load_settings
from streams.kafka_options import client_options, token_provider


class StaticTokens:
    """A token provider as aiokafka expects one (``async token()``)."""

    async def token(self) -> str:
        return "t0ken"


def test_an_oauthbearer_token_provider_is_loaded_and_passed_to_the_clients() -> None:
    kafka = load_settings(
        kafka={
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": "OAUTHBEARER",
            "sasl_oauth_token_provider": f"{__name__}:StaticTokens",
        }
    ).kafka
    provider = token_provider(kafka)
    assert isinstance(provider, StaticTokens)
    options = client_options(kafka)
    assert options["sasl_mechanism"] == "OAUTHBEARER"
    assert isinstance(options["sasl_oauth_token_provider"], StaticTokens)


def test_no_provider_without_oauthbearer() -> None:
    kafka = load_settings().kafka
    assert token_provider(kafka) is None
    assert "sasl_oauth_token_provider" not in client_options(kafka)
