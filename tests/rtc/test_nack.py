"""What the SFU asks a publisher to send again: the numbers a gap skipped, never more than 128."""

from __future__ import annotations

from sfu_geofence.rtc.nack import MAX_MISSING, STREAM_RESET_DISTANCE, NackTracker


def _tracker(*arrivals: int) -> tuple[NackTracker, list[bool]]:
    tracker = NackTracker()
    return tracker, [tracker.add(n) for n in arrivals]


def test_a_gap_is_reported_once_and_a_late_arrival_fills_it() -> None:
    tracker, due = _tracker(10, 11, 14, 15, 12)
    assert due == [False, False, True, False, False]
    assert tracker.missing == {13}


def test_gaps_across_the_wrap_are_gaps() -> None:
    tracker, due = _tracker(65534, 1)
    assert due == [False, True]
    assert tracker.missing == {65535, 0}


def test_a_gap_wider_than_128_keeps_the_latest_128() -> None:
    tracker, _ = _tracker(0, 500)
    assert tracker.missing == set(range(500 - MAX_MISSING, 500))


def test_a_jump_beyond_the_reset_distance_either_way_is_a_new_stream() -> None:
    tracker, due = _tracker(100, 98, 100 + STREAM_RESET_DISTANCE + 1, 5000, 5001)
    assert due == [False] * 5
    assert (tracker.resets, tracker.highest, tracker.missing) == (2, 5001, set())
    tracker, _ = _tracker(40000, 40000 - STREAM_RESET_DISTANCE - 1)
    assert tracker.resets == 1


def test_a_jump_of_exactly_the_reset_distance_is_loss() -> None:
    tracker, due = _tracker(0, STREAM_RESET_DISTANCE)
    assert due == [False, True]
    assert len(tracker.missing) == MAX_MISSING
