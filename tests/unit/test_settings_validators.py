"""The settings tree's validators (settings/model.py): what is normalised, what is refused."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from settings import load_settings

SECRET = "s3cr3t-value-never-shown"


@pytest.mark.parametrize(("given", "taken"), [("none", None), ("", None), (" NONE ", None)])
def test_compression_none_and_empty_mean_uncompressed(given: str, taken: None) -> None:
    assert load_settings(kafka={"compression_type": given}).kafka.compression_type is taken


@pytest.mark.parametrize(("given", "taken"), [("ZSTD", "zstd"), ("Gzip", "gzip"), ("lz4", "lz4")])
def test_compression_codecs_are_case_insensitive(given: str, taken: str) -> None:
    assert load_settings(kafka={"compression_type": given}).kafka.compression_type == taken


def test_an_unknown_codec_is_refused() -> None:
    with pytest.raises(ValidationError, match="compression_type"):
        load_settings(kafka={"compression_type": "brotli"})


def test_an_api_key_of_exactly_sixteen_characters_is_the_shortest_taken() -> None:
    assert load_settings(api={"api_key": "k" * 16}).api.api_key is not None
    with pytest.raises(ValidationError, match="at least 16 characters"):
        load_settings(api={"api_key": "k" * 15})


def test_the_event_queue_must_hold_one_full_request() -> None:
    with pytest.raises(ValidationError, match="max_queued_events must be >= "):
        load_settings(api={"max_events_per_request": 100, "max_queued_events": 99})
    taken = load_settings(api={"max_events_per_request": 100, "max_queued_events": 100})
    assert taken.api.max_queued_events == 100


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_password_mechanisms_need_both_credentials(mechanism: str) -> None:
    base = {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": mechanism}
    with pytest.raises(ValidationError, match=r"sasl_username and kafka\.sasl_password"):
        load_settings(kafka={**base, "sasl_username": "u"})
    with pytest.raises(ValidationError, match=r"sasl_username and kafka\.sasl_password"):
        load_settings(kafka={**base, "sasl_password": SECRET})
    taken = load_settings(kafka={**base, "sasl_username": "u", "sasl_password": SECRET})
    assert taken.kafka.sasl_password is not None
    assert taken.kafka.sasl_password.get_secret_value() == SECRET


@pytest.mark.parametrize(
    "overrides",
    [
        {"kafka": {"sasl_password": SECRET, "security_protocol": "SASL_SSL"}},
        {"kafka": {"sasl_password": SECRET, "linger_ms": -1}},
        {"mongo": {"url": SECRET, "connect_timeout_ms": 1}},
        {"api": {"api_key": SECRET, "max_in_flight": 0}},
        {"api": {"api_key": SECRET[:8]}},
    ],
)
def test_a_secret_never_appears_in_any_error_message(overrides: dict[str, object]) -> None:
    with pytest.raises(ValidationError) as info:
        load_settings(**overrides)
    for text in (str(info.value), repr(info.value)):  # what a configuration error prints
        assert SECRET[:8] not in text


def test_a_secret_is_masked_in_the_settings_repr() -> None:
    settings = load_settings(mongo={"url": f"mongodb://u:{SECRET}@db"}, api={"api_key": SECRET})
    assert SECRET not in repr(settings)
    assert SECRET not in str(settings.model_dump())


@pytest.mark.parametrize(
    "url",
    [
        "",
        "http://admin:pw@mongo:27017",
        f"mongodb://admin:{SECRET}@a@mongo:27017",  # an unescaped @ in the password
        "mongodb://mongo:port/",
        f"mongodb+srv://admin:{SECRET}@b@cluster0.example.net/",
        f"mongodb://admin:{SECRET}@db/?tls=true&tlsCAFile=/no/such/ca.pem",  # not readable
    ],
)
def test_a_mongodb_url_pymongo_cannot_use_is_refused_without_echoing_it(url: str) -> None:
    with pytest.raises(ValidationError, match="not a MongoDB URL PyMongo can use") as refused:
        load_settings(mongo={"url": url})
    assert SECRET not in str(refused.value)


@pytest.mark.parametrize(
    "url",
    [
        "mongodb://127.0.0.1:27017",
        "mongodb://u:p%40ss@h1:27017,h2:27018/?replicaSet=rs0",
        "mongodb+srv://u:pw@cluster0.example.net/?retryWrites=true",  # no DNS asked here
    ],
)
def test_mongodb_urls_pymongo_takes_are_taken(url: str) -> None:
    assert load_settings(mongo={"url": url}).mongo.url.get_secret_value() == url


@pytest.mark.parametrize(
    ("field", "value"), [("database", ""), ("database", "a.b"), ("collection", "")]
)
def test_database_and_collection_names_mongodb_refuses_are_refused(field: str, value: str) -> None:
    with pytest.raises(ValidationError, match=field):
        load_settings(mongo={field: value})


@pytest.mark.parametrize("blank", ["", "  "])
def test_an_empty_challenger_path_means_no_challenger(blank: str) -> None:
    assert load_settings(challenger={"path": blank}).challenger.path is None


def test_a_tls_file_that_is_not_there_is_refused_naming_it() -> None:
    with pytest.raises(ValidationError, match=r"no such file: /nonexistent/ca\.pem"):
        load_settings(kafka={"ssl_cafile": "/nonexistent/ca.pem"})


def test_the_log_level_is_read_in_any_case() -> None:
    assert load_settings(log_level="debug").log_level == "DEBUG"


@pytest.mark.parametrize("name", ["", " ", "rev bad", "..", "x" * 250, "caf\u00e9"])
@pytest.mark.parametrize("field", ["input_topic", "output_topic", "dlq_topic"])
def test_a_topic_name_kafka_refuses_is_refused_at_start(field: str, name: str) -> None:
    with pytest.raises(ValidationError, match="not a Kafka topic name"):
        load_settings(kafka={field: name})


def test_legal_topic_names_are_taken() -> None:
    kafka = load_settings(kafka={"input_topic": "a.B_c-9", "dlq_topic": "x" * 249}).kafka
    assert (kafka.input_topic, len(kafka.dlq_topic)) == ("a.B_c-9", 249)


@pytest.mark.parametrize("blank", ["", " ", "\t "])
def test_a_blank_group_id_is_refused(blank: str) -> None:
    with pytest.raises(ValidationError, match="group_id"):
        load_settings(kafka={"group_id": blank})
    assert load_settings(kafka={"group_id": " g "}).kafka.group_id == " g "


def test_the_batch_size_defaults_to_what_suits_the_kafka_client() -> None:
    """1000 on librdkafka (waiting on acknowledgements and commits more than on CPU), 500 on
    aiokafka; a size given explicitly is kept on either."""
    assert load_settings().stream.max_batch_size == 500
    assert load_settings(kafka={"client": "confluent"}).stream.max_batch_size == 1_000
    for client in ("aiokafka", "confluent"):
        chosen = load_settings(kafka={"client": client}, stream={"max_batch_size": 500})
        assert chosen.stream.max_batch_size == 500


def test_the_batch_size_set_in_the_environment_wins_on_librdkafka(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STREAMSCORE_KAFKA__CLIENT", "confluent")
    assert load_settings().stream.max_batch_size == 1_000
    monkeypatch.setenv("STREAMSCORE_STREAM__MAX_BATCH_SIZE", "250")
    assert load_settings().stream.max_batch_size == 250
