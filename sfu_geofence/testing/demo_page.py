"""What a person does on the demo's meeting page, for browser tests: join, and wait for the others.

One place for the page's selectors (``sfu_geofence/server/pages/index.html``), shared by every test that
drives the demo in Chromium.
"""

from __future__ import annotations

from playwright.async_api import Page

from .browser import video_element_tracks


async def join(page: Page, name: str, room: str, origin: str, *, watch: bool = False) -> None:
    """Type a name and a room, choose where to "come from", click Join (or "Watch without camera")."""
    await page.fill("#name", name)
    await page.fill("#room", room)
    await page.select_option("#from", origin)
    await page.click("#watch" if watch else "#join")
    await page.wait_for_selector("body[data-state=in-meeting]", timeout=15_000)


async def remote_tiles(page: Page) -> list[str]:
    """Names on the tiles of the other participants, sorted."""
    names: list[str] = await page.eval_on_selector_all(".tile.remote", "ts => ts.map(t => t.dataset.name)")
    return sorted(names)


async def wait_for_remote_videos(page: Page, names: list[str], *, within_ms: float = 15_000) -> None:
    """Until the page shows exactly ``names`` as remote tiles, each with video."""
    await page.wait_for_function(
        """(names) => {
          const tiles = [...document.querySelectorAll('.tile.remote')];
          return tiles.length === names.length
            && tiles.every(t => names.includes(t.dataset.name) && !t.classList.contains('no-video'));
        }""",
        arg=names,
        timeout=within_ms,
    )


async def tile_track(page: Page, name: str) -> str:
    """The id of the video track the tile of ``name`` shows."""
    [track] = await video_element_tracks(page, f".tile.remote[data-name='{name}'] video")
    return track
