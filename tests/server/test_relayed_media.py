"""Media relayed through a real TURN server (coturn on loopback) meets the room's ``relayed`` rule.

A participant whose peer connection allows only relayed candidates (``iceTransportPolicy: relay``)
reaches the SFU through coturn: the SFU's selected pair has coturn's relay address as its remote
address, never the participant's own. The test database puts that relay address in CN, so a rule that
judged relayed media by its address would eject a participant the room admits: ``admit`` keeps it,
``use-signaling-country`` decides on where its signaling came from (DE), ``refuse`` ejects it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from sfu_geofence.core.audit import AuditEvent, EventKind
from sfu_geofence.core.policy import RelayedRule, RoomPolicy
from sfu_geofence.server import ServerConfig
from sfu_geofence.server.admin import AdminConfig
from sfu_geofence.synthetic.client import SyntheticPeer, synthetic_tracks
from sfu_geofence.testing.coturn import RELAY_ADDRESS, TurnServer
from sfu_geofence.testing.server import Served, geofenced_on_loopback
from sfu_geofence.testing.testdb import build_database
from sfu_geofence.testing.wait import eventually

pytestmark = [pytest.mark.relay, pytest.mark.slow]

TOKEN = "relay-test-token-0123456789"
WITHIN = 30.0
ROOM = "relayed"
DE = "127.49.0.7"
DE_DIRECT = "127.49.0.8"


@dataclass
class Call:
    served: Served
    turn: TurnServer
    direct: SyntheticPeer
    """A DE participant with its own (host) candidates, publishing audio."""
    relayed: SyntheticPeer
    """A DE participant reachable only through coturn, publishing audio."""


@pytest.fixture
def database(tmp_path: Path) -> Path:
    # The relay's address is in CN: what "relayed" decides must not be the relay's country.
    return build_database(tmp_path / "countries.mmdb", ["127.49.0.0/16=DE", f"{RELAY_ADDRESS}/32=CN"])


@pytest.fixture
async def served(database: Path, turn_server: TurnServer) -> AsyncIterator[Served]:
    # The operator declares coturn's relay address (--turn-relay): only media from there is relayed.
    config = ServerConfig(
        db_path=str(database), admin=AdminConfig(TOKEN), turn_relays=(turn_server.relay_network,)
    )
    async with geofenced_on_loopback(config) as server:
        yield server


async def call(served: Served, turn: TurnServer, rule: RelayedRule) -> AsyncIterator[Call]:
    served.geofence.set_policy(ROOM, RoomPolicy.deny("CN", relayed=rule))
    direct = SyntheticPeer(served.url, ROOM, DE_DIRECT, name="direct", tracks=synthetic_tracks()[:1])
    relayed = SyntheticPeer(
        served.url,
        ROOM,
        DE,
        name="relayed",
        tracks=synthetic_tracks()[:1],
        ice_servers=[turn.ice_server()],
        relay_only=True,
    )
    try:
        for peer in (direct, relayed):
            await peer.join(within=WITHIN)
            assert peer.participant_id is not None, peer.messages
        yield Call(served, turn, direct, relayed)
    finally:
        for peer in (direct, relayed):
            await peer.close()


@pytest.fixture
async def admitting(served: Served, turn_server: TurnServer) -> AsyncIterator[Call]:
    async for joined in call(served, turn_server, RelayedRule.ADMIT):
        yield joined


@pytest.fixture
async def by_signaling(served: Served, turn_server: TurnServer) -> AsyncIterator[Call]:
    async for joined in call(served, turn_server, RelayedRule.SIGNALING_COUNTRY):
        yield joined


@pytest.fixture
async def refusing(served: Served, turn_server: TurnServer) -> AsyncIterator[Call]:
    async for joined in call(served, turn_server, RelayedRule.REFUSE):
        yield joined


def media_event(served: Served, participant: str | None) -> str | None:
    events = served.geofence.audit.events(participant=participant, kind=EventKind.MEDIA)
    return None if events else f"no media address reported for {participant} yet"


async def media_of(joined: Call, peer: SyntheticPeer) -> AuditEvent:
    """The one media-address event of ``peer``, once its media flows both ways."""
    served = joined.served
    await eventually(lambda: media_event(served, peer.participant_id), within=WITHIN)
    await relayed_media_flows(joined)
    [event] = served.geofence.audit.events(participant=peer.participant_id, kind=EventKind.MEDIA)
    return event


async def relayed_media_flows(joined: Call) -> None:
    """The relayed participant's audio reaches the direct one through coturn, and back."""
    direct, relayed = joined.direct, joined.relayed

    def both_hear() -> str | None:
        for receiver, sender in ((direct, relayed), (relayed, direct)):
            meters = receiver.meters(str(sender.participant_id), "audio")
            if not meters or meters[0].frames < 25:
                return f"{receiver.name} has not heard {sender.name} for half a second yet"
        return None

    await eventually(both_hear, within=WITHIN)


