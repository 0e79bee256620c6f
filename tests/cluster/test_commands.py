"""Commands between nodes: one node's operator asks, another acts and answers, through a real
redis-server; nothing of a command outlives the node that acts on it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from sfu_geofence.cluster.commands import NodeUnavailable
from sfu_geofence.cluster.node import ClusterNode
from sfu_geofence.testing.redis import RedisServer

pytestmark = pytest.mark.cluster

WITHIN = 30.0  # a loaded 2-core machine


async def test_a_node_that_stops_leaves_no_command_of_another_node_running(redis: RedisServer) -> None:
    acting, cancelled = asyncio.Event(), asyncio.Event()

    async def never_done(command: dict[str, Any]) -> dict[str, Any]:
        """Acts for ever (a command still on its way when the node stops)."""
        acting.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return {}

    node, asker = ClusterNode(redis.url, "node-a"), ClusterNode(redis.url, "node-b")
    node.attach(occupied=lambda room: False, snapshot=list, handler=never_done)
    node.listening("http://127.0.0.1:9")
    running = asyncio.ensure_future(node.run())

    async def ask() -> dict[str, Any]:
        while True:  # until node-a has subscribed
            try:
                return await asker.commands.send("node-a", {"command": "eject"}, WITHIN)
            except NodeUnavailable:
                await asyncio.sleep(0.05)

    asking = asyncio.ensure_future(ask())
    try:
        await asyncio.wait_for(acting.wait(), WITHIN)
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await node.stop()
        assert cancelled.is_set()
    finally:
        for task in (running, asking):
            task.cancel()
        await asyncio.gather(running, asking, return_exceptions=True)
        await asker.stop()
