"""What the geofence did: the audit's outcome words, and what a change enacted.

An operator who changes a policy or reloads the database is told who that ejected (or, in monitor
mode, would have) by the core itself, which did it: the audit log is best-effort and is not read back.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from .geolocation import DatabaseInfo


class Outcome(StrEnum):
    """An audit event's ``outcome`` (stable strings: stored, filtered on, shown in reports)."""

    ADMITTED = "admitted"
    REFUSED = "refused"
    WOULD_REFUSE = "would_refuse"
    """Monitor mode: the policy refuses, nobody is refused."""
    ERROR = "error"
    """The address could not be decided on (not an address, or the geofence closed)."""
    REQUESTED = "requested"
    """An ejection asked of the host."""
    WOULD_EJECT = "would_eject"
    """Monitor mode: the policy ejects, nobody is ejected."""
    EJECT_FAILED = "eject_failed"
    """The host did not take an ejection; asked again at the next re-evaluation."""
    COMPLETED = "completed"
    """An ejected participant has left."""
    CHANGED = "changed"
    """A room's own policy was set, changed or removed."""
    DEFAULT_CHANGED = "default_changed"
    LOADED = "loaded"
    """A database was loaded (at start-up or by a reload)."""
    RELOAD_FAILED = "reload_failed"


@dataclass(frozen=True, slots=True)
class Ejection:
    """One participant a change ejected (``REQUESTED``; ``EJECT_FAILED`` when the host did not
    take it) or, in monitor mode, would have (``WOULD_EJECT``)."""

    room: str
    participant: str
    outcome: Outcome
    country: str | None
    """The country the deciding address is placed in (None: unknown)."""


@dataclass(frozen=True, slots=True)
class Enacted:
    """Who a change ejected or would have, in the order the core acted."""

    ejections: tuple[Ejection, ...]

    @property
    def ejected(self) -> tuple[Ejection, ...]:
        """The ejections asked of the host."""
        return tuple(e for e in self.ejections if e.outcome is Outcome.REQUESTED)

    @property
    def would_eject(self) -> tuple[Ejection, ...]:
        """Monitor mode: who the policy would have ejected."""
        return tuple(e for e in self.ejections if e.outcome is Outcome.WOULD_EJECT)


@dataclass(frozen=True, slots=True)
class PolicyEnacted(Enacted):
    """What a policy change did: its version, and who it ejected."""

    version: int
    """The policy version the change made (a catch-up that covered it: the version it reached)."""


@dataclass(frozen=True, slots=True)
class DatabaseReload(Enacted):
    """What a database reload did: the database now in use, and who it ejected."""

    database: DatabaseInfo
