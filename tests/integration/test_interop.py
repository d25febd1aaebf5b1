"""Records written by producers the project did not write, on the real broker.

kcat (librdkafka) and the Apache Kafka Java client each write, in every codec, good events
mixed with the records a real producer can send: null header values, binary header values and
(kcat only: Java header names are strings) header names that are not UTF-8, tombstones and empty
values. The odd records sit on one partition while good events flow on the others. Every good
event must get exactly one prediction equal to the offline score, every tombstone and empty value
one dead letter with the original key and headers, and the audit must find nothing lost.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from scoring import LoadedModel
from streams.audit import audit
from streams.topics import ensure_topics
from tests.support.fixtures import ROOT
from tests.support.helpers import offline_scores
from tests.support.kafka_io import committed_lag, score_until
from tests.support.names import Names, settings_for

pytestmark = pytest.mark.integration

CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
STORED = {f"user-{i}": {"account_age_days": 100.0 + i, "country_risk": i / 10} for i in range(5)}


@dataclass
class Record:
    partition: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[bytes, bytes | None]] = field(default_factory=list)
    event: dict[str, Any] | None = None


def _event(event_id: str, entity: str, amount: float) -> tuple[dict[str, Any], bytes]:
    event = {"event_id": event_id, "entity_id": entity, "features": {"amount": amount}}
    return event, json.dumps(event).encode()


def plan(codec: str, producer: str) -> list[Record]:
    """The records one producer sends in one codec, in order."""
    groups: list[list[Record]] = []
    good = []
    for partition in (0, 2):
        for i in range(3):
            event, value = _event(f"{producer}-{codec}-p{partition}-{i}", f"user-{i}", 10.0 * i)
            good.append(Record(partition, event["entity_id"].encode(), value, event=event))
    groups.append(good)
    odd_headers: list[list[tuple[bytes, bytes | None]]] = [
        [(b"trace", None)],
        [(b"blob", b"\xff\xfe\x01binary")],
    ]
    if producer == "kcat":
        odd_headers.append([(b"\xff\xfename", b"v")])
    for n, headers in enumerate(odd_headers):
        event, value = _event(f"{producer}-{codec}-p1-h{n}", "user-3", 42.0 + n)
        groups.append([Record(1, b"user-3", value, headers, event)])
    groups.append([Record(1, b"user-4", None, [(b"trace", None)])])  # tombstone
    groups.append([Record(1, b"user-4", b"")])  # empty value
    event, value = _event(f"{producer}-{codec}-p1-last", "ghost-1", 7.0)
    groups.append([Record(1, b"ghost-1", value, event=event)])
    return [record for group in groups for record in group]


def kcat_produce(bootstrap: str, topic: str, codec: str, records: list[Record]) -> None:
    """One kcat call per record: kcat applies its -H headers to every record of a call."""
    kcat = shutil.which("kcat")
    assert kcat, "kcat (Debian package kcat) is needed for the interoperability tests"
    for record in records:
        args: list[bytes] = [kcat.encode(), b"-P", b"-b", bootstrap.encode(), b"-t", topic.encode()]
        args += [b"-p", str(record.partition).encode(), b"-z", codec.encode(), b"-K", b"\t"]
        for name, value in record.headers:
            args += [b"-H", name if value is None else name + b"=" + value]
        if record.value is None:
            args.append(b"-Z")  # an empty line is sent as a null value: a tombstone
        line = (record.key or b"") + b"\t" + (record.value or b"") + b"\n"
        subprocess.run(args, input=line, check=True, capture_output=True, timeout=60)


def java_produce(bootstrap: str, topic: str, codec: str, records: list[Record]) -> None:
    java = shutil.which("java")
    assert java, "Java 17 is needed for the interoperability tests"
    libs = Path(os.environ.get("STREAMSCORE_LOCAL_DIR", ROOT / ".local")) / "kafka" / "libs"
    assert any(libs.glob("kafka-clients-*.jar")), f"no Kafka client jars in {libs} (make install)"

    def hexed(data: bytes | None) -> str:
        return "-" if data is None else data.hex()

    lines = []
    for r in records:
        headers = ",".join(f"{k.decode()}={hexed(v)}" for k, v in r.headers) or "-"
        lines.append(f"{r.partition}\t{hexed(r.key)}\t{hexed(r.value)}\t{headers}")
    source = ROOT / "tests" / "interop" / "HexProducer.java"
    done = subprocess.run(
        [java, "-cp", f"{libs}/*", str(source), bootstrap, topic, codec],
        input="\n".join(lines).encode(),
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]


@pytest.mark.parametrize("producer", ["kcat", "java"])
async def test_foreign_producers_every_codec_and_odd_records_nothing_lost(
    producer: str,
    kafka_bootstrap: str,
    mongo_url: str,
    mongo_db: Any,
    names: Names,
    model_path: Path,
    model: LoadedModel,
    kafka_client: str,
) -> None:
    await mongo_db["entity_features"].insert_many(
        [{"_id": k, "features": v} for k, v in STORED.items()]
    )
    settings = settings_for(
        names,
        model_path,
        bootstrap=kafka_bootstrap,
        mongo_url=mongo_url,
        kafka={"topic_partitions": 3, "client": kafka_client},
    )
    await ensure_topics(settings.kafka)
    send = kcat_produce if producer == "kcat" else java_produce
    sent: list[Record] = []
    for codec in CODECS:
        records = plan(codec, producer)
        send(kafka_bootstrap, names.input_topic, codec, records)
        sent.extend(records)

    outputs, _ = await score_until(settings, len(sent), timeout_s=120)

    events = [r.event for r in sent if r.event is not None]
    predictions = [json.loads(r.value) for r in outputs if r.topic == names.output_topic]
    assert Counter(p["event_id"] for p in predictions) == Counter(e["event_id"] for e in events)
    expected = offline_scores(model, events, STORED)
    for p in predictions:
        assert p["score"] == expected[p["event_id"]], p
        assert p["enrichment"] == ("hit" if p["entity_id"] in STORED else "miss")

    dead = [r for r in outputs if r.topic == names.dlq_topic]
    kinds = Counter(dict(r.headers)["streamscore.error.kind"] for r in dead)
    assert kinds == {b"tombstone": len(CODECS), b"empty_value": len(CODECS)}
    for r in dead:
        headers = list(r.headers)
        assert r.key == b"user-4"
        if dict(headers)["streamscore.error.kind"] == b"tombstone":
            assert r.value is None
            assert headers[0] == ("trace", None)  # the record's own null header, unchanged
        else:
            assert r.value == b""
        assert dict(headers)["streamscore.source.partition"] == b"1"

    assert set(
        (await committed_lag(kafka_bootstrap, names.group_id, names.input_topic)).values()
    ) == {0}
    report = await audit(settings)
    assert report.ok, report.to_text()
    assert (report.lost, report.duplicated_predictions) == (0, 0)
    assert report.events_in == len(sent)


def kcat_produce_odd_names(bootstrap: str, topic: str, count: int) -> None:
    """``count`` invalid events (keys k0, k1, ...) in one kcat call, each with a header name
    that is not UTF-8 and one that is."""
    kcat = shutil.which("kcat")
    assert kcat, "kcat (Debian package kcat) is needed for the interoperability tests"
    lines = b"".join(b'k%d\t{"event_id": "h-%d", "entity_id": 7}\n' % (i, i) for i in range(count))
    args = [kcat.encode(), b"-P", b"-b", bootstrap.encode(), b"-t", topic.encode()]
    args += [b"-K", b"\t", b"-H", b"\xff\xfename=v", b"-H", b"ok=1"]
    subprocess.run(args, input=lines, check=True, capture_output=True, timeout=60)


async def test_many_records_with_header_names_that_are_not_utf8_are_each_dead_lettered(
    kafka_bootstrap: str,
    mongo_url: str,
    mongo_db: Any,
    names: Names,
    model_path: Path,
    kafka_client: str,
) -> None:
    """Dozens of them in one process (confluent-kafka's header error once escaped a call site
    Python had specialised after a few such records, and halted the scorer)."""
    settings = settings_for(
        names,
        model_path,
        bootstrap=kafka_bootstrap,
        mongo_url=mongo_url,
        kafka={"topic_partitions": 1, "client": kafka_client},
    )
    await ensure_topics(settings.kafka)
    count = 40
    kcat_produce_odd_names(kafka_bootstrap, names.input_topic, count)

    outputs, runtime = await score_until(settings, count, timeout_s=90)
    assert runtime.exit_code == 0
    assert len(outputs) == count
    assert all(r.topic == names.dlq_topic for r in outputs)
    assert sorted(r.key for r in outputs) == sorted(b"k%d" % i for i in range(count))
    for record in outputs:
        headers = dict(record.headers)
        assert headers["streamscore.error.kind"] == b"invalid_event"
        if kafka_client == "confluent":  # its client cannot give such names back
            assert "streamscore.headers.unreadable" in headers
        else:  # aiokafka keeps the original headers
            assert headers["ok"] == b"1"
    report = await audit(settings)
    assert report.ok, report.to_text()
    assert (report.events_in, report.dead_letters, report.lost) == (count, count, 0)
