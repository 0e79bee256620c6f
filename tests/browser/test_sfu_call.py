"""Browsers in the SFU: headless Chromium tabs and an aiortc peer in one room, on loopback only."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from aiohttp import web
from playwright.async_api import Page

from sfu_geofence.netguard import LoopbackGuard
from sfu_geofence.protocol import ParticipantLeft
from sfu_geofence.server import SFU, ServerConfig, create_app
from sfu_geofence.sfu import Sfu
from sfu_geofence.synthetic.client import SyntheticPeer, synthetic_tracks
from sfu_geofence.testing.browser import video_advances
from sfu_geofence.testing.pytest_browser import OpenPage
from sfu_geofence.testing.wait import eventually

pytestmark = pytest.mark.browser

PAGE = Path(__file__).parent / "pages" / "sfu_call.html"


async def _page(request: web.Request) -> web.FileResponse:
    return web.FileResponse(PAGE)


@pytest_asyncio.fixture(loop_scope="session")
async def sfu_server() -> AsyncIterator[tuple[str, Sfu]]:
    app = create_app(ServerConfig())
    app.router.add_get("/", _page)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}", app[SFU]
    finally:
        await runner.cleanup()


async def _joined(page: Page) -> str:
    await page.wait_for_function("window.messages.some((m) => m.type === 'joined')", timeout=30_000)
    participant: str = await page.evaluate("window.messages.find((m) => m.type === 'joined').participant")
    return participant


async def test_two_browsers_and_an_aiortc_peer_each_receive_the_others_and_a_leave_disturbs_nobody(
    sfu_server: tuple[str, Sfu], open_page: OpenPage, loopback_guard: LoopbackGuard
) -> None:
    url, sfu = sfu_server
    tabs = [await open_page(f"{url}/?room=mixed&name=tab{i}") for i in range(2)]
    tab_ids = [await _joined(tab) for tab in tabs]
    peer = SyntheticPeer(f"{url}/ws", "mixed", "127.0.0.1", name="aiortc", tracks=synthetic_tracks())
    try:
        await peer.join()

        # Each tab decodes two remote videos (the other tab's camera, the aiortc peer's clip), each
        # identified by its producer (the track id the SFU puts in a=msid).
        await eventually(
            lambda: None if peer.participant_id in sfu.participants else "peer not in", within=10
        )
        videos = {p.id: p.producers["video"].id for p in sfu.participants.values()}
        expected = [sorted(v for owner, v in videos.items() if owner != tab_id) for tab_id in tab_ids]
        growths = await asyncio.gather(
            *(
                video_advances(tab, tracks=tracks, frames=20, within=40)
                for tab, tracks in zip(tabs, expected, strict=True)
            )
        )
        assert [sorted(growth) for growth in growths] == expected

        # The aiortc peer receives both browsers' audio and video, counted without decoding.
        def peer_receives_both() -> str | None:
            for tab_id in tab_ids:
                for kind in ("audio", "video"):
                    meters = peer.meters(tab_id, kind)
                    if not meters or meters[0].frames < 20:
                        return f"the aiortc peer has too few {kind} frames from {tab_id}"
            return None

        await eventually(peer_receives_both, within=30)
        forwarded = [
            c.packets_forwarded
            for p in sfu.participants.values()
            for pr in p.producers.values()
            for c in pr.consumers
        ]
        assert len(forwarded) == 12  # 3 participants x (audio, video) x 2 subscribers
        assert all(count > 0 for count in forwarded)

        # One browser leaves (its tab closes): the other keeps decoding the aiortc peer's video.
        await tabs[0].close()
        await eventually(
            lambda: None if tab_ids[0] not in sfu.participants else "still in the room", within=10
        )
        await video_advances(tabs[1], tracks=[videos[str(peer.participant_id)]], frames=20, within=30)
        left = ParticipantLeft(tab_ids[0], "tab0").to_message()
        assert left in await tabs[1].evaluate("window.messages")
        assert loopback_guard.violations == []
    finally:
        await peer.close()
