"""Nodes of a cluster as ``serve --redis`` runs them: real servers, real peers, one real redis-server.

The test database puts 127.1/16 in US and 127.86/16 in CN; each peer's WebSocket and ICE are bound to
an address of its country, so the node really sees it there.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families

from sfu_geofence.cluster.redisstore import _WRITE, RedisKeys, RedisPolicyStore
from sfu_geofence.server import ServerConfig
from sfu_geofence.server.admin import TOKEN_ENV, AdminConfig
from sfu_geofence.synthetic.client import SyntheticPeer
from sfu_geofence.testing.process import spawn_module, stop
from sfu_geofence.testing.redis import RedisServer, free_port
from sfu_geofence.testing.server import Served, geofenced_on_loopback
from sfu_geofence.testing.testdb import build_database
from sfu_geofence.testing.wait import eventually

pytestmark = pytest.mark.cluster

TOKEN = "cluster-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CN, US = "127.86.0.1", "127.1.0.1"
WITHIN = 30.0  # a loaded 2-core machine


@pytest.fixture
def database(tmp_path: Path) -> Path:
    return build_database(tmp_path / "countries.mmdb", ["127.1.0.0/16=US", "127.86.0.0/16=CN"])


@pytest.fixture
def node(redis: RedisServer, database: Path) -> Callable[..., contextlib.AbstractAsyncContextManager[Served]]:
    @contextlib.asynccontextmanager
    async def started(url: str | None = None, poll_interval: float = 1.0) -> AsyncIterator[Served]:
        """What ``serve --redis URL`` serves, in this process."""
        url = url or redis.url
        store = await RedisPolicyStore.open(url, poll_interval=poll_interval)
        config = ServerConfig(db_path=str(database), admin=AdminConfig(TOKEN), redis_url=url)
        try:
            async with geofenced_on_loopback(config, policies=store) as served:
                yield served
        finally:
            await store.aclose()

    return started


def admin_base(served: Served) -> str:
    """Where the node's operator API listens: its admin listener."""
    assert served.admin_base is not None
    return served.admin_base


async def call(base: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, f"{base}/api{path}", json=body, headers=AUTH) as response,
    ):
        return response.status, await response.json()


@contextlib.asynccontextmanager
async def joined(served: Served, room: str, address: str) -> AsyncIterator[SyntheticPeer]:
    peer = SyntheticPeer(served.url, room, address, name=address, tracks=[])
    try:
        await peer.join(within=WITHIN)
        assert peer.participant_id is not None, peer.messages
        yield peer
    finally:
        await peer.close()


async def test_a_policy_changed_through_node_a_ejects_exactly_the_restricted_participant_on_node_b(
    node: Callable[..., contextlib.AbstractAsyncContextManager[Served]],
) -> None:
    async with (
        node() as a,
        node() as b,
        joined(b, "room", CN) as cn,
        joined(b, "room", US) as us,
        joined(a, "room", US) as us_on_a,
    ):
        status, body = await call(
            admin_base(a), "PUT", "/rooms/room/policy", {"mode": "deny", "countries": ["CN"]}
        )
        assert status == 200, body
        await asyncio.wait_for(cn.closed.wait(), WITHIN)
        assert cn.close_code == 4409
        assert cn.messages[-1]["type"] == "ejected"
        assert not us.closed.is_set()
        assert not us_on_a.closed.is_set()
        assert [p.participant for p in b.geofence.participants()] == [us.participant_id]
        status, body = await call(admin_base(b), "GET", "/rooms/room/policy")
        assert (status, body["version"]) == (200, 1)


async def test_a_node_that_lost_its_subscription_reads_the_policies_again_before_it_admits_anyone(
    node: Callable[..., contextlib.AbstractAsyncContextManager[Served]], redis: RedisServer
) -> None:
    raw = aioredis.Redis.from_url(redis.url)
    try:
        await raw.acl_setuser(
            "node-b",
            enabled=True,
            passwords=["+node-b-password"],
            keys=["*"],
            channels=["*"],
            commands=["+@all"],
        )
        url_b = redis.url.replace("redis://", "redis://node-b:node-b-password@")
        async with node() as a, node(url_b, poll_interval=60.0) as b:
            store_b = b.geofence.policies
            assert isinstance(store_b, RedisPolicyStore)
            await asyncio.wait_for(store_b.subscribed.wait(), WITHIN)
            # Node B may read and write keys but no longer subscribe: Redis drops its subscription,
            # and every resubscription fails; the counter poll is a minute away.
            await raw.acl_setuser("node-b", enabled=True, reset_channels=True)
            await eventually(
                lambda: None if not store_b.subscribed.is_set() else "still subscribed", within=WITHIN
            )
            status, body = await call(
                admin_base(a), "PUT", "/rooms/room/policy", {"mode": "deny", "countries": ["CN"]}
            )
            assert status == 200, body
            assert store_b.version == 0  # b has not heard of it
            peer = SyntheticPeer(b.url, "room", CN, name="cn", tracks=[])
            try:
                await peer.join(within=WITHIN)
                await asyncio.wait_for(peer.closed.wait(), WITHIN)
                assert peer.close_code == 4403, peer.messages
            finally:
                await peer.close()
            assert store_b.version == 1
            assert not store_b.subscribed.is_set()
    finally:
        await raw.aclose()


