"""The RTP header a subscriber receives: its own SSRC, payload type, numbers and extension block around
the publisher's payload (mediasoup's and LiveKit's rewriting, apart from any sending).

Pure bytes and ints, no aiortc: a packet is anything with the fields read here (aiortc's ``RtpPacket``
as it arrives, the history's ``StoredPacket`` when answering a NACK).
"""

from __future__ import annotations

import struct
from typing import Protocol

_HEADER = struct.Struct("!BBHII")
_EXTENSION_HEADER = struct.Struct("!HH")
_ONE_BYTE_PROFILE = 0xBEDE
MID_URI = "urn:ietf:params:rtp-hdrext:sdes:mid"
ABS_SEND_TIME_URI = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
AUDIO_LEVEL_URI = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"


class ForwardedBody(Protocol):
    """What of a packet is forwarded unchanged: marker, payload, padding."""

    @property
    def marker(self) -> int: ...

    @property
    def payload(self) -> bytes: ...

    @property
    def padding_size(self) -> int: ...


class PublishedExtensions(Protocol):
    """What of the publisher's header extensions is carried over (the audio level, RFC 6464)."""

    @property
    def audio_level(self) -> tuple[bool, int] | None: ...


class PublishedPacket(Protocol):
    """A packet as it arrives from the publisher, parsed."""

    @property
    def extensions(self) -> PublishedExtensions: ...


class ExtensionBlock:
    """Header-extension bytes for one subscriber: its ``mid``, plus abs-send-time or audio level.

    Precomputed at activation (one-byte header form, RFC 8285) so that the per-packet work is two
    concatenations. ``ids`` maps extension URIs to the ids the subscriber negotiated.
    """

    __slots__ = ("prefix", "suffix", "variable", "video", "without")

    def __init__(self, mid: str, ids: dict[str, int], kind: str) -> None:
        mid_id = ids.get(MID_URI)
        encoded_mid = mid.encode()
        fixed = bytes([(mid_id << 4) | (len(encoded_mid) - 1)]) + encoded_mid if mid_id else b""
        variable_uri, variable_length = (ABS_SEND_TIME_URI, 3) if kind == "video" else (AUDIO_LEVEL_URI, 1)
        variable_id = ids.get(variable_uri)
        self.video = kind == "video"
        self.without = self._block(fixed)
        """The whole block when the variable element is absent (or not negotiated)."""
        self.variable = variable_id is not None
        if variable_id is not None:
            body_length = len(fixed) + 1 + variable_length
            pad = (-body_length) % 4
            self.prefix = (
                _EXTENSION_HEADER.pack(_ONE_BYTE_PROFILE, (body_length + pad) // 4)
                + fixed
                + bytes([(variable_id << 4) | (variable_length - 1)])
            )
            self.suffix = bytes(pad)
        else:
            self.prefix = self.suffix = b""

    def for_packet(self, packet: PublishedPacket, abs_send_time: bytes) -> bytes:
        """The block for one forwarded packet (``abs_send_time``: 3 bytes, used for video)."""
        if not self.variable:
            return self.without
        if self.video:
            return self.prefix + abs_send_time + self.suffix
        level = packet.extensions.audio_level
        if level is None:
            return self.without
        return self.prefix + bytes(((level[0] << 7) | level[1],)) + self.suffix

    def for_retransmission(self, abs_send_time: bytes) -> bytes:
        """The block for a packet sent again from the history (which keeps no audio level)."""
        if self.variable and self.video:
            return self.prefix + abs_send_time + self.suffix
        return self.without

    @staticmethod
    def _block(body: bytes) -> bytes:
        if not body:
            return b""
        pad = (-len(body)) % 4
        return _EXTENSION_HEADER.pack(_ONE_BYTE_PROFILE, (len(body) + pad) // 4) + body + bytes(pad)


def abs_send_time_of(ntp: int) -> bytes:
    """The 3-byte abs-send-time value (6.18 fixed-point seconds) of a 64-bit NTP timestamp."""
    return ((ntp >> 14) & 0x00FFFFFF).to_bytes(3, "big")


def rewrite(
    packet: ForwardedBody, pt: int, sequence_number: int, timestamp: int, ssrc: int, block: bytes
) -> bytes:
    """Serialize ``packet`` with one subscriber's header fields and extension block; payload, padding kept."""
    padding = packet.padding_size
    first = 0x80 | (0x10 if block else 0) | (0x20 if padding else 0)
    header = _HEADER.pack(first, (packet.marker << 7) | pt, sequence_number, timestamp, ssrc)
    if padding:
        return b"".join((header, block, packet.payload, bytes(padding - 1), bytes((padding,))))
    return b"".join((header, block, packet.payload))
