"""What a forwarding m-line keeps alive: nothing per millisecond, so that full collections stay short."""

from __future__ import annotations

import gc

from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.rate import RateBucket

from sfu_geofence.rtc.forwarding import ForwardingReceiver, add_forwarding_transceiver


def _live_rate_buckets() -> int:
    gc.collect()  # earlier tests' garbage is not what this test measures
    return sum(isinstance(o, RateBucket) for o in gc.get_objects())


async def test_video_m_lines_keep_no_per_millisecond_rate_buckets_before_media_arrives() -> None:
    # Every m-line has a receiver, sendonly ones included (8 per participant in a room of 9): aiortc's
    # bitrate estimator is 1,000 bucket objects, which every full garbage collection walks.
    before = _live_rate_buckets()
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        receivers = [
            add_forwarding_transceiver(pc, "video", direction).receiver
            for direction in ("recvonly", "sendonly", "sendonly", "sendonly")
        ]
        assert all(isinstance(r, ForwardingReceiver) for r in receivers)
        assert _live_rate_buckets() - before == 0
    finally:
        await pc.close()
