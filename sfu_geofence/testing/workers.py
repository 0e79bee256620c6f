"""``serve --workers N`` as a test starts it: a real parent process, its workers and its private Redis."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from .process import spawn_serve

_WORKER = re.compile(r"^worker (\d+) pid (\d+) listening on (\S+) admin (\S+)$")
_REDIS = re.compile(r"^redis: private redis-server pid (\d+) ")


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
            elif worker := _WORKER.match(line):
                started.workers.append(Worker(int(worker.group(2)), worker.group(3), worker.group(4)))
            else:
                raise AssertionError(f"unexpected line from serve --workers: {line!r}")
    return started
