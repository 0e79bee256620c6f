"""The header a subscriber receives: its own fields and extension block around the publisher's payload.

aiortc's ``RtpPacket`` serves as the publisher's packet and as the subscriber's parser (what a receiver
reads is the specification); the module under test imports nothing from aiortc.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
from aiortc.rtp import HeaderExtensionsMap, RtpPacket

from sfu_geofence.sfu.rtp_header import ExtensionBlock, abs_send_time_of, rewrite

IDS = {
    "urn:ietf:params:rtp-hdrext:sdes:mid": 1,
    "urn:ietf:params:rtp-hdrext:ssrc-audio-level": 2,
    "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time": 3,
}


def _subscriber_map(ids: dict[str, int]) -> HeaderExtensionsMap:
    extensions = HeaderExtensionsMap()
    extensions.configure(
        RTCRtpParameters(
            headerExtensions=[RTCRtpHeaderExtensionParameters(id=i, uri=u) for u, i in ids.items()]
        )
    )
    return extensions


def _published(
    payload: bytes, *, marker: int = 0, padding: int = 0, level: tuple[bool, int] | None = None
) -> RtpPacket:
    packet = RtpPacket(payload_type=100, marker=marker, sequence_number=7, timestamp=1234, ssrc=0xDEAD)
    packet.payload = payload
    packet.padding_size = padding
    packet.extensions.audio_level = level
    packet.extensions.mid = "publisher-mid"
    return packet


@pytest.mark.parametrize("mid", ["0", "12", "123"])
def test_video_carries_the_subscriber_mid_and_our_send_time_and_nothing_of_the_publisher_header(
    mid: str,
) -> None:
    block = ExtensionBlock(mid, IDS, "video")
    sent = rewrite(
        _published(b"\x90\x80vp8", marker=1),
        97,
        65535,
        0xFFFFFFFF,
        0xBEEF,
        block.for_packet(_published(b""), b"\x01\x02\x03"),
    )
    parsed = RtpPacket.parse(sent, _subscriber_map(IDS))
    assert (parsed.payload_type, parsed.marker, parsed.sequence_number, parsed.timestamp, parsed.ssrc) == (
        97,
        1,
        65535,
        0xFFFFFFFF,
        0xBEEF,
    )
    assert parsed.payload == b"\x90\x80vp8"
    assert parsed.extensions.mid == mid
    assert parsed.extensions.abs_send_time == 0x010203
    assert parsed.extensions.audio_level is None
    assert parsed.csrc == []


def test_audio_keeps_the_publisher_audio_level_when_it_has_one() -> None:
    block = ExtensionBlock("4", IDS, "audio")
    with_level = _published(b"opus", level=(True, 42))
    parsed = RtpPacket.parse(
        rewrite(with_level, 111, 1, 2, 3, block.for_packet(with_level, b"\0\0\0")), _subscriber_map(IDS)
    )
    assert (parsed.extensions.mid, parsed.extensions.audio_level, parsed.payload) == (
        "4",
        (True, 42),
        b"opus",
    )
    without = _published(b"opus")
    parsed = RtpPacket.parse(
        rewrite(without, 111, 1, 2, 3, block.for_packet(without, b"\0\0\0")), _subscriber_map(IDS)
    )
    assert (parsed.extensions.mid, parsed.extensions.audio_level) == ("4", None)


def test_padding_is_kept_and_a_subscriber_without_extensions_gets_none() -> None:
    block = ExtensionBlock("0", {}, "video")
    packet = _published(b"data", padding=5)
    sent = rewrite(packet, 97, 1, 2, 3, block.for_packet(packet, b"\0\0\0"))
    assert sent[0] == 0x80 | 0x20  # version 2, padding, no extension
    parsed = RtpPacket.parse(sent, _subscriber_map({}))
    assert (parsed.payload, parsed.padding_size) == (b"data", 5)


def test_abs_send_time_is_the_6_18_fixed_point_seconds_of_the_ntp_time() -> None:
    # 1.5 s past an NTP second boundary (seconds modulo 64 kept): 0b000001.100000000000000000
    assert abs_send_time_of((65 << 32) + (1 << 31)) == bytes.fromhex("060000")


@dataclass(frozen=True)
class Stored:
    """A packet as the history keeps it (no aiortc): what is forwarded unchanged."""

    marker: int
    payload: bytes
    padding_size: int


def test_the_header_bytes_are_exactly_the_subscriber_fields_with_rfc_8285_padding() -> None:
    block = ExtensionBlock("ab", {"urn:ietf:params:rtp-hdrext:sdes:mid": 9}, "video")
    # mid "ab": 1 id/length byte + 2 bytes, padded to 4; no abs-send-time negotiated
    assert block.for_retransmission(b"\1\2\3") == bytes.fromhex("bede0001") + bytes([0x91]) + b"ab\0"
    sent = rewrite(Stored(marker=1, payload=b"xyz", padding_size=3), 96, 0x1234, 0x89ABCDEF, 0x01020304, b"")
    assert sent == bytes.fromhex("a0e0123489abcdef01020304") + b"xyz" + b"\0\0\3"
