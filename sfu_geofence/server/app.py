"""The aiohttp application: configuration, the SFU it hosts, and the signaling route."""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field

from aiohttp import web

from ..rtc.ice import IcePolicy
from ..sfu import AdmissionHook, Sfu, SfuConfig, SfuObserver
from .signaling import SignalingSession


@dataclass(frozen=True)
class ServerConfig:
    """Everything ``sfu-geofence serve`` can be told."""

    host: str = "127.0.0.1"
    """HTTP/WebSocket listen address."""
    port: int = 8080
    ice: IcePolicy = field(default_factory=IcePolicy)
    """ICE bind addresses and the remote ranges media may come from."""
    db_path: str | None = None
    """Geolocation database (used by the geofence once it is wired in)."""
    max_message_bytes: int = 256 * 1024
    """Largest signaling message accepted; larger ones close the session with 4413."""
    heartbeat: float = 2.0
    """WebSocket ping interval; a client silent for 1.5x this long is disconnected."""
    negotiation_timeout: float = 15.0
    """Seconds a client has to answer an offer (else 4408)."""
    join_timeout: float = 10.0
    """Seconds a new WebSocket has to send ``join`` (else 4408)."""
    max_errors: int = 10
    """Non-fatal protocol errors tolerated per session before it is closed with 4400."""
    max_participants_per_room: int = 64

    def __post_init__(self) -> None:
        ipaddress.ip_address(self.host)  # an address, not a name: say exactly where we listen


CONFIG = web.AppKey("config", ServerConfig)
SFU = web.AppKey("sfu", Sfu)


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
            max_participants_per_room=config.max_participants_per_room,
        ),
        admission=admission,
        observers=observers,
    )
    app.router.add_get("/ws", websocket_handler)
    app.cleanup_ctx.append(_sfu_lifetime)
    app.on_shutdown.append(_close_participants)
    return app


async def _sfu_lifetime(app: web.Application) -> AsyncIterator[None]:
    yield
    await app[SFU].close()


async def _close_participants(app: web.Application) -> None:
    # On shutdown, before aiohttp cancels the WebSocket handlers: tell every client why.
    await app[SFU].close()


async def websocket_handler(request: web.Request) -> web.WebSocketResponse:
    """GET /ws: one signaling session (docs/protocol.md)."""
    config = request.app[CONFIG]
    ws = web.WebSocketResponse(heartbeat=config.heartbeat, max_msg_size=2 * config.max_message_bytes)
    await ws.prepare(request)
    session = SignalingSession(
        request.app[SFU],
        ws,
        address=request.remote or "",
        max_message_bytes=config.max_message_bytes,
        max_errors=config.max_errors,
        join_timeout=config.join_timeout,
    )
    await session.run()
    return ws
