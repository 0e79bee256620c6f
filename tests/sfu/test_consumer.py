"""What a consumer writes on the wire: the subscriber's header fields around the publisher's payload."""

from __future__ import annotations

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.rtcrtpparameters import (
    RTCRtpCodecParameters,
    RTCRtpHeaderExtensionParameters,
    RTCRtpParameters,
)
from aiortc.rtp import HeaderExtensionsMap, RtpPacket

from sfu_geofence.rtc.forwarding import ForwardingReceiver, add_forwarding_transceiver
from sfu_geofence.sfu import Sfu
from sfu_geofence.sfu.consumer import Consumer, ExtensionBlock, rewrite
from sfu_geofence.sfu.producer import Producer
from sfu_geofence.testing.channel import AnsweringClient
from sfu_geofence.testing.wait import eventually

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


async def test_a_recycled_line_advances_its_timestamp_by_the_gap_at_the_codec_clock_rate() -> None:
    # The timestamp gap only arises on a recycled m-line, where the SSRC's last packet was sent a while
    # ago; PCMU (8 kHz) is not offered by the SFU today, so the negotiated codec is set as
    # setRemoteDescription would set it, and _start is what computes the gap.
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        published = add_forwarding_transceiver(pc, "audio", "recvonly")
        published._codecs = [RTCRtpCodecParameters(mimeType="audio/PCMU", clockRate=8000, payloadType=0)]
        receiver = published.receiver
        assert isinstance(receiver, ForwardingReceiver)
        producer = Producer("p", "publisher", "audio", published, receiver)
        consumer = Consumer(producer, "s", add_forwarding_transceiver(pc, "audio", "sendonly"))
        sender = consumer.sender
        sender.used = True  # a previous consumer sent on this SSRC ...
        sender.last_rtp_timestamp = 1_000_000
        sender.last_ntp_timestamp = 3_900_000_000 << 32  # ... 2.5 s before this packet arrives
        packet = RtpPacket(payload_type=0, sequence_number=10, timestamp=777, ssrc=0xDEAD)
        consumer._start(packet, sender.last_ntp_timestamp + int(2.5 * 4294967296))
        first_timestamp = (packet.timestamp + consumer._ts_offset) & 0xFFFFFFFF
        # 2.5 s at 8 kHz; at the 48 kHz once assumed for all audio it would be 120_000.
        assert first_timestamp - sender.last_rtp_timestamp == 20_000
    finally:
        await pc.close()


async def test_the_keyframe_is_requested_on_the_first_packet_sent_not_at_activation(sfu: Sfu) -> None:
    # At activation the subscriber's DTLS is not up: a keyframe asked for then is lost, and the
    # producer's request limiter would delay the subscriber's own PLI. The real SFU, a real subscriber
    # connection; the publisher's packets are handed to its real Producer as its receiver would.
    publisher, subscriber = AnsweringClient("127.0.51.1"), AnsweringClient("127.0.51.2")
    try:
        a = sfu.join("r", "a", publisher.address, publisher.channel, publish=("video",))
        await publisher.answer(a)
        producer = a.producers["video"]
        requests: list[str] = []
        request_keyframe = producer.request_keyframe

        def recording_request_keyframe() -> None:
            requests.append("keyframe")
            request_keyframe()

        producer.request_keyframe = recording_request_keyframe  # type: ignore[method-assign]

        b = sfu.join("r", "b", subscriber.address, subscriber.channel, publish=())
        await subscriber.answer(b)
        consumer = b.consumers[producer.id]
        assert consumer.active
        dtls = consumer.sender.transport
        await eventually(lambda: None if dtls.state == "connected" else f"DTLS {dtls.state}", within=15)
        assert requests == []  # activation alone asks for nothing

        payload_type = next(pt for pt, c in producer.codecs.items() if c.mimeType == "video/VP8")
        for sequence_number in (100, 101):
            packet = RtpPacket(payload_type=payload_type, sequence_number=sequence_number, ssrc=0xBEEF)
            packet.payload = b"\x10" + bytes(30)
            producer.on_packet(packet)  # the publisher's packet, as its receiver hands it over
            assert (consumer.packets_forwarded, requests) == (sequence_number - 99, ["keyframe"])
        assert producer.keyframe_requests_sent == 1
    finally:
        await publisher.pc.close()
        await subscriber.pc.close()
