"""The settings tree.

Every value comes from an environment variable with the prefix ``STREAMSCORE_``; nested sections
use ``__`` (``STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS``, ``STREAMSCORE_MONGO__URL``, ...). Settings
are built by :func:`load_settings` and passed in; nothing reads the environment at import time.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict


def _legal_topic(name: str) -> str:
    """A name Kafka takes for a topic: 1-249 of ASCII letters, digits, ``.``, ``_`` and
    ``-``, not ``.`` or ``..`` (a name it refuses fails here, at start, not at the first
    request, where a consumer only waits)."""
    if not _TOPIC.fullmatch(name) or name in {".", ".."}:
        raise ValueError(
            f"not a Kafka topic name: {name!r} (1-249 of ASCII letters, digits, '.', '_', '-')"
        )
    return name


_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")
TopicName = Annotated[str, AfterValidator(_legal_topic)]


def _upper(value: Any) -> Any:
    """``debug`` is ``DEBUG``."""
    return value.strip().upper() if isinstance(value, str) else value


def _empty_is_unset(value: Any) -> Any:
    """An empty or blank value (a template's unset variable) means unset."""
    if isinstance(value, str) and not value.strip():
        return None
    return value


def _no_compression(value: Any) -> Any:
    """``none`` (Kafka's own word) and an empty value mean no compression."""
    if isinstance(value, str) and value.strip().lower() in {"", "none"}:
        return None
    return value.lower() if isinstance(value, str) else value


class KafkaSettings(BaseModel):
    """Kafka endpoints, topics and client options."""

    model_config = ConfigDict(hide_input_in_errors=True)

    bootstrap_servers: str = "127.0.0.1:9092"
    client: Literal["aiokafka", "confluent"] = "aiokafka"
    """The scorer's Kafka client: ``aiokafka`` (pure Python on the event loop) or ``confluent``
    (librdkafka: fetching, decompression and acks in C threads); either delivers at least once
    or exactly once."""
    input_topic: TopicName = "events"
    output_topic: TopicName = "predictions"
    dlq_topic: TopicName = "events.dlq"
    group_id: str = Field(default="streamscore", min_length=1)
    client_id: str = Field(default="streamscore", min_length=1)
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    input_isolation: Literal["read_committed", "read_uncommitted"] = "read_committed"
    """How the scorer reads the input topic. ``read_committed``: records of aborted
    transactions are never scored, and those of an open transaction wait for its commit."""
    create_topics: bool = True
    topic_partitions: int = Field(default=4, ge=1)
    topic_replication_factor: int = Field(default=1, ge=1)
    request_timeout_ms: int = Field(default=30_000, ge=1_000)
    """Producer and admin request timeout."""
    delivery_timeout_s: float = Field(default=60.0, gt=0)
    """How long one publish may take before the batch is retried."""
    session_timeout_ms: int = Field(default=10_000, ge=1_000)
    max_poll_interval_ms: int = Field(default=300_000, ge=10_000)
    linger_ms: int = Field(default=5, ge=0)
    compression_type: Annotated[
        Literal["gzip", "snappy", "lz4", "zstd"] | None, BeforeValidator(_no_compression)
    ] = None
    """Codec of the outputs (``none`` or unset: uncompressed). Input in any codec is read."""
    max_request_size: int = Field(default=1_048_576, ge=1_024)
    """The producer's limit on one record; dead letters are cut to fit it (and the broker's)."""
    transactional_id_prefix: str | None = None
    """Exactly-once only: transactional ids are ``<prefix>-<input topic>-<partition>`` on
    aiokafka, ``<prefix>-<host name>-<client id>`` on librdkafka (default prefix
    ``streamscore-<group id>``). Keep it stable across restarts."""
    transaction_timeout_ms: int = Field(default=60_000, ge=1_000)
    """Exactly-once only: the broker aborts a transaction left open longer than this."""
    # Security pass-through for real clusters.
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: (
        Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "GSSAPI", "OAUTHBEARER"] | None
    ) = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    sasl_oauth_token_provider: str | None = None
    """``package.module:attribute`` of an aiokafka ``AbstractTokenProvider``; required by
    ``OAUTHBEARER`` (the client has no other way to get a token)."""
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None

    @field_validator("bootstrap_servers")
    @classmethod
    def _ports_in_range(cls, servers: str) -> str:
        """Comma-separated ``host[:port]`` entries (``[v6 address]:port`` too); a port given
        must be 1-65535 (the clients would fail on it with a traceback, or wrap it)."""
        entries = [entry for entry in (e.strip() for e in servers.split(",")) if entry]
        if not entries:  # empty entries are skipped, as the clients skip them
            raise ValueError("give at least one host:port (comma-separated)")
        for entry in entries:
            host, colon, port = entry.rpartition(":")
            has_port = colon and (":" not in host or host.endswith("]"))
            if has_port and (not port.isdigit() or not 1 <= int(port) <= 65_535):
                raise ValueError(f"{entry!r}: the port must be a number from 1 to 65535")
        return servers

    @field_validator("group_id")
    @classmethod
    def _group_not_blank(cls, group_id: str) -> str:
        """A group id of spaces alone names no group anyone can find again (and librdkafka
        aborts the process on it)."""
        if not group_id.strip():
            raise ValueError("must not be blank")
        return group_id

    @field_validator("ssl_cafile", "ssl_certfile", "ssl_keyfile")
    @classmethod
    def _readable_file(cls, path: Path | None) -> Path | None:
        """A TLS file that is not there is refused at start, naming the variable (the client
        would fail later with a bare ``FileNotFoundError``)."""
        if path is not None and not path.is_file():
            raise ValueError(f"no such file: {path}")
        return path

    @model_validator(mode="after")
    def _check_security(self) -> KafkaSettings:
        """Refuse at start what cannot connect, instead of failing at the first request."""
        sasl_protocol = self.security_protocol.startswith("SASL")
        if sasl_protocol and self.sasl_mechanism is None:
            raise ValueError("kafka.sasl_mechanism is required when security_protocol is SASL_*")
        if self.sasl_mechanism is not None and not sasl_protocol:
            raise ValueError(
                f"kafka.sasl_mechanism={self.sasl_mechanism} needs security_protocol SASL_SSL "
                f"or SASL_PLAINTEXT, not {self.security_protocol}"
            )
        if self.sasl_mechanism == "OAUTHBEARER":
            _check_token_provider(self.sasl_oauth_token_provider)
        if self.sasl_mechanism == "GSSAPI" and importlib.util.find_spec("gssapi") is None:
            raise ValueError(
                "kafka.sasl_mechanism=GSSAPI needs the 'gssapi' package, which is not installed"
            )
        if self.sasl_mechanism in {"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"} and (
            not self.sasl_username or self.sasl_password is None
        ):
            raise ValueError(
                "kafka.sasl_username and kafka.sasl_password are required for "
                f"sasl_mechanism={self.sasl_mechanism}"
            )
        if self.session_timeout_ms > self.max_poll_interval_ms:
            # librdkafka refuses such a consumer; a member would be seen as gone before it
            # could be seen as stuck anyway.
            raise ValueError(
                f"kafka.session_timeout_ms ({self.session_timeout_ms}) must not exceed "
                f"kafka.max_poll_interval_ms ({self.max_poll_interval_ms})"
            )
        return self


