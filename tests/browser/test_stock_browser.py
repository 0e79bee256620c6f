"""``sfu-geofence demo`` in the browser people have: Chromium without any WebRTC switch.

Runs in a LAN namespace (``lan``): ``lo`` plus a dummy interface holding 198.18.0.1, standing in for
this machine's network card. Chromium is launched as shipped, without
``--allow-loopback-in-peer-connection``, so it leaves loopback out of WebRTC and offers only
198.18.0.1 (or, without a camera grant, an mDNS ``.local`` name). The server is the real command,
``python -m sfu_geofence demo``, in a child process: its ICE gathers on this machine's own addresses
too and accepts media from them alone.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from playwright.async_api import Page

from sfu_geofence.netguard import LoopbackGuard
from sfu_geofence.server.admin import TOKEN_ENV
from sfu_geofence.testing.browser import selected_candidate_pairs, video_advances, video_element_tracks
from sfu_geofence.testing.demo_page import join, tile_track, wait_for_remote_videos
from sfu_geofence.testing.netns import LAN_IPV4, LAN_IPV6
from sfu_geofence.testing.process import spawn_module, stop
from sfu_geofence.testing.pytest_browser import OpenPage

pytestmark = [pytest.mark.browser, pytest.mark.lan]

TOKEN = "stock-browser-token-0123456789"
ROOM = "town-hall"
PUBLISHERS = ("US", "DE", "CN")
LAN = {LAN_IPV4, LAN_IPV6}
"""The namespace's addresses: the browser may pick either family; never loopback."""

_LOCAL_SDP = """() => (window.__sfuGeofencePeerConnections || [])
  .filter((pc) => pc.connectionState !== "closed").map((pc) => pc.localDescription?.sdp || "")"""


@dataclass
class Demo:
    base: str
    admin: str
    """The admin listener: the operator API and the console."""
    process: asyncio.subprocess.Process

    async def participants(self) -> list[dict[str, Any]]:
        """The operator API's view of the room: who is in it, and where their media comes from."""
        async with (
            aiohttp.ClientSession() as http,
            http.get(
                f"{self.admin}/api/rooms/{ROOM}/participants", headers={"Authorization": f"Bearer {TOKEN}"}
            ) as response,
        ):
            assert response.status == 200, await response.text()
            body: dict[str, Any] = await response.json()
        participants: list[dict[str, Any]] = body["participants"]
        return participants

    async def media_once_connected(self, names: list[str], within: float = 30) -> dict[str, dict[str, Any]]:
        """Each named participant's media (address, relayed), once the server has its selected pair."""
        deadline = asyncio.get_running_loop().time() + within
        while True:
            media = {p["name"]: p["media"] for p in await self.participants()}
            if all(media.get(name) is not None for name in names):
                return media
            assert asyncio.get_running_loop().time() < deadline, f"no selected pair yet: {media}"
            await asyncio.sleep(0.1)


@pytest_asyncio.fixture(loop_scope="session")
async def demo(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Demo]:
    """``sfu-geofence demo`` as a person starts it, stopped by PID afterwards."""
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    process = await spawn_module("sfu_geofence", "demo", "--port", "0", "--log-level", "error")
    try:
        assert process.stdout is not None
        lines = [(await asyncio.wait_for(process.stdout.readline(), 30)).decode() for _ in range(3)]
        found = re.findall(r"open (http://127\.0\.0\.1:\d+)/ ", lines[1])
        console = re.findall(r"operator console: (http://127\.0\.0\.1:\d+)/console", lines[2])
        assert len(found) == len(console) == 1, lines
        yield Demo(found[0], console[0], process)
    finally:
        await stop(process)


async def local_candidates(page: Page) -> list[str]:
    """The ``a=candidate`` lines the page's browser offered (its answers' SDP)."""
    sdps: list[str] = await page.evaluate(_LOCAL_SDP)
    return [line for sdp in sdps for line in sdp.splitlines() if line.startswith("a=candidate:")]


