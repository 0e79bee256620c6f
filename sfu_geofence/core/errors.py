"""Errors of the geofence core: each says which input was wrong and why."""

from __future__ import annotations


class GeofenceError(Exception):
    """Base class of every error the core raises on purpose."""


class InvalidAddress(GeofenceError, ValueError):
    """The text given as an address is not an IP address (in canonical notation)."""


class DatabaseError(GeofenceError):
    """A geolocation database file is missing, unreadable or corrupt."""


class InvalidCountryCode(GeofenceError, ValueError):
    """Not an ISO 3166-1 alpha-2 country code."""


class InvalidPolicy(GeofenceError, ValueError):
    """A room policy whose fields do not fit together or cannot be parsed."""


class ParticipantError(GeofenceError):
    """A participant id the core does not know, or one it already knows, for the call made."""


class ClosedError(GeofenceError):
    """The object was used after close()."""
