"""Policies shared through a real redis-server: every node enforces every change, none is lost.

Each "node" here is what a ``serve --redis`` process holds: a :class:`RedisPolicyStore` and a
:class:`Geofence` deciding on it (the media plane is in test_nodes.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from sfu_geofence.cluster.redisstore import _WRITE, RedisKeys, RedisPolicyStore
from sfu_geofence.core.audit import EventKind
from sfu_geofence.core.geofence import EjectRequest, Geofence
from sfu_geofence.core.geolocation import Locator
from sfu_geofence.core.outcome import Outcome
from sfu_geofence.core.policy import RoomPolicy
from sfu_geofence.core.storage import StorageError
from sfu_geofence.testing.redis import RedisServer, free_port
from sfu_geofence.testing.testdb import build_database
from sfu_geofence.testing.wait import eventually

pytestmark = pytest.mark.cluster

CN, US = "127.86.0.1", "127.1.0.1"
COUNTRIES = ["DE", "FR", "IR", "RU", "KP", "CU", "SY", "BY", "VE", "MM"]


@dataclass
class Node:
    """One node's policies and geofence; ``ejected`` is what it asked its host to close."""

    store: RedisPolicyStore
    geofence: Geofence
    ejected: list[EjectRequest] = field(default_factory=list)


@pytest.fixture
def database(tmp_path: Path) -> Path:
    return build_database(tmp_path / "countries.mmdb", ["127.1.0.0/16=US", "127.86.0.0/16=CN"])


@pytest.fixture
def nodes(redis: RedisServer, database: Path) -> Callable[..., contextlib.AbstractAsyncContextManager[Node]]:
    @contextlib.asynccontextmanager
    async def node(poll_interval: float = 60.0) -> AsyncIterator[Node]:
        """A node that learns of changes from pub/sub and re-reads only on (re)subscription or a gap
        (``poll_interval`` long: the counter poll must not be what makes a test pass)."""
        store = await RedisPolicyStore.open(redis.url, poll_interval=poll_interval)
        ejected: list[EjectRequest] = []
        fence = Geofence(ejected.append, locator=Locator(database), policies=store)
        await asyncio.wait_for(store.subscribed.wait(), 10)
        try:
            yield Node(store, fence, ejected)
        finally:
            fence.close()
            await store.aclose()

    return node


async def test_a_change_made_on_one_node_is_enforced_on_every_other_node(
    nodes: Callable[..., contextlib.AbstractAsyncContextManager[Node]],
) -> None:
    async with nodes() as a, nodes() as b:
        b.geofence.admit("room", "cn-on-b", CN)
        b.geofence.admit("room", "us-on-b", US)
        b.geofence.admit("elsewhere", "cn-elsewhere", CN)
        version = (await a.geofence.change_policy("room", RoomPolicy.deny("CN"))).version
        await eventually(lambda: None if b.ejected else "b has ejected nobody yet", within=10)
        assert [(r.room, r.participant) for r in b.ejected] == [("room", "cn-on-b")]
        assert b.ejected[0].decision.policy_version == version
        assert b.geofence.decide("room", US).policy_version == version
        assert not b.geofence.admit("room", "cn-again", CN).admitted
        assert a.ejected == []  # a has nobody in the room


async def test_a_change_says_whom_this_node_ejected_while_the_others_eject_theirs(
    nodes: Callable[..., contextlib.AbstractAsyncContextManager[Node]],
) -> None:
    async with nodes() as a, nodes() as b:
        a.geofence.admit("room", "cn-on-a", CN)
        a.geofence.admit("room", "us-on-a", US)
        b.geofence.admit("room", "cn-on-b", CN)
        change = await a.geofence.change_policy("room", RoomPolicy.deny("CN"))
        assert [(e.participant, e.outcome, e.country) for e in change.ejections] == [
            ("cn-on-a", Outcome.REQUESTED, "CN")
        ]
        assert change.version == a.store.version
        await eventually(lambda: None if b.ejected else "b has ejected nobody yet", within=10)
        assert [r.participant for r in b.ejected] == ["cn-on-b"]
        again = await b.geofence.change_policy("room", RoomPolicy.deny("CN", "US"))
        assert ([e.participant for e in again.ejections], again.version) == ([], change.version + 1)