def _check_token_provider(path: str | None) -> None:
    if not path:
        raise ValueError(
            "kafka.sasl_mechanism=OAUTHBEARER needs kafka.sasl_oauth_token_provider "
            "(package.module:attribute of a token provider)"
        )
    module, _, attribute = path.partition(":")
    if not module or not attribute:
        raise ValueError("kafka.sasl_oauth_token_provider must look like package.module:attribute")
    try:
        found = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        found = None
    if found is None:
        raise ValueError(f"kafka.sasl_oauth_token_provider: no module named {module!r}")


class MongoSettings(BaseModel):
    """Where the entity features live, and how long the scorer waits for them."""

    model_config = ConfigDict(hide_input_in_errors=True)

    url: SecretStr = SecretStr("mongodb://127.0.0.1:27017")
    database: str = Field(default="streamscore", min_length=1, pattern=r'^[^/\\. "$*<>:|?\x00]+$')
    collection: str = Field(default="entity_features", min_length=1, pattern=r"^[^$\x00]+$")
    server_selection_timeout_ms: int = Field(default=2_000, ge=100, lt=1_000_000_000)
    """How long PyMongo looks for a server when an operation has no timeout of its own. Every
    enrichment query has one (``operation_timeout_ms``, PyMongo's ``timeoutMS``), which then
    bounds server selection as well; the sidecar's readiness check waits this + 1 s."""
    operation_timeout_ms: int = Field(default=2_000, ge=100, lt=1_000_000_000)
    """Client-side timeout of one enrichment query (PyMongo ``timeoutMS``)."""
    connect_timeout_ms: int = Field(default=2_000, ge=100, lt=1_000_000_000)
    max_pool_size: int = Field(default=20, ge=1)

    @field_validator("url")
    @classmethod
    def _parsable_url(cls, url: SecretStr) -> SecretStr:
        """A URL PyMongo cannot read is refused at start; the message never holds the URL
        (it may hold a password)."""
        from pymongo.errors import ConfigurationError, InvalidURI
        from pymongo.uri_parser import parse_uri

        text, srv = url.get_secret_value(), "mongodb+srv://"
        try:
            if text.startswith(srv):  # its hosts come from DNS at connect: only the syntax here
                try:
                    parse_uri("mongodb://" + text[len(srv) :], connect_timeout=None)
                except InvalidURI:
                    raise
                except ConfigurationError:  # options that only +srv takes, and the like
                    pass
            else:
                parse_uri(text, connect_timeout=None)
        except (InvalidURI, ConfigurationError, ValueError, OSError) as exc:
            # OSError: a file the URL names (tlsCAFile, tlsCertificateKeyFile) cannot be read
            reason = str(exc)
            if text and text in reason:
                reason = "see the MongoDB connection string format"
            raise ValueError(
                f"not a MongoDB URL PyMongo can use ({type(exc).__name__}: {reason})"
            ) from None
        return url


