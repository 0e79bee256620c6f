"""Faults of a cluster of real processes: Redis stopped under running nodes, and back.

(kill -9 of a node: test_serve_workers.py; kill -9 of Redis and of a node after an acknowledged change,
and Redis unreachable at start: test_nodes.py.)
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from sfu_geofence.testing.operator_api import operator_call
from sfu_geofence.testing.participants import join_refused, joined
from sfu_geofence.testing.redis import RedisServer
from sfu_geofence.testing.testdb import build_database
from sfu_geofence.testing.wait import eventually
from sfu_geofence.testing.workers import Workers, running_workers

pytestmark = pytest.mark.cluster

TOKEN = "faults-test-token-0123456789"
CN, US = "127.86.0.1", "127.1.0.1"
WITHIN = 30.0


def nodes(redis: RedisServer, database: Path) -> contextlib.AbstractAsyncContextManager[Workers]:
    return running_workers(
        2, "--db", str(database), "--redis", redis.url, env={"SFU_GEOFENCE_ADMIN_TOKEN": TOKEN}
    )


async def test_with_redis_stopped_nodes_decide_on_the_last_policies_refuse_changes_with_503_and_resume(
    redis: RedisServer, tmp_path: Path
) -> None:
    database = build_database(tmp_path / "countries.mmdb", ["127.1.0.0/16=US", "127.86.0.0/16=CN"])
    async with nodes(redis, database) as cluster:
        one, two = cluster.workers
        deny_cn = {"mode": "deny", "countries": ["CN"]}
        status, body = await operator_call(one.admin, TOKEN, "PUT", "/rooms/room/policy", deny_cn)
        assert (status, body["version"]) == (200, 1), body
        await redis.stop()  # a clean shutdown, as an operator stops it

        # Joins are decided on the last policies each node read: CN refused, US admitted.
        refused = await join_refused(two.url, "room", CN)
        assert refused.close_code == 4403, refused.messages
        async with joined(two.url, "room", US) as admitted:
            # A change cannot be stored: 503 naming Redis, and nothing changes anywhere.
            for base in (one.admin, two.admin):
                status, body = await operator_call(base, TOKEN, "DELETE", "/rooms/room/policy", {})
                assert status == 503, body
                assert body["error"] == "storage_unavailable"
                assert body["message"].startswith(f"policy change not stored: Redis at {redis.url}: ")
                status, body = await operator_call(base, TOKEN, "GET", "/rooms/room/policy")
                assert (status, body["version"], body["policy"]["countries"]) == (200, 1, ["CN"])

            await redis.start()  # same port, same files
            deny_us = {"mode": "deny", "countries": ["US"]}

            accepted: list[int] = []

            async def change_accepted() -> str | None:
                status, body = await operator_call(one.admin, TOKEN, "PUT", "/rooms/room/policy", deny_us)
                if status == 200:
                    accepted.append(body["version"])
                    return None
                return f"{status}: {body}"

            await eventually(change_accepted, within=WITHIN, interval=0.2)
            # Enforced on the other node again: its US participant is ejected, a CN one now admitted.
            await asyncio.wait_for(admitted.closed.wait(), WITHIN)
            assert admitted.close_code == 4409, admitted.messages
            status, body = await operator_call(two.admin, TOKEN, "GET", "/rooms/room/policy")
            assert (status, body["version"], body["policy"]["countries"]) == (200, accepted[0], ["US"])
            assert accepted[0] >= 2  # after the one kept through the restart
            async with joined(two.url, "room", CN):
                pass  # admitted