async def test_admit_keeps_relayed_media_whose_relay_is_in_a_denied_country_and_it_flows_through_coturn(
    admitting: Call,
) -> None:
    served, relayed = admitting.served, admitting.relayed
    event = await media_of(admitting, relayed)
    assert (event.outcome, event.address, event.detail) == ("admitted", RELAY_ADDRESS, "relayed (TURN)")
    assert event.reason == "relayed_admitted"
    # The operator API shows it as relayed media, from the relay's address.
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"{served.admin_base}/api/rooms/{ROOM}/participants", headers={"Authorization": f"Bearer {TOKEN}"}
        ) as response,
    ):
        body = await response.json()
    media = {p["participant"]: p["media"] for p in body["participants"]}
    assert media[relayed.participant_id]["address"] == RELAY_ADDRESS
    assert media[relayed.participant_id]["relayed"] is True
    assert media[admitting.direct.participant_id]["relayed"] is False
    assert media[admitting.direct.participant_id]["address"] == DE_DIRECT


async def test_use_signaling_country_decides_relayed_media_on_the_signaling_address(
    by_signaling: Call,
) -> None:
    served, relayed = by_signaling.served, by_signaling.relayed
    event = await media_of(by_signaling, relayed)
    assert (event.outcome, event.address, event.country) == ("admitted", RELAY_ADDRESS, "DE")
    assert event.detail == "relayed (TURN)"
    assert relayed.participant_id in served.sfu.participants

    # The same room, now denying Germany: decided on the signaling address, the relayed one goes too.
    served.geofence.set_policy(ROOM, RoomPolicy.deny("DE", relayed=RelayedRule.SIGNALING_COUNTRY))
    await eventually(lambda: None if relayed.closed.is_set() else "still in", within=WITHIN)
    assert relayed.close_code == 4409


async def test_refuse_ejects_the_relayed_participant_alone_once_its_media_comes_through_the_relay(
    refusing: Call,
) -> None:
    served, relayed, direct = refusing.served, refusing.relayed, refusing.direct
    await eventually(lambda: None if relayed.closed.is_set() else "relayed not ejected yet", within=WITHIN)
    assert relayed.close_code == 4409
    ejected = [m for m in relayed.messages if m["type"] == "ejected"]
    assert [m["reason"] for m in ejected] == [
        "You were removed: this meeting no longer accepts media relayed through a TURN server."
    ]
    [event] = served.geofence.audit.events(participant=relayed.participant_id, kind=EventKind.MEDIA)
    assert (event.outcome, event.address, event.detail) == ("refused", RELAY_ADDRESS, "relayed (TURN)")
    [ejection] = served.geofence.audit.events(
        participant=relayed.participant_id, kind=EventKind.EJECTION, outcome="requested"
    )
    assert ejection.reason == "relayed_refused"
    # The participant with its own candidates stays, its media judged on its own (German) address.
    await eventually(lambda: media_event(served, direct.participant_id), within=WITHIN)
    [own] = served.geofence.audit.events(participant=direct.participant_id, kind=EventKind.MEDIA)
    assert (own.outcome, own.address, own.detail) == ("admitted", DE_DIRECT, "direct")
    assert direct.participant_id in served.sfu.participants
    assert not direct.closed.is_set()
