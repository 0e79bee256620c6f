"""The aiohttp application: configuration, the SFU it hosts, the signaling route, the geofence.

:func:`create_app` is the media plane alone (what the SFU's own tests serve); :func:`create_geofenced_app`
is the product: the same application with a :class:`GeofenceHost` enforcing room policies and, when a
token is configured, the operator API under ``/api``.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field, replace

from aiohttp import web

from ..core.policystore import PolicySource
from ..rtc.ice import IcePolicy, IPNetwork
from ..sfu import AdmissionHook, Sfu, SfuConfig, SfuObserver
from .admin import AdminConfig, create_admin_app
from .enforcement import GeofenceHost
from .remote import ProxyConfig, install_trusted_proxies, participant_address
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
    turn_relays: tuple[IPNetwork, ...] = ()
    """Relay addresses of the TURN servers the operator declared (``--turn-relay``): media whose
    selected pair comes from one of these is relayed (the room's ``relayed`` rule decides it), any
    other is decided on its address, whatever candidate type the client wrote. Merged with
    ``ice.relay_networks`` at construction, so both say the same."""
    db_path: str | None = None
    """Geolocation database of the geofence; None: the embedded DB-IP Country Lite file."""
    proxies: ProxyConfig = field(default_factory=ProxyConfig)
    """Reverse proxies whose X-Forwarded-For is believed when placing a participant."""
    state: StateConfig = field(default_factory=StateConfig)
    """Where the geofence keeps policies and the audit log (None: in memory, lost at exit)."""
    redis_url: str | None = None
    """``--redis``: policies live in this Redis, shared with every node given the same one (the
    audit stays in ``state``); None: in ``state``'s SQLite, as a single process."""
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

    def __post_init__(self) -> None:
        ipaddress.ip_address(self.host)  # an address, not a name: say exactly where we listen
        relays = tuple(dict.fromkeys((*self.ice.relay_networks, *self.turn_relays)))
        # Frozen: one place (this) keeps the two views of the declared relays equal.
        object.__setattr__(self, "turn_relays", relays)
        object.__setattr__(self, "ice", replace(self.ice, relay_networks=relays))


CONFIG = web.AppKey("config", ServerConfig)
SFU = web.AppKey("sfu", Sfu)
GEOFENCE_HOST = web.AppKey("geofence_host", GeofenceHost)
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
    install_trusted_proxies(app, config.proxies)
    app.router.add_get("/ws", websocket_handler)
    app.cleanup_ctx.append(_sfu_lifetime)
    app.on_shutdown.append(_close_participants)
    return app


def create_geofenced_app(
    config: ServerConfig | None = None,
    observers: Iterable[SfuObserver] = (),
    policies: PolicySource | None = None,
) -> web.Application:
    """:func:`create_app` with the geofence enforcing every room, and the operator API if configured.

    Opens the database and the state directory now: a missing or corrupt file fails here, at start-up.
    ``policies``: a store opened by the caller (a cluster's, :mod:`sfu_geofence.cluster`); default the
    state directory's SQLite.
    """
    config = config or ServerConfig()
    app = create_app(config, observers=observers)
    host = GeofenceHost(
        app[SFU],
        database=config.db_path,
        policies=policies or config.state.open_policies(),
        audit=config.state.open_audit(),
    )
    app[GEOFENCE_HOST] = host
    app.on_cleanup.append(_close_geofence)  # after the SFU's participants have all left
    if config.admin.token is not None:
        app.add_subapp("/api", create_admin_app(host.geofence, host, config.admin.token))
    else:
        logger.info("no operator token configured: the operator API (/api) is not mounted")
    logger.info(
        "geofence: %s; state %s", host.geofence.database.label, config.state.directory or "in memory only"
    )
    if config.redis_url is not None:
        from ..cluster.redisstore import describe_url  # only a cluster node needs the client

        logger.info(
            "policies in Redis at %s, shared with every node using it", describe_url(config.redis_url)
        )
    return app


async def _close_geofence(app: web.Application) -> None:
    app[GEOFENCE_HOST].close()


async def _sfu_lifetime(app: web.Application) -> AsyncIterator[None]:
    yield
    await app[SFU].close()


async def _close_participants(app: web.Application) -> None:
    # On shutdown, before aiohttp cancels the WebSocket handlers: tell every client why.
    await app[SFU].close()


async def websocket_handler(request: web.Request) -> web.WebSocketResponse:
    """GET /ws: one signaling session (docs/protocol.md)."""
    config = request.app[CONFIG]
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
    await session.run()
    return ws
