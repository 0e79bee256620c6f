"""A consumer on real aiortc transceivers: where its timestamps start, when it asks for a keyframe."""

from __future__ import annotations

from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import RtpPacket

from sfu_geofence.rtc.forwarding import ForwardingReceiver, add_forwarding_transceiver
from sfu_geofence.sfu import Sfu
from sfu_geofence.sfu.consumer import Consumer
from sfu_geofence.sfu.producer import Producer
from sfu_geofence.testing.channel import AnsweringClient
from sfu_geofence.testing.wait import eventually


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
        first_timestamp = consumer.continuity.timestamp(packet.timestamp)
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
