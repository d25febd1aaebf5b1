"""``streamscore produce``'s events: drawn a chunk at a time, the same whatever the chunk."""

from __future__ import annotations

import json

import pytest

from streamscore_cli import produce


def _drawn(count: int, seed: int = 3) -> list[tuple[bytes | None, bytes]]:
    return list(produce.events(count, "t", unknown_ratio=0.2, bad_ratio=0.1, seed=seed))


def test_events_come_in_order_one_per_number_over_several_chunks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(produce, "CHUNK", 7)
    drawn = _drawn(30)
    assert len(drawn) == 30
    numbers = []
    for i, (key, value) in enumerate(drawn):
        if key is None:  # a bad record
            assert value in produce.BAD_RECORDS
            continue
        event = json.loads(value)
        assert event["event_id"] == f"t-{i:07d}"
        assert key == event["entity_id"].encode()
        numbers.append(i)
    assert 0 < len(numbers) < 30  # some bad ones, with the ratio above
    assert [key for key, _ in _drawn(30)] == [key for key, _ in drawn]  # same seed, same draw


def test_a_count_within_one_chunk_is_drawn_as_before(monkeypatch: pytest.MonkeyPatch) -> None:
    whole = [key for key, _ in _drawn(40)]
    monkeypatch.setattr(produce, "CHUNK", 40)
    assert [key for key, _ in _drawn(40)] == whole
