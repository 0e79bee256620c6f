"""Keyframe requests that reach an aiortc sender are heard by whoever feeds it packets."""

from __future__ import annotations

from aiortc import RTCPeerConnection

from sfu_geofence.rtc.keyframe import on_keyframe_request
from sfu_geofence.rtc.tap import tap_receiver
from sfu_geofence.synthetic.media import VideoClipParams, Vp8Track
from sfu_geofence.testing.peers import connect_pair
from sfu_geofence.testing.wait import eventually


async def test_each_pli_reaches_the_callback_and_the_stock_encoder_flag_is_still_set() -> None:
    heard: list[str] = []
    taps = []

    def publish(pc: RTCPeerConnection) -> None:
        sender = pc.addTrack(Vp8Track(VideoClipParams(width=160, height=120, fps=10, bitrate=60_000)))
        on_keyframe_request(sender, lambda: heard.append("first"))
        on_keyframe_request(sender, lambda: heard.append("second"))

    def tap(pc: RTCPeerConnection) -> None:
        pc.on("track", lambda track: taps.append(tap_receiver(pc.getReceivers()[0], lambda packet: None)))

    sender, receiver = await connect_pair(publish, tap, offerer_bind="127.86.2.1", answerer_bind="127.86.2.2")
    try:
        await eventually(lambda: None if taps[0].media_ssrc is not None else "no media yet", within=30)
        await taps[0].request_keyframe()
        await eventually(lambda: None if len(heard) == 2 else f"heard {heard}", within=30)
        await taps[0].request_keyframe()
        await eventually(lambda: None if len(heard) == 4 else f"heard {heard}", within=30)
        assert heard == ["first", "second", "first", "second"]
        assert sender.getSenders()[0]._RTCRtpSender__force_keyframe is True  # type: ignore[attr-defined]
    finally:
        await sender.close()
        await receiver.close()
