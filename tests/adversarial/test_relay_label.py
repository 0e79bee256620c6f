"""A client that calls its own host candidates "relay" is decided on its address, not on its word.

The hostile participant signals from a US address and sends its media from a CN address, with
``typ relay raddr 0.0.0.0 rport 0`` written in place of ``typ host`` on its candidates. Under ``deny CN``
with the default ``relayed`` rule (``use-signaling-country``) it must be ejected for its media country,
unless the operator declared that address a TURN relay (``--turn-relay``).
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp

from sfu_geofence.core.audit import AuditEvent, EventKind
from sfu_geofence.core.policy import Enforcement, RoomPolicy
from sfu_geofence.protocol import EjectedMessage
from sfu_geofence.server import ServerConfig
from sfu_geofence.server.admin import AdminConfig
from sfu_geofence.synthetic.client import SyntheticPeer, synthetic_tracks
from sfu_geofence.testing.sdp import relabel_as_relay
from sfu_geofence.testing.server import Served, geofenced_on_loopback
from sfu_geofence.testing.wait import eventually

WITHIN = 30.0  # a loaded 2-core machine
ROOM = "town-hall"
US_SIGNALING, CN_MEDIA = "127.1.9.1", "127.86.9.1"
TOKEN = "adversarial-test-token-0123456789"
DENY_CN = RoomPolicy.deny("CN")


@asynccontextmanager
async def relabelling_participant(
    config: ServerConfig, policy: RoomPolicy = DENY_CN
) -> AsyncIterator[tuple[Served, SyntheticPeer]]:
    """A server whose room denies CN, and the hostile participant in it once its media was checked."""
    async with geofenced_on_loopback(config) as served:
        served.geofence.set_policy(ROOM, policy)
        peer = SyntheticPeer(
            served.url,
            ROOM,
            US_SIGNALING,
            tracks=synthetic_tracks()[:1],
            media_address=CN_MEDIA,
            rewrite_answer=relabel_as_relay,
        )
        try:
            await peer.join(within=WITHIN)
            assert peer.participant_id is not None, peer.messages  # US signaling: admitted
            await eventually(
                lambda: None if media_events(served, peer) else "media not checked yet", within=WITHIN
            )
            yield served, peer
        finally:
            await peer.close()


def media_events(served: Served, peer: SyntheticPeer) -> list[AuditEvent]:
    return served.geofence.audit.events(participant=peer.participant_id, kind=EventKind.MEDIA)


async def test_a_self_declared_relay_is_ejected_for_its_media_country_and_audited_as_direct(
    database: Path,
) -> None:
    async with relabelling_participant(ServerConfig(db_path=str(database))) as (served, peer):
        await asyncio.wait_for(peer.closed.wait(), WITHIN)
        assert peer.close_code == 4409
        assert (
            peer.messages[-1]
            == EjectedMessage(
                "You were removed: your media comes from China (CN), where this meeting is not accessible."
            ).to_message()
        )
        [event] = media_events(served, peer)
        assert (event.address, event.country, event.outcome, event.detail) == (
            CN_MEDIA,
            "CN",
            "refused",
            "direct",  # relayed: false
        )


async def test_a_relay_the_operator_declared_is_relayed_media_and_the_rooms_relayed_rule_decides(
    database: Path,
) -> None:
    declared = ServerConfig(db_path=str(database), turn_relays=(ipaddress.ip_network("127.86.9.0/24"),))
    async with relabelling_participant(declared) as (served, peer):
        [event] = media_events(served, peer)
        assert (event.address, event.outcome, event.detail) == (CN_MEDIA, "admitted", "relayed (TURN)")
        [view] = served.geofence.participants(ROOM)
        assert (view.media_address, view.media_relayed, view.decision.country) == (CN_MEDIA, True, "US")
        await asyncio.sleep(0.5)  # an ejection would have been scheduled by now
        assert not peer.closed.is_set()
        assert str(peer.participant_id) in served.sfu.participants


async def test_the_operator_api_shows_a_self_declared_relay_as_direct_media_from_its_country(
    database: Path,
) -> None:
    # Monitor mode keeps it connected, so the operator sees what the geofence made of it.
    config = ServerConfig(db_path=str(database), admin=AdminConfig(TOKEN))
    monitor = RoomPolicy.deny("CN", enforcement=Enforcement.MONITOR)
    async with (
        relabelling_participant(config, monitor) as (served, peer),
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as session,
        session.get(f"{served.admin_base}/api/rooms/{ROOM}/participants") as response,
    ):
        assert response.status == 200
        [listed] = (await response.json())["participants"]
        assert listed["participant"] == peer.participant_id
        media = listed["media"]
        assert (media["address"], media["relayed"], media["country"], media["outcome"]) == (
            CN_MEDIA,
            False,
            "CN",
            "would_refuse",
        )
