"""The aiohttp application: configuration, the SFU it hosts, the signaling route, the geofence.

:func:`create_app` is the media plane alone (what the SFU's own tests serve); :func:`create_geofenced_app`
is the product: the same application with a :class:`GeofenceHost` enforcing room policies and, when a
token is configured, the operator API under ``/api``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import AsyncIterator, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from ..rtc.ice import IcePolicy
from ..sfu import AdmissionHook, Sfu, SfuConfig, SfuObserver
from .admin import AdminConfig, create_admin_app
from .dbwatch import DatabaseWatch
from .drain import Drain
from .enforcement import GeofenceHost
from .remote import ProxyConfig, install_trusted_proxies, participant_address
from .retention import AuditRetention
from .signaling import SignalingSession
from .state import StateConfig

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerConfig:
    """Everything ``sfu-geofence serve`` can be told."""

    host: str = "127.0.0.1"
    """HTTP/WebSocket listen address."""
    port: int = 8080
    ice: IcePolicy = field(default_factory=IcePolicy)
    """ICE bind addresses and the remote ranges media may come from."""
    db_path: str | None = None
    """Geolocation database of the geofence; None: the embedded DB-IP Country Lite file."""
    proxies: ProxyConfig = field(default_factory=ProxyConfig)
    """Reverse proxies whose X-Forwarded-For is believed when placing a participant."""
    state: StateConfig = field(default_factory=StateConfig)
    """Where the geofence keeps policies and the audit log (None: in memory, lost at exit)."""
    admin: AdminConfig = field(default_factory=AdminConfig)
    """The operator API's token; without one the API is not mounted."""
    max_message_bytes: int = 256 * 1024
    """Largest signaling message accepted; larger ones close the session with 4413."""
    heartbeat: float = 2.0
    """WebSocket ping interval; a client silent for 1.5x this long is disconnected."""
    negotiation_timeout: float = 15.0
    """Seconds a client has to answer an offer (else 4408)."""
    connect_timeout: float = 15.0
    """Seconds from a client's first answer to its media connection being up (else 4410)."""
    join_timeout: float = 10.0
    """Seconds a new WebSocket has to send ``join`` (else 4408)."""
    max_errors: int = 10
    """Non-fatal protocol errors tolerated per session before it is closed with 4400."""
    max_participants_per_room: int = 64
    db_watch_interval: float = 5.0
    """Seconds between two looks at the ``db_path`` file, reloaded when replaced; 0: no watch."""
    drain_timeout: float = 10.0
    """Seconds a stop (SIGTERM) may take to tell everyone and flush the audit before the process exits."""

    def __post_init__(self) -> None:
        ipaddress.ip_address(self.host)  # an address, not a name: say exactly where we listen
        if self.db_watch_interval < 0:
            raise ValueError(
                f"the database watch interval must be 0 (off) or more, not {self.db_watch_interval}"
            )
        if not self.drain_timeout > 0:
            raise ValueError(f"the drain timeout must be positive, not {self.drain_timeout}")


CONFIG = web.AppKey("config", ServerConfig)
SFU = web.AppKey("sfu", Sfu)
GEOFENCE_HOST = web.AppKey("geofence_host", GeofenceHost)
DRAIN = web.AppKey("drain", Drain)
DATABASE_WATCH = web.AppKey("database_watch", DatabaseWatch)
AUDIT_RETENTION = web.AppKey("audit_retention", AuditRetention)
IDENTITY = web.RequestKey("identity", str)
"""Set by an authentication middleware of the deployment on ``/ws`` requests: who the client is,
as the server vouches for it (a token's subject). Rooms' ``exempt_participants`` match it."""