class ModelSettings(BaseModel):
    """The LightGBM model file (metadata in ``<path without suffix>.json``)."""

    model_config = ConfigDict(hide_input_in_errors=True)

    path: Path = Path("models/model.txt")
    threads: int = Field(default=1, ge=0)
    """LightGBM ``num_threads`` per predict call (0 = LightGBM's default, all cores)."""
    reload_interval_s: float = Field(default=5.0, ge=0)
    """How often to look for a new model file (0 = never; SIGHUP or the admin call still do)."""
    reasons: int = Field(default=0, ge=0, le=100)
    """Reason codes: the number of features that pushed each prediction's score most, added to
    it as ``reasons`` (LightGBM ``pred_contrib``); 0 = off (no ``reasons`` field)."""
    reasons_min_score: float | None = None
    """Compute reason codes only for predictions scoring at least this (the others carry an
    empty list), so their cost follows alerts, not traffic; unset = every prediction."""
    backend: Literal["auto", "lightgbm", "compiled"] = "auto"
    """What executes predictions (main model and challenger): ``compiled`` (the model compiled
    to a C library by treelite + tl2cgen: the same scores bit for bit, faster per batch; needs
    a C compiler, ``$CC`` or ``gcc``; when it cannot compile, LightGBM scores and a warning
    says why), ``lightgbm`` (``Booster.predict``), or ``auto``: compiled where tl2cgen and a C
    compiler are found, else LightGBM without a warning. Reason codes always use LightGBM."""
    compiled_cache_dir: Path = Path(".local/compiled-models")
    """Where compiled models are kept, one library per model file's SHA-256."""


class ChallengerSettings(BaseModel):
    """A shadow model scored on the same vectors as the main one, published to its own topic
    (metadata beside it like the main model's)."""

    model_config = ConfigDict(hide_input_in_errors=True)

    path: Annotated[Path | None, BeforeValidator(_empty_is_unset)] = None
    """The challenger's model file; unset (or empty, as a template leaves it) = no
    challenger."""
    topic: TopicName = "predictions.challenger"
    """Where the scorer publishes the challenger's predictions (same contract, own model)."""
    threshold: float = 0.5
    """Score at which the two models' decisions are compared (agreement metrics)."""


class ScoringSettings(BaseModel):
    """Enrichment cache, executor and failure policy."""

    model_config = ConfigDict(hide_input_in_errors=True)

    cache_enabled: bool = True
    cache_max_entries: int = Field(default=100_000, ge=1)
    cache_ttl_s: float = Field(default=60.0, gt=0)
    cache_refresh_ahead: float = Field(default=0.8, gt=0, le=1)
    """An entry read after this share of its TTL is reloaded in the background (with the next
    query), so entities in steady use never miss; 1 turns refresh-ahead off."""
    executor_threads: int = Field(default=2, ge=1)
    switch_interval_ms: float | None = Field(default=None, gt=0, le=100)
    """How long a thread may hold the GIL before another gets it (``sys.setswitchinterval``).
    Python's 5 ms lets an executor thread running Python (parsing, serialising) delay the event
    loop by up to 5 ms. Unset: each door's measured best, 0.2 ms in the scorer (lower loop lag
    and e2e p99 than 0.5 at the same throughput), 0.5 ms in the sidecar (README,
    configuration)."""
    max_concurrent_queries: int = Field(default=8, ge=1)
    """At most this many enrichment queries in flight per process; more batches wait their turn
    instead of piling onto the database."""
    score_timeout_s: float = Field(default=30.0, gt=0)
    score_without_features_on_error: bool = False
    """Opt-in: when MongoDB cannot be read, score without stored features
    (``enrichment: "error"``) instead of waiting for it to come back."""


