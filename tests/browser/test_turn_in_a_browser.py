"""A browser told of a TURN server by ``joined`` (``--turn``) reaches the SFU through a real coturn.

The demo page takes the server's ICE servers from ``joined``. One tab is relay-only (as a browser
whose user or administrator allows only relayed WebRTC traffic): its media reaches the SFU from
coturn's relay address, which the operator declared (``--turn-relay``), so the room's ``relayed``
rule decides it. The other tab connects directly.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import pytest_asyncio
from aiohttp import web

from sfu_geofence.core.geofence import Geofence
from sfu_geofence.core.policy import RelayedRule, RoomPolicy
from sfu_geofence.netguard import LoopbackGuard
from sfu_geofence.protocol import IceServer
from sfu_geofence.server import GEOFENCE_HOST, ServerConfig
from sfu_geofence.server.admin import AdminConfig
from sfu_geofence.server.demo import DemoConfig, create_demo_app
from sfu_geofence.testing.browser import video_advances
from sfu_geofence.testing.coturn import TurnServer
from sfu_geofence.testing.demo_page import join, tile_track, wait_for_remote_videos
from sfu_geofence.testing.pytest_browser import OpenPage

pytestmark = [pytest.mark.browser, pytest.mark.relay]

TOKEN = "turn-browser-token-0123456789"
ROOM = "relayed"

RELAY_ONLY = """(() => {
  const Original = window.RTCPeerConnection;
  window.RTCPeerConnection = class extends Original {
    constructor(config = {}) { super({ ...config, iceTransportPolicy: "relay" }); }
    setConfiguration(config) { super.setConfiguration({ ...config, iceTransportPolicy: "relay" }); }
  };
})();"""
"""Makes every peer connection of the page relay-only (init script, before the page's own code)."""

DIRECT_ONLY = """(() => {
  const Original = window.RTCPeerConnection;
  window.RTCPeerConnection = class extends Original {
    constructor(config = {}) { super({ ...config, iceServers: [] }); }
    setConfiguration(config) { super.setConfiguration({ ...config, iceServers: [] }); }
  };
})();"""
"""Keeps the page's peer connections off TURN: with the server's TURN server in hand, a browser may
also nominate a relayed pair (the SFU nominates the first pair that answers), and then it is relayed."""


@dataclass
class Demo:
    url: str
    geofence: Geofence


@pytest_asyncio.fixture(loop_scope="session")
async def demo(turn_server: TurnServer) -> AsyncIterator[Demo]:
    server = ServerConfig(
        host="127.0.0.1",
        port=0,
        admin=AdminConfig(TOKEN),
        ice_servers=(IceServer(turn_server.url, turn_server.username, turn_server.credential),),
        turn_relays=(turn_server.relay_network,),
    )
    app = create_demo_app(DemoConfig(server))
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield Demo(f"http://127.0.0.1:{runner.addresses[0][1]}", app[GEOFENCE_HOST].geofence)
    finally:
        await runner.cleanup()


async def test_a_relay_only_browser_reaches_the_sfu_through_coturn_and_the_relayed_rule_decides_it(
    demo: Demo, open_page: OpenPage, turn_server: TurnServer, loopback_guard: LoopbackGuard
) -> None:
    demo.geofence.set_policy(ROOM, RoomPolicy.deny("CN", relayed=RelayedRule.ADMIT))
    direct = await open_page(f"{demo.url}/")
    await direct.add_init_script(DIRECT_ONLY)
    await direct.reload()
    relayed = await open_page(f"{demo.url}/")
    await relayed.add_init_script(RELAY_ONLY)
    await relayed.reload()
    await join(direct, "US", ROOM, "US")
    await join(relayed, "DE", ROOM, "DE")
    await wait_for_remote_videos(direct, ["DE"], within_ms=30_000)
    await wait_for_remote_videos(relayed, ["US"], within_ms=30_000)
    # Video both ways, the relayed tab's through coturn.
    await video_advances(direct, tracks=[await tile_track(direct, "DE")], frames=10, within=30)
    await video_advances(relayed, tracks=[await tile_track(relayed, "US")], frames=10, within=30)

    servers = await relayed.evaluate(
        "window.__sfuGeofencePeerConnections.map((pc) => pc.getConfiguration().iceServers)"
    )
    assert servers == [
        [{"urls": [turn_server.url], "username": turn_server.username, "credential": turn_server.credential}]
    ]
    views = {view.participant: view for view in demo.geofence.participants(ROOM)}
    relayed_id = await relayed.evaluate("window.demo.participant")
    direct_id = await direct.evaluate("window.demo.participant")
    assert (views[relayed_id].media_address, views[relayed_id].media_relayed) == (
        turn_server.relay_address,
        True,
    )
    assert views[direct_id].media_relayed is False

    # The room stops accepting relayed media: the relay-only tab is ejected, the direct one stays.
    demo.geofence.set_policy(ROOM, RoomPolicy.deny("CN", relayed=RelayedRule.REFUSE))
    await relayed.wait_for_selector("body[data-state=ejected]", timeout=15_000)
    assert await relayed.text_content("#screen-reason") == (
        "You were removed: this meeting no longer accepts media relayed through a TURN server."
    )
    await direct.wait_for_selector("#alone:not([hidden])", timeout=15_000)
    assert await direct.text_content("#status") == "Connected"
    assert loopback_guard.violations == []
