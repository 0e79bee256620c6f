"""A subscriber's SSRC numbers its packets and times them as one stream, whoever's packets it carries."""

from __future__ import annotations

from dataclasses import dataclass

from sfu_geofence.sfu.continuity import NTP_ONE_SECOND, Continuity

T0 = 3_900_000_000 << 32
"""Some NTP time."""


@dataclass
class Line:
    """A sending m-line's memory of its SSRC (the SFU keeps it on its ``ForwardingSender``)."""

    used: bool = False
    next_sequence_number: int = 1000
    next_timestamp: int = 5_000
    last_rtp_timestamp: int = 0
    last_ntp_timestamp: int = 0


def test_the_first_stream_on_a_line_starts_at_its_initial_numbers() -> None:
    line, continuity = Line(), Continuity()
    assert not continuity.started
    continuity.start(line, sequence_number=40_000, timestamp=123, clock_rate=90_000, ntp=T0)
    assert (continuity.sequence_number(40_000), continuity.timestamp(123)) == (1000, 5_000)
    assert (continuity.sequence_number(40_001), continuity.timestamp(123 + 3000)) == (1001, 8_000)
    assert continuity.first_sequence_number == 1000
    assert line.used


def test_numbers_and_timestamps_wrap_around() -> None:
    line, continuity = Line(next_sequence_number=65_535, next_timestamp=0xFFFFFFFF), Continuity()
    continuity.start(line, sequence_number=7, timestamp=0, clock_rate=48_000, ntp=T0)
    assert (continuity.sequence_number(8), continuity.timestamp(960)) == (0, 959)


def test_a_recycled_line_advances_its_timestamp_by_the_wall_clock_gap_at_the_codec_clock_rate() -> None:
    line = Line(used=True, next_sequence_number=300, last_rtp_timestamp=1_000_000, last_ntp_timestamp=T0)
    continuity = Continuity()
    continuity.start(line, 10, 777, clock_rate=8000, ntp=T0 + int(2.5 * NTP_ONE_SECOND))
    assert continuity.timestamp(777) - line.last_rtp_timestamp == 20_000
    assert continuity.sequence_number(10) == 300


def test_a_recycled_line_moves_its_timestamp_at_least_one_tick_even_with_no_time_elapsed() -> None:
    line = Line(used=True, last_rtp_timestamp=1_000_000, last_ntp_timestamp=T0)
    continuity = Continuity()
    continuity.start(line, 10, 777, clock_rate=90_000, ntp=T0)
    assert continuity.timestamp(777) == 1_000_001
    continuity.start(
        line, 10, 777, clock_rate=90_000, ntp=T0 - 10 * int(NTP_ONE_SECOND)
    )  # clock stepped back
    assert continuity.timestamp(777) == 1_000_001


def test_after_a_stream_reset_the_new_stream_continues_the_numbering() -> None:
    line, continuity = Line(), Continuity()
    continuity.start(line, 100, 0, 90_000, T0)
    line.next_sequence_number = continuity.sequence_number(150) + 1  # what forwarding 100..150 left
    line.used, line.last_rtp_timestamp, line.last_ntp_timestamp = True, continuity.timestamp(9000), T0
    continuity.restart()
    assert not continuity.started
    continuity.start(line, 30_000, 42, 90_000, T0 + int(NTP_ONE_SECOND))  # 1 s later
    assert continuity.sequence_number(30_000) == 1051
    assert continuity.timestamp(42) == 5_000 + 9000 + 90_000
    assert continuity.first_sequence_number == 1051


def test_a_nacked_number_maps_back_only_from_the_current_mapping_on() -> None:
    line, continuity = Line(next_sequence_number=2), Continuity()
    assert continuity.published(2) is None  # not started: nothing was sent
    continuity.start(line, 60_000, 0, 90_000, T0)
    assert continuity.published(2) == 60_000
    assert continuity.published(5) == 60_003
    # Before the first number this consumer sent (across the wrap): the previous stream's, not ours.
    assert continuity.published(1) is None
    assert continuity.published(65_535) is None
