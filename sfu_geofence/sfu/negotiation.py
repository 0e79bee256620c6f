"""Negotiating one step at a time, so that a burst of renegotiations never stalls media.

When someone joins, leaves or is ejected from a room of N, N-1 participants need a new offer at
once, and then send N-1 answers at about the same moment. Creating an offer (3-5 ms) and applying an
answer (SDP parsing, codec matching: 5-10 ms) are synchronous aiortc work, and the event loop runs
every task that became ready in one iteration back to back before it reads the sockets again: N-1
offers, or N-1 answers that arrived together, would stop every forwarded packet for their sum (a
43 ms stall measured with 7 answers after an ejection of 2 in a room of 9). The scheduler makes the
offers in turn, and every offer or answer takes its :meth:`~NegotiationScheduler.turn`: one step per
loop iteration, the packets waiting in the sockets read in between.

Turns bound what the SFU's loop does at once, not how much CPU the burst takes: N-1 offers and, in
the clients, N-1 answers (5-10 ms of CPU each for an aiortc client) still land in the same few tens
of milliseconds, and on a busy machine the SFU then waits for a core (issue 12: after an ejection of
2 in a room of 9, callbacks that cost the SFU 0.5 ms of CPU took 12-19 ms). An offer that only
retires m-lines (someone left or was ejected: their media already stopped at once; by default no
such offer is made at all, see :attr:`~sfu_geofence.sfu.SfuConfig.fold_retirements`) is not urgent,
so it is *deferred*: deferred offers are made one at a time, :data:`DEFERRED_SPACING_S` apart,
after every urgent one (a subscription: new media waits on it). An urgent request promotes a
participant's deferred offer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator
from typing import Protocol

logger = logging.getLogger(__name__)

DEFERRED_SPACING_S = 0.05
"""Between two deferred offers (and before the first): 7 remaining participants are renegotiated
over 350 ms, each client's answer and the SFU's work on it in a quiet moment of their own."""


class Negotiator(Protocol):
    """A participant, as far as the scheduler is concerned."""

    id: str

    async def make_offer(self) -> None:
        """Create, apply and send one offer if one is due (never raises)."""


class NegotiationScheduler:
    """A queue of participants due an offer and the one task that serves it."""

    def __init__(self, deferred_spacing: float = DEFERRED_SPACING_S) -> None:
        self._queue: deque[Negotiator] = deque()
        self._queued: set[str] = set()
        self._deferred: deque[Negotiator] = deque()
        self._deferred_ids: set[str] = set()
        self._urgent = asyncio.Event()
        """Set when an urgent offer is queued: ends the wait before a deferred one."""
        self.deferred_spacing = deferred_spacing
        self._task: asyncio.Task[None] | None = None
        self._turn = asyncio.Lock()
        self.offers_made = 0

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """Hold the one negotiation step allowed at a time (an offer being made, an answer applied).

        The turn is held into the next loop iteration (a step that never yields would otherwise hand
        it to a waiting one at once) and handed over through the event loop: two steps never run in
        the same loop iteration, and the sockets are read between them.
        """
        async with self._turn:
            yield
            await asyncio.sleep(0)

    def schedule(self, participant: Negotiator, *, deferred: bool = False) -> None:
        """Queue ``participant`` for an offer (once, however often it is asked): an urgent one, or a
        ``deferred`` one (see the module's docstring); urgent wins over deferred."""
        if participant.id in self._queued:
            return
        if deferred:
            if participant.id in self._deferred_ids:
                return
            self._deferred_ids.add(participant.id)
            self._deferred.append(participant)
        else:
            if participant.id in self._deferred_ids:
                self._deferred_ids.discard(participant.id)
                self._deferred.remove(participant)
            self._queued.add(participant.id)
            self._queue.append(participant)
            self._urgent.set()
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while self._queue or self._deferred:
            if not self._queue:
                self._urgent.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._urgent.wait(), self.deferred_spacing)
                if self._queue or not self._deferred:
                    continue
                participant = self._deferred.popleft()
                self._deferred_ids.discard(participant.id)
            else:
                participant = self._queue.popleft()
                self._queued.discard(participant.id)
            try:
                async with self.turn():
                    await participant.make_offer()
            except Exception:  # make_offer handles its own failures; never let one stop the others
                logger.exception("making an offer for %s failed", participant.id)
            self.offers_made += 1
            await asyncio.sleep(0)  # let the sockets be read before the next offer

    async def close(self) -> None:
        """Stop serving (offers still queued are dropped)."""
        self._queue.clear()
        self._queued.clear()
        self._deferred.clear()
        self._deferred_ids.clear()
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
