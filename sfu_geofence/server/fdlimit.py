"""The file-descriptor budget: ``RLIMIT_NOFILE`` raised at start-up, and the caps fitted under it.

Every WebSocket holds a descriptor and every participant's peer connection one UDP socket per ICE
address (two descriptors each with the C fan-out, which sends on its own dup: ``rtc.fanout``); a
server that runs out of descriptors fails everyone (accept, ICE, SQLite), not just the newcomer.
Services are often started with a soft limit of 1 024 and a much higher hard limit, so the
server raises its soft limit to the hard one, then lowers the global caps until their worst case fits.
"""

from __future__ import annotations

import logging
import resource
from dataclasses import dataclass, replace

from .caps import Caps

logger = logging.getLogger(__name__)

RESERVED = 64
"""Descriptors kept for everything else: listening sockets, the database, SQLite files and their
WAL, the event loop, logs, connections answered with a refusal."""


@dataclass(frozen=True, slots=True)
class FileBudget:
    """The open-file limit the server runs under."""

    soft: int
    """The limit in force (after raising it)."""
    hard: int
    before: int
    """The soft limit the process was started with."""

    def capacity(self, caps: Caps, sockets_per_participant: int) -> int:
        """Descriptors the caps may use at worst: every WebSocket, and every participant's sockets."""
        return caps.websockets + caps.participants * sockets_per_participant + RESERVED


def raise_open_file_limit() -> FileBudget:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit when allowed (always, unless unlimited)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            logger.warning("could not raise the open-file limit from %d to %d: %s", soft, target, exc)
        else:
            return FileBudget(target, hard, soft)
    return FileBudget(soft, hard, soft)


def fit_caps(caps: Caps, budget: FileBudget, sockets_per_participant: int) -> Caps:
    """``caps`` with the global WebSocket and participant caps lowered (in proportion) to fit the budget.

    A participant costs its WebSocket plus ``sockets_per_participant`` descriptors of UDP sockets.
    """
    available = budget.soft - RESERVED
    needed = budget.capacity(caps, sockets_per_participant) - RESERVED
    if needed <= available:
        return caps
    if available < 1 + sockets_per_participant:
        raise ValueError(f"an open-file limit of {budget.soft} leaves no room for a single participant")
    scale = available / needed
    websockets = max(1, int(caps.websockets * scale))
    participants = max(1, min(websockets, int(caps.participants * scale)))
    fitted = replace(
        caps,
        websockets=websockets,
        participants=participants,
        pending_joins=min(caps.pending_joins, participants),
    )
    logger.warning(
        "the open-file limit (%d) cannot hold %d WebSockets and %d participants: caps lowered to %d and %d",
        budget.soft,
        caps.websockets,
        caps.participants,
        websockets,
        participants,
    )
    return fitted
