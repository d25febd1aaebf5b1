"""``streamscore audit``: did every input record get exactly one output?

Reads the input, prediction and dead-letter topics from the beginning to their current ends and
reports, per event: lost (no prediction and no dead letter), duplicated (more than one
prediction, or more than one dead letter for one record), and unexpected outputs (for no input).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from aiokafka import AIOKafkaConsumer

from schemas import DeadLetterHeader
from settings import Settings
from streams import lenient_records
from streams.kafka_options import client_options
from streams.librdkafka_reader import read_topic
from streams.offsets import (
    end_offsets,
    first_offsets,
    position_label,
    topic_partitions,
    unread,
)
from streams.records import Rejection, read_record

Position = tuple[str, int, int]

lenient_records.install()  # the audit reads whatever the scorer reads


@dataclass
class AuditReport:
    events_in: int = 0
    valid_events: int = 0
    invalid_records: int = 0
    predictions: int = 0
    dead_letters: int = 0
    lost: int = 0
    duplicated_predictions: int = 0
    duplicated_dead_letters: int = 0
    unexpected_predictions: int = 0
    unexpected_dead_letters: int = 0
    lost_examples: list[str] = field(default_factory=list)
    duplicate_examples: list[str] = field(default_factory=list)
    unexpected_examples: list[str] = field(default_factory=list)
    exactly_once: bool = False
    """Read as exactly-once promises (that delivery, outputs read ``read_committed``): a
    duplicate is then a failure too."""
    trimmed: list[str] = field(default_factory=list)
    """Topics whose oldest records are gone (retention, a deletion): their first offsets."""
    input_trimmed: bool = False
    """The input lost records the scorer may have scored: a prediction of no input left is
    then not a failure (it is still counted as unexpected)."""

    @property
    def ok(self) -> bool:
        repeated = self.duplicated_predictions + self.duplicated_dead_letters
        return (
            self.lost == 0
            and (self.unexpected_predictions == 0 or self.input_trimmed)
            and not (self.exactly_once and repeated)
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self) | {"ok": self.ok}, indent=2)

    def to_text(self) -> str:
        rows = [
            ("events in", self.events_in),
            ("  valid", self.valid_events),
            ("  invalid", self.invalid_records),
            ("predictions", self.predictions),
            ("dead letters", self.dead_letters),
            ("lost", self.lost),
            ("duplicated predictions", self.duplicated_predictions),
            ("duplicated dead letters", self.duplicated_dead_letters),
            ("unexpected predictions", self.unexpected_predictions),
            ("unexpected dead letters", self.unexpected_dead_letters),
        ]
        lines = [f"{name:<26}{value}" for name, value in rows]
        for title, examples in (
            ("lost", self.lost_examples),
            ("duplicated", self.duplicate_examples),
            ("unexpected", self.unexpected_examples),
        ):
            if examples:
                lines.append(f"{title} (first {len(examples)}): {', '.join(examples)}")
        for note in self.trimmed:
            lines.append(f"older records deleted (retention): {note}")
        if self.input_trimmed and self.unexpected_predictions:
            lines.append(
                "unexpected predictions may be of input records retention deleted: not a failure"
            )
        if self.lost and any(not n.startswith("input ") for n in self.trimmed):
            lines.append("lost may count events whose outputs retention deleted")
        if not self.ok:
            lines.append("NOT OK: see above")
        else:
            lines.append(
                "OK: nothing lost, nothing repeated" if self.exactly_once else "OK: nothing lost"
            )
        return "\n".join(lines)


Isolation = Literal["read_committed", "read_uncommitted"]


def default_isolation(settings: Settings) -> Isolation:
    """What a downstream reader of this scorer's outputs should use."""
    return "read_committed" if settings.stream.delivery == "exactly_once" else "read_uncommitted"


async def _read_all(
    settings: Settings, topic: str, isolation: Isolation = "read_uncommitted"
) -> list[Any]:
    """Every record of ``topic`` from the beginning to its end at the time of the call, read
    with the client the settings name."""
    if settings.kafka.client == "confluent":
        return list(await read_topic(settings.kafka, topic, isolation))
    partitions = await topic_partitions(settings.kafka, [topic])
    if not partitions:
        return []
    consumer = AIOKafkaConsumer(
        **client_options(settings.kafka),
        isolation_level=isolation,
        enable_auto_commit=False,
        max_partition_fetch_bytes=8 << 20,
    )
    await consumer.start()
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await end_offsets(consumer, partitions)
        remaining = {tp for tp in partitions if ends[tp] > 0}
        records: list[Any] = []
        while remaining:
            batches = await consumer.getmany(*remaining, timeout_ms=1_000, max_records=10_000)
            for tp, batch in batches.items():
                records.extend(batch)
                if batch and batch[-1].offset + 1 >= ends[tp]:
                    remaining.discard(tp)
            remaining = await unread(consumer, {tp: ends[tp] for tp in remaining})
        return records
    finally:
        await consumer.stop()


