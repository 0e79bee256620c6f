"""The demo conference server in headless Chromium: real pages, the real SFU, tabs from three countries.

Each tab is a participant that picks "Connect as if from" in the page's form, exactly as a newcomer
would; the operator works in the console page. The server is ``sfu-geofence demo``'s: ``serve``'s
geofenced application, so admission and ejection are the product's own code. These tests take the
screenshots of docs/ and the README: into a temporary directory, or into the directory named by
$SFU_GEOFENCE_PICTURES, which ``python scripts/readme_pictures.py`` sets to docs/ to regenerate them.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import pytest_asyncio
from aiohttp import web
from playwright.async_api import Page

from sfu_geofence.core.errors import DatabaseError
from sfu_geofence.core.policy import RoomPolicy
from sfu_geofence.netguard import LoopbackGuard
from sfu_geofence.server import GEOFENCE_HOST, ServerConfig
from sfu_geofence.server.admin import AdminConfig
from sfu_geofence.server.demo import SAMPLE_ORIGINS, DemoConfig, create_demo_app
from sfu_geofence.sfu import SfuObserver
from sfu_geofence.sfu.participant import Participant
from sfu_geofence.testing.browser import screenshot, video_advances, video_element_tracks
from sfu_geofence.testing.demo_page import join, remote_tiles, tile_track, wait_for_remote_videos
from sfu_geofence.testing.pytest_browser import OpenPage
from sfu_geofence.testing.server import app_on_loopback

pytestmark = pytest.mark.browser

PICTURES_ENV = "SFU_GEOFENCE_PICTURES"
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
    """The public listener: the meeting page and signaling."""
    admin_url: str
    """The admin listener: the operator console and its API."""
    app: web.Application
    joins: Joins


@pytest_asyncio.fixture(loop_scope="session")
async def demo() -> AsyncIterator[Demo]:
    joins = Joins()
    server = ServerConfig(
        host="127.0.0.1", port=0, max_participants_per_room=ROOM_SIZE, admin=AdminConfig(TOKEN)
    )
    app = create_demo_app(DemoConfig(server), observers=[joins])
    async with app_on_loopback(app) as served:
        assert served.admin_base is not None
        yield Demo(served.base, served.admin_base, app, joins)


@pytest.fixture
def pictures(tmp_path: Path) -> Path:
    """Where screenshots go: never over tracked files, unless scripts/readme_pictures.py asks for docs/."""
    chosen = os.environ.get(PICTURES_ENV)
    return Path(chosen) if chosen else tmp_path / "pictures"


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
        assert await tab.is_hidden("#notice"), "the page offered candidates: no hint to show"
    # An mDNS name is a candidate too (it reaches the server as a peer-reflexive one); none at all
    # (a browser with no address but loopback, and no loopback switch) gets the hint.
    assert await tabs["US"].evaluate(
        "ANY_CANDIDATE.test('a=candidate:1 1 udp 2122260223 0b5e7c1d.local 40000 typ host')"
    )
    return tabs


async def test_three_countries_meet_each_sees_the_others_video_and_one_who_leaves_disappears(
    demo: Demo, open_page: OpenPage, loopback_guard: LoopbackGuard
) -> None:
    tabs = await meet(demo, open_page, ROOM)
    # The demo-only origin reached the SFU as the participant's address: what admission decides on.
    assert demo.joins.seen == [(c, ADDRESS[c]) for c in ("US", "DE", "CN")]

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


async def test_the_operator_denies_china_the_chinese_tab_is_ejected_the_others_keep_advancing_rejoin_refused(
    demo: Demo, open_page: OpenPage, loopback_guard: LoopbackGuard, pictures: Path
) -> None:
    """Issue 5's must-show, through the console and the geofence exactly as an operator would do it."""
    tabs = await meet(demo, open_page, ROOM)
    survivors = {"US": await tile_track(tabs["US"], "DE"), "DE": await tile_track(tabs["DE"], "US")}
    await screenshot(tabs["US"], pictures / "demo-conference.png", full_page=False)

    # The operator sees who is where, and how the server decided it.
    console = await open_page(f"{demo.admin_url}/console#token={TOKEN}")
    await console.click(f"#rooms tr[data-room='{ROOM}']", timeout=10_000)
    china_row = "#participants tr[data-name='CN']"
    await console.wait_for_selector(china_row, timeout=10_000)
    assert await console.text_content(f"{china_row} td.country") == "CN"
    assert await console.text_content(f"{china_row} td.address") == ADDRESS["CN"]
    assert await console.text_content(f"{china_row} td.how .reason") == "country_not_restricted"
    source = await console.text_content(f"{china_row} td.how .source") or ""
    assert source.startswith("country_code · DB-IP Country Lite "), source
    # Honest about the demo: the pretended origin is the signaling address; media comes from loopback.
    await console.wait_for_function(
        f"document.querySelector(\"{china_row} td.media\").textContent === '127.0.0.1 unknown'",
        timeout=10_000,
    )

    # Deny China in this room, now.
    await console.select_option("#policy-mode", "deny")
    await console.fill("#policy-countries", "CN")
    await console.click("#policy-save")
    await console.wait_for_function(
        "document.getElementById('policy-result').textContent.startsWith('Applied')", timeout=10_000
    )
    assert "CN (CN): requested" in (await console.text_content("#policy-result") or "")

    china = tabs["CN"]
    ejected = "You were removed: this meeting is no longer accessible from China (CN)."
    await china.wait_for_selector("body[data-state=ejected]", timeout=10_000)
    assert await china.text_content("#screen-title") == "You were removed from this meeting"
    assert await china.text_content("#screen-reason") == ejected
    assert await china.text_content("#screen-detail") == "close code 4409"
    assert await china.is_hidden("#meeting")
    assert await video_element_tracks(china, "video") == [], "never a frozen video"
    await screenshot(china, pictures / "demo-ejected.png", full_page=False)

    # Everyone else: the ejected tile goes, and the video they still receive keeps advancing.
    for country, other in (("US", "DE"), ("DE", "US")):
        await wait_for_remote_videos(tabs[country], [other])
        await video_advances(tabs[country], tracks=[survivors[country]], frames=10, within=20)
        assert await tabs[country].text_content("#status") == "Connected"

    await china.click("#rejoin")
    await china.wait_for_selector("body[data-state=refused]", timeout=10_000)
    assert await china.text_content("#screen-title") == "You can't join this meeting"
    assert await china.text_content("#screen-reason") == "This meeting is not accessible from China (CN)."
    assert await china.text_content("#screen-detail") == "close code 4403"
    assert await video_element_tracks(china, "video") == []
    await screenshot(china, pictures / "demo-refused.png", full_page=False)
    assert [name for name, _ in demo.joins.seen] == ["US", "DE", "CN"], "the refused rejoin got nothing"

    # The console shows the policy, who is left, and the ejection in the live audit log.
    await console.wait_for_selector("#audit tr[data-kind=ejection][data-outcome=completed]", timeout=10_000)
    await console.wait_for_selector("#audit tr[data-kind=admission][data-outcome=refused]", timeout=10_000)
    await console.wait_for_function(
        """() => [...document.querySelectorAll('#participants tbody tr')]
                   .map(r => r.dataset.name).sort().join() === 'DE,US'""",
        timeout=10_000,
    )
    rule = await console.text_content(f"#rooms tr[data-room='{ROOM}'] td:nth-child(3)")
    assert rule == "deny CN"
    await screenshot(console, pictures / "demo-console.png")
    assert loopback_guard.violations == []


