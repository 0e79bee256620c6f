"""The demo conference server in headless Chromium: real pages, the real SFU, tabs from three countries.

Each tab is a participant that picks "Connect as if from" in the page's form, exactly as a newcomer
would. The screenshots in docs/ are taken by these tests.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import pytest_asyncio
from aiohttp import web
from playwright.async_api import Page

from sfu_geofence.core.policy import RoomPolicy
from sfu_geofence.server import SFU, ServerConfig
from sfu_geofence.server.demo import GEOFENCE, SAMPLE_ORIGINS, DemoConfig, create_demo_app
from sfu_geofence.sfu import AdmissionHook, CloseReason, JoinRequest, Refusal, SfuObserver
from sfu_geofence.sfu.participant import Participant
from sfu_geofence.testing.browser import screenshot, video_advances, video_element_tracks
from sfu_geofence.testing.netguard import LoopbackGuard
from sfu_geofence.testing.pytest_browser import OpenPage

pytestmark = pytest.mark.browser

DOCS = Path(__file__).resolve().parents[2] / "docs"
TOKEN = "demo-test-token-0123456789"
ROOM = "town-hall"
ROOM_SIZE = 3
ADDRESS = {origin.country: origin.address for origin in SAMPLE_ORIGINS}


@dataclass
class Joins(SfuObserver):
    """(display name, signaling address) of every participant the SFU admitted, in order."""

    seen: list[tuple[str, str]] = field(default_factory=list)

    def participant_joined(self, participant: Participant) -> None:
        self.seen.append((participant.name, participant.address))


@dataclass
class Demo:
    url: str
    app: web.Application
    joins: Joins
    blocked: dict[str, str]
    """Signaling address -> reason: refused at join by the SFU's admission hook (the geofence's place)."""


def refusing(blocked: dict[str, str]) -> AdmissionHook:
    def admit(request: JoinRequest) -> Refusal | None:
        reason = blocked.get(request.address)
        return None if reason is None else Refusal(reason)

    return admit


@pytest_asyncio.fixture(loop_scope="session")
async def demo() -> AsyncIterator[Demo]:
    joins = Joins()
    blocked: dict[str, str] = {}
    server = ServerConfig(host="127.0.0.1", port=0, max_participants_per_room=ROOM_SIZE)
    app = create_demo_app(
        DemoConfig(server=server, admin_token=TOKEN), admission=refusing(blocked), observers=[joins]
    )
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield Demo(f"http://127.0.0.1:{runner.addresses[0][1]}", app, joins, blocked)
    finally:
        await runner.cleanup()


async def join(page: Page, name: str, room: str, origin: str) -> None:
    """What a person does: type a name and a room, choose where to "come from", click Join."""
    await page.fill("#name", name)
    await page.fill("#room", room)
    await page.select_option("#from", origin)
    await page.click("#join")
    await page.wait_for_selector("body[data-state=in-meeting]", timeout=15_000)


async def remote_tiles(page: Page) -> list[str]:
    names: list[str] = await page.eval_on_selector_all(".tile.remote", "ts => ts.map(t => t.dataset.name)")
    return sorted(names)


async def wait_for_remote_videos(page: Page, names: list[str]) -> None:
    await page.wait_for_function(
        """(names) => {
          const tiles = [...document.querySelectorAll('.tile.remote')];
          return tiles.length === names.length
            && tiles.every(t => names.includes(t.dataset.name) && !t.classList.contains('no-video'));
        }""",
        arg=names,
        timeout=15_000,
    )


async def meet(demo: Demo, open_page: OpenPage, room: str) -> dict[str, Page]:
    """US, DE and CN join ``room``; returns their tabs once each shows the two others' video advancing."""
    countries = ["US", "DE", "CN"]
    tabs = {country: await open_page(f"{demo.url}/") for country in countries}
    for country, tab in tabs.items():
        await join(tab, country, room, country)
    for country, tab in tabs.items():
        await wait_for_remote_videos(tab, [c for c in countries if c != country])
    # Each tile shows its own stream, and every one of them keeps decoding new frames.
    shown = {country: await video_element_tracks(tab, ".tile.remote video") for country, tab in tabs.items()}
    assert all(len(set(tracks)) == 2 for tracks in shown.values()), shown
    await asyncio.gather(
        *(video_advances(tab, tracks=shown[country], frames=10, within=20) for country, tab in tabs.items())
    )
    for tab in tabs.values():
        assert await tab.text_content("#status") == "Connected"
        assert await tab.is_hidden("#notice"), "the page offered loopback candidates: no hint to show"
    # ...which a browser without the loopback switch would not: then the page explains what to do.
    assert not await tabs["US"].evaluate(
        "LOOPBACK_CANDIDATE.test('a=candidate:1 1 udp 2122260223 192.168.1.5 40000 typ host')"
    )
    return tabs


async def tile_track(page: Page, name: str) -> str:
    [track] = await video_element_tracks(page, f".tile.remote[data-name='{name}'] video")
    return track


