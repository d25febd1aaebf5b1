"""The audit's arithmetic: lost, duplicated and unexpected outputs from what the topics hold."""

from __future__ import annotations

from streams.audit import Position, reconcile


def _at(offset: int, partition: int = 0) -> Position:
    return ("events", partition, offset)


def test_one_output_per_input_is_ok() -> None:
    report = reconcile(
        [(_at(0), "e-1"), (_at(1), None), (_at(0, partition=1), "e-2")],
        ["e-2", "e-1"],
        [_at(1)],
    )

    assert (report.events_in, report.valid_events, report.invalid_records) == (3, 2, 1)
    assert (report.predictions, report.dead_letters) == (2, 1)
    assert (report.lost, report.duplicated_predictions, report.unexpected_predictions) == (0, 0, 0)
    assert report.ok


def test_an_input_with_neither_output_is_lost_by_event_id_or_position() -> None:
    report = reconcile([(_at(0), "e-1"), (_at(1), None), (_at(2), "e-3")], ["e-3"], [])

    assert report.lost == 2
    assert report.lost_examples == ["e-1", "events[0]@1"]
    assert not report.ok


def test_a_valid_event_that_was_dead_lettered_is_not_lost() -> None:
    report = reconcile([(_at(0), "e-1")], [], [_at(0)])

    assert report.lost == 0
    assert report.ok


def test_repeated_predictions_count_beyond_the_inputs_that_carry_the_id() -> None:
    report = reconcile(
        [(_at(0), "e-1"), (_at(1), "e-2"), (_at(2), "e-2")],
        ["e-1", "e-1", "e-1", "e-2", "e-2"],
        [],
    )

    assert report.duplicated_predictions == 2  # e-1 thrice for one input; e-2 twice for two
    assert report.duplicate_examples == ["e-1"]
    assert report.ok  # duplicates are allowed by at-least-once; losses are not
    assert report.to_text().endswith("OK: nothing lost")
    report.exactly_once = True  # read_committed under exactly-once: a repeat is a failure
    assert not report.ok
    assert report.to_text().endswith("NOT OK: see above")


def test_under_exactly_once_a_repeated_dead_letter_fails_and_a_clean_report_says_so() -> None:
    repeated = reconcile([(_at(0), None)], [], [_at(0), _at(0)])
    repeated.exactly_once = True
    assert not repeated.ok
    clean = reconcile([(_at(0), "e-1")], ["e-1"], [])
    clean.exactly_once = True
    assert clean.ok
    assert clean.to_text().endswith("OK: nothing lost, nothing repeated")


def test_repeated_dead_letters_for_one_record_are_counted() -> None:
    report = reconcile([(_at(0), None), (_at(1), None)], [], [_at(0), _at(0), _at(0), _at(1)])

    assert report.duplicated_dead_letters == 2
    assert report.lost == 0


def test_outputs_for_no_input_are_unexpected() -> None:
    report = reconcile(
        [(_at(0), "e-1")],
        ["e-1", "ghost", "ghost", "<unreadable prediction>"],
        [_at(0), ("other", 0, 5)],
    )

    assert report.unexpected_predictions == 3
    assert report.unexpected_examples == ["ghost", "<unreadable prediction>"]
    assert report.unexpected_dead_letters == 1
    assert not report.ok


def test_examples_are_capped_at_ten() -> None:
    inputs = [(_at(i), f"e-{i:02d}") for i in range(25)]

    report = reconcile(inputs, [], [])

    assert report.lost == 25
    assert report.lost_examples == [f"e-{i:02d}" for i in range(10)]


def test_an_id_sent_twice_needs_two_predictions() -> None:
    """Producers reuse ids (``streamscore produce`` twice with its defaults): each input record
    is matched to a prediction of its own, so one prediction for two records is one lost."""
    inputs = [(_at(0), "e-1"), (_at(1), "e-1"), (_at(2), "e-2"), (_at(3), "e-2")]
    report = reconcile(inputs, ["e-1", "e-2"], [])

    assert report.lost == 2
    assert report.lost_examples == ["e-1", "e-2"]
    assert not report.ok
    assert reconcile(inputs, ["e-1", "e-2", "e-2", "e-1"], []).ok
