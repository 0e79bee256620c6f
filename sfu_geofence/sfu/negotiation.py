"""Making offers one participant at a time, so that a burst of renegotiations never stalls media.

When someone leaves a room of N, N-1 participants need a new offer at once. Creating an offer is a
few milliseconds of synchronous aiortc work, and asyncio runs every task that became ready in one
loop iteration back to back, before it looks at sockets again: N-1 offers made by N-1 tasks would
stop every forwarded packet for their sum. The scheduler makes them in turn, yielding to the event
loop (and so to the packets waiting in the sockets) between two offers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import Protocol

logger = logging.getLogger(__name__)


class Negotiator(Protocol):
    """A participant, as far as the scheduler is concerned."""

    id: str

    async def make_offer(self) -> None:
        """Create, apply and send one offer if one is due (never raises)."""


class NegotiationScheduler:
    """A queue of participants due an offer and the one task that serves it."""

    def __init__(self) -> None:
        self._queue: deque[Negotiator] = deque()
        self._queued: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self.offers_made = 0

    def schedule(self, participant: Negotiator) -> None:
        """Queue ``participant`` for an offer (once, however often it is asked)."""
        if participant.id in self._queued:
            return
        self._queued.add(participant.id)
        self._queue.append(participant)
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while self._queue:
            participant = self._queue.popleft()
            self._queued.discard(participant.id)
            try:
                await participant.make_offer()
            except Exception:  # make_offer handles its own failures; never let one stop the others
                logger.exception("making an offer for %s failed", participant.id)
            self.offers_made += 1
            await asyncio.sleep(0)  # let the sockets be read before the next offer

    async def close(self) -> None:
        """Stop serving (offers still queued are dropped)."""
        self._queue.clear()
        self._queued.clear()
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
