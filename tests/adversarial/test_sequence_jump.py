"""A publisher's sequence-number jump is a stream reset, not thousands of missing packets (issue 9, item 4).

Before: aiortc's NackGenerator added every skipped number one by one (up to 32 767, ~32 ms of event
loop per crafted packet), the SFU NACKed the last 128 of them, and every subscriber was handed the jump.
"""

from __future__ import annotations

import asyncio
import itertools

import pytest
from aiortc.rtp import RTCP_RTPFB_NACK, AnyRtcpPacket, RtcpRtpfbPacket, RtpPacket
from hostile_call import Call

from sfu_geofence.rtc.access import sender_ssrc
from sfu_geofence.rtc.nack import STREAM_RESET_DISTANCE
from sfu_geofence.testing.attacks import OutgoingRtp, jumped_rtp, send_protected, silence
from sfu_geofence.testing.wait import eventually

pytestmark = pytest.mark.slow

JUMP = 30000
JUMPS = 10


async def test_jumps_ask_the_publisher_for_nothing_and_subscribers_see_a_continuous_stream(
    call: Call,
) -> None:
    attacker = call.attacker
    assert attacker.pc is not None
    video = attacker.tracks[1]
    video_sender = next(t.sender for t in attacker.pc.getTransceivers() if t.sender.track is video)
    outgoing = OutgoingRtp(video_sender.transport)
    ssrc = sender_ssrc(video_sender)
    await eventually(lambda: None if ssrc in outgoing.last else "no video sent yet", within=5)
    silence(video)

    nacked: list[int] = []
    handle = video_sender._handle_rtcp_packet

    async def record(packet: AnyRtcpPacket) -> None:
        if isinstance(packet, RtcpRtpfbPacket) and packet.fmt == RTCP_RTPFB_NACK:
            nacked.extend(packet.lost)
        await handle(packet)

    video_sender._handle_rtcp_packet = record  # type: ignore[method-assign]

    seen: list[int] = []
    tap = call.tap(call.viewer, attacker, "video")
    observe = tap.observer

    def observe_sequence(packet: RtpPacket) -> None:
        seen.append(packet.sequence_number)
        observe(packet)

    tap.observer = observe_sequence

    producer = call.producer(attacker, "video")
    await asyncio.sleep(0.2)  # the last real packets arrive
    packet = outgoing.last[ssrc]
    real = len(seen)
    skipped_from: list[int] = []
    for _ in range(JUMPS):  # each crafted packet JUMP numbers after the one before: all accepted by SRTP
        skipped_from.append((int.from_bytes(packet[2:4], "big") + 1) & 0xFFFF)
        packet = jumped_rtp(packet, JUMP)
        await send_protected(video_sender.transport, packet)
    await eventually(
        lambda: None if len(seen) - real >= JUMPS else f"{len(seen) - real} crafted packets forwarded",
        within=5,
    )
    await call.advancing(attacker_kinds=("audio",))

    asked = [n for n in nacked for first in skipped_from if (n - first) & 0xFFFF < JUMP - 1]
    assert asked == [], f"{len(asked)} skipped numbers NACKed"
    steps = [((b - a + 0x8000) & 0xFFFF) - 0x8000 for a, b in itertools.pairwise(seen)]
    assert max(abs(step) for step in steps) < STREAM_RESET_DISTANCE, "a subscriber was handed the jump"
    assert producer.stream_resets == JUMPS
