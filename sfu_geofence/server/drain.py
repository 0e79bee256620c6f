"""Graceful drain: when the server is told to stop, no session may join any more and every one is told why.

``serve`` stops on SIGTERM (or SIGINT): it closes its listening socket, then :meth:`Drain.start` closes
every signaling session that has not joined (``closing`` with reason ``shutdown``, close 1001) and the
SFU closes every participant the same way; the geofence's audit log is flushed last. The whole drain is
bounded by ``--drain-timeout`` (see :func:`sfu_geofence.server.serve.run_until_signalled`).
"""

from __future__ import annotations

from typing import Protocol


class DrainableSession(Protocol):
    """A signaling session as the drain sees it."""

    def shut_down(self) -> None:
        """The server is stopping: end the session (told why) unless the SFU owns it (joined)."""
        ...


class Drain:
    """The open signaling sessions, and whether the server still takes joins.

    Sessions register for their whole life (:meth:`opened` / :meth:`closed`, in pairs), so that a drain
    reaches the ones that have connected but not joined, which the SFU does not know.
    """

    def __init__(self) -> None:
        self._sessions: set[DrainableSession] = set()
        self.draining = False
        """True once :meth:`start` ran: new WebSockets are answered 503, joins are refused."""

    def opened(self, session: DrainableSession) -> None:
        self._sessions.add(session)

    def closed(self, session: DrainableSession) -> None:
        self._sessions.discard(session)

    def __len__(self) -> int:
        return len(self._sessions)

    def start(self) -> None:
        """Stop taking joins and end every session (idempotent); joined ones are the SFU's to close."""
        self.draining = True
        for session in list(self._sessions):
            session.shut_down()
