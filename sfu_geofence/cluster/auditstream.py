"""One audit log for the whole cluster: every node appends its events to a Redis stream.

Each node still writes its own SQLite audit first (``--state-dir``: what ``sfu-geofence report``
reads); every event it stores is also queued here and appended to ``{prefix}:audit`` (XADD, trimmed
with ``MAXLEN ~ maxlen``) by a writer task, a few at a time in one pipeline, so the event loop that
forwards media never waits for Redis. The stream lives in Redis, so it survives the death of any
node; what a node had queued but not yet written when it died (milliseconds' worth) is in its
SQLite only. With Redis unreachable the queue keeps the newest ``buffer`` events and counts the
ones it had to drop. The operator API of any node reads the stream (its ids are the stream's,
``MS-SEQ``), scanning at most ``scan`` entries per request.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from ..core.audit import AuditEvent

logger = logging.getLogger(__name__)

DEFAULT_MAXLEN = 100_000
"""Events the stream keeps (approximately: Redis trims whole nodes of its radix tree)."""


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """What the operator asks for; None matches everything."""

    room: str | None = None
    participant: str | None = None
    kind: str | None = None
    outcome: str | None = None
    node: str | None = None
    since: datetime | None = None

    def matches(self, event: dict[str, Any]) -> bool:
        for name in ("room", "participant", "kind", "outcome", "node"):
            wanted = getattr(self, name)
            if wanted is not None and event.get(name) != wanted:
                return False
        return self.since is None or datetime.fromisoformat(event["time"]) >= self.since


@dataclass(frozen=True, slots=True)
class AuditPage:
    events: list[dict[str, Any]]
    """Oldest first, each with its stream ``id`` and the ``node`` that recorded it."""
    last_id: str | None
    """Where to page on from (``after_id``): the last event's id, or the last entry scanned."""
    more: bool


class AuditStream:
    """Append this node's events to the cluster's stream, and read it (one per node)."""

    def __init__(
        self,
        client: aioredis.Redis,
        prefix: str,
        maxlen: int = DEFAULT_MAXLEN,
        buffer: int = 10_000,
        scan: int = 5_000,
    ) -> None:
        self._client = client
        self.key = f"{prefix}:audit"
        self.maxlen, self.scan = maxlen, scan
        self.node: str | None = None
        self._queue: collections.deque[dict[str, Any]] = collections.deque(maxlen=buffer)
        self._queued = asyncio.Event()
        self.dropped = 0
        """Events the queue dropped while Redis was unreachable (they are in this node's SQLite)."""
        self.appended = 0

    def start(self, node: str) -> None:
        self.node = node

    def append(self, event: AuditEvent) -> None:
        """An event this node stored: to the stream soon (an AuditLog listener; never blocks)."""
        if len(self._queue) == self._queue.maxlen:
            self.dropped += 1
        entry = asdict(event)
        del entry["id"]
        entry["time"] = event.time.isoformat() if event.time else None
        entry["kind"] = str(event.kind)
        entry["node"] = self.node
        self._queue.append(entry)
        self._queued.set()

    async def run(self, batch: int = 200) -> None:
        """Write what is queued for ever; on a Redis error keep it and retry in half a second."""
        while True:
            await self._queued.wait()
            self._queued.clear()
            while self._queue:
                entries = [self._queue[i] for i in range(min(batch, len(self._queue)))]
                try:
                    await self._write(entries)
                except (RedisError, OSError) as exc:
                    logger.warning("audit stream: %d events not written yet (%s)", len(self._queue), exc)
                    await asyncio.sleep(0.5)
                    continue
                for _ in entries:
                    self._queue.popleft()
                self.appended += len(entries)

    async def flush(self) -> None:
        """Write what is queued now (a node that stops)."""
        while self._queue:
            entries = list(self._queue)
            await self._write(entries)
            self._queue.clear()
            self.appended += len(entries)

    async def _write(self, entries: list[dict[str, Any]]) -> None:
        async with self._client.pipeline(transaction=False) as pipe:
            for entry in entries:
                entry["node"] = entry["node"] or self.node  # recorded before the node knew its id
                pipe.xadd(self.key, {"e": json.dumps(entry)}, maxlen=self.maxlen, approximate=True)
            await pipe.execute()

    async def read(self, which: AuditFilter, after_id: str | None, limit: int) -> AuditPage:
        """Events matching ``which``, oldest first: the newest ``limit``, or (``after_id``) the first
        ``limit`` after it. Scans at most :attr:`scan` entries; ``more`` says whether to page on."""
        forward = after_id is not None
        found: list[dict[str, Any]] = []
        cursor = f"({after_id}" if forward else "+"
        scanned, last_scanned, exhausted = 0, after_id, False
        while len(found) <= limit and scanned < self.scan:
            count = min(500, self.scan - scanned)
            chunk: Any
            if forward:
                chunk = await self._client.xrange(self.key, min=cursor, max="+", count=count) or []
            else:
                chunk = await self._client.xrevrange(self.key, max=cursor, min="-", count=count) or []
            for stream_id, fields in chunk:
                event = {"id": stream_id.decode(), **json.loads(fields[b"e"])}
                last_scanned = event["id"]
                if which.matches(event):
                    found.append(event)
                    if len(found) > limit:
                        break
            scanned += len(chunk)
            if len(chunk) < count:
                exhausted = True
                break
            cursor = f"({last_scanned}"
        full = len(found) > limit
        found = found[:limit]
        if forward:
            last_id = found[-1]["id"] if full else last_scanned
        else:
            found.reverse()
            last_id = found[-1]["id"] if found else None
        return AuditPage(found, last_id, full or not exhausted)
