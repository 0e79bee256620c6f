"""Tapping a receiver: RTP observed, nothing decoded, RTCP receiver reports and PLI still sent."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtp import RTCP_PSFB_PLI, AnyRtcpPacket, RtcpPsfbPacket, RtcpRrPacket, RtpPacket

from sfu_geofence.rtc.tap import decoder_thread_of, tap_of, tap_receiver
from sfu_geofence.synthetic.media import OpusTrack, VideoClipParams, Vp8Track
from sfu_geofence.testing.peers import connect_pair
from sfu_geofence.testing.wait import eventually

VIDEO = VideoClipParams(width=160, height=120, fps=10, bitrate=60_000)


def tap_every_track(pc: RTCPeerConnection, observed: dict[str, list[RtpPacket]]) -> None:
    @pc.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        transceiver = next(t for t in pc.getTransceivers() if t.receiver.track is track)
        packets = observed.setdefault(transceiver.kind, [])
        tap_receiver(transceiver.receiver, packets.append)


def publish(pc: RTCPeerConnection) -> None:
    pc.addTrack(Vp8Track(VIDEO))
    pc.addTrack(OpusTrack())


def record_rtcp(sender: RTCRtpSender, history: list[str]) -> None:
    """Record the RTCP packets the router hands to ``sender`` (wrapping the instance's handler)."""
    original: Callable[[AnyRtcpPacket], Awaitable[None]] = sender._handle_rtcp_packet

    async def handle(packet: AnyRtcpPacket) -> None:
        if isinstance(packet, RtcpRrPacket):
            history.append("RR")
        elif isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_PLI:
            history.append("PLI")
        await original(packet)

    setattr(sender, "_handle_rtcp_packet", handle)  # noqa: B010


async def test_a_tapped_receiver_observes_every_packet_and_still_sends_receiver_reports_and_pli() -> None:
    observed: dict[str, list[RtpPacket]] = {}
    sender, receiver = await connect_pair(
        publish,
        lambda pc: tap_every_track(pc, observed),
        offerer_bind="127.86.1.1",
        answerer_bind="127.86.1.2",
    )
    rtcp: dict[str, list[str]] = {}
    for s in sender.getSenders():
        assert s.track is not None
        record_rtcp(s, rtcp.setdefault(s.track.kind, []))
    try:

        def reports_reach_the_sender() -> str | None:
            missing = [kind for kind in ("audio", "video") if "RR" not in rtcp[kind]]
            return f"no receiver report yet for {missing}" if missing else None

        await eventually(reports_reach_the_sender, within=30)
        assert sorted(observed) == ["audio", "video"]
        assert all(len(packets) > 0 for packets in observed.values())

        video = next(t.receiver for t in receiver.getTransceivers() if t.kind == "video")
        tap = tap_of(video)
        assert tap is not None
        assert tap.media_ssrc == observed["video"][-1].ssrc
        await tap.request_keyframe()
        await eventually(lambda: None if "PLI" in rtcp["video"] else "no PLI reached the sender", within=30)
        assert "PLI" not in rtcp["audio"]

        for transceiver in receiver.getTransceivers():
            assert decoder_thread_of(transceiver.receiver) is None
            assert transceiver.receiver.track.readyState == "live"
    finally:
        await sender.close()
        await receiver.close()
    # Closing ends the receivers' tracks as a stock receiver's decoder shutdown would.
    for transceiver in receiver.getTransceivers():
        with pytest.raises(MediaStreamError):
            await transceiver.receiver.track.recv()


async def test_a_receiver_can_be_tapped_only_once_and_only_before_it_starts() -> None:
    sender, receiver = await connect_pair(publish, offerer_bind="127.86.1.3", answerer_bind="127.86.1.4")
    try:
        started = receiver.getReceivers()[0]
        await eventually(lambda: None if decoder_thread_of(started) else "receiver not started", within=30)
        with pytest.raises(RuntimeError, match="before it starts"):
            tap_receiver(started, lambda packet: None)
    finally:
        await sender.close()
        await receiver.close()

    fresh = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        transceiver = fresh.addTransceiver("audio", direction="recvonly")
        tap_receiver(transceiver.receiver, lambda packet: None)
        with pytest.raises(RuntimeError, match="already tapped"):
            tap_receiver(transceiver.receiver, lambda packet: None)
    finally:
        await fresh.close()
