"""One node of a cluster: its identity, and its parts that share one Redis with the other nodes.

The node registry (:mod:`.nodes`), room placement (:mod:`.placement`), commands between nodes
(:mod:`.commands`) and the cluster's audit stream (:mod:`.auditstream`) share this node's Redis
connection pool and live as long as the application (``create_geofenced_app(cluster=...)``). The
policies have a connection of their own (:mod:`.redisstore`). A node knows its signaling URL (and
its default id, ``HOSTNAME:PORT``) only once its listener is bound: :meth:`ClusterNode.listening`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .auditstream import DEFAULT_MAXLEN, AuditFilter, AuditPage, AuditStream
from .commands import Handler, NodeCommands, NodeUnavailable
from .nodes import NodeRegistry, NodeView, Snapshot
from .placement import DEFAULT_LEASE, RoomPlacement
from .redisstore import RedisKeys

logger = logging.getLogger(__name__)

T = TypeVar("T")

__all__ = ["ClusterNode", "ClusterTimings", "NodeUnavailable", "NodeView"]


@dataclass(frozen=True, slots=True)
class ClusterTimings:
    """How fresh the cluster's shared view is, and how soon a dead node's rooms move (seconds)."""

    heartbeat: float = 1.0
    """A node rewrites its registry entry this often: the others' view of it is at most this old."""
    node_ttl: float = 3.0
    """A node that stopped writing vanishes from the operator view after this long."""
    lease: float = DEFAULT_LEASE
    """A dead host's rooms are placed again at the next join after this long."""
    renew: float = DEFAULT_LEASE / 3
    """The host renews its leases this often, and releases those of rooms emptied here."""
    command_timeout: float = 2.0
    """An operator's command to another node answers 504 after this long without its answer."""
    audit_maxlen: int = DEFAULT_MAXLEN


class ClusterNode:
    """This node's place in the cluster (one per ``serve --redis``)."""

    def __init__(
        self,
        redis_url: str,
        node_id: str = "",
        advertise_url: str | None = None,
        *,
        keys: RedisKeys | None = None,
        timings: ClusterTimings | None = None,
    ) -> None:
        self.timings = timings = timings or ClusterTimings()
        prefix = (keys or RedisKeys()).prefix
        self._client = aioredis.Redis.from_url(redis_url, socket_connect_timeout=5, socket_timeout=10)
        self._node_id, self._advertise_url = node_id, advertise_url
        self.node: str | None = None
        """This node's id, once listening."""
        self.url: str | None = None
        """This node's signaling URL, once listening."""
        self.placement = RoomPlacement(
            self._client, prefix, occupied=lambda room: False, lease=timings.lease, renew=timings.renew
        )
        self.registry = NodeRegistry(
            self._client, prefix, snapshot=list, interval=timings.heartbeat, ttl=timings.node_ttl
        )
        self.commands = NodeCommands(self._client, prefix)
        self.audit = AuditStream(self._client, prefix, maxlen=timings.audit_maxlen)
        self._handler: Handler | None = None
        self._listening = asyncio.Event()

    def attach(self, occupied: Callable[[str], bool], snapshot: Snapshot, handler: Handler) -> None:
        """What the application tells: whether it has participants in a room, who they are (for
        the operator view), and how it acts on another node's command."""
        self.placement.occupied = occupied
        self.registry.snapshot = snapshot
        self._handler = handler

    def listening(self, public_base: str) -> None:
        """The public listener is bound at ``public_base`` (``http://HOST:PORT``): take the id and
        URL (the configured ones, else from there) and start announcing."""
        where = urlsplit(public_base)
        self.node = self._node_id or f"{socket.gethostname()}:{where.port}"
        self.url = self._advertise_url or f"ws://{where.netloc}/ws"
        self.placement.start(self.node, self.url)
        self.registry.start(self.node, self.url)
        self.audit.start(self.node)
        self._listening.set()
        logger.info("cluster node %s, signaling at %s", self.node, self.url)

    async def run(self) -> None:
        """Heartbeats, lease renewals, the audit writer and the command listener, for ever."""
        await self._listening.wait()
        assert self.node is not None
        work = [self.registry.run(), self.placement.run(), self.audit.run()]
        if self._handler is not None:
            work.append(self.commands.serve(self.node, self._handler))
        await asyncio.gather(*work)

    async def stop(self) -> None:
        """Finish the other nodes' commands, give the rooms up, leave the registry, write the audit
        queued: then close the pool."""
        await self.commands.aclose()
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            async with asyncio.timeout(2):
                await self.placement.release_all()
                await self.registry.withdraw()
                await self.audit.flush()
        await self._client.aclose()

    # -- what the operator API asks -----------------------------------------------------------------

    # Each bounded by the command timeout: a stalled Redis (connections open, nothing answered)
    # would otherwise hold an operator's request for the client's socket timeout.

    async def others(self) -> list[NodeView]:
        return await self._within(self.registry.others())

    async def send(self, node: str, command: dict[str, Any]) -> dict[str, Any]:
        return await self.commands.send(node, command, self.timings.command_timeout)

    async def read_audit(self, which: AuditFilter, after_id: str | None, limit: int) -> AuditPage:
        return await self._within(self.audit.read(which, after_id, limit))

    async def _within(self, work: Awaitable[T]) -> T:
        """``work``, or a Redis timeout after the command timeout."""
        within = self.timings.command_timeout
        try:
            async with asyncio.timeout(within):
                return await work
        except TimeoutError:
            raise RedisTimeoutError(f"Redis did not answer within {within:g} s") from None
