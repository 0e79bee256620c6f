"""Policies shared by every node of a cluster, in Redis: one version counter, every change on every node.

Keys (``prefix`` = ``sfu-geofence``): ``{prefix}:version`` the cluster-wide counter, ``{prefix}:default``
the server default and ``{prefix}:rooms`` (a hash) the rooms' own policies, each stored as
``{"version": v, "policy": {...}}``. A change is one Lua script (atomic on the server): INCR the
counter, write the policy under that version, PUBLISH ``{version, room, policy}`` on
``{prefix}:changes``. Two operators on two nodes at once therefore get two distinct versions, and
neither change overwrites the other's room.

Why pub/sub and a counter, not a stream or keyspace events: the state is small (one entry per room
with a policy of its own) and already in Redis, so a node that missed messages reads it again
instead of replaying history; a stream would need trimming and would still need this catch-up for a
node that starts late. Keyspace events are off by default and carry no payload. Pub/sub is
fire-and-forget, so the version in each message is what makes it safe: a message that is not
``local + 1`` (a gap), every (re)subscription, and a periodic read of the counter each trigger a
full re-read in one MULTI/EXEC. See docs/operations.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass
from typing import Any, Self

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from ..core.errors import ClosedError
from ..core.policy import RoomPolicy
from ..core.policystore import PolicyInForce, PolicyListener, PolicyUpdate
from ..core.storage import StorageError

logger = logging.getLogger(__name__)

WARM_CONNECTIONS = 8
"""Connections to Redis a node opens at start, for simultaneous policy changes (more are opened
when more calls overlap)."""

# KEYS: version, rooms hash, default. ARGV: room ('' for the default), policy JSON ('null' removes
# the room's own policy), channel, room as JSON, actor and reason as JSON (optional; in the message
# only: each node's audit records them, the stored state is the policies alone).
_WRITE = """
local v = redis.call('INCR', KEYS[1])
local entry = '{"version":' .. v .. ',"policy":' .. ARGV[2] .. '}'
if ARGV[1] == '' then
  redis.call('SET', KEYS[3], entry)
elseif ARGV[2] == 'null' then
  redis.call('HDEL', KEYS[2], ARGV[1])
else
  redis.call('HSET', KEYS[2], ARGV[1], entry)
end
redis.call('PUBLISH', ARGV[3], '{"version":' .. v .. ',"room":' .. ARGV[4] .. ',"policy":' .. ARGV[2]
  .. ',"actor":' .. (ARGV[5] or 'null') .. ',"reason":' .. (ARGV[6] or 'null') .. '}')
return v
"""


@dataclass(frozen=True, slots=True)
class RedisKeys:
    """Where the cluster's policies are, under one prefix (several clusters may share a Redis)."""

    prefix: str = "sfu-geofence"

    @property
    def version(self) -> str:
        return f"{self.prefix}:version"

    @property
    def rooms(self) -> str:
        return f"{self.prefix}:rooms"

    @property
    def default(self) -> str:
        return f"{self.prefix}:default"

    @property
    def changes(self) -> str:
        return f"{self.prefix}:changes"


@dataclass(frozen=True, slots=True)
class _Snapshot:
    version: int
    default: PolicyInForce
    rooms: dict[str, PolicyInForce]


def describe_url(url: str) -> str:
    """``redis://host:port/db`` without credentials: what errors and logs may name."""
    kwargs = aioredis.connection.parse_url(url)
    if "path" in kwargs:
        return f"redis unix socket {kwargs['path']}"
    return f"redis://{kwargs.get('host', '127.0.0.1')}:{kwargs.get('port', 6379)}/{kwargs.get('db', 0)}"


