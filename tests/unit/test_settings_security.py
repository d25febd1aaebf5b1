"""Settings that cannot be safe or cannot work are refused at start, without echoing secrets."""

from __future__ import annotations

import importlib.util

import pytest
from pydantic import ValidationError

from schemas import ErrorKind, InputEvent, capped
from schemas.validation import field_problems
from settings import load_settings
from streams.records import Rejection, parse_record

PASSWORD = "hunter2-very-secret"


@pytest.mark.parametrize("key", ["", "short", "x" * 15])
def test_an_empty_or_short_api_key_is_refused(key: str) -> None:
    with pytest.raises(ValidationError, match="at least 16 characters"):
        load_settings(api={"api_key": key})


def test_an_empty_api_key_from_the_environment_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STREAMSCORE_API__API_KEY", "")
    with pytest.raises(ValidationError, match="api_key"):
        load_settings()


def test_whitespace_around_the_key_is_dropped_before_its_length_is_checked() -> None:
    api = load_settings(api={"api_key": f"  {'k' * 16}\n"}).api
    assert api.api_key is not None
    assert api.api_key.get_secret_value() == "k" * 16
    with pytest.raises(ValidationError, match="at least 16 characters"):
        load_settings(api={"api_key": " " * 12 + "kkkk" + "\n" * 4})


def test_a_long_enough_key_is_taken() -> None:
    assert load_settings(api={"api_key": "k" * 16}).api.api_key is not None
    assert load_settings().api.api_key is None


@pytest.mark.parametrize(
    ("kafka", "words"),
    [
        ({"sasl_mechanism": "PLAIN", "sasl_username": "u", "sasl_password": PASSWORD}, "SASL_SSL"),
        ({"security_protocol": "SSL", "sasl_mechanism": "SCRAM-SHA-256"}, "SASL_SSL"),
        ({"security_protocol": "SASL_SSL", "sasl_mechanism": "OAUTHBEARER"}, "token_provider"),
        (
            {
                "security_protocol": "SASL_SSL",
                "sasl_mechanism": "OAUTHBEARER",
                "sasl_oauth_token_provider": "no_such_module_here:provider",
            },
            "no module named",
        ),
        (
            {
                "security_protocol": "SASL_SSL",
                "sasl_mechanism": "OAUTHBEARER",
                "sasl_oauth_token_provider": "json",
            },
            "package.module:attribute",
        ),
        ({"security_protocol": "SASL_PLAINTEXT"}, "sasl_mechanism is required"),
    ],
)
def test_kafka_security_that_cannot_work_is_refused(kafka: dict[str, str], words: str) -> None:
    with pytest.raises(ValidationError, match=words):
        load_settings(kafka=kafka)


@pytest.mark.skipif(importlib.util.find_spec("gssapi") is not None, reason="gssapi installed")
def test_gssapi_without_its_package_is_refused() -> None:
    with pytest.raises(ValidationError, match="gssapi"):
        load_settings(kafka={"security_protocol": "SASL_SSL", "sasl_mechanism": "GSSAPI"})


def test_oauthbearer_with_an_importable_provider_is_taken() -> None:
    settings = load_settings(
        kafka={
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "OAUTHBEARER",
            "sasl_oauth_token_provider": "json:loads",
        }
    )
    assert settings.kafka.sasl_oauth_token_provider == "json:loads"


@pytest.mark.parametrize(
    "overrides",
    [
        {"kafka": {"sasl_mechanism": "PLAIN", "sasl_username": "u", "sasl_password": PASSWORD}},
        {"kafka": {"sasl_password": PASSWORD, "topic_partitions": "many"}},
        {"mongo": {"url": f"mongodb://u:{PASSWORD}@db", "max_pool_size": 0}},
        {"api": {"api_key": PASSWORD[:10]}},
        {"api": {"api_key": PASSWORD, "port": -1}},
    ],
)
def test_errors_never_echo_input_values(overrides: dict[str, dict[str, object]]) -> None:
    with pytest.raises(ValidationError) as info:
        load_settings(**overrides)
    text = str(info.value)  # what `streamscore` prints for a configuration error
    assert "input_value" not in text
    assert PASSWORD not in text
    assert PASSWORD[:10] not in text


def test_errors_from_the_environment_never_echo_input_values(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STREAMSCORE_KAFKA__SASL_PASSWORD", PASSWORD)
    monkeypatch.setenv("STREAMSCORE_KAFKA__SASL_USERNAME", "u")
    monkeypatch.setenv("STREAMSCORE_KAFKA__SASL_MECHANISM", "PLAIN")
    with pytest.raises(ValidationError) as info:
        load_settings()
    assert PASSWORD not in str(info.value)


def test_the_features_cap_is_the_same_rule_on_both_doors() -> None:
    assert load_settings().api.max_features_per_event == 1_000
    assert load_settings().stream.max_features_per_event == 1_000
    raw = '{"event_id": "e", "entity_id": "u", "features": {"a": "x", "b": "y", "c": "z"}}'
    valid = raw.replace('"x"', "1").replace('"y"', "2").replace('"z"', "3")
    with pytest.raises(ValidationError) as info:
        capped(InputEvent, 2).model_validate_json(valid)
    assert [(p.location, p.message) for p in field_problems(info.value)] == [
        ("features", "at most 2 features per event, got 3")
    ]
    # Over the cap and invalid too: the cap is the one reason given.
    rejected = parse_record(raw.encode(), 1_000, max_features=2)
    assert rejected == Rejection(
        ErrorKind.INVALID_EVENT, "features: at most 2 features per event, got 3"
    )
    ok = capped(InputEvent, 3).model_validate_json(valid)
    assert ok.features == {"a": 1.0, "b": 2.0, "c": 3.0}
    assert capped(InputEvent, 3) is capped(InputEvent, 3)  # one class per cap
    with pytest.raises(ValidationError) as uncapped:
        InputEvent.model_validate_json(raw)  # no cap: every value is checked
    assert uncapped.value.error_count() == 3
