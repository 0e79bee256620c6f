"""Sequence-number and timestamp continuity of one sending SSRC across the streams it carries in turn
(mediasoup's ``SeqManager``, LiveKit's ``rtpmunger.go``).

A subscriber's m-line keeps its SSRC for life: when a consumer starts on it (a new subscription, a
recycled m-line, the publisher's stream reset), its numbers continue where the m-line's last packet left
them, and its timestamps advance by the wall-clock time since then, at the codec's clock rate. Pure ints.
"""

from __future__ import annotations

from typing import Protocol

NTP_ONE_SECOND = 4294967296.0
"""One second in a 64-bit NTP timestamp."""


class SsrcLine(Protocol):
    """What a sending m-line remembers of its SSRC (``rtc.forwarding.ForwardingSender`` keeps it)."""

    used: bool
    """Some consumer has sent on it: its last timestamps are real."""
    next_sequence_number: int
    next_timestamp: int
    """The first timestamp of the first stream (random, like the sequence number)."""
    last_rtp_timestamp: int
    last_ntp_timestamp: int
    """When (64-bit NTP) the packet with ``last_rtp_timestamp`` was sent."""


class Continuity:
    """Offsets from one publisher's numbering to the subscriber's, for one consumer.

    Not started until the first packet (and again after :meth:`restart`); the per-packet mapping is
    ``(n + sequence_offset) & 0xFFFF`` and ``(t + timestamp_offset) & 0xFFFFFFFF``, read inline by
    the forwarding loop (see :meth:`sequence_number` and :meth:`timestamp` for everyone else).
    """

    __slots__ = ("first_sequence_number", "sequence_offset", "timestamp_offset")

    def __init__(self) -> None:
        self.sequence_offset: int | None = None
        """None until started."""
        self.timestamp_offset = 0
        self.first_sequence_number = 0
        """The first sequence number sent since the consumer began (as the subscriber numbers them)."""

    @property
    def started(self) -> bool:
        return self.sequence_offset is not None

    def start(self, line: SsrcLine, sequence_number: int, timestamp: int, clock_rate: int, ntp: int) -> None:
        """Map the packet (``sequence_number``, ``timestamp``) arriving at ``ntp`` onto ``line``'s next
        number, and a timestamp as far past the line's last one as the wall clock went."""
        if line.used:
            elapsed = max(0.0, (ntp - line.last_ntp_timestamp) / NTP_ONE_SECOND)
            next_timestamp = line.last_rtp_timestamp + max(1, int(elapsed * clock_rate))
        else:
            next_timestamp = line.next_timestamp
            line.used = True
        self.sequence_offset = (line.next_sequence_number - sequence_number) & 0xFFFF
        self.first_sequence_number = line.next_sequence_number
        self.timestamp_offset = (next_timestamp - timestamp) & 0xFFFFFFFF

    def restart(self) -> None:
        """The publisher's stream was reset: its next packet starts the mapping again."""
        self.sequence_offset = None

    def sequence_number(self, published: int) -> int:
        """The subscriber's number for the publisher's ``published`` (once started)."""
        assert self.sequence_offset is not None
        return (published + self.sequence_offset) & 0xFFFF

    def timestamp(self, published: int) -> int:
        """The subscriber's timestamp for the publisher's ``published``."""
        return (published + self.timestamp_offset) & 0xFFFFFFFF

    def published(self, sent: int) -> int | None:
        """The publisher's number for a number the subscriber got (and NACKs); None if not started, or
        if ``sent`` precedes this mapping: a recycled m-line's previous producer, or the old stream."""
        offset = self.sequence_offset
        if offset is None or (sent - self.first_sequence_number) & 0xFFFF >= 0x8000:
            return None
        return (sent - offset) & 0xFFFF