class RedisPolicyStore:
    """A :class:`~sfu_geofence.core.policystore.PolicySource` whose policies live in Redis.

    Open it with :meth:`open` (inside the event loop that will serve). Reads answer from a snapshot
    kept current by a watcher task; :meth:`write` answers once Redis has the change (durable as far
    as the server's ``appendfsync`` makes it) and this node enforces it. With Redis unreachable,
    the snapshot stays (joins are decided on the last policies read) and writes raise StorageError.
    """

    def __init__(
        self, client: aioredis.Redis, url: str, keys: RedisKeys, snapshot: _Snapshot, poll_interval: float
    ) -> None:
        self._client = client
        self._name = describe_url(url)
        self._keys = keys
        self._snapshot = snapshot
        self._poll_interval = poll_interval
        self._write_script = client.register_script(_WRITE)
        self._listener: PolicyListener | None = None
        self._lock = asyncio.Lock()
        self._closed = False
        self.catch_ups = 0
        """Full re-reads that found something this node had missed (gaps, reconnections)."""
        self.subscribed = asyncio.Event()
        """Set while the watcher is subscribed and caught up (cleared when its connection drops)."""
        self._catching_up: asyncio.Task[None] | None = None
        self._watcher = asyncio.get_running_loop().create_task(self._watch(), name="redis-policy-watcher")

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        keys: RedisKeys | None = None,
        default: RoomPolicy | None = None,
        poll_interval: float = 1.0,
        connect_timeout: float = 5.0,
    ) -> Self:
        """Connect, seed the default (first node of a new cluster only), read every policy, subscribe.

        Raises StorageError naming the server when it cannot be reached within ``connect_timeout``.
        """
        keys = keys or RedisKeys()
        name = describe_url(url)
        client = aioredis.Redis.from_url(
            url, socket_connect_timeout=connect_timeout, socket_timeout=connect_timeout
        )
        try:
            async with asyncio.timeout(connect_timeout):
                await client.set(keys.default, _entry(0, default or RoomPolicy()), nx=True)
                snapshot = await _read(client, keys)
                # Loaded now, so that the first change is one EVALSHA, not NOSCRIPT + LOAD + EVALSHA
                # (round trips that would count in the first ejection's latency).
                await client.script_load(_WRITE)
                # Connections opened now, not when operators change several rooms at once: a new one
                # costs several round trips (HELLO, CLIENT SETINFO...), each waiting for a turn of an
                # event loop then busy ejecting, which held the second and third of three
                # simultaneous changes back ~25 ms before they even reached Redis (traced).
                await asyncio.gather(*(client.ping() for _ in range(WARM_CONNECTIONS)))
        except (RedisError, OSError, TimeoutError) as exc:
            await client.aclose()
            raise StorageError(f"cannot reach Redis at {name}: {exc or type(exc).__name__}") from None
        return cls(client, url, keys, snapshot, poll_interval)

    async def server_version(self) -> str:
        """The Redis server's version (what reports name as what they ran against)."""
        info = await self._client.info("server")
        return str(info["redis_version"])

    # -- PolicySource ------------------------------------------------------------------------------

    @property
    def version(self) -> int:
        return self._snapshot.version

    @property
    def default(self) -> PolicyInForce:
        return self._snapshot.default

    def get(self, room: str) -> PolicyInForce:
        return self._snapshot.rooms.get(room, self._snapshot.default)

    def rooms(self) -> dict[str, PolicyInForce]:
        return dict(self._snapshot.rooms)

    def listen(self, listener: PolicyListener) -> None:
        self._listener = listener

    async def ready(self, within: float = 1.0) -> None:
        """At once while following changes; else one re-read (shared by every caller meanwhile,
        so a burst of joins costs one read) for at most ``within`` seconds. Redis unreachable: the
        last policies read stand (docs/operations.md)."""
        if self.subscribed.is_set() or self._closed:
            return
        if self._catching_up is None or self._catching_up.done():
            self._catching_up = asyncio.get_running_loop().create_task(self._catch_up())
        await asyncio.wait({self._catching_up}, timeout=within)

    async def _catch_up(self) -> None:
        try:
            await self.resync()
        except (RedisError, OSError, StorageError) as exc:
            logger.warning("Redis at %s: cannot catch up before a join (%s)", self._name, exc)

    async def write(
        self,
        room: str | None,
        policy: RoomPolicy | None,
        *,
        actor: str | None = None,
        reason: str | None = None,
    ) -> int:
        """One atomic change in Redis; returns its version once this node's snapshot has it.
        ``actor`` and ``reason`` travel with the change's message (a node that catches up by a
        re-read instead hears of it without them)."""
        if self._closed:
            raise ClosedError("policy store is closed")
        if room is None and policy is None:
            raise ValueError("the server default cannot be removed, only replaced")
        text = "null" if policy is None else _dump(policy)
        keys = self._keys
        try:
            version = int(
                await self._write_script(
                    keys=[keys.version, keys.rooms, keys.default],
                    args=[
                        room or "",
                        text,
                        keys.changes,
                        json.dumps(room),
                        json.dumps(actor),
                        json.dumps(reason),
                    ],
                )
            )
        except (RedisError, OSError) as exc:
            raise StorageError(f"policy change not stored: Redis at {self._name}: {exc}") from None
        try:
            await self._applied(version, room, policy, actor, reason)
        except (RedisError, OSError, StorageError) as exc:
            # Stored (acknowledged), but a gap before it could not be re-read: the watcher catches
            # this node up when Redis answers again; the change itself must not be reported lost.
            logger.warning("Redis at %s: change %d stored, catching up later (%s)", self._name, version, exc)
        return version

    def close(self) -> None:
        """Stop watching; the connection closes with the task. Safe to call twice."""
        if not self._closed:
            self._closed = True
            self._watcher.cancel()

    async def aclose(self) -> None:
        """:meth:`close`, then wait for the watcher and the connection pool to finish."""
        self.close()
        if self._catching_up is not None:
            self._catching_up.cancel()
        # redis-py's read timeout can swallow one cancellation (asyncio.timeout racing it, Python
        # 3.11): cancel again until the task is done, so closing never waits for a poll interval.
        while not self._watcher.done():
            self._watcher.cancel()
            await asyncio.wait({self._watcher}, timeout=0.05)
        await self._client.aclose()

    # -- keeping the snapshot current --------------------------------------------------------------

    async def _applied(
        self,
        version: int,
        room: str | None,
        policy: RoomPolicy | None,
        actor: str | None = None,
        reason: str | None = None,
    ) -> None:
        """Apply the change of ``version`` if it is the next one, else re-read everything."""
        async with self._lock:
            current = self._snapshot
            if version <= current.version:
                return  # applied already (our own change's message, or covered by a re-read)
            if version != current.version + 1:
                await self._resync_locked()
                return
            rooms = dict(current.rooms)
            if room is None:
                assert policy is not None
                default = PolicyInForce(policy, version, inherited=True)
                self._snapshot = _Snapshot(version, default, rooms)
                self._notify(PolicyUpdate(version, default=True, actor=actor, reason=reason))
                return
            if policy is None:
                rooms.pop(room, None)
            else:
                rooms[room] = PolicyInForce(policy, version, inherited=False)
            self._snapshot = _Snapshot(version, current.default, rooms)
            self._notify(PolicyUpdate(version, rooms=frozenset({room}), actor=actor, reason=reason))

    async def resync(self) -> None:
        """Re-read every policy in one transaction and apply what differs from the snapshot."""
        async with self._lock:
            await self._resync_locked()

    async def _resync_locked(self) -> None:
        fresh = await _read(self._client, self._keys)
        current = self._snapshot
        if fresh.version <= current.version:
            return
        changed = {
            room
            for room in fresh.rooms.keys() | current.rooms.keys()
            if fresh.rooms.get(room) != current.rooms.get(room)
        }
        self._snapshot = fresh
        self.catch_ups += 1
        logger.info("policies caught up from Redis: version %d -> %d", current.version, fresh.version)
        self._notify(PolicyUpdate(fresh.version, frozenset(changed), fresh.default != current.default))

    def _notify(self, update: PolicyUpdate) -> None:
        if self._listener is not None:
            self._listener(update)

    async def _watch(self) -> None:
        """Follow the change channel for ever; on every (re)subscription and gap, re-read everything.

        A dropped connection is retried at once (joins meanwhile are decided on the last policies
        read, so the window stays one reconnection long), then with a backoff up to 0.5 s while
        Redis stays unreachable.
        """
        failures = 0
        while not self._closed:
            pubsub = self._client.pubsub()
            try:
                await pubsub.subscribe(self._keys.changes)
                while not self._closed:
                    message = await pubsub.get_message(timeout=self._poll_interval)
                    if message is None:
                        # Quiet: a cheap check that nothing was missed (a silently dead subscription).
                        if int(await self._client.get(self._keys.version) or 0) > self.version:
                            await self.resync()
                    elif message["type"] == "subscribe":
                        # Subscribed (again, after a reconnect): messages from here on reach us, so
                        # what was missed before is in the state we read now.
                        await self.resync()
                        self.subscribed.set()
                        failures = 0
                    elif message["type"] == "message":
                        await self._received(message["data"])
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError, StorageError) as exc:
                self.subscribed.clear()
                logger.warning("Redis at %s: policy watch interrupted (%s); retrying", self._name, exc)
            except Exception:
                # Whatever else (a bug, a listener's failure): keep following changes, say so loudly.
                self.subscribed.clear()
                logger.exception("Redis at %s: policy watch failed; retrying", self._name)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            if failures:
                await asyncio.sleep(min(0.05 * 2**failures, 0.5, self._poll_interval))
            failures = min(failures + 1, 8)

    async def _received(self, data: bytes) -> None:
        try:
            change: dict[str, Any] = json.loads(data)
            version, room, policy = int(change["version"]), change["room"], change["policy"]
            parsed = None if policy is None else RoomPolicy.from_dict(policy)
            actor, reason = _text_or_none(change.get("actor")), _text_or_none(change.get("reason"))
        except (ValueError, KeyError, TypeError) as exc:
            # Not ours (something else published here): what the state says is the truth.
            logger.warning("Redis at %s: unreadable policy change message (%s); re-reading", self._name, exc)
            await self.resync()
            return
        await self._applied(version, room, parsed, actor, reason)


