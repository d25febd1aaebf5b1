"""What the scorer makes of Kafka's answer when it creates its topics (``streams.topics``)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from streams.topics import TopicsRefused, _check_created


def test_topics_kafka_refused_are_named_with_the_reason() -> None:
    response = SimpleNamespace(
        topic_errors=[
            ("events", 0, None),
            ("predictions", 36, "Topic 'predictions' already exists."),  # raced: no error
            ("bad name", 17, "Topic name is invalid"),
            ("events.dlq", 38, "replication factor of 3 cannot be reached"),
        ]
    )
    with pytest.raises(TopicsRefused) as refused:
        _check_created(response)
    text = str(refused.value)
    assert "bad name: InvalidTopicError (Topic name is invalid)" in text
    assert "events.dlq: InvalidReplicationFactorError" in text
    assert "predictions" not in text.replace("events.dlq", "")


def test_an_answer_without_errors_passes() -> None:
    _check_created(SimpleNamespace(topic_errors=[("events", 0, None), ("x", 36, "exists")]))
