"""Janus's VideoRoom plugin from an aiortc peer: rooms, publishing an offer, subscribing with an answer.

Offers and answers are complete (aiortc gathers before it describes), so no candidate is trickled:
each JSEP is sent with ``"trickle": false`` and Janus likewise puts its candidates in its SDP. The
ICE policy in force (:func:`sfu_geofence.rtc.ice.use_policy`) decides where the peers gather, as for
any aiortc peer of this project; the caller sets it around these calls.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiortc import RTCPeerConnection, RTCSessionDescription

from .client import JanusError, JanusHandle, JanusSession, JsonObject, PluginReply

PLUGIN = "janus.plugin.videoroom"


def _jsep(description: RTCSessionDescription) -> JsonObject:
    return {"type": description.type, "sdp": description.sdp, "trickle": False}


def _description(jsep: JsonObject | None, expected: str) -> RTCSessionDescription:
    if jsep is None or jsep.get("type") != expected:
        raise JanusError(0, f"expected a JSEP {expected} from the VideoRoom, got {jsep!r}")
    return RTCSessionDescription(sdp=str(jsep["sdp"]), type=expected)


@dataclass(frozen=True)
class Publisher:
    """A participant publishing in a room: its handle and the participant id Janus gave it."""

    handle: JanusHandle
    room: int
    participant_id: int
    """The VideoRoom ``id`` of this publisher: what subscribers name as ``feed``, what ``kick`` takes."""


@dataclass(frozen=True)
class Subscriber:
    """A handle receiving one or more publishers' streams of a room."""

    handle: JanusHandle
    room: int | str
    feeds: tuple[int | str, ...]


class VideoRoom:
    """VideoRoom requests made through one session (each participant gets a handle of its own)."""

    def __init__(self, session: JanusSession) -> None:
        self.session = session
        self._manager: JanusHandle | None = None

    async def _control(self) -> JanusHandle:
        """A handle for room management requests (create, kick, destroy), attached once."""
        if self._manager is None:
            self._manager = await self.session.attach(PLUGIN)
        return self._manager

    async def request(self, body: JsonObject) -> PluginReply:
        """A synchronous VideoRoom request (``create``, ``kick``, ``listparticipants``, ``destroy``...)."""
        return await (await self._control()).message(body)

    async def create_room(self, room: int, *, secret: str, **settings: Any) -> int:
        """Create room ``room`` (not permanent) guarded by ``secret``; ``settings`` as Janus names them."""
        reply = await self.request({"request": "create", "room": room, "secret": secret, **settings})
        return int(reply.data["room"])

    async def participants(self, room: int) -> list[JsonObject]:
        """The room's participants as Janus lists them (``id``, ``display``, ``publisher``...)."""
        reply = await self.request({"request": "listparticipants", "room": room})
        return list(reply.data.get("participants", []))

    async def kick(self, room: int, participant_id: int, *, secret: str) -> None:
        """Remove one participant from the room (Janus hangs up its PeerConnection)."""
        await self.request({"request": "kick", "room": room, "secret": secret, "id": participant_id})

    async def destroy_room(self, room: int, *, secret: str) -> None:
        await self.request({"request": "destroy", "room": room, "secret": secret})

    async def publish(self, room: int, pc: RTCPeerConnection, *, display: str = "") -> Publisher:
        """Join ``room`` as a publisher and publish ``pc``'s tracks: aiortc offers, Janus answers.

        Returns once the PeerConnection is up, when others can subscribe to it.
        """
        handle = await self.session.attach(PLUGIN)
        joined = await handle.message(
            {"request": "join", "ptype": "publisher", "room": room, "display": display}
        )
        await pc.setLocalDescription(await pc.createOffer())
        reply = await handle.message({"request": "publish"}, jsep=_jsep(pc.localDescription))
        await pc.setRemoteDescription(_description(reply.jsep, "answer"))
        # Janus lists the publisher as a feed (others may subscribe) only once its PeerConnection is up.
        await handle.next_event("webrtcup")
        return Publisher(handle, room, int(joined.data["id"]))

    async def subscribe(
        self, room: int | str, feeds: tuple[int | str, ...], pc: RTCPeerConnection
    ) -> Subscriber:
        """Subscribe ``pc`` to the ``feeds`` (publisher ids: strings with ``string_ids``) of ``room``:
        Janus offers, aiortc answers."""
        handle = await self.session.attach(PLUGIN)
        streams = [{"feed": feed} for feed in feeds]
        attached = await handle.message(
            {"request": "join", "ptype": "subscriber", "room": room, "streams": streams}
        )
        await pc.setRemoteDescription(_description(attached.jsep, "offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        await handle.message({"request": "start"}, jsep=_jsep(pc.localDescription))
        return Subscriber(handle, room, feeds)