def _text_or_none(value: object) -> str | None:
    """An attribution from a message: a string, else nothing (a message is not trusted for types)."""
    return value if isinstance(value, str) else None


async def _read(client: aioredis.Redis, keys: RedisKeys) -> _Snapshot:
    """Counter, default and rooms as of one instant (MULTI/EXEC)."""
    async with client.pipeline(transaction=True) as pipe:
        pipe.get(keys.version)
        pipe.get(keys.default)
        pipe.hgetall(keys.rooms)
        version, default, rooms = await pipe.execute()
    default_version, default_policy = _load(default) if default else (0, RoomPolicy())
    return _Snapshot(
        int(version or 0),
        PolicyInForce(default_policy, default_version, inherited=True),
        {
            room.decode(): PolicyInForce(policy, room_version, inherited=False)
            for room, (room_version, policy) in ((r, _load(text)) for r, text in rooms.items())
        },
    )


def _dump(policy: RoomPolicy) -> str:
    return json.dumps(policy.to_dict(), sort_keys=True)


def _entry(version: int, policy: RoomPolicy) -> str:
    return json.dumps({"version": version, "policy": policy.to_dict()}, sort_keys=True)


def _load(text: bytes) -> tuple[int, RoomPolicy]:
    try:
        entry = json.loads(text)
        return int(entry["version"]), RoomPolicy.from_dict(entry["policy"])
    except (ValueError, KeyError, TypeError) as exc:
        raise StorageError(f"unreadable policy in Redis: {exc}") from None