async def scrape(served: Served) -> dict[str, float]:
    """The node's unlabelled figures, from its admin listener's /metrics."""
    async with aiohttp.ClientSession() as http, http.get(f"{admin_base(served)}/metrics") as response:
        assert response.status == 200
        text = await response.text()
    return {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples if not s.labels}


async def test_a_nodes_metrics_say_whether_it_follows_the_changes_and_how_often_it_caught_up(
    node: Callable[..., contextlib.AbstractAsyncContextManager[Served]], redis: RedisServer
) -> None:
    subscribed, catch_ups = "sfu_geofence_policy_subscribed", "sfu_geofence_policy_catch_ups_total"

    async def until(expected: tuple[float, float]) -> None:
        """Scrape until (subscribed, catch-ups) are ``expected``, at most WITHIN seconds."""
        deadline = asyncio.get_running_loop().time() + WITHIN
        while True:
            figures = await scrape(a)
            found = (figures[subscribed], figures[catch_ups])
            if found == expected:
                return
            assert asyncio.get_running_loop().time() < deadline, f"{subscribed}, {catch_ups}: {found}"
            await asyncio.sleep(0.05)

    async with node(poll_interval=60.0) as a:
        store = a.geofence.policies
        assert isinstance(store, RedisPolicyStore)
        await asyncio.wait_for(store.subscribed.wait(), WITHIN)
        await until((1.0, 0.0))
        keys, raw = RedisKeys(), aioredis.Redis.from_url(redis.url)
        try:
            # One transaction: the node's subscription is dropped, then a change is published to nobody.
            async with raw.pipeline(transaction=True) as pipe:
                pipe.client_kill_filter(_type="pubsub")
                policy = '{"mode": "deny", "countries": ["CN"]}'
                pipe.eval(
                    _WRITE, 3, keys.version, keys.rooms, keys.default, "room", policy, keys.changes, '"room"'
                )
                await pipe.execute()
        finally:
            await raw.aclose()
        await until((1.0, 1.0))  # resubscribed, caught up
        await redis.kill()
        await until((0.0, 1.0))
        await redis.start()
        await until((1.0, 1.0))  # nothing missed meanwhile


async def test_serve_with_redis_unreachable_exits_2_naming_it() -> None:
    port = free_port()
    argv = ("-m", "sfu_geofence", "serve", "--port", "0", "--redis", f"redis://:hunter2@127.0.0.1:{port}/0")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *argv,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    _, stderr = await asyncio.wait_for(process.communicate(), WITHIN)
    assert process.returncode == 2
    assert f"cannot reach Redis at redis://127.0.0.1:{port}/0" in stderr.decode()
    assert "hunter2" not in stderr.decode()


async def test_kill_9_of_the_node_and_of_redis_after_an_acknowledged_change_loses_nothing(
    redis: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)

    async def serve() -> tuple[asyncio.subprocess.Process, str]:
        process = await spawn_module("sfu_geofence", "serve", "--port", "0", "--redis", redis.url)
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), WITHIN)).decode()
        assert line.startswith("listening on "), line
        admin = (await asyncio.wait_for(process.stdout.readline(), WITHIN)).decode()
        assert admin.startswith("admin listening on "), admin
        return process, admin.split()[3]  # the operator API is on the admin listener

    process, base = await serve()
    try:
        status, body = await call(base, "PUT", "/rooms/kept/policy", {"mode": "deny", "countries": ["CN"]})
        assert status == 200, body
        process.send_signal(signal.SIGKILL)
        await redis.kill()
    finally:
        await stop(process)
    await redis.start()
    process, base = await serve()
    try:
        status, body = await call(base, "GET", "/rooms/kept/policy")
        assert status == 200, body
        assert (body["policy"]["countries"], body["version"]) == (["CN"], 1)
    finally:
        await stop(process)
