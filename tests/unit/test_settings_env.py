"""``to_env``: the settings tree as variables a child process loads back unchanged."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from settings import Settings, load_settings
from settings.env import env_names, field_paths, to_env

TLS_FILES = Path(__file__).parent
EVERY_FIELD_CHANGED: dict[str, object] = {
    "kafka": {
        "bootstrap_servers": "kafka-a:9093,kafka-b:9093",
        "input_topic": "in",
        "output_topic": "out",
        "dlq_topic": "in.dlq",
        "group_id": "g-7",
        "client_id": "c-7",
        "auto_offset_reset": "latest",
        "input_isolation": "read_uncommitted",
        "create_topics": False,
        "topic_partitions": 12,
        "topic_replication_factor": 3,
        "request_timeout_ms": 12_345,
        "delivery_timeout_s": 7.25,
        "session_timeout_ms": 6_000,
        "max_poll_interval_ms": 123_456,
        "linger_ms": 0,
        "compression_type": "zstd",
        "max_request_size": 2_000_000,
        "transactional_id_prefix": "tx-7",
        "transaction_timeout_ms": 30_000,
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_username": "scorer",
        "sasl_password": "pa ss=wo;rd\"'",
        "sasl_oauth_token_provider": "json:dumps",
        # TLS files must exist (they are checked at start): any readable file does here
        "ssl_cafile": str(TLS_FILES / "__init__.py"),
        "ssl_certfile": str(TLS_FILES / "test_settings_env.py"),
        "ssl_keyfile": str(TLS_FILES / "test_settings_validators.py"),
    },
    "mongo": {
        "url": "mongodb://user:secret@db-1:27018/?replicaSet=rs0",
        "database": "db7",
        "collection": "coll7",
        "server_selection_timeout_ms": 777,
        "operation_timeout_ms": 888,
        "connect_timeout_ms": 999,
        "max_pool_size": 3,
    },
    "model": {
        "path": "/models/x/model.txt",
        "threads": 0,
        "reload_interval_s": 0.0,
        "reasons": 3,
        "reasons_min_score": 0.9,
        "backend": "compiled",
        "compiled_cache_dir": "/var/cache/streamscore/compiled",
    },
    "challenger": {"path": "/models/x/challenger.txt", "topic": "shadow", "threshold": 0.7},
    "scoring": {
        "cache_enabled": False,
        "cache_max_entries": 17,
        "cache_ttl_s": 1.5,
        "cache_refresh_ahead": 0.5,
        "executor_threads": 5,
        "switch_interval_ms": 2.0,
        "max_concurrent_queries": 2,
        "score_timeout_s": 3.5,
        "score_without_features_on_error": True,
    },
    "stream": {
        "metrics_port": 0,
        "metrics_host": "0.0.0.0",
        "workers": 3,
        "max_batch_size": 9,
        "max_batch_wait_ms": 11,
        "max_record_bytes": 4_096,
        "retry_initial_backoff_s": 0.01,
        "retry_max_backoff_s": 2.0,
        "shutdown_timeout_s": 4.0,
        "dead_letter_halt_ratio": 0.25,
        "dead_letter_window": 50,
        "dead_letter_min_records": 10,
        "max_features_per_event": 7,
        "max_fetch_attempts": 2,
        "max_batch_attempts": 3,
        "overlap_batches": False,
        "delivery": "exactly_once",
    },
    "api": {
        "host": "0.0.0.0",
        "port": 8081,
        "workers": 2,
        "max_events_per_request": 10,
        "max_body_bytes": 2_048,
        "batching_enabled": False,
        "batch_max_size": 8,
        "batch_max_wait_ms": 0.5,
        "api_key": "k" * 24,
        "retry_after_s": 2,
        "max_features_per_event": 6,
        "max_errors_reported": 4,
        "parse_in_thread_bytes": 0,
        "max_in_flight": 3,
        "max_queued_events": 40,
        "request_timeout_s": 1.25,
    },
    "log_level": "DEBUG",
}


def _load_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name in env_names():
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return load_settings()


def _leaf(settings: Settings, path: tuple[str, ...]) -> object:
    value: object = settings
    for part in path:
        value = getattr(value, part)
    return value


def test_the_defaults_round_trip(monkeypatch: pytest.MonkeyPatch) -> None:
    original = load_settings()
    assert _load_from(to_env(original), monkeypatch) == original


EXCLUSIVE_WITH_FIXTURE = [("kafka", "client")]
"""Fields the fixture cannot change (exactly-once on confluent refuses its read_uncommitted
input); :func:`test_client_round_trips` covers them."""


def test_every_field_changed_round_trips(monkeypatch: pytest.MonkeyPatch) -> None:
    changed = load_settings(**EVERY_FIELD_CHANGED)
    defaults = Settings()
    unchanged = [p for p in field_paths() if _leaf(changed, p) == _leaf(defaults, p)]
    # the fixture really changes every field, new ones included
    assert unchanged == EXCLUSIVE_WITH_FIXTURE

    loaded = _load_from(to_env(changed), monkeypatch)

    assert loaded == changed
    assert loaded.kafka.sasl_password == SecretStr("pa ss=wo;rd\"'")
    assert loaded.model.path == Path("/models/x/model.txt")


def test_values_are_written_as_the_loader_reads_them() -> None:
    env = to_env(load_settings(**EVERY_FIELD_CHANGED))

    assert env["STREAMSCORE_KAFKA__SASL_PASSWORD"] == "pa ss=wo;rd\"'"
    assert env["STREAMSCORE_MONGO__URL"] == "mongodb://user:secret@db-1:27018/?replicaSet=rs0"
    assert env["STREAMSCORE_KAFKA__CREATE_TOPICS"] == "false"
    assert env["STREAMSCORE_SCORING__SCORE_WITHOUT_FEATURES_ON_ERROR"] == "true"
    assert env["STREAMSCORE_MODEL__PATH"] == "/models/x/model.txt"
    assert env["STREAMSCORE_KAFKA__DELIVERY_TIMEOUT_S"] == "7.25"
    assert env["STREAMSCORE_LOG_LEVEL"] == "DEBUG"
    assert sorted(env) == sorted(env_names())  # every field is written


def test_none_values_are_left_out() -> None:
    env = to_env(load_settings())

    for name in (
        "STREAMSCORE_KAFKA__COMPRESSION_TYPE",
        "STREAMSCORE_KAFKA__SASL_PASSWORD",
        "STREAMSCORE_KAFKA__SSL_CAFILE",
        "STREAMSCORE_API__API_KEY",
    ):
        assert name not in env
    assert env["STREAMSCORE_STREAM__METRICS_PORT"] == "9464"


def test_only_metrics_port_is_optional_with_a_value_as_default() -> None:
    """The one field whose None a variable cannot say: callers must pick a port for it."""
    defaults = Settings()
    none_allowed = [
        path
        for path in field_paths()
        if _leaf(defaults, path) is not None and "None" in str(_field_annotation(path))
    ]
    assert none_allowed == [("stream", "metrics_port")]


def _field_annotation(path: tuple[str, ...]) -> object:
    model: Any = Settings
    for part in path[:-1]:
        model = model.model_fields[part].annotation
    return model.model_fields[path[-1]].annotation


def test_overrides_replace_single_fields_and_unknown_names_fail() -> None:
    env = to_env(load_settings(), stream__workers=1, kafka__client_id="c-2", log_level="ERROR")

    assert env["STREAMSCORE_STREAM__WORKERS"] == "1"
    assert env["STREAMSCORE_KAFKA__CLIENT_ID"] == "c-2"
    assert env["STREAMSCORE_LOG_LEVEL"] == "ERROR"
    assert "STREAMSCORE_STREAM__METRICS_PORT" not in to_env(
        load_settings(), stream__metrics_port=None
    )
    with pytest.raises(KeyError, match="stream__wrokers"):
        to_env(load_settings(), stream__wrokers=1)


def test_client_round_trips(monkeypatch: pytest.MonkeyPatch) -> None:
    changed = load_settings(kafka={"client": "confluent", "compression_type": "lz4"})
    loaded = _load_from(to_env(changed), monkeypatch)
    assert loaded == changed
    assert loaded.kafka.client == "confluent"


def test_either_client_takes_exactly_once() -> None:
    for client in ("aiokafka", "confluent"):
        settings = load_settings(kafka={"client": client}, stream={"delivery": "exactly_once"})
        assert (settings.kafka.client, settings.stream.delivery) == (client, "exactly_once")


def test_exactly_once_on_confluent_needs_read_committed_input() -> None:
    with pytest.raises(ValueError, match=r"needs kafka\.input_isolation=read_committed"):
        load_settings(
            kafka={"client": "confluent", "input_isolation": "read_uncommitted"},
            stream={"delivery": "exactly_once"},
        )
    kafka = {"client": "aiokafka", "input_isolation": "read_uncommitted"}
    assert (
        load_settings(kafka=kafka, stream={"delivery": "exactly_once"}).kafka
        == load_settings(kafka=kafka).kafka
    )


def test_misspelt_setting_variables_are_named_with_what_was_meant() -> None:
    from settings.env import misspelt_variables

    environ = {
        "STREAMSCORE_KAFKA_INPUT_TOPIC": "a",  # one underscore where the section ends
        "STREAMSCORE_KAFKA__INPUT_TOPC": "b",  # a typo in the field
        "STREAMSCORE_FOO__BAR": "c",  # no such section, nothing close
        "STREAMSCORE_KAFKA__INPUT_TOPIC": "ok",
        "streamscore_stream__max_batch_size": "5",  # names are not case-sensitive
        "STREAMSCORE_LOG_LEVEL": "INFO",
        "STREAMSCORE_KAFKA_PORT": "9092",  # the local servers' own variables
        "STREAMSCORE_LOCAL_MONGO": "ferretdb",
        "PATH": "/bin",
    }
    assert misspelt_variables(environ) == [
        "STREAMSCORE_FOO__BAR is not a setting, and is ignored",
        "STREAMSCORE_KAFKA_INPUT_TOPIC is not a setting, and is ignored; "
        "did you mean STREAMSCORE_KAFKA__INPUT_TOPIC?",
        "STREAMSCORE_KAFKA__INPUT_TOPC is not a setting, and is ignored; "
        "did you mean STREAMSCORE_KAFKA__INPUT_TOPIC?",
    ]
