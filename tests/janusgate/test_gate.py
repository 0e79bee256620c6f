"""The gate in front of a real Janus: joins decided before Janus sees them, in Janus's own format."""

from __future__ import annotations

import aiohttp
import pytest
from gated import AUTH, ROOM_SECRET, GatedJanus, address, put_policy

from sfu_geofence.janus import JanusAdmin, JanusError
from sfu_geofence.janus.videoroom import PLUGIN, VideoRoom
from sfu_geofence.testing.janusgate import ServedGate, gate_client

pytestmark = [pytest.mark.janus, pytest.mark.lan]


async def test_a_restricted_join_is_refused_naming_the_country_and_janus_never_sees_it(
    served: ServedGate, operator: VideoRoom, gated_janus: GatedJanus, http: aiohttp.ClientSession
) -> None:
    room = await operator.create_room(2001, secret=ROOM_SECRET)
    async with http.put(
        f"{served.admin_url}/api/rooms/{room}/policy",
        json={"mode": "deny", "countries": ["CN"]},
        headers=AUTH,
    ) as answer:
        assert answer.status == 200
    async with (
        gate_client(served.api_url, address("CN", 5)) as cn,
        gate_client(served.api_url, address("DE", 5)) as de,
    ):
        handle = await cn.session.attach(PLUGIN)
        with pytest.raises(JanusError) as refused:
            await handle.message({"request": "join", "ptype": "publisher", "room": room, "display": "cn"})
        assert refused.value.code == 403
        assert refused.value.reason == "This meeting is not accessible from China (CN)."
        assert await operator.participants(room) == []

        joined = await (await de.session.attach(PLUGIN)).message(
            {"request": "join", "ptype": "publisher", "room": room, "display": "de"}
        )
        assert joined.data["videoroom"] == "joined"
        assert [p["display"] for p in await operator.participants(room)] == ["de"]
        [listed] = served.gate.geofence.participants(str(room))
        assert (listed.address, listed.decision.country) == (address("DE", 5), "DE")
    admin = JanusAdmin(http, gated_janus.janus.admin_url, gated_janus.janus.admin_secret)
    assert cn.session.session_id not in await admin.sessions()


async def test_an_operator_ejects_one_participant_by_hand_it_alone_is_told_and_janus_lets_it_go(
    served: ServedGate, operator: VideoRoom, http: aiohttp.ClientSession
) -> None:
    room = await operator.create_room(2002, secret=ROOM_SECRET)
    join = {"request": "join", "ptype": "publisher", "room": room}
    async with (
        gate_client(served.api_url, address("DE", 8)) as de,
        gate_client(served.api_url, address("US", 8)) as us,
    ):
        ejected = await de.session.attach(PLUGIN)
        await ejected.message({**join, "display": "de"})
        stays = await us.session.attach(PLUGIN)
        await stays.message({**join, "display": "us"})
        participant = str(ejected.handle_id)  # the gate names a participant by its handle
        url = f"{served.admin_url}/api/rooms/{room}/participants/{participant}/eject"
        async with http.post(url, json={"reason": "test"}, headers=AUTH) as answer:
            assert answer.status == 202, await answer.text()

        told = await ejected.next_event("event", within=10)
        assert (
            told["plugindata"]["data"]["geofence"]["message"] == "An operator removed you from this meeting."
        )
        await ejected.next_event("detached", within=10)
        assert [p["display"] for p in await operator.participants(room)] == ["us"]
        assert [p.participant for p in served.gate.geofence.participants(str(room))] == [str(stays.handle_id)]
        # A second join on a handle already in a room is decided too (here, for a room closed to it).
        other = await operator.create_room(2003, secret=ROOM_SECRET)
        await put_policy(http, served, other, {"mode": "deny", "countries": ["US"]})
        with pytest.raises(JanusError) as refused:
            await stays.message({**join, "room": other, "display": "us again"})
        assert refused.value.reason == "This meeting is not accessible from United States (US)."
