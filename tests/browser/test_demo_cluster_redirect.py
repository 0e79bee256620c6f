"""The demo page follows a cluster's ``redirect``: a tab that opens node B's page joins the room hosted
by node A there, and meets the tab already in it. Two nodes as ``serve --redis`` runs them (with the
demo's pages), one real redis-server, headless Chromium, all in the test's own namespace on loopback.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sfu_geofence.cluster.node import ClusterNode
from sfu_geofence.cluster.redisstore import RedisPolicyStore
from sfu_geofence.netguard import LoopbackGuard
from sfu_geofence.server import ServerConfig
from sfu_geofence.server.admin import AdminConfig
from sfu_geofence.server.demo import DemoConfig, create_demo_app
from sfu_geofence.testing.ci import skip_or_fail
from sfu_geofence.testing.demo_page import join, wait_for_remote_videos
from sfu_geofence.testing.pytest_browser import OpenPage
from sfu_geofence.testing.redis import REDIS_SERVER, redis_server
from sfu_geofence.testing.server import Served, app_on_loopback

pytestmark = [pytest.mark.browser, pytest.mark.cluster]

TOKEN = "demo-test-token-0123456789"
ROOM = "town-hall"


@contextlib.asynccontextmanager
async def demo_node(redis_url: str, node_id: str) -> AsyncIterator[Served]:
    """``sfu-geofence demo``'s application as a node of a cluster."""
    store = await RedisPolicyStore.open(redis_url)
    cluster = ClusterNode(redis_url, node_id)
    server = ServerConfig(
        host="127.0.0.1", port=0, admin=AdminConfig(TOKEN), redis_url=redis_url, node_id=node_id
    )
    try:
        async with app_on_loopback(
            create_demo_app(DemoConfig(server), policies=store, cluster=cluster)
        ) as served:
            yield served
    finally:
        await store.aclose()


async def test_a_tab_on_node_b_is_redirected_to_node_a_which_hosts_the_room_and_meets_the_tab_there(
    open_page: OpenPage, loopback_guard: LoopbackGuard, tmp_path: Path
) -> None:
    if shutil.which(REDIS_SERVER) is None:
        skip_or_fail(f"{REDIS_SERVER} is not installed (apt-get install redis-server)", kind="cluster")
    (tmp_path / "redis").mkdir()
    async with (
        redis_server(tmp_path / "redis") as redis,
        demo_node(redis.url, "node-a") as a,
        demo_node(redis.url, "node-b") as b,
    ):
        first = await open_page(f"{a.base}/")
        await join(first, "US", ROOM, "US")
        second = await open_page(f"{b.base}/")
        await join(second, "DE", ROOM, "DE")
        assert await second.evaluate("window.demo.redirects") == [a.url.replace("http://", "ws://")]
        assert await first.evaluate("window.demo.redirects") == []
        await wait_for_remote_videos(first, ["DE"])
        await wait_for_remote_videos(second, ["US"])
        assert sorted(p.name for p in a.sfu.participants.values()) == ["DE", "US"]
        assert b.sfu.participants == {}
        # The operator console of node B shows them, on node A (the cluster's operator view).
        console = await open_page(f"{b.admin_base}/console#token={TOKEN}")
        await console.click(f"#rooms tr[data-room='{ROOM}']", timeout=10_000)
        for name in ("US", "DE"):
            await console.wait_for_selector(f"#participants tr[data-name='{name}'][data-node='node-a']")
    assert loopback_guard.violations == []
