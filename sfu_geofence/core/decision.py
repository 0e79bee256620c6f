"""A decision is a value: what the policy in force says about one address, and why.

Decisions are shared between calls (one per policy version, location and reason), so they hold no
participant id and no address; the audit log adds those.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from .geolocation import Source
from .outcome import Outcome


class Verdict(StrEnum):
    ADMIT = "admit"
    REFUSE = "refuse"


class DecisionReason(StrEnum):
    """Why the verdict is what it is (stable strings: they are stored in the audit log)."""

    COUNTRY_NOT_RESTRICTED = "country_not_restricted"
    """The country is not on the deny-list / is on the allow-list."""
    COUNTRY_DENIED = "country_denied"
    """Deny-list policy and the country is on it."""
    COUNTRY_NOT_ALLOWED = "country_not_allowed"
    """Allow-list policy and the country is not on it."""
    UNKNOWN_ADMITTED = "unknown_admitted"
    """The database does not place the address; the policy admits unknown countries."""
    UNKNOWN_REFUSED = "unknown_refused"
    """The database does not place the address; the policy refuses unknown countries."""
    LOOKUP_FAILED = "lookup_failed"
    """The database's data for the address is corrupt: treated as unknown."""
    EXEMPT_PARTICIPANT = "exempt_participant"
    """The participant's identity is exempt from the room's policy."""
    EXEMPT_NETWORK = "exempt_network"
    """The address is in a network exempt from the room's policy."""
    RELAYED_ADMITTED = "relayed_admitted"
    """Media relayed through TURN: the relay's address says nothing of the participant; admitted."""
    RELAYED_REFUSED = "relayed_refused"
    """Media relayed through TURN and the policy refuses relayed media."""


@dataclass(frozen=True, slots=True)
class Decision:
    """The verdict on one address under one policy version and one database build."""

    verdict: Verdict
    """What the policy says. In monitor mode a REFUSE is only reported, see ``enforced``."""
    enforced: bool
    """False when the room's policy is in monitor (report-only) mode: nobody is refused or ejected."""
    reason: DecisionReason
    """Why the verdict is what it is (the audit's ``reason`` unless an operator stated one; not a
    WebSocket close reason, which the SFU's ``CloseReason`` names)."""
    country: str | None
    """ISO 3166-1 alpha-2 code the decision used, or None when unknown."""
    source: Source | None
    """Which database field gave ``country``."""
    database: str
    """Label of the database build, e.g. ``DB-IP Country Lite 2026-06-01``."""
    policy_version: int
    """Version of the policy in force (bumped by every policy change, persisted)."""
    rule: str
    """The policy in force, as operators write it, e.g. ``deny CN,IR; unknown admit; enforce``."""

    @property
    def admitted(self) -> bool:
        """Whether the host lets the participant in (or keeps it): true unless an enforced REFUSE."""
        return self.verdict is Verdict.ADMIT or not self.enforced

    @property
    def outcome(self) -> Outcome:
        """``admitted``, ``refused`` or (monitor mode) ``would_refuse``: the audit log's wording."""
        if self.verdict is Verdict.ADMIT:
            return Outcome.ADMITTED
        return Outcome.REFUSED if self.enforced else Outcome.WOULD_REFUSE
