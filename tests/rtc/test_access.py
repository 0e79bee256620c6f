"""What ``sfu/`` reads of aiortc's private state, read through :mod:`sfu_geofence.rtc.access` after a real
offer/answer between two aiortc peer connections (no media needed)."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpTransceiver

from sfu_geofence.rtc.access import header_extension_ids, negotiated_codecs, sender_ssrc, set_msid
from sfu_geofence.rtc.ice import IcePolicy, use_policy

ABS_SEND_TIME = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"


@contextlib.asynccontextmanager
async def peers() -> AsyncIterator[tuple[RTCPeerConnection, RTCPeerConnection]]:
    """Two peer connections that gather on 127.0.0.1 only."""
    with use_policy(IcePolicy(bind=("127.0.0.1",))):
        offerer = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        answerer = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        try:
            yield offerer, answerer
        finally:
            await offerer.close()
            await answerer.close()


async def negotiate(offerer: RTCPeerConnection, answerer: RTCPeerConnection) -> str:
    """One offer/answer; returns the offer's SDP."""
    await offerer.setLocalDescription(await offerer.createOffer())
    offer = offerer.localDescription
    await answerer.setRemoteDescription(offer)
    await answerer.setLocalDescription(await answerer.createAnswer())
    await offerer.setRemoteDescription(answerer.localDescription)
    return str(offer.sdp)


def _only(pc: RTCPeerConnection) -> RTCRtpTransceiver:
    [transceiver] = pc.getTransceivers()
    return transceiver


@pytest.mark.asyncio
async def test_negotiated_codecs_and_extensions_are_those_of_the_answer() -> None:
    async with peers() as (offerer, answerer):
        offerer.addTransceiver("video", direction="sendonly")
        await negotiate(offerer, answerer)
        answer = str(answerer.localDescription.sdp)
        for pc in (offerer, answerer):
            codecs = negotiated_codecs(_only(pc))
            assert codecs, "no codec negotiated"
            for codec in codecs:
                assert (
                    f"a=rtpmap:{codec.payloadType} {codec.mimeType.split('/')[1]}/{codec.clockRate}" in answer
                )
            [abs_send_time] = re.findall(rf"a=extmap:(\d+) {re.escape(ABS_SEND_TIME)}", answer)
            assert header_extension_ids(_only(pc))[ABS_SEND_TIME] == int(abs_send_time)


@pytest.mark.asyncio
async def test_the_sender_ssrc_is_the_one_offered() -> None:
    async with peers() as (offerer, answerer):
        offerer.addTransceiver("audio", direction="sendonly")
        offer = await negotiate(offerer, answerer)
        assert f"a=ssrc:{sender_ssrc(_only(offerer).sender)} " in offer


@pytest.mark.asyncio
async def test_set_msid_reaches_the_next_offer() -> None:
    async with peers() as (offerer, answerer):
        offerer.addTransceiver("audio", direction="sendonly")
        set_msid(_only(offerer).sender, "publisher-7", "track-9")
        offer = await negotiate(offerer, answerer)
        assert "a=msid:publisher-7 track-9" in offer
