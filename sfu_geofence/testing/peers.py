"""Two plain aiortc peers connected directly on loopback, each on its own address: no SFU, no signaling.

For tests and benchmarks of what a peer sends or receives by itself (synthetic media sources, receive
meters); and the publishing and receiving peer connections the Janus tests give Janus's VideoRoom.
The offerer is set up by ``setup_offerer`` (add its tracks/transceivers) and the answerer by
``setup_answerer`` (called before the offer is applied, so it can attach ``"track"`` handlers).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable

from aiortc import RTCConfiguration, RTCPeerConnection

from ..rtc.ice import IcePolicy, use_policy
from ..synthetic.media import OpusTrack, Vp8Track, publish
from ..synthetic.meter import ReceiveMeter
from .wait import eventually

PeerSetup = Callable[[RTCPeerConnection], None]


def _no_setup(pc: RTCPeerConnection) -> None:
    pass


async def connect_pair(
    setup_offerer: PeerSetup,
    setup_answerer: PeerSetup = _no_setup,
    *,
    offerer_bind: str = "127.0.0.1",
    answerer_bind: str = "127.0.0.1",
    within: float = 30.0,
) -> tuple[RTCPeerConnection, RTCPeerConnection]:
    """Connect an offerer and an answerer on their loopback addresses and wait until both are connected.

    On failure both connections are closed before the error propagates.
    """
    offerer = answerer = None
    try:
        with use_policy(IcePolicy(bind=(offerer_bind,))):
            offerer = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            setup_offerer(offerer)
            await offerer.setLocalDescription(await offerer.createOffer())
        with use_policy(IcePolicy(bind=(answerer_bind,))):
            answerer = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            setup_answerer(answerer)
            await answerer.setRemoteDescription(offerer.localDescription)
            await answerer.setLocalDescription(await answerer.createAnswer())
        await offerer.setRemoteDescription(answerer.localDescription)
        pcs = (offerer, answerer)

        def connected() -> str | None:
            states = [pc.connectionState for pc in pcs]
            return None if states == ["connected", "connected"] else f"connection states {states}"

        await eventually(connected, within=within)
    except BaseException:
        for pc in (offerer, answerer):
            if pc is not None:
                await pc.close()
        raise
    return offerer, answerer


@contextlib.asynccontextmanager
async def peer_connections() -> AsyncIterator[list[RTCPeerConnection]]:
    """A list to put peer connections in; every one is closed afterwards."""
    pcs: list[RTCPeerConnection] = []
    try:
        yield pcs
    finally:
        for pc in pcs:
            await pc.close()


def camera_and_microphone(pcs: list[RTCPeerConnection]) -> RTCPeerConnection:
    """A peer connection (no ICE server) publishing the synthetic VP8 camera and Opus microphone."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    publish(pc, Vp8Track())
    publish(pc, OpusTrack())
    pcs.append(pc)
    return pc


def receiving(pcs: list[RTCPeerConnection], meter: ReceiveMeter, source: str) -> RTCPeerConnection:
    """A peer connection (no ICE server) whose incoming tracks ``meter`` counts as ``source``'s."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    meter.watch(pc, lambda _transceiver: source)
    pcs.append(pc)
    return pc


def packets(meter: ReceiveMeter, source: str) -> dict[str, int]:
    """Packets received from ``source``, by kind."""
    return {track.kind: track.counts().packets for track in meter.of_source(source)}
