"""Which of a publisher's packets the SFU asks for again (NACK), with bounded work per packet.

aiortc's ``NackGenerator`` adds every missing number one by one, then trims the set to 128: a publisher
whose sequence numbers jump by 32 767 costs ~32 ms of event loop per crafted packet (issue 9). Here a
gap costs at most :data:`MAX_MISSING` insertions, and a jump farther than :data:`STREAM_RESET_DISTANCE`
(either way) is a stream reset: nothing is asked for, numbering starts again from that packet.
"""

from __future__ import annotations

MAX_MISSING = 128
"""Missing numbers tracked (and named in one NACK), as aiortc's generator keeps."""

STREAM_RESET_DISTANCE = 1000
"""A jump of more sequence numbers than this is a new stream, not loss: ~2 s of a 5 Mbit/s video
stream, longer than any history a publisher keeps to retransmit from (libwebrtc gives up NACKing
beyond 1 000 missing packets too)."""


class NackTracker:
    """The publisher's missing sequence numbers, from the packets that arrive (once per packet)."""

    __slots__ = ("highest", "missing", "resets")

    def __init__(self) -> None:
        self.highest: int | None = None
        """Highest sequence number seen since the last reset."""
        self.missing: set[int] = set()
        self.resets = 0

    def add(self, sequence_number: int) -> bool:
        """Note one arrival; True when it revealed new missing numbers (a NACK is due)."""
        highest = self.highest
        if highest is None:
            self.highest = sequence_number
            return False
        distance = (sequence_number - highest) & 0xFFFF
        if distance == 0:
            return False
        if distance < 0x8000:
            if distance > STREAM_RESET_DISTANCE:
                self._reset(sequence_number)
                return False
            self.highest = sequence_number
            if distance == 1:
                return False
            missing = self.missing
            for offset in range(max(1, distance - MAX_MISSING), distance):
                missing.add((highest + offset) & 0xFFFF)
            if len(missing) > MAX_MISSING:
                self.missing = {s for s in missing if (sequence_number - s) & 0xFFFF <= MAX_MISSING}
            return True
        if 0x10000 - distance > STREAM_RESET_DISTANCE:
            self._reset(sequence_number)
        else:
            self.missing.discard(sequence_number)  # late: a retransmission or reordering
        return False

    def _reset(self, sequence_number: int) -> None:
        self.highest = sequence_number
        self.missing.clear()
        self.resets += 1
