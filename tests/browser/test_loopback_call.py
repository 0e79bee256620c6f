"""The browser harness, end to end: headless Chromium calls a real aiortc peer, on loopback only.

The server side is not the SFU: one aiortc peer connection per page answers its offer and sends it the
synthetic camera's pre-encoded VP8 clip (sfu_geofence.synthetic.media), receiving nothing: the server
neither encodes nor decodes.
"""

from __future__ import annotations

import asyncio
import re
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.typedefs import Handler
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from playwright.async_api import Page

from sfu_geofence.netguard import LoopbackGuard
from sfu_geofence.rtc.forwarding import ice_connection_of
from sfu_geofence.rtc.ice import IcePolicy, selected_pair, use_policy
from sfu_geofence.synthetic.media import VideoClipParams, Vp8Track, encode_vp8_clip, publish
from sfu_geofence.testing.browser import (
    inbound_video,
    screenshot,
    selected_candidate_pairs,
    video_advances,
    video_element_tracks,
)
from sfu_geofence.testing.netns import in_loopback_only_namespace
from sfu_geofence.testing.pytest_browser import OpenPage

pytestmark = pytest.mark.browser

PAGES = Path(__file__).parent / "pages"


VIDEO = VideoClipParams()
"""The synthetic camera's clip, encoded once per process: the server encodes and decodes nothing."""


@dataclass
class CallServer:
    """What the server saw and made, for the test to inspect."""

    url: str = ""
    offers: list[str] = field(default_factory=list)
    forwarded_for: list[tuple[str, str | None]] = field(default_factory=list)
    """(path, X-Forwarded-For) of every request."""
    peers: list[RTCPeerConnection] = field(default_factory=list)
    states: list[str] = field(default_factory=list)


CALL_SERVER = web.AppKey("call_server", CallServer)


@web.middleware
async def record_forwarded_for(request: web.Request, handler: Handler) -> web.StreamResponse:
    request.app[CALL_SERVER].forwarded_for.append((request.path, request.headers.get("X-Forwarded-For")))
    return await handler(request)


async def page(request: web.Request) -> web.FileResponse:
    return web.FileResponse(PAGES / "loopback_call.html")


async def offer(request: web.Request) -> web.Response:
    server = request.app[CALL_SERVER]
    body: dict[str, Any] = await request.json()
    server.offers.append(body["sdp"])
    with use_policy(IcePolicy(bind=("127.0.0.1",))):
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        server.peers.append(pc)

        @pc.on("connectionstatechange")
        def record_state() -> None:
            server.states.append(pc.connectionState)

        await pc.setRemoteDescription(RTCSessionDescription(sdp=body["sdp"], type=body["type"]))
        for transceiver in pc.getTransceivers():
            if transceiver.kind == "video":
                publish(pc, Vp8Track(VIDEO))
                transceiver.direction = "sendonly"  # nothing received, so nothing decoded
            else:
                transceiver.direction = "inactive"
        await pc.setLocalDescription(await pc.createAnswer())
    return web.json_response({"sdp": pc.localDescription.sdp, "type": pc.localDescription.type})


