"""aiortc peers in a real Janus VideoRoom through :mod:`sfu_geofence.janus`: media flows, kick removes one.

Janus gathers only on the LAN namespace's dummy interface (198.18.0.1), so the peers gather there too.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import aiohttp
import pytest
from aiortc import RTCPeerConnection

from sfu_geofence.janus import JanusAdmin, JanusError, JanusSession, VideoRoom
from sfu_geofence.janus.videoroom import Publisher
from sfu_geofence.rtc.ice import IcePolicy, use_policy
from sfu_geofence.synthetic.meter import ReceiveMeter
from sfu_geofence.testing.janus import JanusServer
from sfu_geofence.testing.netns import LAN_IPV4, LAN_NETWORKS
from sfu_geofence.testing.peers import camera_and_microphone, packets, peer_connections, receiving
from sfu_geofence.testing.wait import eventually

pytestmark = [pytest.mark.janus, pytest.mark.lan]

WITHIN = 30.0
SECRET = "room-secret"
POLICY = IcePolicy(bind=(LAN_IPV4,), allowed_remote=LAN_NETWORKS)
"""The peers gather where Janus does (the dummy's address) and talk to nothing else."""


def flowing(meter: ReceiveMeter, source: str, at_least: int = 20) -> str | None:
    """None once ``source``'s video and audio have each brought ``at_least`` packets, else what has."""
    received = packets(meter, source)
    if received.get("video", 0) >= at_least and received.get("audio", 0) >= at_least:
        return None
    return f"packets from {source} by kind: {received}"


async def test_a_subscriber_receives_both_tracks_of_a_publisher(session: JanusSession) -> None:
    rooms = VideoRoom(session)
    room = await rooms.create_room(1234, secret=SECRET)
    meter = ReceiveMeter()
    async with peer_connections() as pcs:
        with use_policy(POLICY):
            publisher = await rooms.publish(room, camera_and_microphone(pcs), display="alice")
            await rooms.subscribe(room, (publisher.participant_id,), receiving(pcs, meter, "alice"))

        await eventually(lambda: flowing(meter, "alice"), within=WITHIN)
        listed = await rooms.participants(room)
        assert [(p["id"], p["display"], p["publisher"]) for p in listed] == [
            (publisher.participant_id, "alice", True)
        ]


@dataclass
class TwoPublishers:
    """Alice and Bob publishing in one room, each watched by a subscriber of their own, media flowing."""

    rooms: VideoRoom
    room: int
    alice: Publisher
    bob: Publisher
    meter: ReceiveMeter

    async def only_bob_is_listed(self) -> None:
        """The room lists Bob alone; Janus may finish tearing Alice down just after it answers."""

        async def listed() -> str | None:
            displays = sorted(p["display"] for p in await self.rooms.participants(self.room))
            return None if displays == ["bob"] else f"the room lists {displays}"

        await eventually(listed, within=WITHIN)

    async def only_bob_still_flows(self) -> None:
        """Alice's media has stopped reaching her subscriber; Bob's keeps reaching his."""
        await asyncio.sleep(1.0)
        alice_after, bob_after = packets(self.meter, "alice"), packets(self.meter, "bob")
        await asyncio.sleep(2.0)
        assert packets(self.meter, "alice") == alice_after
        bob_later = packets(self.meter, "bob")
        assert all(bob_later[kind] >= bob_after[kind] + 20 for kind in ("video", "audio")), (
            bob_after,
            bob_later,
        )


async def two_publishers(session: JanusSession, pcs: list[RTCPeerConnection], room: int) -> TwoPublishers:
    rooms = VideoRoom(session)
    await rooms.create_room(room, secret=SECRET)
    meter = ReceiveMeter()
    with use_policy(POLICY):
        alice = await rooms.publish(room, camera_and_microphone(pcs), display="alice")
        bob = await rooms.publish(room, camera_and_microphone(pcs), display="bob")
        await rooms.subscribe(room, (alice.participant_id,), receiving(pcs, meter, "alice"))
        await rooms.subscribe(room, (bob.participant_id,), receiving(pcs, meter, "bob"))
    await eventually(lambda: flowing(meter, "alice") or flowing(meter, "bob"), within=WITHIN)
    return TwoPublishers(rooms, room, alice, bob, meter)


async def test_kick_removes_exactly_one_participant(session: JanusSession) -> None:
    async with peer_connections() as pcs:
        call = await two_publishers(session, pcs, 5678)

        await call.rooms.kick(call.room, call.alice.participant_id, secret=SECRET)

        await call.only_bob_is_listed()
        hangup = await call.alice.handle.next_event("hangup", within=WITHIN)
        assert hangup["sender"] == call.alice.handle.handle_id
        await call.only_bob_still_flows()
        with pytest.raises(JanusError):
            await call.rooms.kick(call.room, call.alice.participant_id, secret=SECRET)


async def test_kick_needs_the_room_secret(session: JanusSession) -> None:
    async with peer_connections() as pcs:
        call = await two_publishers(session, pcs, 4321)
        with pytest.raises(JanusError) as refused:
            await call.rooms.kick(call.room, call.alice.participant_id, secret="a guess")
        assert refused.value.code == 433  # JANUS_VIDEOROOM_ERROR_UNAUTHORIZED
        assert sorted(p["display"] for p in await call.rooms.participants(call.room)) == ["alice", "bob"]


async def test_a_publisher_that_detaches_leaves_the_room_alone(session: JanusSession) -> None:
    async with peer_connections() as pcs:
        call = await two_publishers(session, pcs, 2468)

        await call.alice.handle.detach()

        await call.only_bob_is_listed()
        await call.only_bob_still_flows()


async def test_the_admin_api_hangs_up_one_participant_and_shows_its_media_address(
    session: JanusSession, janus: JanusServer, http: aiohttp.ClientSession
) -> None:
    admin = JanusAdmin(http, janus.admin_url, janus.admin_secret)
    async with peer_connections() as pcs:
        call = await two_publishers(session, pcs, 1357)
        info = await admin.handle_info(session.session_id, call.bob.handle.handle_id)
        # "198.18.0.1:<janus port> [host,udp] <-> 198.18.0.1:<peer port> [host,udp]": the peer's media address
        local, remote = (side.split(" ")[0] for side in info["webrtc"]["ice"]["selected-pair"].split(" <-> "))
        assert remote.rsplit(":", 1)[0] == LAN_IPV4
        assert remote != local

        await admin.hangup_webrtc(session.session_id, call.alice.handle.handle_id)

        await call.alice.handle.next_event("hangup", within=WITHIN)
        await call.only_bob_still_flows()
        assert call.alice.handle.handle_id in await admin.handles(session.session_id)  # hung up, not detached