async def test_changes_made_at_once_on_one_node_each_name_only_their_own_rooms_ejections(
    nodes: Callable[..., contextlib.AbstractAsyncContextManager[Node]],
) -> None:
    # Concurrent writes may be applied by one catch-up covering several versions: each answer still
    # names the ejections of the room it changed, never another room's.
    rooms = [f"room-{k}" for k in range(6)]
    async with nodes() as a:
        for round_ in range(10):
            for room in rooms:
                a.geofence.admit(room, f"cn-{round_}-{room}", CN)
            changes = await asyncio.gather(
                *(a.geofence.change_policy(room, RoomPolicy.deny("CN")) for room in rooms)
            )
            for room, change in zip(rooms, changes, strict=True):
                assert [(e.room, e.participant) for e in change.ejections] == [
                    (room, f"cn-{round_}-{room}")
                ], (round_, room)
            await asyncio.gather(*(a.geofence.change_policy(room, None) for room in rooms))


async def test_who_made_a_change_and_why_is_audited_on_every_node(
    nodes: Callable[..., contextlib.AbstractAsyncContextManager[Node]],
) -> None:
    async with nodes() as a, nodes() as b:
        room = (
            await a.geofence.change_policy("room", RoomPolicy.deny("CN"), actor="alice", reason="ticket 1")
        ).version
        default = (
            await a.geofence.change_default_policy(RoomPolicy.deny("IR"), actor="bob", reason="review")
        ).version
        back = (await b.geofence.change_policy("room", None)).version  # said by nobody
        await eventually(lambda: None if a.store.version == back else "a is behind", within=10)
        for node in (a, b):
            events = node.geofence.audit.events(kind=EventKind.POLICY)
            assert [(e.outcome, e.room, e.policy_version, e.actor, e.reason) for e in events] == [
                ("changed", "room", room, "alice", "ticket 1"),
                ("default_changed", None, default, "bob", "review"),
                ("changed", "room", back, None, None),
            ]


async def test_two_operators_on_two_nodes_at_once_200_times_lose_no_change(
    nodes: Callable[..., contextlib.AbstractAsyncContextManager[Node]],
) -> None:
    async with nodes() as a, nodes() as b, nodes() as c:
        everyone = (a, b, c)
        written: list[tuple[int, int]] = []
        for i in range(200):
            alpha, beta = RoomPolicy.deny(COUNTRIES[i % 10]), RoomPolicy.deny(COUNTRIES[(i + 3) % 10])
            versions = await asyncio.gather(
                a.geofence.change_policy("alpha", alpha), b.geofence.change_policy("beta", beta)
            )
            written.append((versions[0].version, versions[1].version))
            newest = max(versions[0].version, versions[1].version)

            def behind(
                newest: int = newest, alpha: RoomPolicy = alpha, beta: RoomPolicy = beta
            ) -> str | None:
                for node in everyone:
                    decided = max(node.geofence.decide(r, US).policy_version for r in ("alpha", "beta"))
                    policies = (node.geofence.policy("alpha").policy, node.geofence.policy("beta").policy)
                    if decided != newest or policies != (alpha, beta):
                        return f"a node decides under version {decided} with {policies}, not {newest}"
                return None

            await eventually(behind, within=10)
        flat = [v for pair in written for v in pair]
        assert sorted(flat) == list(range(1, 401))  # every change has its own version: none overwritten
        assert [v for v, _ in written] == sorted(v for v, _ in written)
        assert [v for _, v in written] == sorted(v for _, v in written)
        for node in everyone:
            assert node.store.version == 400
            assert node.store.get("alpha").version == written[-1][0]
            assert node.store.get("beta").version == written[-1][1]


async def test_a_node_whose_subscription_dropped_catches_up_when_it_resubscribes(
    nodes: Callable[..., contextlib.AbstractAsyncContextManager[Node]], redis: RedisServer
) -> None:
    async with nodes() as b:
        b.geofence.admit("room", "cn", CN)
        keys = RedisKeys()
        raw = aioredis.Redis.from_url(redis.url)
        try:
            # One transaction: every subscription is dropped, then a change is published to nobody.
            async with raw.pipeline(transaction=True) as pipe:
                pipe.client_kill_filter(_type="pubsub")
                pipe.eval(
                    _WRITE,
                    3,
                    keys.version,
                    keys.rooms,
                    keys.default,
                    "room",
                    '{"mode": "deny", "countries": ["CN"]}',
                    keys.changes,
                    '"room"',
                )
                _, version = await pipe.execute()
        finally:
            await raw.aclose()
        assert version == 1
        await eventually(lambda: None if b.ejected else "b never learnt of the change", within=10)
        assert b.store.version == 1
        assert b.ejected[0].decision.policy_version == 1
        assert not b.geofence.admit("room", "cn-again", CN).admitted


