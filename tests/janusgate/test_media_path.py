"""The media path re-check: Janus's event handler reports each handle's selected pair to the gate,
which decides its remote address as the project's SFU does."""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp
import pytest
from gated import CN_MEDIA, POLICY, ROOM_SECRET, address, put_policy

from sfu_geofence.core.audit import EventKind
from sfu_geofence.janus import JanusError
from sfu_geofence.janus.videoroom import VideoRoom
from sfu_geofence.rtc.ice import IcePolicy, use_policy
from sfu_geofence.testing.janusgate import ServedGate, gate_client
from sfu_geofence.testing.netns import LAN_NETWORKS, add_lan_address
from sfu_geofence.testing.peers import camera_and_microphone, peer_connections
from sfu_geofence.testing.wait import eventually

pytestmark = [pytest.mark.janus, pytest.mark.lan]

WITHIN = 30.0


async def test_a_us_signaling_address_with_a_cn_media_address_is_ejected_and_only_it(
    served: ServedGate, operator: VideoRoom, http: aiohttp.ClientSession
) -> None:
    room = await operator.create_room(4001, secret=ROOM_SECRET)
    await put_policy(http, served, room, {"mode": "deny", "countries": ["CN"]})
    add_lan_address(CN_MEDIA)
    async with (
        gate_client(served.api_url, address("US", 11)) as sneaky,
        gate_client(served.api_url, address("DE", 11)) as clean,
        peer_connections() as pcs,
    ):
        with use_policy(POLICY):
            stays = await clean.rooms.publish(room, camera_and_microphone(pcs), display="clean")
        with use_policy(IcePolicy(bind=(CN_MEDIA,), allowed_remote=LAN_NETWORKS)):
            # Its publish may never see "webrtcup": the handle can be detached before.
            publishing = asyncio.ensure_future(sneaky.rooms.publish(room, camera_and_microphone(pcs)))

            async def ejected() -> str | None:
                media = served.gate.geofence.audit.events(room=str(room), kind=EventKind.MEDIA)
                refused = [(e.outcome, e.country, e.address) for e in media if e.outcome == "refused"]
                return None if refused == [("refused", "CN", CN_MEDIA)] else f"media events: {media}"

            try:
                await eventually(ejected, within=WITHIN)
            finally:
                publishing.cancel()
                with contextlib.suppress(asyncio.CancelledError, JanusError):
                    await publishing

        async def only_clean_listed() -> str | None:
            listed = [p["id"] for p in await operator.participants(room)]
            return None if listed == [stays.participant_id] else f"Janus lists {listed}"

        await eventually(only_clean_listed, within=WITHIN)
        [requested] = served.gate.geofence.audit.events(
            room=str(room), kind=EventKind.EJECTION, outcome="requested"
        )
        assert requested.country == "CN"
        [left] = served.gate.geofence.participants(str(room))
        assert (left.address, left.media_address) == (address("DE", 11), "198.18.0.1")
