"""IceLimits: what one connection may hold, enforced before aioice pairs anything."""

from __future__ import annotations

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from sfu_geofence.rtc.candidates import IceLimits, bounded_candidate_lines
from sfu_geofence.rtc.forwarding import ice_connection_of
from sfu_geofence.rtc.ice import IcePolicy, ice_stats, use_policy

REAL = "a=candidate:1 1 udp 2130706431 127.0.0.5 5000 typ host\r\n"


def _candidates(count: int) -> str:
    return "".join(
        f"a=candidate:x{n} 1 udp 2130706431 127.49.0.{n % 250 + 1} {1000 + n} typ host\r\n"
        for n in range(count)
    )


def test_an_answer_keeps_its_first_distinct_candidate_lines_and_their_repeats_in_later_m_lines() -> None:
    sdp = (
        "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
        + REAL
        + _candidates(30)
        + "m=video 9 UDP/TLS/RTP/SAVPF 96\r\n"
        + REAL
    )
    kept = bounded_candidate_lines(sdp, 20)
    assert kept.count("a=candidate:") == 21  # the first 20 distinct, and the repeat of the real one
    assert kept.count(REAL) == 2
    assert "m=video" in kept
    assert "a=candidate:x18 " in kept
    assert "a=candidate:x19 " not in kept


def test_an_answer_within_the_limit_is_left_as_it_is() -> None:
    sdp = "v=0\r\n" + REAL + _candidates(19)
    assert bounded_candidate_lines(sdp, 20) is sdp


@pytest.mark.parametrize("field", ["remote_candidates", "pairs", "peer_reflexive", "receive_queue"])
def test_every_limit_is_at_least_one(field: str) -> None:
    with pytest.raises(ValueError, match=field):
        IceLimits(**{field: 0})  # type: ignore[arg-type]


async def test_remote_candidates_beyond_the_limit_never_reach_aioice_and_pairs_stay_within_theirs() -> None:
    # Straight to aiortc (no answer-size check, no line cut): the connection's own cap holds.
    limits = IceLimits(remote_candidates=8, pairs=5)
    with use_policy(IcePolicy(bind=("127.0.0.1",), limits=limits)):
        offerer = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        offerer.addTransceiver("audio")
        await offerer.setLocalDescription(await offerer.createOffer())
    with use_policy(IcePolicy(bind=("127.49.0.200",))):
        answerer = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        await answerer.setRemoteDescription(offerer.localDescription)
        await answerer.setLocalDescription(await answerer.createAnswer())
    sdp = answerer.localDescription.sdp.replace(
        "a=end-of-candidates", _candidates(100) + "a=end-of-candidates", 1
    )
    try:
        await offerer.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
        connection = ice_connection_of(offerer)
        assert connection is not None
        stats = ice_stats(connection)
        assert (stats.remote_candidates, stats.candidates.candidates_ignored) == (8, 93)
        assert stats.pairs <= 5
        assert stats.candidates.pairs_removed >= 3
    finally:
        await offerer.close()
        await answerer.close()