async def test_an_operator_ejects_one_participant_by_hand_from_the_console(
    demo: Demo, open_page: OpenPage, loopback_guard: LoopbackGuard
) -> None:
    countries = ["US", "DE"]
    tabs = {country: await open_page(f"{demo.url}/") for country in countries}
    for country, tab in tabs.items():
        await join(tab, country, "back-office", country)
    await wait_for_remote_videos(tabs["US"], ["DE"])

    console = await open_page(f"{demo.admin_url}/console#token={TOKEN}")
    await console.click("#rooms tr[data-room='back-office']", timeout=10_000)
    await console.click("#participants tr[data-name='DE'] button.eject", timeout=10_000)

    germany = tabs["DE"]
    await germany.wait_for_selector("body[data-state=ejected]", timeout=10_000)
    assert await germany.text_content("#screen-title") == "You were removed from this meeting"
    assert await germany.text_content("#screen-reason") == "An operator removed you from this meeting."
    assert await video_element_tracks(germany, "video") == []
    # The one left sees only that DE left; the room, with no policy of its own, still admits Germany.
    await tabs["US"].wait_for_selector("#alone:not([hidden])", timeout=10_000)
    assert await remote_tiles(tabs["US"]) == []
    await germany.click("#rejoin")
    await germany.wait_for_selector("body[data-state=in-meeting]", timeout=15_000)
    await wait_for_remote_videos(tabs["US"], ["DE"])
    await console.wait_for_selector("#audit tr[data-kind=ejection][data-outcome=completed]", timeout=10_000)
    assert loopback_guard.violations == []


