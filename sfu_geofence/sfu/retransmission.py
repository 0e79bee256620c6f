"""How much retransmission one subscriber's NACKs may buy: duplicates removed, a cap per NACK, budgets
per consumer and per subscriber.

Each entry of a NACK costs the SFU a history lookup, a header rewrite, an SRTP protection and a
``sendto`` on the event loop that forwards everyone's media. Answered blindly, 5 NACK packets of
1 172 bytes (each FCI entry naming 17 numbers, repeated) bought 24 650 retransmissions and stalled the
loop ~104 ms each (issue 9). A real subscriber asks for far less: see :data:`RETRANSMISSIONS_PER_SECOND`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

MAX_NACK_ENTRIES = 64
"""Distinct sequence numbers answered from one NACK packet; the rest are ignored. An aiortc subscriber
names at most its 128 most recent missing numbers, re-sent until they arrive; Chrome names each lost
packet a few times, at round-trip intervals. Losing 5 % of a 30 fps VP8 stream, a NACK named at most
13 (measured at ~4 Mbit/s)."""

RETRANSMISSIONS_PER_SECOND = 100.0
"""Sustained retransmissions per consumer. Measured (``bench/nack_need.py``, docs/sfu.md): an aiortc
subscriber losing 5 % of a 30 fps VP8 stream names 13.6 numbers per second at ~1.45 Mbit/s, 33 at
~4 Mbit/s (repeats included), at most 84 in its busiest second."""

RETRANSMISSION_BURST = 100.0
"""Retransmissions a consumer may use at once: a busiest second (84 measured) fits in burst + rate."""


SUBSCRIBER_RETRANSMISSIONS_PER_SECOND = 400.0
"""Sustained retransmissions for all of one subscriber's consumers together. With budgets per consumer
only, one compound RTCP datagram (a NACK for each stream received) bought a burst per stream: the
work grew with the room (~1 500 retransmissions, ~20 ms of event loop, in a room of 15 streams). A
real subscriber's loss is its downlink's, shared by all it receives: three of the 4 Mbit/s streams
measured above name ~100 numbers per second; this leaves four times that."""

SUBSCRIBER_RETRANSMISSION_BURST = 200.0
"""Retransmissions all of a subscriber's consumers may use at once (~3 ms of event loop); with the
rate, more than the busiest second of three 4 Mbit/s streams (3 x 84 measured)."""


def requested(lost: Sequence[int]) -> list[int]:
    """The numbers of one NACK worth answering: each once, in order, at most :data:`MAX_NACK_ENTRIES`."""
    unique = list(dict.fromkeys(lost))
    return unique[:MAX_NACK_ENTRIES] if len(unique) > MAX_NACK_ENTRIES else unique


class RetransmissionBudget:
    """A token bucket: ``rate`` retransmissions per second, at most ``burst`` at once, and never more
    than ``shared`` (the subscriber's bucket, when this is one of its consumers') grants."""

    __slots__ = ("_clock", "_last", "_tokens", "burst", "rate", "shared")

    def __init__(
        self,
        rate: float = RETRANSMISSIONS_PER_SECOND,
        burst: float = RETRANSMISSION_BURST,
        clock: Callable[[], float] = time.monotonic,
        shared: RetransmissionBudget | None = None,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.shared = shared
        self._clock = clock
        self._tokens = burst
        self._last = clock()

    def take(self, wanted: int) -> int:
        """How many of ``wanted`` retransmissions may be sent now (and spend them)."""
        now = self._clock()
        tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        granted = min(wanted, int(tokens))
        if granted and self.shared is not None:
            granted = self.shared.take(granted)
        self._tokens = tokens - granted
        return granted

    def refund(self, unused: int) -> None:
        """Give back what was granted but not sent (numbers no longer in the history)."""
        self._tokens = min(self.burst, self._tokens + unused)
        if self.shared is not None:
            self.shared.refund(unused)
