"""Janus restarted or unreachable under the gate: no ghost participants, no join admitted unchecked,
new joins work once Janus is back."""

from __future__ import annotations

import contextlib
from pathlib import Path

import aiohttp
import pytest
from gated import ROOM_SECRET, GatedJanus, address, gate_config

from sfu_geofence.janus import JanusError, JanusSession, VideoRoom
from sfu_geofence.janus.videoroom import PLUGIN
from sfu_geofence.janusgate.wire import UNKNOWN
from sfu_geofence.server.admin_listener import AdminListenerConfig
from sfu_geofence.testing.janus import JanusServer, running_janus
from sfu_geofence.testing.janusgate import ServedGate, gate_client, serving_gate
from sfu_geofence.testing.wait import eventually

pytestmark = [pytest.mark.janus, pytest.mark.lan]

WITHIN = 30.0
ROOM = 6001
JOIN = {"request": "join", "ptype": "publisher", "room": ROOM, "display": "de"}


async def create_room(http: aiohttp.ClientSession, janus: JanusServer) -> None:
    async with await JanusSession.create(http, janus.api_url) as owner:
        await VideoRoom(owner).create_room(ROOM, secret=ROOM_SECRET)


def no_ghosts(served: ServedGate, sessions: set[int]) -> str | None:
    ghosts = served.gate.geofence.participants(str(ROOM))
    relayed = sessions & set(served.gate.sessions)
    if ghosts or relayed:
        return f"still listed: participants {ghosts}, sessions {sorted(relayed)}"
    return None


async def test_janus_down_refuses_joins_as_internal_errors_and_restarted_leaves_no_ghosts(
    gated_janus: GatedJanus, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    with contextlib.ExitStack() as janus_runs:
        first = janus_runs.enter_context(running_janus(tmp_path))
        config = gate_config(
            gated_janus,
            janus_url=first.api_url,
            admin_url=first.admin_url,
            admin_secret=first.admin_secret,
            admin_listener=AdminListenerConfig(port=0),
        )
        async with serving_gate(config) as served:
            await create_room(http, first)
            async with (
                gate_client(served.api_url, address("DE", 41)) as before,
                gate_client(served.api_url, address("DE", 42)) as stranded,
            ):
                await (await before.session.attach(PLUGIN)).message(JOIN)
                waiting = await stranded.session.attach(PLUGIN)
                [joined] = served.gate.geofence.participants(str(ROOM))
                assert joined.address == address("DE", 41)

                janus_runs.close()  # Janus stops (by PID)

                # Unreachable: a join is refused as an internal error, and nobody is left admitted.
                with pytest.raises(JanusError) as refused:
                    await waiting.message({**JOIN, "display": "stranded"})
                assert refused.value.code == UNKNOWN
                assert "Janus is unreachable" in refused.value.reason
                assert [p.address for p in served.gate.geofence.participants(str(ROOM))] == [
                    address("DE", 41)
                ]

                second = janus_runs.enter_context(running_janus(tmp_path, like=first))
                gone = {before.session.session_id, stranded.session.session_id}
                await eventually(lambda: no_ghosts(served, gone), within=WITHIN)

                await create_room(http, second)
                async with gate_client(served.api_url, address("DE", 43)) as after:
                    joined_again = await (await after.session.attach(PLUGIN)).message(JOIN)
                    assert joined_again.data["videoroom"] == "joined"
                    [rejoined] = served.gate.geofence.participants(str(ROOM))
                    assert rejoined.address == address("DE", 43)
