"""The edge: aiohttp application factory, WebSocket signaling, the geofence's wiring, the operator API."""

from .app import CONFIG, GEOFENCE_HOST, IDENTITY, SFU, ServerConfig, create_app, create_geofenced_app
from .enforcement import GeofenceHost

__all__ = [
    "CONFIG",
    "GEOFENCE_HOST",
    "IDENTITY",
    "SFU",
    "GeofenceHost",
    "ServerConfig",
    "create_app",
    "create_geofenced_app",
]
