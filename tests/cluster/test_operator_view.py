"""One operator view of the cluster: any node lists every node's rooms and participants (with the node
each is on), ejects a participant hosted on another node, and reads one audit that outlives a node.

Nodes as ``serve --redis --node-id`` runs them (in this process, or as real processes for kill -9),
one real redis-server, real aiortc peers from loopback addresses of their country.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from sfu_geofence.cluster.node import ClusterTimings
from sfu_geofence.protocol import CloseCode
from sfu_geofence.testing.cluster import call, cluster_node, freeze, node_process, thaw, two_nodes
from sfu_geofence.testing.participants import joined, peer_in
from sfu_geofence.testing.redis import RedisServer
from sfu_geofence.testing.wait import eventually

pytestmark = pytest.mark.cluster

CN, US, US2 = "127.86.0.1", "127.1.0.1", "127.1.0.2"
WITHIN = 30.0  # a loaded 2-core machine


async def test_any_node_lists_every_nodes_rooms_and_participants_with_the_node_each_is_on(
    redis: RedisServer, database: Path
) -> None:
    async with (
        two_nodes(redis.url, database) as (a, b),
        joined(a.url, "on-a", US) as us,
        peer_in(b.url, "on-b", CN, name=f"name-{CN}") as cn,
    ):
        assert cn.participant_id is not None, cn.messages

        async def both_listed() -> str | None:
            status, body = await call(a.admin_base, "GET", "/rooms")
            assert status == 200, body
            rooms = {r["room"]: (r["participants"], r["nodes"]) for r in body["rooms"]}
            expected = {"on-a": (1, ["node-a"]), "on-b": (1, ["node-b"])}
            return None if rooms == expected else f"rooms listed on node-a: {rooms}"

        await eventually(both_listed, within=WITHIN)
        status, body = await call(a.admin_base, "GET", "/rooms")
        assert body["cluster"]["node"] == "node-a"
        [other] = body["cluster"]["nodes"]
        assert (other["node"], other["participants"]) == ("node-b", 1)
        assert other["url"] == b.url.replace("http://", "ws://")
        assert 0 <= other["age_ms"] <= 3000

        status, body = await call(a.admin_base, "GET", "/rooms/on-b/participants")
        assert status == 200, body
        [entry] = body["participants"]
        assert (entry["participant"], entry["node"], entry["country"]) == (cn.participant_id, "node-b", "CN")
        assert (entry["address"], entry["name"], entry["outcome"]) == (CN, f"name-{CN}", "admitted")
        status, body = await call(b.admin_base, "GET", "/rooms/on-a/participants")
        assert [(p["participant"], p["node"]) for p in body["participants"]] == [
            (us.participant_id, "node-a")
        ]
        status, body = await call(a.admin_base, "GET", "/rooms/nowhere/participants")
        assert (status, body["error"]) == (404, "unknown_room")


async def test_an_operator_on_node_a_ejects_a_participant_hosted_on_node_b(
    redis: RedisServer, database: Path
) -> None:
    async with (
        two_nodes(redis.url, database) as (a, b),
        joined(b.url, "room", CN) as cn,
        joined(b.url, "room", US) as us,
    ):

        async def listed_on_a() -> str | None:
            status, body = await call(a.admin_base, "GET", "/rooms/room/participants")
            return None if status == 200 and len(body["participants"]) == 2 else f"{status} {body}"

        await eventually(listed_on_a, within=WITHIN)
        path = f"/rooms/room/participants/{cn.participant_id}/eject"
        status, body = await call(a.admin_base, "POST", path, {"actor": "ops-1", "reason": "manual"})
        assert (status, body) == (
            202,
            {"room": "room", "participant": cn.participant_id, "status": "requested", "node": "node-b"},
        )
        await asyncio.wait_for(cn.closed.wait(), WITHIN)
        assert cn.close_code == CloseCode.EJECTED
        assert cn.messages[-1] == {"type": "ejected", "reason": "An operator removed you from this meeting."}
        assert not us.closed.is_set()
        requested = [
            e
            for e in b.geofence.audit.events(participant=cn.participant_id)
            if (e.kind, e.outcome) == ("ejection", "requested")
        ]
        assert [(e.actor, e.detail) for e in requested] == [("ops-1", "operator: manual")]

        status, body = await call(a.admin_base, "POST", "/rooms/room/participants/p-nobody/eject")
        assert (status, body["error"]) == (404, "unknown_participant")


async def test_an_ejection_on_a_node_that_does_not_answer_is_a_504_naming_it(
    redis: RedisServer, database: Path
) -> None:
    async with cluster_node(redis.url, database, "node-a") as a:
        # A node that announced itself and a participant, then stopped listening (died a moment ago).
        raw = aioredis.Redis.from_url(redis.url)
        try:
            entry = {
                "node": "node-gone",
                "url": "ws://127.0.0.1:9/ws",
                "time": time.time(),
                "participants": [{"room": "room", "participant": "p-gone"}],
            }
            await raw.set("sfu-geofence:node:node-gone", json.dumps(entry), px=30_000)
            await raw.sadd("sfu-geofence:nodes", "node-gone")
        finally:
            await raw.aclose()
        status, body = await call(a.admin_base, "POST", "/rooms/room/participants/p-gone/eject")
        assert (status, body["error"], body["node"]) == (504, "node_unavailable", "node-gone")
        assert "node-gone" in body["message"]


async def test_the_clusters_audit_keeps_a_killed_nodes_events_readable_on_any_other_node(
    redis: RedisServer, database: Path
) -> None:
    async with (
        node_process(redis.url, database, "node-a") as (a, url_a, _),
        node_process(redis.url, database, "node-b") as (_, _, admin_b),
    ):
        async with joined(url_a, "room", CN) as cn, joined(url_a, "room", US):

            async def admitted_in_stream() -> str | None:
                status, body = await call(admin_b, "GET", f"/audit?participant={cn.participant_id}")
                assert status == 200, body
                return None if body["events"] else "node-a's admission not in the cluster's audit yet"

            await eventually(admitted_in_stream, within=WITHIN)
            a.kill()
            await a.wait()
        status, body = await call(admin_b, "GET", "/audit?kind=admission&node=node-a")
        assert status == 200, body
        assert body["cluster"] == {"node": "node-b"}
        events = body["events"]
        assert [(e["node"], e["country"], e["outcome"]) for e in events] == [
            ("node-a", "CN", "admitted"),
            ("node-a", "US", "admitted"),
        ]
        assert events[0]["participant"] == cn.participant_id
        assert body["last_id"] == events[-1]["id"]
        status, body = await call(admin_b, "GET", f"/audit?after_id={events[0]['id']}&kind=admission")
        assert [e["id"] for e in body["events"]] == [events[1]["id"]]
        status, body = await call(admin_b, "GET", "/audit?after_id=12")
        assert (status, body["error"]) == (400, "bad_parameter")


async def test_without_redis_the_audit_and_listings_are_the_single_nodes_own() -> None:
    from sfu_geofence.server import ServerConfig
    from sfu_geofence.server.admin import AdminConfig
    from sfu_geofence.testing.cluster import TOKEN
    from sfu_geofence.testing.server import geofenced_on_loopback

    async with geofenced_on_loopback(ServerConfig(admin=AdminConfig(TOKEN))) as alone:
        status, body = await call(alone.admin_base, "GET", "/rooms")
        assert (status, body) == (200, {"rooms": []})
        status, body = await call(alone.admin_base, "GET", "/audit?node=x")
        assert (status, body["error"]) == (400, "bad_parameter")


async def test_with_redis_frozen_the_operator_view_answers_within_the_command_timeout_and_says_why(
    redis: RedisServer, database: Path
) -> None:
    # Frozen, not gone: connections stay open and nothing answers (without a bound of our own, a
    # request would wait for the Redis client's 10 s socket timeout).
    timings = ClusterTimings(command_timeout=0.5)
    async with cluster_node(redis.url, database, "node-a", timings) as a, joined(a.url, "room", US) as us:
        freeze(redis)
        try:
            started = time.monotonic()
            status, rooms = await call(a.admin_base, "GET", "/rooms")
            status_audit, audit = await call(a.admin_base, "GET", "/audit")
            path = "/rooms/room/participants/p-elsewhere/eject"
            status_eject, eject = await call(a.admin_base, "POST", path)
            waited = time.monotonic() - started
        finally:
            thaw(redis)
    assert status == 200, rooms
    assert [(r["room"], r["participants"]) for r in rooms["rooms"]] == [("room", 1)]
    assert (
        rooms["cluster"]["error"]
        == "other nodes unknown: Redis unreachable (Redis did not answer within 0.5 s)"
    )
    assert (status_audit, audit["error"]) == (503, "cluster_unavailable"), audit
    assert (status_eject, eject["error"]) == (503, "cluster_unavailable"), eject
    assert us.participant_id is not None
    # Three requests of 0.5 s each; the socket timeout would have made each 10 s.
    assert waited < 6.0, waited
