"""Which SSRCs a receiver accepts: the signalled ones, or (none signalled) one latched media + RTX pair."""

from __future__ import annotations

from aiortc.rtcrtpparameters import (
    RTCRtpCodecParameters,
    RTCRtpDecodingParameters,
    RTCRtpReceiveParameters,
    RTCRtpRtxParameters,
)
from aiortc.rtp import RtpPacket

from sfu_geofence.rtc.inbound import InboundStreams

VP8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=97)
RTX = RTCRtpCodecParameters(mimeType="video/rtx", clockRate=90000, payloadType=98, parameters={"apt": 97})


def _packet(ssrc: int, payload_type: int = 97, sequence_number: int = 1) -> RtpPacket:
    packet = RtpPacket(payload_type=payload_type, sequence_number=sequence_number, ssrc=ssrc)
    packet.payload = b"\x00\x01" + bytes(10)
    return packet


def _accepted(streams: InboundStreams, packets: list[RtpPacket]) -> list[int | None]:
    out = []
    for packet in packets:
        media = streams.accept(packet)
        out.append(None if media is None else media.ssrc)
    return out


def test_only_the_signalled_ssrc_and_its_rtx_are_accepted() -> None:
    streams = InboundStreams({}, {}, {})
    streams.configure(
        RTCRtpReceiveParameters(
            codecs=[VP8, RTX],
            encodings=[RTCRtpDecodingParameters(ssrc=1, payloadType=97, rtx=RTCRtpRtxParameters(ssrc=2))],
        )
    )
    packets = [_packet(1), _packet(3), _packet(2, payload_type=98), _packet(4, payload_type=98)]
    assert _accepted(streams, packets) == [1, None, 1, None]
    assert set(streams.streams) == {1, 2}


def test_without_signalled_ssrcs_the_first_media_ssrc_and_then_one_rtx_ssrc_are_latched() -> None:
    streams = InboundStreams({}, {}, {})
    streams.configure(RTCRtpReceiveParameters(codecs=[VP8, RTX]))
    packets = [
        _packet(9, payload_type=98),  # RTX before any media: nothing to latch it to
        _packet(5),
        _packet(6),
        _packet(7, payload_type=98),
        _packet(8, payload_type=98),
        _packet(5, sequence_number=2),
    ]
    assert _accepted(streams, packets) == [None, 5, None, 5, None, 5]
    assert set(streams.streams) == {5, 7}
    assert streams.ssrcs == {5, 7}
