"""A synthetic participant of a Janus VideoRoom (through the geofence's gate, or Janus itself): what
:class:`~sfu_geofence.synthetic.client.SyntheticPeer` is for the project's SFU, for the load tester.

It joins as a publisher (its display name is its handle id: the participant id the gate gives it, so
that every other peer knows whom it receives), publishes the pre-encoded clips, and subscribes to every
other publisher of the room, as janus.js demos do, metering what arrives without decoding. A refusal
(the gate's 403) and an ejection (the gate's event, then Janus's ``detached``) end it as ``refused`` /
``ejected``, with close codes 4403 / 4409 like the SFU's, so reports read the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence

import aiohttp
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from ..janus import JanusError, JanusHandle, JanusSession
from ..janus.client import JsonObject
from ..janus.videoroom import PLUGIN, VideoRoom
from ..protocol import EjectedMessage, RefusedMessage, ServerMessage
from ..rtc.ice import IcePolicy, IPNetwork, use_policy
from ..synthetic.client import Received
from ..synthetic.media import ClipTrack, publish
from ..synthetic.meter import Clock, ReceiveMeter

logger = logging.getLogger(__name__)

REFUSED = 403
"""The gate's refusal (Janus's ``JANUS_ERROR_UNAUTHORIZED``)."""
NO_SUCH_ROOM, ROOM_EXISTS = 426, 427
"""VideoRoom errors: a room the first participant creates (as the demos do), or another created first."""
CLOSE_REFUSED, CLOSE_EJECTED = 4403, 4409


class JanusPeer:
    """One participant: a Janus session from ``address`` (its signaling), media from ``media_address``."""

    def __init__(
        self,
        url: str,
        room: str,
        address: str,
        *,
        name: str | None = None,
        tracks: Sequence[ClipTrack] = (),
        media_address: str | None = None,
        allowed_remote: Sequence[IPNetwork] = (),
        clock: Clock = time.monotonic,
    ) -> None:
        self.url = url
        self.room = room
        self.address = address
        self.name = name or address
        self.tracks = list(tracks)
        self.meter = ReceiveMeter(clock=clock)
        self.participant_id: str | None = None
        self.parsed: list[ServerMessage] = []
        self.close_code: int | None = None
        self.closed = asyncio.Event()
        self._policy = IcePolicy(bind=(media_address or address,), allowed_remote=tuple(allowed_remote))
        self._http: aiohttp.ClientSession | None = None
        self._session: JanusSession | None = None
        self._pcs: list[RTCPeerConnection] = []
        self._subscribed: set[int | str] = set()
        self._watch: asyncio.Task[None] | None = None

    @property
    def received(self) -> dict[str, Received]:
        """Each received track by ``<participant>/<kind>`` (the worker's view of a producer)."""
        return {
            f"{m.source}/{m.kind}": Received("", m.source, m.kind, f"{m.source}/{m.kind}", m)
            for m in self.meter.tracks
        }

    async def join(self, within: float = 10.0) -> None:
        """Join, publish and subscribe to the room's publishers; refused: :attr:`closed` is set."""
        self._http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(self.address, 0)))
        async with asyncio.timeout(within):
            self._session = await JanusSession.create(self._http, self.url)
            handle = await self._session.attach(PLUGIN)
            display = str(handle.handle_id)
            join = {"request": "join", "ptype": "publisher", "room": self.room, "display": display}
            try:
                try:
                    joined = await handle.message(join)
                except JanusError as error:
                    if error.code != NO_SUCH_ROOM:
                        raise
                    with contextlib.suppress(JanusError):  # ROOM_EXISTS: created meanwhile
                        await handle.message({"request": "create", "room": self.room, "publishers": 100})
                    joined = await handle.message(join)
            except JanusError as error:
                if error.code != REFUSED:
                    raise
                self.parsed.append(RefusedMessage(error.reason))
                self._end(CLOSE_REFUSED)
                return
            self.participant_id = display
            with use_policy(self._policy):
                pc = self._pc()
                for track in self.tracks:
                    publish(pc, track)
                await pc.setLocalDescription(await pc.createOffer())
                reply = await handle.message({"request": "publish"}, jsep=_jsep(pc))
                assert reply.jsep is not None, "the VideoRoom answered a publish without an SDP answer"
                await pc.setRemoteDescription(RTCSessionDescription(str(reply.jsep["sdp"]), "answer"))
        # Subscriptions are the follower task's (those present at join first): join returns once published.
        early = [{"plugindata": {"data": {"publishers": joined.data.get("publishers", [])}}}]
        self._watch = asyncio.ensure_future(self._follow(handle, early))

    def _pc(self) -> RTCPeerConnection:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self._pcs.append(pc)
        return pc

    async def _subscribe_to(self, publishers: list[JsonObject]) -> None:
        for publisher in publishers:
            feed: int | str = publisher["id"]  # a string with the VideoRoom's string_ids
            source = str(publisher.get("display", feed))
            if feed in self._subscribed or self._session is None:
                continue
            self._subscribed.add(feed)
            with use_policy(self._policy):
                pc = self._pc()
                self.meter.watch(pc, lambda _transceiver, source=source: source)  # type: ignore[misc]
                await VideoRoom(self._session).subscribe(self.room, (feed,), pc)

    async def _follow(self, handle: JanusHandle, early: list[JsonObject]) -> None:
        """Subscribe to publishers as they appear; end on the gate's ejection or Janus's detach."""
        try:
            while not self.closed.is_set():
                event = early.pop(0) if early else await handle.events.get()
                data = event.get("plugindata", {}).get("data", {})
                if "geofence" in data:
                    self.parsed.append(EjectedMessage(str(data["geofence"].get("message", ""))))
                elif event.get("janus") == "detached" or data.get("leaving") == "ok":
                    self._end(CLOSE_EJECTED if self.parsed else None)
                    return
                elif data.get("publishers"):
                    await self._subscribe_to(data["publishers"])
        except Exception as error:  # never a silent death: the peer ends, and says why
            logger.warning("%s: following the room failed: %r", self.name, error)
            self._end(None)

    def _end(self, code: int | None) -> None:
        if not self.closed.is_set():
            self.close_code = code
            self.closed.set()

    async def close(self) -> None:
        """Leave (the session destroyed) and close every peer connection; safe to call twice."""
        self._end(self.close_code)
        if self._watch is not None and self._watch is not asyncio.current_task():
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        if self._session is not None:
            await self._session.destroy()
        for pc in self._pcs:
            await pc.close()
        if self._http is not None:
            await self._http.close()


def _jsep(pc: RTCPeerConnection) -> JsonObject:
    description = pc.localDescription
    return {"type": description.type, "sdp": description.sdp, "trickle": False}
