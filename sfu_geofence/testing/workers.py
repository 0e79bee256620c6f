"""``serve --workers N`` as a test starts it: a real parent process, its workers and its private Redis."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .process import spawn_serve, stop

_WORKER = re.compile(r"^worker (\d+) pid (\d+) listening on (\S+) admin (\S+)$")
_REDIS = re.compile(r"^redis: private redis-server pid (\d+) on (\S+) ")


@dataclass(frozen=True)
class Worker:
    """One worker as its parent announced it."""

    pid: int
    url: str
    """Its signaling URL (``ws``-less ``http://host:port/ws``)."""
    admin: str
    """Its admin listener's base URL (operator API under ``/api``)."""


@dataclass
class Workers:
    """A started ``serve --workers N``: the parent process, its workers, its private Redis (if any)."""

    process: asyncio.subprocess.Process
    workers: list[Worker] = field(default_factory=list)
    redis_pid: int | None = None
    redis_socket: Path | None = None
    """The private Redis's unix socket, in a directory the parent removes when it stops."""


async def start_workers(
    count: int, *args: str, env: Mapping[str, str] | None = None, within: float = 60.0
) -> Workers:
    """``serve --loopback-only --port 0 --workers count args...``; returns once every worker listens.

    AssertionError with what the parent said when it exits or says something else first.
    """
    process = await spawn_serve("--workers", str(count), *args, env=env)
    assert process.stdout is not None
    started = Workers(process)
    said: list[str] = []
    async with asyncio.timeout(within):
        while len(started.workers) < count:
            line = (await process.stdout.readline()).decode().strip()
            said.append(line)
            if not line:
                await process.wait()
                raise AssertionError(f"serve --workers {count} exited {process.returncode}: {said}")
            if redis := _REDIS.match(line):
                started.redis_pid = int(redis.group(1))
                started.redis_socket = Path(redis.group(2))
            elif worker := _WORKER.match(line):
                started.workers.append(Worker(int(worker.group(2)), worker.group(3), worker.group(4)))
            else:
                raise AssertionError(f"unexpected line from serve --workers: {line!r}")
    return started


async def stop_workers(started: Workers, grace: float = 20.0) -> None:
    """SIGTERM the parent (it drains its workers, stops its Redis, removes its socket directory);
    after ``grace`` seconds, SIGKILL by PID whatever of it still runs."""
    if started.process.returncode is None:
        started.process.send_signal(signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(started.process.wait(), grace)
    for pid in [*(w.pid for w in started.workers), started.redis_pid]:
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    await stop(started.process)
    if started.redis_socket is not None:  # left behind by a parent that was killed
        shutil.rmtree(started.redis_socket.parent, ignore_errors=True)


@contextlib.asynccontextmanager
async def running_workers(
    count: int, *args: str, env: Mapping[str, str] | None = None
) -> AsyncIterator[Workers]:
    """:func:`start_workers`, stopped by :func:`stop_workers` on exit."""
    started = await start_workers(count, *args, env=env)
    try:
        yield started
    finally:
        await stop_workers(started)
