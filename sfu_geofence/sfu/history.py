"""A producer's recent packets, kept to answer NACKs: a fixed-size ring of header fields and payload bytes.

Keeping the parsed ``RtpPacket`` objects alive (2 048 per producer, each with its header-extension
dataclass and CSRC list) made every full garbage collection walk them: gen-2 pauses of 53-118 ms were
seen on the event loop that forwards everyone's media (issue 12). Here a slot is a few machine words in
preallocated arrays plus the payload ``bytes`` aiortc already made, which the collector never tracks.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass

from aiortc.rtp import RtpPacket

HISTORY_SIZE = 2048
"""Packets kept per producer: a power of two. At 5 Mbit/s of 1200-byte packets (~520 packets/s) this
holds ~3.9 s, far more than a 300 ms round trip needs."""

_EMPTY = -1


@dataclass(frozen=True, slots=True)
class StoredPacket:
    """One remembered packet, as much of it as a retransmission needs (made only when one is asked for)."""

    sequence_number: int
    timestamp: int
    payload_type: int
    marker: int
    payload: bytes
    padding_size: int


class PacketHistory:
    """The last :data:`HISTORY_SIZE` packets of one stream, indexed by sequence number."""

    __slots__ = ("_empty", "_heads", "_paddings", "_payloads", "_sequence_numbers", "_timestamps")

    def __init__(self) -> None:
        self._empty = array("l", [_EMPTY]) * HISTORY_SIZE
        self._sequence_numbers = array("l", self._empty)
        """Sequence number held by each slot, or -1."""
        self._timestamps = array("L", [0]) * HISTORY_SIZE
        self._heads = bytearray(HISTORY_SIZE)
        """Marker bit and payload type, as in the second byte of the RTP header."""
        self._paddings = bytearray(HISTORY_SIZE)
        self._payloads: list[bytes] = [b""] * HISTORY_SIZE

    def add(self, packet: RtpPacket) -> None:
        """Once per received packet: overwrite the slot of its sequence number."""
        sequence_number = packet.sequence_number
        slot = sequence_number & (HISTORY_SIZE - 1)
        self._sequence_numbers[slot] = sequence_number
        self._timestamps[slot] = packet.timestamp
        self._heads[slot] = (packet.marker << 7) | packet.payload_type
        self._paddings[slot] = packet.padding_size
        self._payloads[slot] = packet.payload

    def get(self, sequence_number: int) -> StoredPacket | None:
        """The packet with this sequence number, if still remembered."""
        slot = sequence_number & (HISTORY_SIZE - 1)
        if self._sequence_numbers[slot] != sequence_number:
            return None
        head = self._heads[slot]
        return StoredPacket(
            sequence_number=sequence_number,
            timestamp=self._timestamps[slot],
            payload_type=head & 0x7F,
            marker=head >> 7,
            payload=self._payloads[slot],
            padding_size=self._paddings[slot],
        )

    def clear(self) -> None:
        """Forget everything (a stream reset: old numbers now mean other packets)."""
        self._sequence_numbers[:] = self._empty
        self._payloads = [b""] * HISTORY_SIZE
