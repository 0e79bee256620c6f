"""sfu-geofence: a per-country participant filter that WebRTC SFUs embed.

This package's top level is the geofence core only; importing it imports neither aiortc nor aiohttp.
"""

from .core.audit import AuditEvent, AuditLog, EventKind
from .core.contract import CONTRACT_VERSION
from .core.countries import country_code, is_country_code
from .core.decision import Decision, DecisionReason, Verdict
from .core.errors import (
    ClosedError,
    DatabaseError,
    GeofenceError,
    InvalidAddress,
    InvalidCountryCode,
    InvalidPolicy,
    ParticipantError,
)
from .core.geofence import DatabaseAlarm, EjectCallback, EjectRequest, Geofence, ParticipantView, Trigger
from .core.geolocation import DBIP_ATTRIBUTION, DatabaseInfo, Location, Locator, normalise_address
from .core.outcome import DatabaseReload, Ejection, Outcome, PolicyEnacted
from .core.policy import Enforcement, Mode, RelayedRule, RoomPolicy, UnknownRule
from .core.policystore import PolicyInForce, PolicyStore
from .core.storage import StorageError

__all__ = [
    "CONTRACT_VERSION",
    "DBIP_ATTRIBUTION",
    "AuditEvent",
    "AuditLog",
    "ClosedError",
    "DatabaseAlarm",
    "DatabaseError",
    "DatabaseInfo",
    "DatabaseReload",
    "Decision",
    "DecisionReason",
    "EjectCallback",
    "EjectRequest",
    "Ejection",
    "Enforcement",
    "EventKind",
    "Geofence",
    "GeofenceError",
    "InvalidAddress",
    "InvalidCountryCode",
    "InvalidPolicy",
    "Location",
    "Locator",
    "Mode",
    "Outcome",
    "ParticipantError",
    "ParticipantView",
    "PolicyEnacted",
    "PolicyInForce",
    "PolicyStore",
    "RelayedRule",
    "RoomPolicy",
    "StorageError",
    "Trigger",
    "UnknownRule",
    "Verdict",
    "country_code",
    "is_country_code",
    "normalise_address",
]
