"""The baseline the forwarding bench compares against: an aiortc ``MediaRelay`` "SFU" (bench only).

What an aiortc newcomer builds: the publisher's tracks arrive through aiortc's stock (decoding)
``RTCRtpReceiver``; every subscriber gets ``MediaRelay().subscribe(track)``, so each video frame is
decoded once and re-encoded once per subscriber by that subscriber's ``RTCRtpSender``. This is what
sfu-geofence must never do (an SFU forwards); it is here only so that the bench can say how much the
forwarding saves on the same input, in the same run.

It speaks the subset of docs/protocol.md that :class:`sfu_geofence.synthetic.client.SyntheticPeer`
uses: ``join`` -> ``joined`` and a server ``offer`` (``recvonly`` m-lines for what the client
publishes, ``sendonly`` m-lines for the publisher's tracks) -> ``answer``. One publisher per process,
which must join (and be receiving) before the subscribers: a subscriber's offer waits for the
publisher's audio and video tracks. ICE is bound to 127.0.0.1 by the project's ICE policy, with
``iceServers=[]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from dataclasses import dataclass, field

from aiohttp import WSMsgType, web
from aiortc import (
    MediaStreamTrack,
    RTCBundlePolicy,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc.contrib.media import MediaRelay

from sfu_geofence.protocol import (
    KINDS,
    Answer,
    Join,
    Joined,
    Leave,
    OfferedTrack,
    OfferMessage,
    ProtocolError,
    PublishSlot,
    encode,
    parse_client_message,
)
from sfu_geofence.rtc.ice import IcePolicy, use_policy

logger = logging.getLogger(__name__)


@dataclass
class RelayState:
    """The one room of the relay: the publisher's tracks and the relay that copies their frames."""

    ice: IcePolicy = field(default_factory=IcePolicy)
    relay: MediaRelay = field(default_factory=MediaRelay)
    tracks: dict[str, MediaStreamTrack] = field(default_factory=dict)
    publisher: str = ""
    published: asyncio.Event = field(default_factory=asyncio.Event)
    connections: set[RTCPeerConnection] = field(default_factory=set)
    subscribers: int = 0
    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))


RELAY = web.AppKey("relay", RelayState)


def create_relay_app(ice: IcePolicy | None = None) -> web.Application:
    """The relay's aiohttp application: ``GET /ws``; closes every connection on shutdown."""
    app = web.Application()
    app[RELAY] = RelayState(ice=ice or IcePolicy())
    app.router.add_get("/ws", _websocket)
    app.on_shutdown.append(_close_all)
    return app


async def _close_all(app: web.Application) -> None:
    state = app[RELAY]
    await asyncio.gather(*(pc.close() for pc in list(state.connections)), return_exceptions=True)


async def _websocket(request: web.Request) -> web.WebSocketResponse:
    state = request.app[RELAY]
    ws = web.WebSocketResponse(heartbeat=2.0)
    await ws.prepare(request)
    pc: RTCPeerConnection | None = None
    try:
        async for message in ws:
            if message.type is not WSMsgType.TEXT:
                continue
            try:
                parsed = parse_client_message(message.data)
            except ProtocolError:
                continue  # only the synthetic peers talk to it
            if isinstance(parsed, Join) and pc is None:
                pc = await _join(state, ws, parsed)
            elif isinstance(parsed, Answer) and pc is not None:
                await pc.setRemoteDescription(RTCSessionDescription(sdp=parsed.sdp, type="answer"))
            elif isinstance(parsed, Leave):
                break
    finally:
        if pc is not None:
            state.connections.discard(pc)
            await pc.close()
        with contextlib.suppress(ConnectionError, RuntimeError):
            await ws.close()
    return ws


async def _join(state: RelayState, ws: web.WebSocketResponse, join: Join) -> RTCPeerConnection:
    participant = f"r{next(state.ids)}"
    publish = [kind for kind in KINDS if kind in join.publish]
    await ws.send_str(encode(Joined(participant, join.room, ())))
    if not publish:
        await state.published.wait()  # subscribers get the publisher's tracks in their first offer
    with use_policy(state.ice):
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
        state.connections.add(pc)
        if publish:
            state.publisher = participant
            for kind in publish:
                pc.addTransceiver(kind, direction="recvonly")

            @pc.on("track")
            def on_track(track: MediaStreamTrack) -> None:
                state.tracks[track.kind] = track
                if set(state.tracks) >= set(publish):
                    state.published.set()

        else:
            state.subscribers += 1
            for track in state.tracks.values():
                # decoded frames, re-encoded by each subscriber's sender
                pc.addTransceiver(state.relay.subscribe(track), direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
    transceivers = pc.getTransceivers()
    offer = OfferMessage(
        sdp=pc.localDescription.sdp,
        tracks=tuple(_track_info(state, t) for t in transceivers if t.direction == "sendonly"),
        publish=tuple(PublishSlot(str(t.mid), t.kind) for t in transceivers if t.direction == "recvonly"),
    )
    await ws.send_str(encode(offer))
    return pc


def _track_info(state: RelayState, transceiver: RTCRtpTransceiver) -> OfferedTrack:
    return OfferedTrack(
        mid=str(transceiver.mid),
        participant=state.publisher,
        name="publisher",
        kind=transceiver.kind,
        producer=f"relay-{transceiver.kind}",
    )
