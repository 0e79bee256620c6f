"""Headless Chromium as a conference participant: launch it safely, read what its WebRTC stack sees.

Chromium is Debian's (``apt-get install -y chromium``), driven by Playwright over a pipe; Playwright's
own browser download is never used. Chromium with WebRTC is only ever launched inside a network
namespace of the tests' own (:mod:`sfu_geofence.testing.netns`): it gathers every interface whatever
its flags say. In a namespace with only ``lo`` it needs ``--allow-loopback-in-peer-connection``; in a
LAN namespace it runs as people have it (:data:`STOCK_CHROMIUM_ARGS`: no WebRTC switch at all).

Pages are observed through ``RTCPeerConnection.getStats()``. An init script records every peer
connection a page creates, so any page (the demo included) can be measured without its cooperation.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from playwright.async_api import (
    Browser,
    BrowserContext,
    BrowserType,
    ConsoleMessage,
    Error,
    Page,
    ViewportSize,
)

from .netns import Namespace, current_namespace

logger = logging.getLogger(__name__)

CHROMIUM_ENV = "SFU_GEOFENCE_CHROMIUM"
"""Environment variable naming a Chromium executable to use instead of Debian's."""

CHROMIUM_PATHS: tuple[str, ...] = ("/usr/lib/chromium/chromium", "/usr/bin/chromium")
"""Debian's binary first: ``/usr/bin/chromium`` is a wrapper script that prints shell noise."""

FAKE_PROMPT = "--use-fake-ui-for-media-stream"
"""Grants every camera/microphone prompt. It also makes Chromium offer host addresses instead of mDNS
names, even to a page that never asked for a camera: a viewer who grants nothing runs without it."""

STOCK_CHROMIUM_ARGS: tuple[str, ...] = (
    # A synthetic camera and microphone (640x480 at 20 fps), granted without a prompt.
    "--use-fake-device-for-media-stream",
    FAKE_PROMPT,
    # Belt and braces next to the namespace: no DNS lookups, no background traffic.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-sync",
    "--no-first-run",
    "--no-default-browser-check",
    "--metrics-recording-only",
)
"""What a test needs of any Chromium: fake devices and no background networking; WebRTC left as shipped."""

LOOPBACK_CHROMIUM_ARGS: tuple[str, ...] = (
    # With only lo in the namespace, Chromium gathers nothing at all without this.
    "--allow-loopback-in-peer-connection",
    # No mDNS names: a loopback-only page's candidates are literal 127.0.0.1.
    "--disable-features=WebRtcHideLocalIpsWithMdns",
)

CHROMIUM_ARGS: dict[Namespace, tuple[str, ...]] = {
    Namespace.LOOPBACK: (*STOCK_CHROMIUM_ARGS, *LOOPBACK_CHROMIUM_ARGS),
    Namespace.LAN: STOCK_CHROMIUM_ARGS,
}
"""Launch arguments per kind of namespace."""

VIEWPORT: ViewportSize = {"width": 1024, "height": 640}
"""Size of every participant's page, hence of its screenshots."""

PEER_CONNECTIONS = "__sfuGeofencePeerConnections"
"""Name of the page global (an array) holding every RTCPeerConnection the page created."""

RECORD_PEER_CONNECTIONS = f"""
(() => {{
  const Original = window.RTCPeerConnection;
  if (!Original || window.{PEER_CONNECTIONS}) return;
  const created = [];
  Object.defineProperty(window, "{PEER_CONNECTIONS}", {{ value: created }});
  window.RTCPeerConnection = class extends Original {{
    constructor(...args) {{ super(...args); created.push(this); }}
  }};
}})();
"""