def create_app(
    config: ServerConfig | None = None,
    admission: AdmissionHook | None = None,
    observers: Iterable[SfuObserver] = (),
) -> web.Application:
    """Build the application; the SFU closes every participant when the application shuts down."""
    config = config or ServerConfig()
    app = web.Application()
    app[CONFIG] = config
    app[SFU] = Sfu(
        SfuConfig(
            ice=config.ice,
            negotiation_timeout=config.negotiation_timeout,
            connect_timeout=config.connect_timeout,
            max_participants_per_room=config.max_participants_per_room,
        ),
        admission=admission,
        observers=observers,
    )
    app[DRAIN] = Drain()
    install_trusted_proxies(app, config.proxies)
    app.router.add_get("/ws", websocket_handler)
    app.cleanup_ctx.append(_sfu_lifetime)
    app.on_shutdown.append(_drain)
    return app


def create_geofenced_app(
    config: ServerConfig | None = None, observers: Iterable[SfuObserver] = ()
) -> web.Application:
    """:func:`create_app` with the geofence enforcing every room, and the operator API if configured.

    Opens the database and the state directory now: a missing or corrupt file fails here, at start-up.
    """
    config = config or ServerConfig()
    app = create_app(config, observers=observers)
    host = GeofenceHost(
        app[SFU],
        database=config.db_path,
        policies=config.state.open_policies(),
        audit=config.state.open_audit(),
    )
    app[GEOFENCE_HOST] = host
    if config.db_path is not None and config.db_watch_interval > 0:
        app[DATABASE_WATCH] = DatabaseWatch(host.geofence, config.db_watch_interval)
        app.cleanup_ctx.append(_watch_database)  # its cleanup runs before the geofence closes
    if config.state.audit_retention_days is not None:
        app[AUDIT_RETENTION] = AuditRetention(host.geofence.audit, config.state.audit_retention_days)
        app.cleanup_ctx.append(_retain_audit)
    app.on_cleanup.append(_close_geofence)  # after the SFU's participants have all left
    if config.admin.token is not None:
        app.add_subapp("/api", create_admin_app(host.geofence, host, config.admin.token))
    else:
        logger.info("no operator token configured: the operator API (/api) is not mounted")
    logger.info(
        "geofence: %s; state %s", host.geofence.database.label, config.state.directory or "in memory only"
    )
    return app


async def _watch_database(app: web.Application) -> AsyncIterator[None]:
    async with _running(app[DATABASE_WATCH].run()):
        yield


async def _retain_audit(app: web.Application) -> AsyncIterator[None]:
    retention = app[AUDIT_RETENTION]
    await retention.prune_safely()  # at start-up, before anyone joins
    async with _running(retention.run(delay=retention.interval)):
        yield


@contextlib.asynccontextmanager
async def _running(work: Coroutine[Any, Any, None]) -> AsyncIterator[None]:
    """Run ``work`` as a task for the life of the application (cancelled before the geofence closes)."""
    task = asyncio.ensure_future(work)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _close_geofence(app: web.Application) -> None:
    app[GEOFENCE_HOST].close()


async def _sfu_lifetime(app: web.Application) -> AsyncIterator[None]:
    yield
    await app[SFU].close()


async def _drain(app: web.Application) -> None:
    # On shutdown (the listening socket is closed already), before aiohttp cancels the WebSocket
    # handlers: no more joins, and every client told why, joined or not.
    app[DRAIN].start()
    await app[SFU].close()


async def websocket_handler(request: web.Request) -> web.WebSocketResponse:
    """GET /ws: one signaling session (docs/protocol.md)."""
    config = request.app[CONFIG]
    drain = request.app[DRAIN]
    if drain.draining:
        raise web.HTTPServiceUnavailable(text="the server is shutting down")
    address = participant_address(request)  # before the handshake: a bad one is an HTTP 400
    ws = web.WebSocketResponse(heartbeat=config.heartbeat, max_msg_size=2 * config.max_message_bytes)
    await ws.prepare(request)
    session = SignalingSession(
        request.app[SFU],
        ws,
        address=address,
        max_message_bytes=config.max_message_bytes,
        max_errors=config.max_errors,
        identity=request.get(IDENTITY),
        join_timeout=config.join_timeout,
    )
    drain.opened(session)
    try:
        await session.run()
    finally:
        drain.closed(session)
    return ws
