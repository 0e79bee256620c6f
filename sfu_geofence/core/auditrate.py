"""Refusals audited at a bounded rate: above it they are counted, one summary row per kind of refusal.

Every admitted participant holds a place (bounded by the server's caps), but refusals cost the refused
client nothing: one row each would let anyone who can connect fill the operator's disk. Up to a
token-bucket rate each refusal gets its own row; beyond it, refusals are counted by outcome, country,
reason and policy version (never by room or address, which the client chooses) and written as one
row per such shape, with its ``count``, about once a second.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from .audit import AuditEvent, EventKind


@dataclass(frozen=True, slots=True)
class AuditRate:
    """How many refusals a second get a row of their own."""

    refusals_per_second: float = 20.0
    burst: int = 200
    """Refusals recorded one by one at once before the rate applies."""
    summary_interval: float = 1.0
    """Seconds between two summaries of the refusals counted meanwhile."""
    max_shapes: int = 4096
    """Distinct (outcome, country, reason, version) counted at once; beyond, into one catch-all."""

    def __post_init__(self) -> None:
        if not (self.refusals_per_second > 0 and self.burst >= 1 and self.summary_interval > 0):
            raise ValueError("audit rate: refusals_per_second, burst and summary_interval must be positive")


_Shape = tuple[str, str | None, str | None, int | None, str | None, str | None]
"""outcome, country, reason, policy version, database, rule."""


class RefusalCounter:
    """Decides which refusals get a row, and counts the others until :meth:`summaries` is due."""

    def __init__(self, rate: AuditRate, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self._clock = clock
        self._tokens = float(rate.burst)
        self._stamp = clock()
        self._counted: dict[_Shape, int] = {}
        self._since: datetime | None = None
        self._first_counted = 0.0
        self.suppressed = 0
        """Refusals counted instead of recorded one by one, since start-up."""

    def record_one(self) -> bool:
        """May this refusal have its own row? (Takes a token; False: :meth:`count` it.)"""
        now = self._clock()
        rate = self.rate
        self._tokens = min(rate.burst, self._tokens + (now - self._stamp) * rate.refusals_per_second)
        self._stamp = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False

    def count(self, event: AuditEvent) -> None:
        """Count a refusal that gets no row of its own."""
        shape: _Shape = (
            event.outcome,
            event.country,
            event.reason,
            event.policy_version,
            event.database,
            event.rule,
        )
        if shape not in self._counted and len(self._counted) >= self.rate.max_shapes:
            shape = (event.outcome, None, None, None, None, None)
        if not self._counted:
            self._since, self._first_counted = datetime.now(UTC), self._clock()
        self._counted[shape] = self._counted.get(shape, 0) + 1
        self.suppressed += 1

    def summaries(self, *, force: bool = False) -> list[AuditEvent]:
        """The summary rows due (one per shape counted), and forget them; ``force``: due now."""
        if not self._counted or (
            not force and self._clock() - self._first_counted < self.rate.summary_interval
        ):
            return []
        since = self._since
        assert since is not None
        detail = (
            f"refusals counted, not recorded one by one, since {since.isoformat(timespec='seconds')} "
            f"(audit rate limit {self.rate.refusals_per_second:g}/s)"
        )
        rows = [
            AuditEvent(
                kind=EventKind.ADMISSION,
                outcome=outcome,
                country=country,
                reason=reason,
                policy_version=version,
                database=database,
                rule=rule,
                detail=detail,
                count=n,
            )
            for (outcome, country, reason, version, database, rule), n in self._counted.items()
        ]
        self._counted = {}
        return rows