async def test_the_console_opens_with_the_token_and_applies_a_room_policy_live(
    demo: Demo, open_page: OpenPage
) -> None:
    console = await open_page(f"{demo.admin_url}/console")
    await console.fill("#token", "not-the-operator-token")
    await console.click("#token-form button")
    await console.wait_for_selector("#unlock-error:not([hidden])")
    assert await console.text_content("#unlock-error") == "the operator token is wrong"

    await console.fill("#token", TOKEN)
    await console.click("#token-form button")
    await console.wait_for_selector("body[data-state=open]")
    # The build and its age, never the file's path.
    database = await console.text_content("#database") or ""
    assert database.startswith("DB-IP Country Lite 2026-06-01 (embedded) · built 2026-06-01 · "), database
    assert database.endswith(" days old"), database
    assert ".mmdb" not in (await console.text_content("body") or "")
    # A reload that fails raises the alarm on the console (without the path of the file), until one works.
    fence = demo.app[GEOFENCE_HOST].geofence
    with pytest.raises(DatabaseError):
        fence.reload_database("/nonexistent/GeoLite2-Country.mmdb")
    await console.wait_for_selector("#database-alarm:not([hidden])", timeout=10_000)
    alarm = await console.text_content("#database-alarm") or ""
    assert alarm.startswith("The last database reload failed ("), alarm
    assert "DB-IP Country Lite 2026-06-01 still decides" in alarm
    assert "nonexistent" not in alarm
    failed = "#audit tr[data-kind=database][data-outcome=reload_failed]"
    await console.wait_for_selector(failed, timeout=10_000)
    assert await console.text_content(f"{failed} td:nth-child(9)") == (
        "the new file could not be used: the previous build still decides"
    )
    assert "nonexistent" not in (await console.text_content("body") or "")
    fence.reload_database()
    await console.wait_for_selector("#database-alarm[hidden]", state="attached", timeout=10_000)
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

    in_force = demo.app[GEOFENCE_HOST].geofence.policy(ROOM)
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

    # The link `sfu-geofence demo` prints carries the token in the fragment, which the page then drops.
    linked = await open_page(f"{demo.admin_url}/console#token={TOKEN}")
    await linked.wait_for_selector(f"body[data-state=open] #rooms tr[data-room='{ROOM}']", timeout=10_000)
    assert linked.url == f"{demo.admin_url}/console"


async def test_a_viewer_whose_answer_names_no_address_still_connects_and_gets_no_hint(
    demo: Demo, open_page: OpenPage
) -> None:
    """A browser that grants no camera may answer with no candidate at all (its mDNS names not ready,
    or none to be had) and connect anyway: the server learns its address from its checks. The page's
    "no address" hint waits for a connection first (5 s), so it never shows such a viewer a false alarm."""
    speaker = await open_page(f"{demo.url}/")
    await join(speaker, "US", "no-address", "US")
    viewer = await open_page(f"{demo.url}/", camera=False)
    await join(viewer, "viewer", "no-address", "", watch=True)
    await wait_for_remote_videos(viewer, ["US"])
    await video_advances(viewer, tracks=[await tile_track(viewer, "US")], frames=10, within=20)
    await asyncio.sleep(6)  # past the hint's delay
    assert await viewer.text_content("#status") == "Connected"
    assert await viewer.is_hidden("#notice")
