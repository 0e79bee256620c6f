"""Codec matching gives exactly aiortc's result, with copies that share nothing with the inputs."""

from __future__ import annotations

import dataclasses

from aiortc import RTCConfiguration, RTCPeerConnection, sdp
from aiortc.rtcrtpparameters import RTCRtcpFeedback, RTCRtpCodecParameters

from sfu_geofence.rtc import codecs


async def _offered_codecs() -> list[list[RTCRtpCodecParameters]]:
    """The codecs of a real aiortc offer, per m-line (audio, video)."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        pc.addTransceiver("audio", direction="sendonly")
        pc.addTransceiver("video", direction="sendonly")
        offer = await pc.createOffer()
    finally:
        await pc.close()
    return [media.rtp.codecs for media in sdp.SessionDescription.parse(offer.sdp).media]


def _as_a_browser_answers(offered: list[RTCRtpCodecParameters]) -> list[RTCRtpCodecParameters]:
    """Other payload types, RTX pointing at them, feedback trimmed, an unknown codec first."""
    renumbered = {c.payloadType: (c.payloadType or 0) + 10 for c in offered}
    answer = [RTCRtpCodecParameters(mimeType="video/AV1X", clockRate=90000, payloadType=35)]
    for codec in offered:
        parameters = dict(codec.parameters)
        if "apt" in parameters:
            parameters["apt"] = renumbered[parameters["apt"]]
        answer.append(
            dataclasses.replace(
                codec,
                payloadType=renumbered[codec.payloadType],
                rtcpFeedback=[f for f in codec.rtcpFeedback if f.type != "goog-remb"],
                parameters=parameters,
            )
        )
    return answer


async def test_the_result_is_aiortcs_and_shares_no_mutable_part_with_the_inputs() -> None:
    for local in await _offered_codecs():
        remote = _as_a_browser_answers(local)
        ours = codecs.find_common_codecs(local, remote)
        assert ours == codecs.AIORTC_FIND_COMMON_CODECS(local, remote)
        assert len(ours) >= 2  # a media codec and its RTX at least: the comparison means something
        inputs = [*local, *remote]
        for codec in ours:
            assert all(codec is not c for c in inputs)
            assert all(codec.parameters is not c.parameters for c in inputs)
            assert all(codec.rtcpFeedback is not c.rtcpFeedback for c in inputs)
            feedback = [f for c in inputs for f in c.rtcpFeedback]
            assert all(f is not g for f in codec.rtcpFeedback for g in feedback)


def test_a_copy_is_equal_and_independent() -> None:
    codec = RTCRtpCodecParameters(
        mimeType="video/VP8",
        clockRate=90000,
        payloadType=96,
        rtcpFeedback=[RTCRtcpFeedback(type="nack", parameter="pli")],
        parameters={"x": 1},
    )
    copy = codecs.copy_codec(codec)
    assert copy == codec
    copy.parameters["x"] = 2
    copy.rtcpFeedback[0].parameter = None
    assert codec.parameters == {"x": 1}
    assert codec.rtcpFeedback == [RTCRtcpFeedback(type="nack", parameter="pli")]
