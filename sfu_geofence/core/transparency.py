"""The transparency report: who was excluded from where, under which rule, since when, and who decided.

Read from an audit log (``audit.sqlite`` of a state directory), never from the running server: the
report can be made on a copy of the file, and making it changes nothing (the file is opened
read-only). It counts

* **refusals**: joins refused by a policy in force (``admission``/``refused``), by day, room, country
  and the decision's reason (``country_denied``, ``country_not_allowed``, ``unknown_refused``,
  ``relayed_refused``); refusals over the audit's rate are summary rows with a ``count`` and no room
  (:mod:`.auditrate`), counted in room :data:`UNRECORDED_ROOM`;
* **ejections**: ejections requested (``ejection``/``requested``), by day, room, country and trigger
  (``policy_changed``, ``database_reloaded``, ``media_address``, ``operator``);

and lists every **policy change** (a room's, or the server default's) with its rule, who made it and
why. Monitor mode's ``would_refuse``/``would_eject`` exclude nobody and are not counted. Days are UTC.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Literal

from .audit import EventKind
from .errors import GeofenceError
from .geofence import Trigger
from .outcome import Outcome

ExclusionKind = Literal["refusal", "ejection"]
Dimension = Literal["day", "room", "country", "trigger"]
DIMENSIONS: tuple[Dimension, ...] = ("day", "room", "country", "trigger")
UNKNOWN_COUNTRY = "unknown"
"""How a participant the database did not place is counted (its country is null in the audit)."""
UNRECORDED_ROOM = "(not recorded)"
"""The room of refusals over the audit's rate: counted in summary rows, which never name the room
(a refused client chooses it, so it could make the counter grow without bound)."""


class ReportError(GeofenceError):
    """The audit log cannot be read (missing, not an audit log, corrupt)."""


@dataclass(frozen=True, slots=True)
class Exclusion:
    """How many participants were refused (or ejected) on one day, in one room, from one country, for
    one reason."""

    kind: ExclusionKind
    day: date
    room: str
    country: str
    """ISO 3166-1 alpha-2, or ``unknown``."""
    trigger: str
    """A refusal's reason code, or an ejection's trigger."""
    count: int


@dataclass(frozen=True, slots=True)
class PolicyChange:
    """One change of a room's policy, or of the server default (``room`` None)."""

    time: datetime
    room: str | None
    rule: str | None
    """The policy in force after the change, as text."""
    version: int | None
    actor: str | None
    """Who made it, as the operator said (null: not said)."""
    reason: str | None
    """Why, as the operator said."""


@dataclass(frozen=True, slots=True)
class TransparencyReport:
    """Everything the report says, for events recorded at or after ``since``."""

    since: datetime
    generated: datetime
    exclusions: tuple[Exclusion, ...]
    policy_changes: tuple[PolicyChange, ...]

    def total(self, kind: ExclusionKind) -> int:
        return sum(e.count for e in self.exclusions if e.kind == kind)

    def by(self, kind: ExclusionKind, dimension: Dimension) -> dict[str, int]:
        """Counts of ``kind`` per value of ``dimension`` (days as ``YYYY-MM-DD``), largest first."""
        counts: Counter[str] = Counter()
        for exclusion in self.exclusions:
            if exclusion.kind == kind:
                value = getattr(exclusion, dimension)
                counts[value.isoformat() if isinstance(value, date) else value] += exclusion.count
        return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))

    def to_json(self) -> dict[str, Any]:
        return {
            "since": self.since.isoformat(),
            "generated": self.generated.isoformat(),
            **{
                f"{kind}s": {
                    "total": self.total(kind),
                    **{f"by_{dimension}": self.by(kind, dimension) for dimension in DIMENSIONS},
                    "rows": [
                        {
                            "day": e.day.isoformat(),
                            "room": e.room,
                            "country": e.country,
                            "trigger": e.trigger,
                            "count": e.count,
                        }
                        for e in self.exclusions
                        if e.kind == kind
                    ],
                }
                for kind in ("refusal", "ejection")
            },
            "policy_changes": [
                {
                    "time": c.time.isoformat(),
                    "room": c.room,
                    "rule": c.rule,
                    "version": c.version,
                    "actor": c.actor,
                    "reason": c.reason,
                }
                for c in self.policy_changes
            ],
        }


_REFUSALS = """
SELECT substr(time, 1, 10), room, country, reason, sum(count) FROM audit
WHERE kind = ? AND outcome = ? AND time >= ? GROUP BY 1, 2, 3, 4
"""
_EJECTIONS = """
SELECT substr(time, 1, 10), room, country,
       CASE WHEN detail LIKE ? THEN ? ELSE detail END, sum(count) FROM audit
WHERE kind = ? AND outcome = ? AND time >= ? GROUP BY 1, 2, 3, 4
"""
_POLICY_CHANGES = """
SELECT time, room, rule, policy_version, actor, reason FROM audit WHERE kind = ? AND time >= ? ORDER BY id
"""


def read_report(audit_path: Path, since: datetime, *, now: datetime | None = None) -> TransparencyReport:
    """The report of the audit log at ``audit_path`` from ``since`` on; raises ReportError."""
    if not audit_path.is_file():
        raise ReportError(f"no audit log at {str(audit_path)!r}")
    since = since if since.tzinfo else since.replace(tzinfo=UTC)
    start = since.astimezone(UTC).isoformat()
    try:
        db = sqlite3.connect(f"{audit_path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise ReportError(f"cannot open {str(audit_path)!r}: {exc}") from None
    try:
        refusals = db.execute(_REFUSALS, (str(EventKind.ADMISSION), str(Outcome.REFUSED), start)).fetchall()
        operator = (f"{Trigger.OPERATOR}:%", str(Trigger.OPERATOR))
        ejections = db.execute(
            _EJECTIONS, (*operator, str(EventKind.EJECTION), str(Outcome.REQUESTED), start)
        ).fetchall()
        changes = db.execute(_POLICY_CHANGES, (str(EventKind.POLICY), start)).fetchall()
    except sqlite3.Error as exc:
        raise ReportError(f"{str(audit_path)!r} is not a readable audit log: {exc}") from None
    finally:
        db.close()
    return TransparencyReport(
        since=since,
        generated=now or datetime.now(UTC),
        exclusions=(*_exclusions("refusal", refusals), *_exclusions("ejection", ejections)),
        policy_changes=tuple(
            PolicyChange(datetime.fromisoformat(time), room, rule, version, actor, reason)
            for time, room, rule, version, actor, reason in changes
        ),
    )


def _exclusions(kind: ExclusionKind, rows: Iterable[tuple[Any, ...]]) -> list[Exclusion]:
    found = [
        Exclusion(
            kind,
            date.fromisoformat(day),
            room or UNRECORDED_ROOM,
            country or UNKNOWN_COUNTRY,
            trigger or "",
            count,
        )
        for day, room, country, trigger, count in rows
    ]
    return sorted(found, key=lambda e: (e.day, e.room, e.country, e.trigger))
