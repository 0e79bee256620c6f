"""``sfu-geofence janus`` assembled: the gate, its public front and its admin listener.

The front (:mod:`.proxy`) is what clients reach instead of Janus. The admin listener (loopback by
default) serves the operator API of docs/operations.md under ``/api`` (the same handlers as
``serve``'s, reading the gate's geofence and the display names it saw) and the event handler's
``/janus-events`` (:mod:`.events`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

from ..core.addresses import IPNetwork
from ..janus.admin import JanusAdmin
from ..server.admin import create_admin_app
from ..server.admin_listener import AdminListenerConfig
from ..server.remote import ProxyConfig
from ..server.state import StateConfig
from .events import add_event_route
from .gate import JanusGate
from .proxy import LONG_POLL_SECONDS, create_front_app

REAP_INTERVAL_S = 5.0


@dataclass(frozen=True)
class GateConfig:
    """Everything ``sfu-geofence janus`` can be told."""

    janus_url: str = "http://127.0.0.1:8088/janus"
    """Janus's HTTP API (its ``janus.transport.http.jcfg``), reachable from the gate only."""
    admin_url: str = "http://127.0.0.1:7088/admin"
    """Janus's Admin API: the gate detaches ejected participants' handles through it."""
    admin_secret: str = ""
    """Janus's ``admin_secret`` (janus.jcfg); from the environment, never argv."""
    host: str = "127.0.0.1"
    port: int = 8089
    """Where clients reach the gate (HTTP API under ``/janus``, WebSocket API on ``/``)."""
    admin_listener: AdminListenerConfig = field(default_factory=AdminListenerConfig)
    token: str | None = None
    """The operator API's bearer token; without one only ``/janus-events`` is served there."""
    db_path: str | None = None
    state: StateConfig = field(default_factory=StateConfig)
    proxies: ProxyConfig = field(default_factory=ProxyConfig)
    turn_relays: tuple[IPNetwork, ...] = ()
    """Relay addresses of the TURN servers the operator declared: only media from these is relayed."""
    session_timeout: float = 60.0
    """An HTTP client's session silent this long is destroyed on Janus (Janus's own default)."""
    long_poll: float = LONG_POLL_SECONDS
    max_sessions: int = 4096
    """Sessions relayed at once (each holds a long poll to Janus); more are refused (490)."""
    max_sessions_per_address: int = 32
    """Sessions one client address may hold at once; more are refused (490)."""

    def __post_init__(self) -> None:
        ipaddress.ip_address(self.host)
        if not self.session_timeout > 0:
            raise ValueError(f"the session timeout must be positive, not {self.session_timeout}")


@dataclass(frozen=True)
class RunningGate:
    """A gate with its two applications (serve ``front`` on the public address, ``admin`` on the
    admin listener's)."""

    gate: JanusGate
    front: web.Application
    admin: web.Application


@contextlib.asynccontextmanager
async def running_gate(config: GateConfig) -> AsyncIterator[RunningGate]:
    """Open the database and state, build the gate and its applications; close all afterwards."""
    # One connection per relayed session's long poll, plus requests: no pool limit below the cap.
    connector = aiohttp.TCPConnector(limit=config.max_sessions + 256)
    async with aiohttp.ClientSession(connector=connector) as http:
        gate = JanusGate(
            http=http,
            api_url=config.janus_url,
            admin=JanusAdmin(http, config.admin_url, config.admin_secret),
            database=config.db_path,
            policies=config.state.open_policies(),
            audit=config.state.open_audit(),
            turn_relays=config.turn_relays,
            session_timeout=config.session_timeout,
            max_sessions=config.max_sessions,
            max_sessions_per_address=config.max_sessions_per_address,
        )
        admin = web.Application()
        add_event_route(admin, gate)
        if config.token is not None:
            admin.add_subapp("/api", create_admin_app(gate.geofence, gate, config.token))
        reaper = asyncio.ensure_future(_reap(gate))
        try:
            yield RunningGate(gate, create_front_app(gate, config.proxies, config.long_poll), admin)
        finally:
            reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reaper
            await gate.close()


async def _reap(gate: JanusGate) -> None:
    while True:
        await asyncio.sleep(REAP_INTERVAL_S)
        await gate.reap()