class StreamSettings(BaseModel):
    """The Kafka consumer loop."""

    model_config = ConfigDict(hide_input_in_errors=True)

    metrics_port: Annotated[int | None, BeforeValidator(_empty_is_unset)] = Field(
        default=9464, ge=0, le=65535
    )
    """Prometheus endpoint of the scorer on 127.0.0.1 (empty = off; workers add their
    index)."""
    metrics_host: str = Field(default="127.0.0.1", min_length=1)
    workers: int = Field(default=1, ge=1)

    max_batch_size: int = Field(default=500, ge=1)
    """The most records one fetch hands to the scorer: 500 on aiokafka, 1000 on librdkafka
    (``CONFLUENT_MAX_BATCH_SIZE``) unless set."""
    max_batch_wait_ms: int = Field(default=50, ge=1)
    max_record_bytes: int = Field(default=1_048_576, ge=1)
    """Records larger than this are dead-lettered as ``too_large`` without being parsed."""
    retry_initial_backoff_s: float = Field(default=0.2, gt=0)
    retry_max_backoff_s: float = Field(default=10.0, gt=0)
    shutdown_timeout_s: float = Field(default=30.0, gt=0)
    dead_letter_halt_ratio: float = Field(default=0.5, gt=0, le=1)
    """Halt (instead of dead-lettering) when more than this share of the last
    ``dead_letter_window`` records failed validation: a bad deploy, not bad records."""
    dead_letter_window: int = Field(default=1_000, ge=1)
    dead_letter_min_records: int = Field(default=200, ge=1)
    """The ratio is only judged once the window holds at least this many records."""
    max_features_per_event: int = Field(default=1_000, ge=1)
    """An event with more features than this is invalid (dead-lettered, message names
    ``features``: that one reason, whatever else is wrong with the event)."""
    max_fetch_attempts: int = Field(default=5, ge=1)
    """Consecutive failed fetches of the same place in the input topic (an unreadable batch)
    before the scorer halts with exit code 4, naming topic, partition and offset."""
    max_batch_attempts: int = Field(default=5, ge=1)
    """Consecutive unexpected failures of one batch, or refusals of an output that retrying
    cannot fix, before the scorer halts with exit code 5. MongoDB outages and retriable Kafka
    errors are waited out without limit."""
    overlap_batches: bool = True
    """At-least-once: a parsed batch is scored and delivered in the background while the next
    one is fetched and parsed (one batch at a time; outputs and commits stay in batch order).
    ``False``: each batch is finished before the next is fetched. Exactly-once never overlaps."""
    delivery: Literal["at_least_once", "exactly_once"] = "at_least_once"
    """``exactly_once``: each input partition's share of a batch (its predictions, dead
    letters and offsets) is committed in one Kafka transaction; readers of the output topics
    must use ``isolation.level=read_committed``."""


MIN_API_KEY_CHARS = 16


