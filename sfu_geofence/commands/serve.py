"""``sfu-geofence serve``: run the SFU with WebSocket signaling (see :mod:`sfu_geofence.server.serve`)."""

from __future__ import annotations

from ..server.serve import HELP, NAME, configure, run

__all__ = ["HELP", "NAME", "configure", "run"]