async def test_a_node_that_sees_a_version_skipped_reads_every_policy_again(
    nodes: Callable[..., contextlib.AbstractAsyncContextManager[Node]], redis: RedisServer
) -> None:
    async with nodes() as a, nodes() as b:
        b.geofence.admit("missed", "cn", CN)
        keys = RedisKeys()
        raw = aioredis.Redis.from_url(redis.url)
        try:  # version 1 is written without being published (its message lost)
            async with raw.pipeline(transaction=True) as pipe:
                pipe.incr(keys.version)
                pipe.hset(
                    keys.rooms, "missed", '{"version": 1, "policy": {"mode": "deny", "countries": ["CN"]}}'
                )
                await pipe.execute()
        finally:
            await raw.aclose()
        await a.geofence.change_policy("seen", RoomPolicy.deny("US"))  # version 2, published
        await eventually(lambda: None if b.ejected else "b did not re-read", within=10)
        assert b.store.version == 2
        assert b.store.get("missed").version == 1
        assert [r.participant for r in b.ejected] == ["cn"]


async def test_kill_9_of_redis_after_acknowledged_changes_loses_none(
    nodes: Callable[..., contextlib.AbstractAsyncContextManager[Node]], redis: RedisServer
) -> None:
    async with nodes() as a:
        for i in range(20):
            await a.geofence.change_policy(f"room-{i}", RoomPolicy.deny(COUNTRIES[i % 10]))
        await a.geofence.change_default_policy(RoomPolicy.deny("CN"))
        await redis.kill()  # the moment the last change was acknowledged
    await redis.start()
    async with nodes() as fresh:
        assert fresh.store.version == 21
        assert fresh.store.default.policy == RoomPolicy.deny("CN")
        assert {room: p.policy for room, p in fresh.store.rooms().items()} == {
            f"room-{i}": RoomPolicy.deny(COUNTRIES[i % 10]) for i in range(20)
        }


async def test_with_redis_gone_a_node_keeps_enforcing_refuses_changes_and_resumes_when_it_is_back(
    nodes: Callable[..., contextlib.AbstractAsyncContextManager[Node]], redis: RedisServer
) -> None:
    async with nodes() as a, nodes() as b:
        await a.geofence.change_policy("room", RoomPolicy.deny("CN"))
        await eventually(lambda: None if b.store.version == 1 else "b behind", within=10)
        await redis.kill()
        await eventually(lambda: None if not b.store.subscribed.is_set() else "b still subscribed", within=10)
        await asyncio.wait_for(b.geofence.ready(), 10)  # cannot re-read: returns, does not raise
        assert not b.geofence.admit("room", "cn", CN).admitted  # decided on the last policies read
        with pytest.raises(StorageError, match=r"not stored: Redis at redis://127\.0\.0\.1:\d+/0"):
            await a.geofence.change_policy("room", None)
        assert a.store.version == 1
        await redis.start()
        await eventually(lambda: None if b.store.subscribed.is_set() else "b not back", within=20)
        await b.geofence.change_policy("room", None)
        await eventually(lambda: None if a.geofence.admit("room", "cn", CN).admitted else "a", within=10)


async def test_redis_unreachable_at_start_is_an_error_naming_it() -> None:
    port = free_port()  # nobody listens there
    with pytest.raises(StorageError, match=rf"cannot reach Redis at redis://127\.0\.0\.1:{port}/0"):
        await RedisPolicyStore.open(f"redis://:secret@127.0.0.1:{port}/0", connect_timeout=2)


async def test_the_first_node_seeds_the_default_and_later_nodes_keep_the_clusters(
    redis: RedisServer,
) -> None:
    first = await RedisPolicyStore.open(redis.url, default=RoomPolicy.deny("CN"))
    second = await RedisPolicyStore.open(redis.url, default=RoomPolicy.deny("US"))
    try:
        assert first.default.policy == second.default.policy == RoomPolicy.deny("CN")
        assert second.version == 0
    finally:
        await first.aclose()
        await second.aclose()


async def test_a_message_that_is_not_a_policy_change_stops_no_node_from_following_changes(
    nodes: Callable[..., contextlib.AbstractAsyncContextManager[Node]], redis: RedisServer
) -> None:
    async with nodes() as a, nodes() as b:
        raw = aioredis.Redis.from_url(redis.url)
        try:
            for junk in (b'{"room": "x"}', b"not json", b'{"version": "1", "room": 5, "policy": []}'):
                await raw.publish(RedisKeys().changes, junk)
        finally:
            await raw.aclose()
        b.geofence.admit("room", "cn", CN)
        await a.geofence.change_policy("room", RoomPolicy.deny("CN"))
        await eventually(lambda: None if b.ejected else "b stopped following", within=10)
        assert b.store.version == 1
