"""The node registry: every node announces itself, with its rooms and participants, in Redis.

Each node writes ``{prefix}:node:{id}`` (JSON: its id, signaling URL, when it wrote, and its
participants as the operator API shows them) with a TTL of ``ttl`` seconds, every ``interval``
seconds and soon after each join or departure, and keeps its id in the set ``{prefix}:nodes``.
Any node's operator API lists the others from there: a node's own participants are read live, the
others' are at most ``interval`` seconds old (plus the debounce after a change), and a dead node
vanishes from the listing within ``ttl`` seconds. Countries and addresses are in these keys:
Redis is operators' infrastructure, like the audit (docs/operations.md).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from .periodic import step

logger = logging.getLogger(__name__)

Snapshot = Callable[[], list[dict[str, Any]]]
"""This node's participants now, each a JSON object with at least ``room`` and ``participant``."""


@dataclass(frozen=True, slots=True)
class NodeView:
    """Another node as its last heartbeat described it."""

    node: str
    url: str
    """Its signaling URL (what redirects name)."""
    age: float
    """Seconds since it wrote this (how stale ``participants`` may be)."""
    participants: tuple[dict[str, Any], ...]


class NodeRegistry:
    """Announce this node and read the others (one per node)."""

    def __init__(
        self,
        client: aioredis.Redis,
        prefix: str,
        snapshot: Snapshot,
        interval: float = 1.0,
        ttl: float = 3.0,
        debounce: float = 0.05,
    ) -> None:
        self._client = client
        self._prefix = prefix
        self.snapshot = snapshot
        """This node's participants now (the application's)."""
        self.interval, self.ttl, self.debounce = interval, ttl, debounce
        self._changed = asyncio.Event()
        self.node: str | None = None
        self.url: str | None = None

    @property
    def members(self) -> str:
        return f"{self._prefix}:nodes"

    def key(self, node: str) -> str:
        return f"{self._prefix}:node:{node}"

    def start(self, node: str, url: str) -> None:
        self.node, self.url = node, url
        self._changed.set()

    def changed(self) -> None:
        """Someone joined or left here: announce it soon (not on every packet of a burst)."""
        self._changed.set()

    async def announce(self) -> None:
        """Write this node's entry now."""
        if self.node is None:
            return
        entry = {"node": self.node, "url": self.url, "time": time.time(), "participants": self.snapshot()}
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.set(self.key(self.node), json.dumps(entry), px=round(self.ttl * 1000))
            pipe.sadd(self.members, self.node)
            await pipe.execute()

    async def run(self) -> None:
        """Announce every ``interval`` seconds, and ``debounce`` seconds after a change, for ever."""
        while True:
            try:
                await asyncio.wait_for(self._changed.wait(), self.interval)
                await asyncio.sleep(self.debounce)
            except TimeoutError:
                pass
            self._changed.clear()
            await step(self.announce, logger, "node registry: announcing this node")

    async def withdraw(self) -> None:
        """A node that stops leaves the registry at once."""
        if self.node is not None:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.delete(self.key(self.node))
                pipe.srem(self.members, self.node)
                await pipe.execute()

    async def others(self) -> list[NodeView]:
        """Every other live node, by id; forgets the ids whose entry expired."""
        members = await self._client.smembers(self.members)
        names = sorted(name for name in map(_text, members) if name != self.node)
        if not names:
            return []
        entries = await self._client.mget([self.key(n) for n in names])
        gone = [name for name, entry in zip(names, entries, strict=True) if entry is None]
        if gone:
            await self._client.srem(self.members, *gone)
        now, views = time.time(), []
        for entry in entries:
            if entry is None:
                continue
            data = json.loads(entry)
            views.append(
                NodeView(data["node"], data["url"], max(0.0, now - data["time"]), tuple(data["participants"]))
            )
        return views


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
