"""The gate in front of a real Janus: joins decided before Janus sees them, in Janus's own format."""

from __future__ import annotations

import aiohttp
import pytest
from gated import AUTH, ROOM_SECRET, GatedJanus, address

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
