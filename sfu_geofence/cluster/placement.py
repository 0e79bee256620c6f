"""Room placement: each room is hosted by one node at a time, under a lease in Redis.

Key ``{prefix}:room:{room}`` holds the hosting node's ``{"node", "url"}`` (the value is compared as
a whole: a node knows its own). A join first claims it (one Lua script: SET NX PX if nobody holds
it, PEXPIRE if this node does, else return the holder): whoever holds it hosts the room, and any
other node answers the client with a ``redirect`` to the holder's signaling URL, having decided
and allocated nothing. The host renews its leases (every second by default) while it has
participants in the room, and releases a lease at the first renewal after the room emptied here.
When a host dies its leases expire (``lease`` seconds, 3 by default) and the next join places the
room again.

Redis unreachable: the join is hosted where it arrived (availability first; the lease is claimed
again by the renewal once Redis answers, and a conflict is logged), as joins are then decided on
the last policies read (docs/operations.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from .periodic import step

logger = logging.getLogger(__name__)

DEFAULT_LEASE = 3.0
"""Seconds a dead host keeps its rooms: the next join after that places them again."""

# KEYS: the room's lease. ARGV: this node's lease value, lease in ms. Returns the holder's value.
_CLAIM = """
local holder = redis.call('GET', KEYS[1])
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return ARGV[1]
end
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return holder
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def lease_value(node: str, url: str) -> str:
    """What a lease holds: the node and where clients reach it."""
    return json.dumps({"node": node, "url": url}, sort_keys=True)


class RoomPlacement:
    """This node's side of room placement: claims, renewals, releases (one per node)."""

    def __init__(
        self,
        client: aioredis.Redis,
        prefix: str,
        occupied: Callable[[str], bool],
        lease: float = DEFAULT_LEASE,
        renew: float | None = None,
    ) -> None:
        self._client = client
        self._prefix = prefix
        self.occupied = occupied
        """Whether this node has participants in a room now (then it keeps the room's lease)."""
        self.lease = lease
        self.renew_every = lease / 3 if renew is None else renew
        """Seconds between two renewals (and releases of the rooms emptied here)."""
        self._claim = client.register_script(_CLAIM)
        self._release = client.register_script(_RELEASE)
        self._hosted: set[str] = set()
        self._conflicts: set[str] = set()
        """Rooms hosted here whose lease another node holds (a Redis outage let it place them)."""
        self._lock = asyncio.Lock()
        self._value: str | None = None
        self.claim_within = 1.0
        """Seconds a join waits for Redis to place its room (longer: hosted here, as unreachable)."""
        self.redirects = 0
        """Joins this node sent on to another (for the metrics)."""

    def start(self, node: str, url: str) -> None:
        """Claim leases as ``node``, reachable at ``url`` (known once the listener is bound)."""
        self._value = lease_value(node, url)

    @property
    def hosted(self) -> frozenset[str]:
        """Rooms whose lease this node holds."""
        return frozenset(self._hosted)

    def _key(self, room: str) -> str:
        return f"{self._prefix}:room:{room}"

    async def place(self, room: str) -> str | None:
        """None: this node hosts ``room`` (the join goes on here); else the host's signaling URL."""
        if room in self._hosted:
            return None
        try:
            # The wait for the lock counts too: a renewal stuck on a frozen Redis holds it for as
            # long as the client's socket timeout, and every join would wait behind it.
            async with asyncio.timeout(self.claim_within), self._lock:
                # Under the lock: never while a release of this node's lease is on its way.
                if room in self._hosted or self._value is None:
                    return None
                holder = (await self._claim(keys=[self._key(room)], args=[self._value, self._ms])).decode()
                if holder == self._value:
                    self._hosted.add(room)
                    return None
        except (RedisError, OSError, TimeoutError) as exc:
            logger.warning("room placement: Redis unreachable (%r); hosting a join here", exc)
            self._hosted.add(room)
            return None
        self.redirects += 1
        return str(json.loads(holder)["url"])

    @property
    def _ms(self) -> int:
        return max(1, round(self.lease * 1000))

    async def renew(self) -> None:
        """Renew the leases of the rooms this node has participants in; release the others."""
        async with self._lock:
            empty = {room for room in self._hosted if not self.occupied(room)}
            self._hosted -= empty
            kept = sorted(self._hosted)
            if self._value is None or not (kept or empty):
                return
            async with self._client.pipeline(transaction=False) as pipe:
                for room in kept:
                    await self._claim(keys=[self._key(room)], args=[self._value, self._ms], client=pipe)
                for room in empty:
                    await self._release(keys=[self._key(room)], args=[self._value], client=pipe)
                replies = await pipe.execute()
        for room, holder in zip(kept, replies, strict=False):
            if holder.decode() == self._value:
                self._conflicts.discard(room)
            elif room not in self._conflicts:  # once per conflict, not at every renewal of it
                self._conflicts.add(room)
                logger.error("room placement: room %s is hosted here and by %s", room, holder.decode())
        self._conflicts &= self._hosted

    async def run(self) -> None:
        """Renew every :attr:`renew_every` seconds for ever (Redis errors are logged and retried)."""
        while True:
            await asyncio.sleep(self.renew_every)
            await step(self.renew, logger, "room placement: renewing the leases")

    async def release_all(self) -> None:
        """A node that stops gives its rooms up at once (the next join places them elsewhere)."""
        async with self._lock:
            rooms, self._hosted = sorted(self._hosted), set()
            if self._value is None or not rooms:
                return
            with contextlib.suppress(RedisError, OSError):
                async with self._client.pipeline(transaction=False) as pipe:
                    for room in rooms:
                        await self._release(keys=[self._key(room)], args=[self._value], client=pipe)
                    await pipe.execute()
