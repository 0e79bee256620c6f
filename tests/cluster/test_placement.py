"""Room placement: one node hosts a room; a join reaching another is redirected there, which decides.

Nodes as ``serve --redis`` runs them (in this process, or as real processes for kill -9), one real
redis-server, real aiortc peers on loopback addresses of their country (127.1/16 US, 127.86/16 CN).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from contextlib import AbstractAsyncContextManager as AsyncContextManager
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from sfu_geofence.cluster.node import ClusterTimings
from sfu_geofence.core.audit import EventKind
from sfu_geofence.core.policy import RoomPolicy
from sfu_geofence.protocol import CloseCode
from sfu_geofence.server.caps import Caps
from sfu_geofence.synthetic.client import SyntheticPeer
from sfu_geofence.testing.cluster import cluster_node, figures, freeze, node_process, thaw, two_nodes
from sfu_geofence.testing.participants import peer_in
from sfu_geofence.testing.redis import RedisServer
from sfu_geofence.testing.wait import eventually

pytestmark = pytest.mark.cluster

CN, US, US2, US3 = "127.86.0.1", "127.1.0.1", "127.1.0.2", "127.1.0.3"
WITHIN = 30.0  # a loaded 2-core machine


def ws(url: str) -> str:
    """A node's signaling URL as it names itself (``Served.url`` says http://)."""
    return url.replace("http://", "ws://", 1)


def peer(url: str, room: str, address: str, max_redirects: int = 1) -> AsyncContextManager[SyntheticPeer]:
    return peer_in(url, room, address, max_redirects=max_redirects, within=WITHIN)


async def test_a_join_reaching_another_node_is_redirected_to_the_host_which_alone_decides(
    redis: RedisServer, database: Path
) -> None:
    async with (
        two_nodes(redis.url, database) as (a, b),
        peer(a.url, "town-hall", US) as first,
        peer(b.url, "town-hall", US2) as second,
    ):
        assert first.participant_id is not None
        assert first.redirects == []
        assert second.participant_id is not None, second.messages
        assert second.redirects == [ws(a.url)]
        assert second.url == ws(a.url)
        assert {p.participant for p in a.geofence.participants()} == {
            first.participant_id,
            second.participant_id,
        }
        # The redirecting node allocated nothing and decided nothing.
        assert b.sfu.rooms == {}
        assert b.geofence.participants() == []
        assert b.geofence.audit.events(kind=EventKind.ADMISSION) == []
        assert len(a.geofence.audit.events(kind=EventKind.ADMISSION)) == 2
        assert (await figures(b.admin_base))["sfu_geofence_redirects_total"] == 1
        assert (await figures(a.admin_base))["sfu_geofence_rooms_hosted"] == 1
        assert (await figures(b.admin_base))["sfu_geofence_rooms_hosted"] == 0


async def test_the_redirect_names_the_room_and_the_hosts_url_then_closes_with_4302(
    redis: RedisServer, database: Path
) -> None:
    async with (
        two_nodes(redis.url, database) as (a, b),
        peer(a.url, "town-hall", US),
        peer(b.url, "town-hall", US2, max_redirects=0) as stays,
    ):
        await asyncio.wait_for(stays.closed.wait(), WITHIN)
        assert stays.close_code == CloseCode.REDIRECT == 4302
        assert stays.messages == [{"type": "redirect", "room": "town-hall", "url": ws(a.url)}]
        assert stays.participant_id is None


async def test_a_restricted_participant_redirected_to_the_host_is_refused_there(
    redis: RedisServer, database: Path
) -> None:
    async with (
        two_nodes(redis.url, database) as (a, b),
        peer(a.url, "r", US),
    ):
        await a.geofence.change_policy("r", RoomPolicy.from_dict({"mode": "deny", "countries": ["CN"]}))
        async with peer(b.url, "r", CN) as cn:
            await asyncio.wait_for(cn.closed.wait(), WITHIN)
            assert cn.redirects == [ws(a.url)]
            assert cn.close_code == CloseCode.REFUSED
            assert [m["type"] for m in cn.messages] == ["redirect", "refused"]
        refusals = [e for e in a.geofence.audit.events(kind=EventKind.ADMISSION) if e.outcome == "refused"]
        assert [e.country for e in refusals] == ["CN"]
        assert b.geofence.audit.events(kind=EventKind.ADMISSION) == []


