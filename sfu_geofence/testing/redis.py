"""A real ``redis-server`` on 127.0.0.1 for cluster tests: files in a tmp dir, killed by PID after.

The launcher is the product's (:mod:`sfu_geofence.cluster.redisserver`, what ``serve --workers`` and
``loadtest --nodes`` start), so the tests run Redis exactly as they do.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from ..cluster.redisserver import PERSISTENCE, REDIS_SERVER, RedisServer, free_port

__all__ = ["PERSISTENCE", "REDIS_SERVER", "RedisServer", "free_port", "redis_server"]


@contextlib.asynccontextmanager
async def redis_server(directory: Path) -> AsyncIterator[RedisServer]:
    """A started ``redis-server`` on a free 127.0.0.1 port, keeping its files in ``directory``; killed on
    exit."""
    server = RedisServer(directory, free_port())
    await server.start()
    try:
        yield server
    finally:
        await server.kill()