@pytest_asyncio.fixture(loop_scope="session")
async def call_server() -> AsyncIterator[CallServer]:
    encode_vp8_clip(VIDEO)  # now, rather than inside the first offer
    server = CallServer()
    app = web.Application(middlewares=[record_forwarded_for])
    app[CALL_SERVER] = server
    app.router.add_get("/", page)
    app.router.add_post("/offer", offer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    server.url = f"http://127.0.0.1:{port}/"
    try:
        yield server
    finally:
        for pc in server.peers:
            await pc.close()
        await runner.cleanup()


def _is_loopback_literal(host: str) -> bool:
    """An IP literal in 127.0.0.0/8 or ::1; never a name (mDNS ``.local`` or otherwise)."""
    return IcePolicy().allows_remote(host)


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


async def _connected(page: Page) -> None:
    await page.wait_for_function("window.connectionStates.includes('connected')", timeout=30_000)


async def test_a_browser_receives_an_aiortc_peers_video_with_every_packet_on_loopback(
    call_server: CallServer, open_page: OpenPage, loopback_guard: LoopbackGuard, tmp_path: Path
) -> None:
    assert in_loopback_only_namespace()
    browser = await open_page(call_server.url, forwarded_for="127.86.0.5")
    await _connected(browser)

    # The remote video keeps decoding: it is the server's clip, shown by #remote.
    growth = await video_advances(browser, frames=20, within=30)
    [track] = growth
    assert await video_element_tracks(browser, "#remote") == [track]
    [video] = await inbound_video(browser)
    assert (video.frame_width, video.frame_height) == (VIDEO.width, VIDEO.height)

    # Only loopback candidates were offered (no mDNS name), accepted, and used, on both sides.
    [sdp] = call_server.offers
    offered = re.findall(r"a=candidate:\S+ \d+ (\S+) \d+ (\S+) \d+ typ", sdp)
    assert offered, "the browser offered no candidates"
    assert all(_is_loopback_literal(host) for _, host in offered), offered
    [pc] = call_server.peers
    connection = ice_connection_of(pc)
    assert connection is not None
    assert connection.remote_candidates
    assert all(_is_loopback_literal(c.host) for c in connection.remote_candidates)
    nominated = selected_pair(connection)
    assert nominated is not None
    assert nominated.local_address[0] == "127.0.0.1"
    assert _is_loopback_literal(nominated.remote_address[0])
    pairs = await selected_candidate_pairs(browser)
    assert pairs
    assert all(_is_loopback_literal(p.local_address) and p.remote_address == "127.0.0.1" for p in pairs)

    assert call_server.states == ["connecting", "connected"]
    assert await browser.evaluate("window.connectionStates") == ["connecting", "connected"]

    shot = await screenshot(browser, tmp_path / "shots" / "loopback-call.png")
    data = shot.read_bytes()
    assert _png_size(data) == (1024, 640)
    assert len(data) > 20_000, f"a {len(data)}-byte screenshot of two playing videos is suspiciously small"

    # How a tab "comes from" another address: every request carried the header (for aiohttp-remotes).
    assert call_server.forwarded_for == [("/", "127.86.0.5"), ("/offer", "127.86.0.5")]
    assert loopback_guard.violations == []


async def test_each_participant_is_a_separate_tab_from_its_own_address_and_all_receive_video_at_once(
    call_server: CallServer, open_page: OpenPage, loopback_guard: LoopbackGuard
) -> None:
    addresses = ["127.1.0.1", "127.2.0.1", "127.3.0.1"]  # say US, DE, CN in a test .mmdb
    tabs = [await open_page(call_server.url, forwarded_for=address) for address in addresses]
    await asyncio.gather(*(_connected(tab) for tab in tabs))

    growths = await asyncio.gather(*(video_advances(tab, frames=20, within=30) for tab in tabs))
    tracks = [track for growth in growths for track in growth]
    assert len(set(tracks)) == 3, f"each tab receives its own stream: {growths}"
    assert len(call_server.peers) == 3
    assert sorted(forwarded for path, forwarded in call_server.forwarded_for if path == "/offer") == addresses
    assert loopback_guard.violations == []


async def test_a_remote_video_that_stops_is_reported_as_not_advancing(
    call_server: CallServer, open_page: OpenPage
) -> None:
    browser = await open_page(call_server.url)
    await _connected(browser)
    [track] = await video_advances(browser, frames=5, within=30)

    [pc] = call_server.peers
    [sender] = [sender for sender in pc.getSenders() if sender.track is not None]
    sender.replaceTrack(None)  # the server stops sending; the connection stays up
    with pytest.raises(AssertionError, match=r"did not advance by 10 frames: frames decoded grew only by"):
        await video_advances(browser, tracks=[track], frames=10, within=2)
    with pytest.raises(AssertionError, match=r"grew only by \{'gone': None\} \(None: no such stream\)"):
        await video_advances(browser, tracks=["gone"], frames=1, within=0.5)