async def test_three_countries_meet_each_sees_the_others_video_and_one_who_leaves_disappears(
    demo: Demo, open_page: OpenPage, loopback_guard: LoopbackGuard
) -> None:
    tabs = await meet(demo, open_page, ROOM)
    # The demo-only origin reached the SFU as the participant's address: what admission decides on.
    assert demo.joins.seen == [(c, ADDRESS[c]) for c in ("US", "DE", "CN")]
    await screenshot(tabs["US"], DOCS / "demo-conference.png", full_page=False)

    # A fourth is refused at join (the room is full): a full-screen reason, no video, nothing allocated.
    late = await open_page(f"{demo.url}/")
    await late.fill("#name", "HK")
    await late.fill("#room", ROOM)
    await late.select_option("#from", "HK")
    await late.click("#join")
    await late.wait_for_selector("body[data-state=refused]", timeout=15_000)
    assert await late.text_content("#screen-title") == "This meeting is full"
    assert await late.text_content("#screen-reason") == "the room is full"
    assert await late.text_content("#screen-detail") == "close code 4429"
    assert await late.is_hidden("#meeting")
    assert await video_element_tracks(late, "video") == []
    assert len(demo.joins.seen) == 3

    leaver = tabs["CN"]
    await leaver.click("#leave")
    await leaver.wait_for_selector("body[data-state=left]", timeout=10_000)
    assert await leaver.text_content("#screen-title") == "You left the meeting"
    assert await video_element_tracks(leaver, "video") == [], "nothing keeps showing after leaving"
    assert await leaver.is_hidden("#screen-reason")
    for country in ("US", "DE"):
        tab = tabs[country]
        other = "DE" if country == "US" else "US"
        await wait_for_remote_videos(tab, [other])
        assert await remote_tiles(tab) == [other]
        [track] = await video_element_tracks(tab, ".tile.remote video")
        await video_advances(tab, tracks=[track], frames=10, within=20)
    assert loopback_guard.violations == []


async def test_an_ejected_participant_sees_why_the_others_keep_advancing_and_a_refused_rejoin_sees_why(
    demo: Demo, open_page: OpenPage, loopback_guard: LoopbackGuard
) -> None:
    """The SFU's ejection and its admission hook are driven directly here: the geofence drives the same
    two once it is wired in (issue 4), and the operator's "deny CN" then replaces these two lines."""
    tabs = await meet(demo, open_page, "press-room")
    survivors = {"US": await tile_track(tabs["US"], "DE"), "DE": await tile_track(tabs["DE"], "US")}
    china = tabs["CN"]
    reason = "This meeting is not accessible from China (CN)"

    assert demo.app[SFU].remove_participant(
        await china.evaluate("window.demo.participant"), CloseReason.EJECTED, reason
    )
    await china.wait_for_selector("body[data-state=ejected]", timeout=10_000)
    assert await china.text_content("#screen-title") == "You were removed from this meeting"
    assert await china.text_content("#screen-reason") == reason
    assert await china.text_content("#screen-detail") == "close code 4409"
    assert await china.is_hidden("#meeting")
    assert await video_element_tracks(china, "video") == [], "never a frozen video"
    await screenshot(china, DOCS / "demo-ejected.png", full_page=False)
    # Everyone else: the ejected tile goes, and the video they still receive keeps advancing.
    for country, other in (("US", "DE"), ("DE", "US")):
        await wait_for_remote_videos(tabs[country], [other])
        await video_advances(tabs[country], tracks=[survivors[country]], frames=10, within=20)

    demo.blocked[ADDRESS["CN"]] = reason
    await china.click("#rejoin")
    await china.wait_for_selector("body[data-state=refused]", timeout=10_000)
    assert await china.text_content("#screen-title") == "You can't join this meeting"
    assert await china.text_content("#screen-reason") == reason
    assert await china.text_content("#screen-detail") == "close code 4403"
    assert await video_element_tracks(china, "video") == []
    assert [name for name, _ in demo.joins.seen] == ["US", "DE", "CN"], "the refused rejoin got nothing"
    assert loopback_guard.violations == []


async def test_the_console_opens_with_the_token_and_applies_a_room_policy_live(
    demo: Demo, open_page: OpenPage
) -> None:
    console = await open_page(f"{demo.url}/console")
    await console.fill("#token", "not-the-operator-token")
    await console.click("#token-form button")
    await console.wait_for_selector("#unlock-error:not([hidden])")
    assert await console.text_content("#unlock-error") == "the operator token is wrong"

    await console.fill("#token", TOKEN)
    await console.click("#token-form button")
    await console.wait_for_selector("body[data-state=open]")
    assert "DB-IP Country Lite" in (await console.text_content("#database") or "")
    attribution = console.locator("footer a[href='https://db-ip.com']")
    assert await attribution.text_content() == "IP Geolocation by DB-IP"

    await console.fill("#open-room-name", ROOM)
    await console.click("#open-room button")
    await console.wait_for_selector("#policy-form:not([hidden])")
    assert "follows the server default" in (await console.text_content("#policy-state") or "")
    await console.select_option("#policy-mode", "deny")
    await console.fill("#policy-countries", "cn, ru")
    await console.fill("#policy-exempt-networks", "198.51.100.0/24")
    await console.click("#policy-save")
    await console.wait_for_function(
        "document.getElementById('policy-result').textContent.startsWith('Applied')", timeout=10_000
    )

    in_force = demo.app[GEOFENCE].policy(ROOM)
    assert not in_force.inherited
    assert in_force.policy == RoomPolicy.from_dict(
        {"mode": "deny", "countries": ["CN", "RU"], "exempt_networks": ["198.51.100.0/24"]}
    )
    # The rooms table and the live audit log show the change without a reload.
    await console.wait_for_selector(f"#rooms tr[data-room='{ROOM}']", timeout=10_000)
    rule = await console.text_content(f"#rooms tr[data-room='{ROOM}'] td:nth-child(3)")
    assert rule is not None
    assert rule.startswith("deny CN, RU")
    await console.wait_for_selector("#audit tr[data-kind=policy]", timeout=10_000)
    await screenshot(console, DOCS / "demo-console.png")

    # The link `sfu-geofence demo` prints carries the token in the fragment, which the page then drops.
    linked = await open_page(f"{demo.url}/console#token={TOKEN}")
    await linked.wait_for_selector(f"body[data-state=open] #rooms tr[data-room='{ROOM}']", timeout=10_000)
    assert linked.url == f"{demo.url}/console"
