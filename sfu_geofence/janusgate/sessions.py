"""A client's Janus session as the gate relays it: the gate long-polls Janus for the session's events,
reads each one (who joined, left, was detached) and hands it on to the client, over its own long poll
(HTTP) or its WebSocket.

The gate owns the upstream poll, not the client, so that it sees every event whichever transport the
client speaks, and can put an event of its own in the client's stream (an ejection's reason) where
nobody else's stream gets it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable

import aiohttp

from ..janus.client import JsonObject

logger = logging.getLogger(__name__)

EVENT_BACKLOG = 1000
"""Events kept for a client that does not poll; older ones are dropped (Janus drops them too)."""
POLL_EVENTS = 10
"""Events per upstream long poll (Janus's ``maxev``)."""
GONE_AFTER_S = 5.0
"""A session whose Janus cannot be reached for this long is forgotten (its participants left)."""


class RelayedSession:
    """One Janus session created through the gate: its handles, its events, its client's last sign."""

    def __init__(self, session_id: int, websocket: object | None, address: str = "") -> None:
        self.session_id = session_id
        self.address = address
        """The client's address when it created the session (what the per-address cap counts)."""
        self.websocket = websocket
        """The client WebSocket that created the session (None: an HTTP client): when it closes, the
        session is destroyed, as Janus's own WebSocket transport does."""
        self.plugins: dict[int, str] = {}
        """Each handle's plugin, from the attach answers."""
        self.last_seen = time.monotonic()
        self._events: collections.deque[JsonObject] = collections.deque(maxlen=EVENT_BACKLOG)
        self._arrived = asyncio.Event()
        self.poller: asyncio.Task[None] | None = None
        self.closed = False

    def touch(self) -> None:
        self.last_seen = time.monotonic()

    def push(self, event: JsonObject) -> None:
        """Queue ``event`` for the client."""
        self._events.append(event)
        self._arrived.set()

    async def next_events(self, most: int, within: float) -> list[JsonObject]:
        """Up to ``most`` queued events, waiting up to ``within`` seconds for the first; [] if none."""
        if not self._events:
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(within):
                    await self._arrived.wait()
        return [self._events.popleft() for _ in range(min(most, len(self._events)))]

    def close(self) -> None:
        self.closed = True
        self._arrived.set()
        if self.poller is not None and self.poller is not asyncio.current_task():
            self.poller.cancel()


async def poll(
    http: aiohttp.ClientSession,
    url: str,
    session: RelayedSession,
    observe: Callable[[RelayedSession, JsonObject], None],
    gone: Callable[[RelayedSession], Awaitable[None]],
) -> None:
    """Long-poll Janus for ``session``'s events, ``observe`` each, then queue it for the client.

    Janus answering "no such session" (destroyed, timed out, restarted: a 404 or an error), or
    answering nothing useful (an error status, no JSON) or staying unreachable for
    :data:`GONE_AFTER_S`, ends the session: ``gone`` is awaited once.
    """
    unreachable_since: float | None = None
    try:
        while not session.closed:
            try:
                async with http.get(
                    f"{url}/{session.session_id}",
                    params={"maxev": str(POLL_EVENTS), "rid": secrets.token_hex(6)},
                    timeout=aiohttp.ClientTimeout(total=60),
                ) as response:
                    if response.status == 404:  # Janus's HTTP transport: no such session (an empty body)
                        logger.debug("janus session %s: gone (404)", session.session_id)
                        return
                    response.raise_for_status()
                    events = await response.json(content_type=None)
                    if not isinstance(events, list | dict):
                        raise ValueError(f"Janus answered a long poll with {events!r}")
            except (aiohttp.ClientError, TimeoutError, ValueError) as error:
                now = time.monotonic()
                unreachable_since = unreachable_since or now
                if now - unreachable_since > GONE_AFTER_S:
                    logger.info("janus session %s: Janus unreachable (%s)", session.session_id, error)
                    return
                await asyncio.sleep(0.2)
                continue
            unreachable_since = None
            for event in events if isinstance(events, list) else [events]:
                if not isinstance(event, dict) or event.get("janus") == "keepalive":
                    continue
                if event.get("janus") == "error" and "transaction" not in event:
                    logger.debug("janus session %s: gone (%s)", session.session_id, event.get("error"))
                    return
                observe(session, event)
                session.push(event)
                if event.get("janus") == "timeout":
                    return
    finally:
        if not session.closed:
            await gone(session)