async def test_stock_browser_joins_the_demo_on_the_lan_address_deny_cn_ejects_it_others_and_mdns_viewer_stay(
    demo: Demo, open_page: OpenPage, loopback_guard: LoopbackGuard
) -> None:
    tabs = {cc: await open_page(f"{demo.base}/?from={cc}") for cc in PUBLISHERS}
    for cc, tab in tabs.items():
        await join(tab, cc, ROOM, cc)
    for cc, tab in tabs.items():
        await wait_for_remote_videos(tab, [other for other in PUBLISHERS if other != cc], within_ms=30_000)
    for cc, tab in tabs.items():
        # The browser offered the LAN stand-in only (no loopback), and sends its media from it (to
        # whichever of the server's candidates answered first, 127.0.0.1 being one).
        offered = await local_candidates(tab)
        assert offered, cc
        assert all(line.split()[4] in LAN for line in offered), offered
        [pair] = await selected_candidate_pairs(tab)
        assert pair.local_address in LAN, pair
        assert await tab.is_hidden("#notice")

    # A viewer who grants no camera: the browser hides its address behind an mDNS name, which the
    # server never resolves; it connects through the peer-reflexive candidate of its checks.
    viewer = await open_page(f"{demo.base}/", camera=False)
    await join(viewer, "viewer", ROOM, "", watch=True)
    await wait_for_remote_videos(viewer, list(PUBLISHERS), within_ms=30_000)
    # Its answers name no address at all: mDNS names only, or none yet (the browser may finish
    # gathering before its names are registered; its checks reach the server all the same).
    offered = await local_candidates(viewer)
    assert all(line.split()[4].endswith(".local") for line in offered), offered
    assert await viewer.is_hidden("#notice"), "connected: no hint, even with no candidate offered"
    # The server never resolves .local names: the viewer's media came in on a peer-reflexive candidate,
    # from an address of this machine (whichever its socket sent from).
    media = await demo.media_once_connected(["viewer", *PUBLISHERS])
    assert media["viewer"]["address"] in {*LAN, "127.0.0.1", "::1"}, media
    assert {cc: media[cc]["address"] in LAN for cc in PUBLISHERS} == dict.fromkeys(PUBLISHERS, True), media
    assert not any(m["relayed"] for m in media.values())

    survivors = {
        "US": await tile_track(tabs["US"], "DE"),
        "DE": await tile_track(tabs["DE"], "US"),
    }
    watched = [await tile_track(viewer, cc) for cc in ("US", "DE")]
    await asyncio.gather(
        *(video_advances(tabs[cc], tracks=[track], frames=10, within=30) for cc, track in survivors.items()),
        video_advances(viewer, tracks=watched, frames=10, within=30),
    )

    # The operator denies China in the console.
    console = await open_page(f"{demo.admin}/console#token={TOKEN}", camera=False)
    await console.click(f"#rooms tr[data-room='{ROOM}']", timeout=15_000)
    await console.wait_for_selector("#participants tr[data-name='CN']", timeout=15_000)
    await console.select_option("#policy-mode", "deny")
    await console.fill("#policy-countries", "CN")
    await console.click("#policy-save")
    await console.wait_for_function(
        "document.getElementById('policy-result').textContent.startsWith('Applied')", timeout=15_000
    )

    china = tabs["CN"]
    await china.wait_for_selector("body[data-state=ejected]", timeout=15_000)
    assert await china.text_content("#screen-reason") == (
        "You were removed: this meeting is no longer accessible from China (CN)."
    )
    assert await video_element_tracks(china, "video") == []

    # US and DE keep decoding each other's video; the viewer keeps watching both.
    await asyncio.gather(
        *(video_advances(tabs[cc], tracks=[track], frames=10, within=30) for cc, track in survivors.items()),
        video_advances(viewer, tracks=watched, frames=10, within=30),
    )
    for cc in ("US", "DE"):
        assert await tabs[cc].text_content("#status") == "Connected"
    names = sorted(p["name"] for p in await demo.participants())
    assert names == ["DE", "US", "viewer"]
    assert loopback_guard.violations == []
