"""Starting and stopping a ``redis-server`` of our own: ``serve --workers``'s private one, the tests', the
load tester's. One launcher for all of them, so what the tests prove is what ``serve`` runs.

Always run as production should run it for policies: append-only file with ``appendfsync always`` (an
acknowledged write is on disk before the reply, what ``kill -9`` tests rely on), no RDB snapshots,
listening on loopback only (a TCP port on 127.0.0.1, or a unix socket and no TCP at all).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import socket
from dataclasses import dataclass
from pathlib import Path

import redis.asyncio as aioredis

REDIS_SERVER = "redis-server"
PERSISTENCE = ("--save", "", "--appendonly", "yes", "--appendfsync", "always")
"""How production should run Redis for policies (docs/operations.md, Durability)."""
MISSING = f"{REDIS_SERVER} is not installed (apt-get install redis-server)"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class RedisServer:
    """One ``redis-server`` process we started, keeping its files in ``directory``.

    ``port`` > 0: it listens on 127.0.0.1:port; ``unix_socket``: on that socket only (port 0). It can be
    stopped (:meth:`stop`, SIGTERM: a clean shutdown) or killed (:meth:`kill`) and started again on the
    same address and files.
    """

    directory: Path
    port: int = 0
    unix_socket: Path | None = None
    process: asyncio.subprocess.Process | None = None

    def __post_init__(self) -> None:
        if (self.port > 0) == (self.unix_socket is not None):
            raise ValueError("a redis-server listens on a 127.0.0.1 port or on a unix socket: one of them")

    @property
    def url(self) -> str:
        if self.unix_socket is not None:
            return f"unix://{self.unix_socket}?db=0"
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    async def start(self, ready_within: float = 10.0) -> None:
        """Start (or restart, on the same address and files) and wait until it answers PING.

        FileNotFoundError names a missing ``redis-server``; RuntimeError an exit or a timeout.
        """
        executable = shutil.which(REDIS_SERVER)
        if executable is None:
            raise FileNotFoundError(MISSING)
        if self.unix_socket is not None:
            where: tuple[str, ...] = ("--port", "0", "--unixsocket", str(self.unix_socket))
            where += ("--unixsocketperm", "700")
        else:
            where = ("--bind", "127.0.0.1", "--port", str(self.port))
        self.process = await asyncio.create_subprocess_exec(
            executable,
            *where,
            "--dir",
            str(self.directory),
            *PERSISTENCE,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C meant for us must not stop it before the nodes drain
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
        except TimeoutError:
            await self.kill()
            raise RuntimeError(f"{REDIS_SERVER} did not answer within {ready_within:g} s") from None
        finally:
            await client.aclose()

    async def kill(self) -> None:
        """``kill -9``: no shutdown, no final fsync; only what the AOF already holds survives."""
        await self._signal(signal.SIGKILL)

    async def stop(self) -> None:
        """SIGTERM: Redis finishes writing its append-only file and exits."""
        await self._signal(signal.SIGTERM)

    async def _signal(self, signum: int) -> None:
        process, self.process = self.process, None
        if process is not None and process.returncode is None:
            process.send_signal(signum)
        if process is not None:
            await process.wait()


async def server_version(url: str) -> str:
    """The version a Redis server says it is (what reports name as what they ran against)."""
    client = aioredis.Redis.from_url(url)
    try:
        info = await client.info("server")
        return str(info["redis_version"])
    finally:
        await client.aclose()
