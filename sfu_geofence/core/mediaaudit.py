"""Media-address reports audited a bounded number of times per session, however many addresses.

A host reports every selected ICE pair, and a client chooses its addresses: an IPv6 /64 gives it
unlimited ones, and alternating checks from two addresses would be a row per check. Every report is
still decided (and a restricted one still ejects at once); only the audit is bounded. A session's
first ``distinct`` (address, relayed, decision) entries get a row each, once; a report already
audited gets none; beyond ``distinct``, new entries are counted per decision and written as summary
rows (``count``, no address) at most once per ``summary_interval``, and when the session ends.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum

from .decision import Decision


@dataclass(frozen=True, slots=True)
class MediaAuditLimit:
    """How much of one session's media reports the audit keeps."""

    distinct: int = 8
    """(address, relayed, decision) entries per session audited one by one."""
    summary_interval: float = 1.0
    """Seconds between two summaries of one session's entries counted meanwhile."""
    max_shapes: int = 16
    """Distinct decisions counted per session at once; beyond, counted by outcome only."""

    def __post_init__(self) -> None:
        if not (self.distinct >= 1 and self.summary_interval > 0 and self.max_shapes >= 1):
            raise ValueError("media audit limit: distinct, summary_interval and max_shapes must be positive")


class Report(Enum):
    """What the audit does with one media report."""

    NEW = "new"
    """Not audited before and within the limit: one row."""
    SEEN = "seen"
    """Already audited for this session (e.g. a new port, or back to an earlier address): no row."""
    COUNTED = "counted"
    """Beyond the limit: counted in the session's next summary."""


Entry = tuple[str, bool, Decision]
"""Address, relayed, decision."""


class MediaAudits:
    """One session's audited media entries, and the reports counted beyond them."""

    __slots__ = ("_audited", "_clock", "_counted", "_first_counted", "_since", "limit")

    def __init__(self, limit: MediaAuditLimit, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self._clock = clock
        self._audited: set[Entry] = set()
        self._counted: dict[Decision | str, int] = {}
        self._since: datetime | None = None
        self._first_counted = 0.0

    def report(self, entry: Entry) -> Report:
        """Classify one report; a NEW one is remembered, a COUNTED one counted."""
        if entry in self._audited:
            return Report.SEEN
        if len(self._audited) < self.limit.distinct:
            self._audited.add(entry)
            return Report.NEW
        decision = entry[2]
        key: Decision | str = decision
        if key not in self._counted and len(self._counted) >= self.limit.max_shapes:
            key = decision.outcome
        if not self._counted:
            self._since, self._first_counted = datetime.now(UTC), self._clock()
        self._counted[key] = self._counted.get(key, 0) + 1
        return Report.COUNTED

    def due(self, *, force: bool = False) -> list[tuple[Decision | str, int]]:
        """The counts to write now (per decision, or per outcome beyond ``max_shapes``), forgotten."""
        if not self._counted or (
            not force and self._clock() - self._first_counted < self.limit.summary_interval
        ):
            return []
        counted, self._counted = self._counted, {}
        return list(counted.items())

    def detail(self) -> str:
        """A summary row's detail: what it counts, and since when."""
        since = self._since.isoformat(timespec="seconds") if self._since else "?"
        return (
            f"media reports from new addresses counted, not recorded one by one, since {since} "
            f"(more than {self.limit.distinct} distinct per session)"
        )
