"""``--audit-retention DAYS``: the audit log keeps events for so many days, then forgets them.

Pruning runs at start-up and then every hour, on the event loop, in batches of at most
:data:`BATCH` rows (:meth:`AuditLog.prune`) with a yield between batches, so a large backlog never
stalls anyone's media. Deleted rows leave free pages in ``audit.sqlite`` that new events reuse: the file
stops growing rather than shrinking (``sqlite3 audit.sqlite VACUUM`` while the server is stopped
gives the space back).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from ..core.audit import AuditLog
from ..core.errors import ClosedError
from ..core.storage import StorageError

logger = logging.getLogger(__name__)

BATCH = 1000
"""Rows deleted per step (a few milliseconds of SQLite work)."""
INTERVAL = 3600.0
"""Seconds between two prunings."""


class AuditRetention:
    """Deletes audit events older than ``days`` days, now and every ``interval`` seconds."""

    def __init__(
        self,
        audit: AuditLog,
        days: float,
        *,
        interval: float = INTERVAL,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if not days > 0:
            raise ValueError(f"the audit retention must be a positive number of days, not {days}")
        self.audit = audit
        self.keep = timedelta(days=days)
        self.interval = interval
        self._clock = clock

    async def prune(self) -> int:
        """Delete every event older than the retention, a batch at a time; returns how many."""
        cutoff = self._clock() - self.keep
        total = 0
        while True:
            pruned = self.audit.prune(cutoff, batch=BATCH)
            total += pruned
            if pruned < BATCH:
                break
            await asyncio.sleep(0)  # let media and signaling run between batches
        if total:
            logger.info("audit retention: %d events older than %s deleted", total, cutoff.isoformat())
        return total

    async def prune_safely(self) -> bool:
        """:meth:`prune`, logging a storage error (tried again next time); False once the log is closed."""
        try:
            await self.prune()
        except ClosedError:
            return False
        except StorageError as exc:  # a locked or broken file
            logger.error("audit retention: %s", exc)
        return True

    async def run(self, *, delay: float = 0.0) -> None:
        """Prune after ``delay`` seconds and then every interval, until cancelled or the log closes."""
        while True:
            await asyncio.sleep(delay)
            delay = self.interval
            if not await self.prune_safely():
                return