_INBOUND_VIDEO = f"""
async () => {{
  const found = [];
  for (const pc of window.{PEER_CONNECTIONS} || []) {{
    if (pc.connectionState === "closed") continue;
    (await pc.getStats()).forEach((s) => {{
      if (s.type !== "inbound-rtp" || s.kind !== "video") return;
      found.push({{
        trackIdentifier: s.trackIdentifier ?? "",
        framesDecoded: s.framesDecoded ?? 0,
        frameWidth: s.frameWidth ?? null,
        frameHeight: s.frameHeight ?? null,
        bytesReceived: s.bytesReceived ?? 0,
      }});
    }});
  }}
  return found;
}}
"""

_SELECTED_PAIRS = f"""
async () => {{
  const found = [];
  for (const pc of window.{PEER_CONNECTIONS} || []) {{
    if (pc.connectionState === "closed") continue;
    const stats = await pc.getStats();
    stats.forEach((t) => {{
      if (t.type !== "transport" || !t.selectedCandidatePairId) return;
      const pair = stats.get(t.selectedCandidatePairId);
      const local = stats.get(pair.localCandidateId);
      const remote = stats.get(pair.remoteCandidateId);
      found.push({{
        localAddress: local.address ?? local.ip ?? "",
        localPort: local.port,
        remoteAddress: remote.address ?? remote.ip ?? "",
        remotePort: remote.port,
        protocol: local.protocol,
      }});
    }});
  }}
  return found;
}}
"""

_VIDEO_ELEMENT_TRACKS = """
(selector) => [...document.querySelectorAll(selector)].flatMap((v) =>
  v.srcObject ? v.srcObject.getVideoTracks().map((t) => t.id) : [])
"""


def find_chromium() -> str | None:
    """Path of the Chromium to launch (``$SFU_GEOFENCE_CHROMIUM``, else Debian's), or None."""
    override = os.environ.get(CHROMIUM_ENV)
    candidates = (override,) if override else CHROMIUM_PATHS
    return next((path for path in candidates if os.access(path, os.X_OK)), None)


CHROMIUM_MISSING = (
    f"Chromium not found at {' or '.join(CHROMIUM_PATHS)}: apt-get install -y chromium "
    f"(or set {CHROMIUM_ENV})"
)


async def launch_chromium(chromium: BrowserType, executable: str, *, grant_media: bool = True) -> Browser:
    """Launch headless Chromium with fake media devices; refuses outside a test namespace.

    In a loopback-only namespace with the loopback switch; in a LAN namespace as shipped. Without
    ``grant_media``, camera and microphone prompts are never answered: a person who grants nothing.
    """
    namespace = current_namespace()
    if namespace is None:
        raise RuntimeError(
            "refusing to launch Chromium with WebRTC outside a network namespace of the tests' own "
            "(it would gather and use this machine's other addresses)"
        )
    args = [arg for arg in CHROMIUM_ARGS[namespace] if grant_media or arg != FAKE_PROMPT]
    return await chromium.launch(executable_path=executable, args=args)


async def new_participant_context(
    browser: Browser, *, forwarded_for: str | None = None, camera: bool = True
) -> BrowserContext:
    """A fresh context (own cookies, own camera grant) whose pages record their peer connections.

    Every tab connects from 127.0.0.1, so a participant "comes from" another address only through a
    proxy header: ``forwarded_for`` is sent as ``X-Forwarded-For`` on every request, WebSocket
    handshakes included, for a server that trusts 127.0.0.1 as its proxy (aiohttp-remotes).
    ``camera=False``: no camera or microphone permission (in a browser launched without
    ``grant_media``, a stock Chromium then hides its addresses behind mDNS ``.local`` names).
    """
    headers = {} if forwarded_for is None else {"X-Forwarded-For": forwarded_for}
    context = await browser.new_context(viewport=VIEWPORT, extra_http_headers=headers)
    if camera:
        await context.grant_permissions(["camera", "microphone"])
    await context.add_init_script(RECORD_PEER_CONNECTIONS)
    context.on("page", _log_page_problems)
    return context


