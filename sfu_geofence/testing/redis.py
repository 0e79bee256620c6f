"""A real ``redis-server`` on 127.0.0.1 for cluster tests: files in a tmp dir, stopped by PID.

Started as production should run it for policies: append-only file with ``appendfsync always``, so an
acknowledged write is on disk before the reply (what ``kill -9`` tests rely on), no RDB snapshots.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import redis.asyncio as aioredis

REDIS_SERVER = "redis-server"
PERSISTENCE = ("--appendonly", "yes", "--appendfsync", "always")
"""How production should run Redis for policies (docs/operations.md, Durability)."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class RedisServer:
    """One ``redis-server`` process this test started; :meth:`kill` and :meth:`start` it again at will."""

    directory: Path
    port: int
    process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self, ready_within: float = 10.0) -> None:
        """Start (or restart, on the same port and files) and wait until it answers PING."""
        executable = shutil.which(REDIS_SERVER)
        if executable is None:
            raise FileNotFoundError(f"{REDIS_SERVER} is not installed (apt-get install redis-server)")
        where = ("--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.directory))
        persistence = ("--save", "", *PERSISTENCE)
        self.process = await asyncio.create_subprocess_exec(
            executable,
            *where,
            *persistence,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        client = aioredis.Redis.from_url(self.url)
        try:
            async with asyncio.timeout(ready_within):
                while True:
                    if self.process.returncode is not None:
                        raise RuntimeError(f"{REDIS_SERVER} exited with {self.process.returncode}")
                    with contextlib.suppress(OSError, aioredis.ConnectionError):
                        if await client.ping():
                            return
                    await asyncio.sleep(0.02)
        finally:
            await client.aclose()

    async def kill(self) -> None:
        """``kill -9``: no shutdown, no final fsync; only what the AOF already holds survives."""
        await self._signal(signal.SIGKILL)

    async def stop(self) -> None:
        await self._signal(signal.SIGTERM)

    async def _signal(self, signum: int) -> None:
        process, self.process = self.process, None
        if process is not None and process.returncode is None:
            process.send_signal(signum)
        if process is not None:
            await process.wait()


@contextlib.asynccontextmanager
async def redis_server(directory: Path) -> AsyncIterator[RedisServer]:
    """A started ``redis-server`` keeping its files in ``directory``; killed on exit."""
    server = RedisServer(directory, free_port())
    await server.start()
    try:
        yield server
    finally:
        await server.kill()
