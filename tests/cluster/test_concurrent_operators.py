"""Two operators changing two rooms' policies through two nodes at the same moment, 200 times.

Real processes (``serve --workers 3`` on one real redis-server), real HTTP to each node's operator API.
What must hold: no change lost, each operator's versions strictly increasing, and every node reading
the newest version of both rooms (what its admission decisions name) within 100 ms of the later
acknowledgement. The lag is bounded from above: from the later acknowledgement to the answer of the
first read that shows both versions, so the test's own HTTP round trip counts against the node.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path

import aiohttp
import pytest

from sfu_geofence.testing.operator_api import operator_call
from sfu_geofence.testing.redis import RedisServer
from sfu_geofence.testing.testdb import build_database
from sfu_geofence.testing.workers import Workers, running_workers

pytestmark = pytest.mark.cluster

TOKEN = "operators-test-token-0123456789"
ROUNDS = 200
DEADLINE_S = 0.100
COUNTRIES = ["DE", "FR", "IR", "RU", "KP", "CU", "SY", "BY", "VE", "MM"]


def nodes(redis: RedisServer, database: Path) -> contextlib.AbstractAsyncContextManager[Workers]:
    return running_workers(
        3, "--db", str(database), "--redis", redis.url, env={"SFU_GEOFENCE_ADMIN_TOKEN": TOKEN}
    )


async def put(session: aiohttp.ClientSession, base: str, room: str, country: str) -> tuple[int, float]:
    """One operator's change; its version and when its acknowledgement arrived."""
    status, body = await operator_call(
        base, TOKEN, "PUT", f"/rooms/{room}/policy", {"mode": "deny", "countries": [country]}, session
    )
    assert status == 200, body
    return int(body["version"]), time.monotonic()


async def lag_until(
    session: aiohttp.ClientSession, base: str, expected: dict[str, tuple[int, str]], since: float
) -> float:
    """Read both rooms' policies on one node until they are ``expected`` (version, country); the time
    from ``since`` to the answer that showed them (at most a few deadlines: then how long it waited)."""
    while time.monotonic() - since < 5 * DEADLINE_S:
        answers = await asyncio.gather(
            *(operator_call(base, TOKEN, "GET", f"/rooms/{room}/policy", None, session) for room in expected)
        )
        seen = {
            room: (body["version"], body["policy"]["countries"][0] if body["policy"]["countries"] else "")
            for room, (_, body) in zip(expected, answers, strict=True)
        }
        if seen == expected:
            return time.monotonic() - since
        for room, (version, _) in seen.items():
            assert version <= expected[room][0], f"a node read a version newer than written: {seen}"
        await asyncio.sleep(0.001)
    return time.monotonic() - since


async def test_two_operators_on_two_nodes_at_once_200_times_every_node_has_the_newest_within_100_ms(
    redis: RedisServer, tmp_path: Path
) -> None:
    database = build_database(tmp_path / "countries.mmdb", ["127.1.0.0/16=US", "127.86.0.0/16=CN"])
    async with nodes(redis, database) as cluster, aiohttp.ClientSession() as session:
        one, two, three = (w.admin for w in cluster.workers)
        written: list[tuple[int, int]] = []
        lags: list[float] = []
        for i in range(ROUNDS):
            alpha, beta = COUNTRIES[i % 10], COUNTRIES[(i + 3) % 10]
            (va, acked_a), (vb, acked_b) = await asyncio.gather(
                put(session, one, "alpha", alpha), put(session, two, "beta", beta)
            )
            written.append((va, vb))
            expected = {"alpha": (va, alpha), "beta": (vb, beta)}
            reads = await asyncio.gather(
                *(lag_until(session, base, expected, max(acked_a, acked_b)) for base in (one, two, three))
            )
            lags += reads
            assert max(reads) <= DEADLINE_S, f"round {i}: nodes read {expected} after {reads} s"
        lags.sort()
        figures = (
            f"lag after the later acknowledgement over {len(lags)} node reads: p50 "
            f"{1000 * lags[len(lags) // 2]:.1f} ms, p99 {1000 * lags[int(0.99 * len(lags))]:.1f} ms, "
            f"max {1000 * lags[-1]:.1f} ms (deadline {1000 * DEADLINE_S:.0f} ms; "
            f"load {os.getloadavg()[0]:.1f})"
        )
        print(figures)
        assert sorted(v for pair in written for v in pair) == list(range(1, 2 * ROUNDS + 1)), written
        assert [a for a, _ in written] == sorted({a for a, _ in written})  # strictly increasing
        assert [b for _, b in written] == sorted({b for _, b in written})
        assert lags[-1] <= DEADLINE_S, figures