def _log_page_problems(page: Page) -> None:
    """Page errors and console errors go to the test's captured log, shown when a test fails."""

    def console(message: ConsoleMessage) -> None:
        level = logging.WARNING if message.type in ("error", "warning") else logging.DEBUG
        logger.log(level, "console %s on %s: %s", message.type, page.url, message.text)

    def page_error(error: Error) -> None:
        logger.warning("uncaught error on %s: %s", page.url, error)

    page.on("console", console)
    page.on("pageerror", page_error)


@dataclass(frozen=True)
class InboundVideo:
    """One remote video stream as the page's WebRTC stack reports it (``inbound-rtp``)."""

    track_identifier: str
    """The ``id`` of the receiving MediaStreamTrack (see :func:`video_element_tracks`)."""
    frames_decoded: int
    frame_width: int | None
    frame_height: int | None
    bytes_received: int


@dataclass(frozen=True)
class CandidatePair:
    """The ICE candidate pair a page's transport selected."""

    local_address: str
    local_port: int
    remote_address: str
    remote_port: int
    protocol: str


async def inbound_video(page: Page) -> list[InboundVideo]:
    """Every inbound video stream of every open peer connection on the page."""
    rows: list[dict[str, Any]] = await page.evaluate(_INBOUND_VIDEO)
    return [
        InboundVideo(
            track_identifier=row["trackIdentifier"],
            frames_decoded=int(row["framesDecoded"]),
            frame_width=row["frameWidth"],
            frame_height=row["frameHeight"],
            bytes_received=int(row["bytesReceived"]),
        )
        for row in rows
    ]


async def selected_candidate_pairs(page: Page) -> list[CandidatePair]:
    """The selected ICE pair of every transport of every open peer connection on the page."""
    rows: list[dict[str, Any]] = await page.evaluate(_SELECTED_PAIRS)
    return [
        CandidatePair(
            local_address=row["localAddress"],
            local_port=int(row["localPort"]),
            remote_address=row["remoteAddress"],
            remote_port=int(row["remotePort"]),
            protocol=row["protocol"],
        )
        for row in rows
    ]


async def video_element_tracks(page: Page, selector: str = "video") -> list[str]:
    """Ids of the video tracks shown by the elements matching ``selector``, in document order."""
    ids: list[str] = await page.evaluate(_VIDEO_ELEMENT_TRACKS, selector)
    return ids


async def video_advances(
    page: Page,
    *,
    tracks: Collection[str] | None = None,
    frames: int = 10,
    within: float = 20.0,
) -> Mapping[str, int]:
    """Wait until each of ``tracks`` decodes ``frames`` more frames than when called; return the growth.

    Without ``tracks``: every inbound video stream present at the first sample that has any (right after
    connecting a page may have none yet). Fails with an AssertionError naming the streams that did not
    advance, and by how much they did.
    """

    async def sample() -> dict[str, int]:
        return {video.track_identifier: video.frames_decoded for video in await inbound_video(page)}

    first = await sample()
    expected = set(first) if tracks is None else set(tracks)
    deadline = time.monotonic() + within
    while True:
        await asyncio.sleep(0.1)
        now = await sample()
        if not expected:  # tracks=None and nothing received yet: the first streams to appear count
            first = now
            expected = set(now)
        growth = {track: now[track] - first.get(track, 0) for track in expected if track in now}
        stalled = {track: growth.get(track) for track in expected if growth.get(track, -1) < frames}
        if expected and not stalled:
            return growth
        if time.monotonic() >= deadline:
            problem = (
                f"frames decoded grew only by {stalled}"
                + (" (None: no such stream)" if None in stalled.values() else "")
                if expected
                else "the page receives no video at all"
            )
            raise AssertionError(
                f"not within {within:g} s: remote video on {page.url} did not advance by {frames} frames: "
                f"{problem}; frames decoded per stream now {now}"
            )


async def screenshot(page: Page, path: Path | str, *, full_page: bool = True) -> Path:
    """Write a PNG of the page to ``path`` (parents created), e.g. docs/*.png from a test run."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=target, full_page=full_page, type="png")
    return target
