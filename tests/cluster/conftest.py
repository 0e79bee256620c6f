"""Cluster tests run a real ``redis-server`` on 127.0.0.1 (marker ``cluster``), never a mock."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sfu_geofence.testing.ci import skip_or_fail
from sfu_geofence.testing.redis import REDIS_SERVER, RedisServer, redis_server
from sfu_geofence.testing.testdb import build_database


@pytest.fixture
def redis_installed() -> None:
    """Skip (fail under CI=true) when Debian's redis-server is missing."""
    if shutil.which(REDIS_SERVER) is None:
        skip_or_fail(f"{REDIS_SERVER} is not installed (apt-get install redis-server)", kind="cluster")


@pytest.fixture
async def redis(tmp_path: Path, redis_installed: None) -> AsyncIterator[RedisServer]:
    """A redis-server of this test's own (AOF, appendfsync always, files in tmp_path), killed after."""
    directory = tmp_path / "redis"
    directory.mkdir()
    async with redis_server(directory) as server:
        yield server


@pytest.fixture
def database(tmp_path: Path) -> Path:
    """127.1/16 in US, 127.86/16 in CN."""
    return build_database(tmp_path / "countries.mmdb", ["127.1.0.0/16=US", "127.86.0.0/16=CN"])
