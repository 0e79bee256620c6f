"""One media source per connection: datagrams reach DTLS/SRTP only from the nominated pair's remote address.

aioice hands every non-STUN datagram, from any source, to DTLS/SRTP through an unbounded queue, while
only the address that answered the connectivity checks is geolocated: a helper in an allowed country
could answer the checks while a restricted host sends the media, and a flood of junk from anywhere
allowed filled the queue. :class:`MediaSource` replaces aioice's dispatch of received datagrams for
connections created under an :class:`~sfu_geofence.rtc.ice.IcePolicy`:

* STUN is dispatched as aioice does (checks from allowed sources are still answered, so consent
  freshness and ICE restarts work);
* any other datagram is queued for DTLS/SRTP only if its source is the remote address of the
  component's nominated pair (or of an earlier nominated pair still on the check list, each of which
  was checked when nominated; before any nomination: of a pair on the check list, which is capped),
  and only while fewer than ``receive_queue`` datagrams wait; everything else is counted and dropped.

A new source becomes a media source only by being nominated, and every nomination is reported to
the selected-pair observers (:func:`~sfu_geofence.rtc.ice.observe_selected_pair`), so it is checked
like the first one.

The queue itself is a :class:`FairQueue`: aiortc's DTLS task takes datagrams from it in a loop that
never yields while it is not empty, so a backlog (after anything held the loop) was forwarded in one
callback, 9-19 ms measured, while every other publisher's packets waited in the kernel.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aioice import Connection, stun
from aioice.ice import StunProtocol

_STUN_CLASSES_ANSWERING = (stun.Class.RESPONSE, stun.Class.ERROR)

RECEIVE_BURST = 8
"""Datagrams one connection's DTLS task may take from its queue without waiting before it gives the
event loop a turn (the other connections' datagrams, timers): a 30 fps keyframe is a few dozen."""


class FairQueue(asyncio.Queue[Any]):
    """An ``asyncio.Queue`` whose consumer gives the loop a turn after :data:`RECEIVE_BURST` items taken
    without waiting (``asyncio.Queue.get`` returns at once while items wait, so a consumer draining a
    backlog would hold the loop until the queue is empty)."""

    def __init__(self) -> None:
        super().__init__()
        self._taken = 0

    async def get(self) -> Any:
        if self.empty():
            self._taken = 0
        else:
            self._taken += 1
            if self._taken >= RECEIVE_BURST:
                self._taken = 0
                await asyncio.sleep(0)
        return await super().get()


class MediaSource:
    """The receive side of one guarded connection; its counters say what it dropped."""

    __slots__ = ("_connection", "_max_queue", "foreign_dropped", "overflow_dropped")

    def __init__(self, connection: Connection, max_queue: int) -> None:
        """Made with the connection (nothing is queued yet): its queue becomes a :class:`FairQueue`."""
        self._connection = connection
        connection._queue = FairQueue()
        self._max_queue = max_queue
        self.foreign_dropped = 0
        """Non-STUN datagrams dropped because they came from another source than the media source."""
        self.overflow_dropped = 0
        """Datagrams from the media source dropped because ``max_queue`` were already waiting."""

    def datagram_received(self, protocol: StunProtocol, data: bytes, addr: tuple[Any, ...]) -> None:
        """Once per datagram received on any of the connection's sockets."""
        addr = (addr[0], addr[1])  # an IPv6 four-tuple as aioice keeps it
        if data and data[0] < 4:  # STUN's first two bits are zero (RFC 7983); RTP/DTLS never are
            try:
                message = stun.parse_message(data)
            except ValueError:
                pass  # not STUN after all: data, judged by its source below
            else:
                self._stun_received(protocol, message, addr)
                return
        connection = self._connection
        component = protocol.local_candidate.component
        if not self._is_source(component, addr):
            self.foreign_dropped += 1
            return
        if connection._queue.qsize() >= self._max_queue:
            self.overflow_dropped += 1
            return
        connection.data_received(data, component)

    def _is_source(self, component: int, addr: tuple[str, int]) -> bool:
        connection = self._connection
        pair = connection._nominated.get(component)
        if pair is not None and pair.remote_addr == addr:
            return True  # the fast path: every packet of a call
        # Any pair nominated on this connection was reported to the selected-pair observers, and so
        # checked, when it was nominated; the peer may send on one other than our latest (a controlled
        # agent picks among the nominated pairs). Before any nomination (DTLS may start a moment before
        # our side sees it), a pair being checked. Either way at most IceLimits.pairs pairs.
        nominated = pair is not None
        return any(
            p.remote_addr == addr and p.component == component and (p.nominated or not nominated)
            for p in connection._check_list
        )

    def _stun_received(self, protocol: StunProtocol, message: stun.Message, addr: tuple[str, int]) -> None:
        # As aioice's StunProtocol.datagram_received does (aioice 0.13.0).
        if message.message_class in _STUN_CLASSES_ANSWERING:
            transaction = protocol.transactions.get(message.transaction_id)
            if transaction is not None:
                transaction.response_received(message, addr)
        elif message.message_class == stun.Class.REQUEST:
            self._connection.request_received(message, addr, protocol)
