"""The admin listener: the operator API (``/api``) and ``/metrics``, on an address and port of their own.

The public listener serves signaling (and the demo's meeting page) only, so whoever can reach a
meeting cannot even reach the API's login surface. The admin listener binds 127.0.0.1 by default;
to reach it from elsewhere, put a TLS-terminating reverse proxy in front of it (docs/operations.md).
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass

from aiohttp import web

from .admin import ClusterView, create_admin_app
from .enforcement import GeofenceHost
from .metrics import CONTENT_TYPE, Metrics

logger = logging.getLogger(__name__)

DEFAULT_ADMIN_PORT = 8081


@dataclass(frozen=True, slots=True)
class AdminListenerConfig:
    """Where the operator API and the metrics listen (``--admin-host``, ``--admin-port``)."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_ADMIN_PORT
    """0: any free port (printed at start-up)."""

    def __post_init__(self) -> None:
        ipaddress.ip_address(self.host)  # an address, not a name: say exactly where we listen
        if not 0 <= self.port <= 65535:
            raise ValueError(f"--admin-port {self.port} is out of range")


METRICS = web.AppKey("admin_metrics", Metrics)


def create_admin_listener_app(
    host: GeofenceHost, metrics: Metrics, token: str | None, cluster: ClusterView | None = None
) -> web.Application:
    """``/metrics`` always; the operator API under ``/api`` when a token is configured (with the
    whole cluster's view given ``cluster``)."""
    app = web.Application()
    app[METRICS] = metrics
    app.router.add_get("/metrics", serve_metrics)
    if token is not None:
        app.add_subapp("/api", create_admin_app(host.geofence, host, token, cluster))
    else:
        logger.info("no operator token configured: the operator API (/api) is not mounted")
    return app


async def serve_metrics(request: web.Request) -> web.Response:
    """GET /metrics: the Prometheus text format."""
    body = request.app[METRICS].exposition()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE, "Cache-Control": "no-store"})