async def test_a_room_emptied_on_its_host_is_placed_again_where_the_next_join_arrives(
    redis: RedisServer, database: Path
) -> None:
    # A lease far longer than the test: only the host's release can free the room.
    timings = ClusterTimings(lease=600.0, renew=0.1)
    async with (
        two_nodes(redis.url, database, timings) as (a, b),
    ):
        async with peer(a.url, "r", US) as first:
            assert first.participant_id is not None
        deadline = time.monotonic() + WITHIN
        while True:
            async with peer(b.url, "r", US2, max_redirects=0) as again:
                if again.participant_id is not None:
                    assert b.sfu.rooms.keys() == {"r"}
                    assert a.sfu.rooms == {}
                    break
                assert time.monotonic() < deadline, again.messages
            await asyncio.sleep(0.1)


async def test_a_node_that_stops_gives_its_rooms_up_at_once(redis: RedisServer, database: Path) -> None:
    timings = ClusterTimings(lease=600.0)
    async with cluster_node(redis.url, database, "node-b", timings) as b:
        async with cluster_node(redis.url, database, "node-a", timings) as a, peer(a.url, "r", US) as first:
            assert first.participant_id is not None
        async with peer(b.url, "r", US2, max_redirects=0) as placed:
            assert placed.participant_id is not None, placed.messages
            assert b.sfu.rooms.keys() == {"r"}


async def test_a_kill_9_of_the_host_lets_the_next_join_place_the_room_on_another_node_within_5_s(
    redis: RedisServer, database: Path
) -> None:
    async with (
        node_process(redis.url, database, "node-a") as (a, url_a, _),
        node_process(redis.url, database, "node-b") as (_, url_b, _),
        peer(url_a, "r", US) as host_peer,
        peer(url_b, "r", US2) as sent_on,
    ):
        assert host_peer.participant_id is not None
        assert sent_on.participant_id is not None
        assert sent_on.redirects == [ws(url_a)]
        a.kill()
        killed = time.monotonic()
        await a.wait()
        await asyncio.wait_for(host_peer.closed.wait(), WITHIN)
        placed_after = None
        while placed_after is None:
            # Each attempt is a fresh participant; a redirect to the dead node fails to connect.
            with contextlib.suppress(OSError):
                async with peer(url_b, "r", US3, max_redirects=0) as rejoin:
                    if rejoin.participant_id is not None:
                        placed_after = time.monotonic() - killed
            assert time.monotonic() - killed < WITHIN
            await asyncio.sleep(0.1)
        assert placed_after < 5.0, placed_after


async def test_the_lease_names_the_host_and_where_it_is_reached(redis: RedisServer, database: Path) -> None:
    async with cluster_node(redis.url, database, "node-a") as a, peer(a.url, "r", US):
        raw = aioredis.Redis.from_url(redis.url)
        try:
            lease = await raw.get("sfu-geofence:room:r")
            ttl = await raw.pttl("sfu-geofence:room:r")
        finally:
            await raw.aclose()
        assert lease is not None
        assert json.loads(lease) == {"node": "node-a", "url": ws(a.url)}
        assert 0 < ttl <= 3000


async def test_the_redirect_names_the_advertised_url_and_a_node_is_named_hostname_port_by_default(
    redis: RedisServer, database: Path
) -> None:
    advertised = "wss://sfu-a.example.org/ws"
    async with (
        cluster_node(redis.url, database, "", advertise_url=advertised) as a,
        cluster_node(redis.url, database, "node-b") as b,
        peer(a.url, "r", US),
        peer(b.url, "r", US2, max_redirects=0) as sent,
    ):
        await asyncio.wait_for(sent.closed.wait(), WITHIN)
        assert sent.messages == [{"type": "redirect", "room": "r", "url": advertised}]
        port = a.url.split(":")[2].split("/")[0]
        raw = aioredis.Redis.from_url(redis.url)
        try:
            lease = json.loads(await raw.get("sfu-geofence:room:r"))
        finally:
            await raw.aclose()
        assert lease == {"node": f"{socket.gethostname()}:{port}", "url": advertised}


