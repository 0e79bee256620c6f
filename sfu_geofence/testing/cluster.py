"""Cluster nodes for tests: what ``serve --redis URL --node-id NODE`` runs, in this process or as a
real process, against a real redis-server (:mod:`sfu_geofence.testing.redis`)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from ..cluster.node import ClusterNode, ClusterTimings
from ..cluster.redisstore import RedisPolicyStore
from ..server import ServerConfig
from ..server.admin import TOKEN_ENV, AdminConfig
from ..server.caps import Caps
from .operator_api import operator_call
from .process import spawn_serve
from .redis import RedisServer
from .server import Served, geofenced_on_loopback

TOKEN = "cluster-test-token-0123456789"


@contextlib.asynccontextmanager
async def cluster_node(
    redis_url: str,
    database: Path,
    node_id: str,
    timings: ClusterTimings | None = None,
    advertise_url: str | None = None,
    caps: Caps | None = None,
) -> AsyncIterator[Served]:
    """A node in this process: policies, placement, registry, commands and audit stream in Redis."""
    store = await RedisPolicyStore.open(redis_url)
    cluster = ClusterNode(redis_url, node_id, advertise_url, timings=timings)
    config = ServerConfig(
        db_path=str(database),
        admin=AdminConfig(TOKEN),
        redis_url=redis_url,
        node_id=node_id,
        caps=caps or Caps(),
    )
    try:
        async with geofenced_on_loopback(config, policies=store, cluster=cluster) as served:
            yield served
    finally:
        await store.aclose()


@contextlib.asynccontextmanager
async def two_nodes(
    redis_url: str, database: Path, timings: ClusterTimings | None = None
) -> AsyncIterator[tuple[Served, Served]]:
    """Nodes ``node-a`` and ``node-b`` in this process (:func:`cluster_node`), sharing one Redis."""
    async with (
        cluster_node(redis_url, database, "node-a", timings) as a,
        cluster_node(redis_url, database, "node-b", timings) as b,
    ):
        yield a, b


@contextlib.asynccontextmanager
async def node_process(
    redis_url: str, database: Path, node_id: str, within: float = 30.0
) -> AsyncIterator[tuple[asyncio.subprocess.Process, str, str]]:
    """``serve --redis --node-id`` as a real process: (process, signaling URL, admin base); killed
    (by its PID) on exit if it still runs."""
    process = await spawn_serve(
        "--redis", redis_url, "--db", str(database), "--node-id", node_id, env={TOKEN_ENV: TOKEN}
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), within)).decode()
        if not line.startswith("listening on "):
            raise RuntimeError(f"node {node_id} did not start: {line!r}")
        admin = (await asyncio.wait_for(process.stdout.readline(), within)).decode()
        yield process, line.split()[2], admin.split()[3]
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


async def figures(base: str | None) -> dict[str, float]:
    """The unlabelled figures of the admin listener at ``base`` (its /metrics)."""
    async with aiohttp.ClientSession() as http, http.get(f"{base}/metrics") as response:
        assert response.status == 200, response.status
        text = await response.text()
    return {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples if not s.labels}


async def call(base: str | None, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """An operator call with the cluster tests' token to the admin listener at ``base``."""
    assert base is not None, "the node has no admin listener"
    return await operator_call(base, TOKEN, method, path, body)


def freeze(redis: RedisServer) -> None:
    """SIGSTOP ``redis``: its connections stay open and nothing answers (a stalled Redis, not gone)."""
    assert redis.process is not None
    redis.process.send_signal(signal.SIGSTOP)


def thaw(redis: RedisServer) -> None:
    """SIGCONT: a frozen ``redis`` answers again, what it was asked meanwhile first."""
    assert redis.process is not None
    redis.process.send_signal(signal.SIGCONT)