def _examples(values: list[str], limit: int = 10) -> list[str]:
    return values[:limit]


async def audit(settings: Settings, isolation: Isolation | None = None) -> AuditReport:
    kafka = settings.kafka
    level = isolation or default_isolation(settings)
    # The input is read as the scorer reads it: with read_committed, aborted records are not
    # events (nothing is owed for them).
    inputs = await _read_all(settings, kafka.input_topic, kafka.input_isolation)
    outputs = await _read_all(settings, kafka.output_topic, level)
    dead = await _read_all(settings, kafka.dlq_topic, level)
    report = reconcile(
        [_input_event(settings, record) for record in inputs],
        [_predicted_event(record) for record in outputs],
        [_dead_letter_source(record) for record in dead],
    )
    report.exactly_once = settings.stream.delivery == "exactly_once" and level == "read_committed"
    for role, topic in (
        ("input", kafka.input_topic),
        ("predictions", kafka.output_topic),
        ("dead letters", kafka.dlq_topic),
    ):
        starts = {tp.partition: n for tp, n in (await first_offsets(kafka, topic)).items() if n}
        if starts:
            firsts = ", ".join(f"partition {p} from offset {n}" for p, n in sorted(starts.items()))
            report.trimmed.append(f"{role} {topic}: {firsts}")
            report.input_trimmed = report.input_trimmed or role == "input"
    return report


def _input_event(settings: Settings, record: Any) -> tuple[Position, str | None]:
    """An input record's position and event_id (None when the scorer must dead-letter it)."""
    parsed = read_record(
        record.value,
        record.timestamp,
        settings.stream.max_record_bytes,
        settings.stream.max_features_per_event,
    )
    position = (record.topic, record.partition, record.offset)
    return position, None if isinstance(parsed, Rejection) else parsed[0].event_id


def _predicted_event(record: Any) -> str:
    try:
        return str(json.loads(record.value)["event_id"])
    except (ValueError, KeyError, TypeError):
        return "<unreadable prediction>"


def _dead_letter_source(record: Any) -> Position:
    headers = {k: (v or b"").decode("utf-8", "replace") for k, v in record.headers}
    try:
        return (
            headers[DeadLetterHeader.SOURCE_TOPIC],
            int(headers[DeadLetterHeader.SOURCE_PARTITION]),
            int(headers[DeadLetterHeader.SOURCE_OFFSET]),
        )
    except (KeyError, ValueError):
        return ("<no source headers>", record.partition, record.offset)


def reconcile(
    inputs: Sequence[tuple[Position, str | None]],
    predictions: Sequence[str],
    dead_letters: Sequence[Position],
) -> AuditReport:
    """The audit's arithmetic: input records (position, event_id or None when invalid), the
    event_ids of the predictions and the source positions of the dead letters, compared."""
    report = AuditReport(
        events_in=len(inputs), predictions=len(predictions), dead_letters=len(dead_letters)
    )
    positions = dict(inputs)
    expected = Counter(event_id for _, event_id in inputs if event_id is not None)
    report.valid_events = sum(expected.values())
    report.invalid_records = len(inputs) - report.valid_events
    predicted = Counter(predictions)
    dead_at = Counter(dead_letters)

    lost: list[str] = []
    unmatched = Counter(predicted)  # each input record is matched to a prediction of its own:
    for position, event_id in positions.items():  # an id sent twice needs two predictions
        if dead_at.get(position):
            continue
        if event_id is not None and unmatched[event_id] > 0:
            unmatched[event_id] -= 1
            continue
        lost.append(event_id or position_label(*position))
    report.lost = len(lost)
    report.lost_examples = _examples(lost)

    duplicates = [eid for eid, n in predicted.items() if n > max(expected.get(eid, 0), 1)]
    report.duplicated_predictions = sum(
        n - max(expected.get(eid, 0), 1)
        for eid, n in predicted.items()
        if eid in expected and n > expected[eid]
    )
    report.duplicated_dead_letters = sum(n - 1 for n in dead_at.values() if n > 1)
    report.duplicate_examples = _examples(duplicates)
    unexpected = [eid for eid in predicted if eid not in expected]
    report.unexpected_predictions = sum(predicted[eid] for eid in unexpected)
    report.unexpected_dead_letters = sum(n for pos, n in dead_at.items() if pos not in positions)
    report.unexpected_examples = _examples(unexpected)
    return report