class ApiSettings(BaseModel):
    """The HTTP sidecar."""

    model_config = ConfigDict(hide_input_in_errors=True)

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    workers: int = Field(default=1, ge=1)
    max_events_per_request: int = Field(default=1_000, ge=1)
    max_body_bytes: int = Field(default=1_048_576, ge=1)
    batching_enabled: bool = True
    batch_max_size: int = Field(default=256, ge=1)
    batch_max_wait_ms: float = Field(default=2.0, ge=0)
    """How long a request waits for a running model call to end before a second call starts
    beside it; a request that finds no call running is scored at once."""
    api_key: SecretStr | None = None
    """When set (at least 16 characters), every route but ``/healthz`` needs the header
    ``X-API-Key``. Without it the admin routes are not served at all. Whitespace around it
    (a secret file's trailing newline) is dropped: HTTP cannot carry it in a header value."""
    retry_after_s: int = Field(default=5, ge=1)
    max_features_per_event: int = Field(default=1_000, ge=1)
    """More features in one event is a 422 naming ``features`` (that one error, whatever else
    is wrong with the event)."""
    max_errors_reported: int = Field(default=20, ge=1)
    """A 422 lists at most this many field errors, plus the total count."""
    parse_in_thread_bytes: int = Field(default=32_768, ge=0)
    """Bodies at least this large are parsed and validated in a worker thread, off the loop."""
    max_in_flight: int = Field(default=256, ge=1)
    """``/predict`` requests handled at once; more get 503 with ``Retry-After`` at once."""
    max_queued_events: int = Field(default=4_096, ge=1)
    """Events waiting for or in a pipeline call; a request that would exceed it gets 503."""
    request_timeout_s: float = Field(default=5.0, gt=0)
    """Deadline of one ``/predict`` request (reading, parsing, scoring); after it, 503."""

    @field_validator("api_key", mode="after")
    @classmethod
    def _without_surrounding_whitespace(cls, key: SecretStr | None) -> SecretStr | None:
        # Header values lose their surrounding whitespace on the way in (RFC 9110 5.5), so a
        # key configured with it could never match.
        return None if key is None else SecretStr(key.get_secret_value().strip())

    @model_validator(mode="after")
    def _check_limits(self) -> ApiSettings:
        if self.api_key is not None and len(self.api_key.get_secret_value()) < MIN_API_KEY_CHARS:
            raise ValueError(
                f"api.api_key must be at least {MIN_API_KEY_CHARS} characters; an empty or "
                "short key is refused (unset STREAMSCORE_API__API_KEY to run without one)"
            )
        if self.max_queued_events < self.max_events_per_request:
            raise ValueError("api.max_queued_events must be >= api.max_events_per_request")
        return self


CONFLUENT_MAX_BATCH_SIZE = 1_000
"""``stream.max_batch_size`` when ``kafka.client`` is ``confluent`` and it is not set."""


class Settings(BaseSettings):
    """The whole tree. Build it with :func:`load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix="STREAMSCORE_",
        env_nested_delimiter="__",
        extra="ignore",
        frozen=True,
        hide_input_in_errors=True,
    )

    kafka: KafkaSettings = KafkaSettings()
    mongo: MongoSettings = MongoSettings()
    model: ModelSettings = ModelSettings()
    challenger: ChallengerSettings = ChallengerSettings()
    scoring: ScoringSettings = ScoringSettings()
    stream: StreamSettings = StreamSettings()
    api: ApiSettings = ApiSettings()
    log_level: Annotated[Literal["DEBUG", "INFO", "WARNING", "ERROR"], BeforeValidator(_upper)] = (
        "INFO"
    )

    @model_validator(mode="after")
    def _batch_size_for_the_client(self) -> Settings:
        """librdkafka's scorer waits on its producer's acknowledgements and its commits more
        than aiokafka's (it is not short of CPU at 500): a batch twice as large gave it 36% more
        throughput at 17% less CPU per event, where aiokafka's gained nothing clear (README,
        Performance). A size set explicitly is kept."""
        stream = self.stream
        if self.kafka.client == "confluent" and "max_batch_size" not in stream.model_fields_set:
            bigger = stream.model_copy(update={"max_batch_size": CONFLUENT_MAX_BATCH_SIZE})
            object.__setattr__(self, "stream", bigger)  # frozen: set once, while validating
        return self

    @model_validator(mode="after")
    def _check_exactly_once(self) -> Settings:
        """librdkafka asks the group for stable committed offsets (KIP-447: none pending in an
        open transaction) only when it reads ``read_committed``: without them a partition's
        new owner could start from an offset an open transaction is about to move."""
        if (
            self.stream.delivery == "exactly_once"
            and self.kafka.client == "confluent"
            and self.kafka.input_isolation == "read_uncommitted"
        ):
            raise ValueError(
                "stream.delivery=exactly_once on kafka.client=confluent needs "
                "kafka.input_isolation=read_committed"
            )
        return self


def describe_errors(exc: ValidationError) -> str:
    """One line per invalid setting, named by its environment variable
    (``STREAMSCORE_STREAM__MAX_BATCH_SIZE: Input should be ...``); never the value given."""
    lines = []
    for error in exc.errors(include_input=False, include_url=False):
        path = [str(part) for part in error["loc"]]
        name = "STREAMSCORE_" + "__".join(path).upper() if path else "settings"
        lines.append(f"{name}: {error['msg']}")
    return "\n".join(lines)


def load_settings(**overrides: object) -> Settings:
    """Read the settings from the environment; keyword overrides win (used by tests and CLI)."""
    return Settings(**overrides)  # type: ignore[arg-type]