async def test_with_redis_unreachable_a_join_is_hosted_where_it_arrives_and_decided_there(
    redis: RedisServer, database: Path
) -> None:
    async with (
        two_nodes(redis.url, database) as (a, b),
        peer(a.url, "r", US),
    ):
        await redis.kill()
        async with peer(b.url, "r", US2, max_redirects=0) as here:
            assert here.participant_id is not None, here.messages
            assert b.sfu.rooms.keys() == {"r"}
            assert [e.outcome for e in b.geofence.audit.events(kind=EventKind.ADMISSION)] == ["admitted"]


async def test_a_client_follows_one_redirect_and_stops_at_a_second_instead_of_looping(
    redis: RedisServer, database: Path
) -> None:
    async with cluster_node(redis.url, database, "node-b") as b:
        # A lease that sends every join for the room back to node B itself (a room moving meanwhile).
        raw = aioredis.Redis.from_url(redis.url)
        try:
            await raw.set("sfu-geofence:room:r", json.dumps({"node": "node-x", "url": ws(b.url)}), px=60_000)
        finally:
            await raw.aclose()
        async with peer(b.url, "r", US) as looping:
            await asyncio.wait_for(looping.closed.wait(), WITHIN)
            assert looping.redirects == [ws(b.url)]
            assert looping.close_code == CloseCode.REDIRECT
            assert looping.participant_id is None
            assert [m["type"] for m in looping.messages] == ["redirect", "redirect"]
        assert b.sfu.rooms == {}


async def test_a_redirect_costs_a_join_token_so_a_client_cannot_make_a_node_ask_redis_faster_than_it_may_join(
    redis: RedisServer, database: Path
) -> None:
    # Two joins at once per address, and no refill within the test.
    caps = Caps(join_burst=2, join_rate=0.001)
    async with (
        cluster_node(redis.url, database, "node-a") as a,
        cluster_node(redis.url, database, "node-b", caps=caps) as b,
        peer(a.url, "r", US),
    ):
        codes = []
        for _ in range(3):
            async with peer(b.url, "r", US2, max_redirects=0) as sent:
                await asyncio.wait_for(sent.closed.wait(), WITHIN)
                codes.append(sent.close_code)
        assert codes == [CloseCode.REDIRECT, CloseCode.REDIRECT, CloseCode.ADDRESS_LIMIT]
        assert (await figures(b.admin_base))["sfu_geofence_redirects_total"] == 2


async def test_with_redis_frozen_a_join_waits_at_most_the_claim_time_even_behind_a_stuck_renewal(
    redis: RedisServer, database: Path
) -> None:
    # Renewals every 0.1 s: one is stuck on the frozen Redis (for the client's 10 s socket timeout),
    # holding the placement's lock, when the join arrives.
    async with (
        cluster_node(redis.url, database, "node-a", ClusterTimings(renew=0.1)) as a,
        peer(a.url, "busy", US),
    ):
        freeze(redis)
        try:
            await asyncio.sleep(0.5)
            started = time.monotonic()
            async with peer(a.url, "other", US2, max_redirects=0) as here:
                waited = time.monotonic() - started
                assert here.participant_id is not None, here.messages
        finally:
            thaw(redis)
        # claim_within is 1 s; the stuck renewal would have held the join for about 10 s.
        assert waited < 5.0, waited


async def test_a_room_whose_lease_another_node_took_is_logged_once_not_at_every_renewal(
    redis: RedisServer, database: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with (
        cluster_node(redis.url, database, "node-a", ClusterTimings(renew=0.05)) as a,
        peer(a.url, "r", US),
    ):
        # What a Redis outage longer than the lease leaves: another node placed the room meanwhile.
        raw = aioredis.Redis.from_url(redis.url)
        try:
            await raw.set(
                "sfu-geofence:room:r", json.dumps({"node": "node-x", "url": "ws://x/ws"}), px=60_000
            )
        finally:
            await raw.aclose()

        def conflicts() -> list[str]:
            return [r.getMessage() for r in caplog.records if "is hosted here and by" in r.getMessage()]

        await eventually(lambda: None if conflicts() else "no conflict logged yet", within=WITHIN)
        await asyncio.sleep(1.5)  # some thirty renewals more
        assert conflicts() == [
            'room placement: room r is hosted here and by {"node": "node-x", "url": "ws://x/ws"}'
        ]
        assert a.sfu.rooms.keys() == {"r"}
