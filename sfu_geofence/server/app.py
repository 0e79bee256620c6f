"""The aiohttp application: configuration, the SFU it hosts, the signaling route, the geofence.

:func:`create_app` is the media plane alone (what the SFU's own tests serve); :func:`create_geofenced_app`
is the product: the same application with a :class:`GeofenceHost` enforcing room policies, and the
admin listener's application (``/metrics``, and the operator API under ``/api`` when a token is
configured) in ``app[ADMIN_APP]``, served on an address and port of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from aiohttp import web

from ..core.addresses import IPNetwork, unmapped_network
from ..core.policystore import PolicySource
from ..protocol import IceServer
from ..rtc.ice import IcePolicy
from ..sfu import AdmissionHook, CloseReason, Participant, Sfu, SfuConfig, SfuObserver
from .admin import AdminConfig
from .admin_listener import AdminListenerConfig, create_admin_listener_app
from .caps import AdmissionGate, Caps
from .dbwatch import DatabaseWatch
from .drain import Drain
from .enforcement import GeofenceHost
from .metrics import Metrics
from .remote import ProxyConfig, install_trusted_proxies, participant_address
from .retention import AuditRetention
from .signaling import SignalingSession
from .state import StateConfig

if TYPE_CHECKING:
    from ..cluster.node import ClusterNode

logger = logging.getLogger(__name__)

NODE_ID_PATTERN = re.compile(r"[A-Za-z0-9_.:\-]{1,100}")
"""What a node id may be: it goes into Redis keys, the audit and the operator view."""


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
    ice_servers: tuple[IceServer, ...] = ()
    """STUN/TURN servers handed to every client in ``joined`` (``--turn``): a browser behind a firewall
    reaches the SFU through them. Declare the TURN server's relay addresses in ``turn_relays``."""
    db_path: str | None = None
    """Geolocation database of the geofence; None: the embedded DB-IP Country Lite file."""
    proxies: ProxyConfig = field(default_factory=ProxyConfig)
    """Reverse proxies whose X-Forwarded-For is believed when placing a participant."""
    state: StateConfig = field(default_factory=StateConfig)
    """Where the geofence keeps policies and the audit log (None: in memory, lost at exit)."""
    redis_url: str | None = None
    """``--redis``: policies live in this Redis, shared with every node given the same one (the
    audit is written to ``state`` and copied to the cluster's stream there); None: in ``state``'s
    SQLite, as a single process."""
    node_id: str = ""
    """This node's name in a cluster (``--node-id``): in the operator view, the audit and room
    leases; "" (default): ``HOSTNAME:PORT`` of the public listener once it is bound."""
    advertise_url: str | None = None
    """This node's public signaling URL (``--advertise-url``, e.g. ``wss://sfu-2.example.org/ws``),
    named in the ``redirect`` other nodes send for the rooms it hosts; None: ``ws://HOST:PORT/ws``
    of the public listener (set it behind a proxy; required with a wildcard ``host``)."""
    admin: AdminConfig = field(default_factory=AdminConfig)
    """The operator API's token; without one the API is not mounted."""
    admin_listener: AdminListenerConfig = field(default_factory=AdminListenerConfig)
    """Where the operator API and ``/metrics`` listen: never on the public listener."""
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
    fold_retirements: bool = True
    """No offer only to retire a leaver's m-lines (``--renegotiate-on-leave`` turns it off): see
    :attr:`SfuConfig.fold_retirements`."""
    db_watch_interval: float = 5.0
    """Seconds between two looks at the ``db_path`` file, reloaded when replaced; 0: no watch."""
    drain_timeout: float = 10.0
    """Seconds a stop (SIGTERM) may take to tell everyone and flush the audit before the process exits."""
    caps: Caps = field(default_factory=Caps)
    """Admission control: WebSockets, joins in progress, participants, join rate (per address, total)."""

    def __post_init__(self) -> None:
        ipaddress.ip_address(self.host)  # an address, not a name: say exactly where we listen
        relays = tuple(
            dict.fromkeys(unmapped_network(n) for n in (*self.ice.relay_networks, *self.turn_relays))
        )
        # Frozen: one place (this) keeps the two views of the declared relays equal.
        object.__setattr__(self, "turn_relays", relays)
        object.__setattr__(self, "ice", replace(self.ice, relay_networks=relays))
        if self.db_watch_interval < 0:
            raise ValueError(
                f"the database watch interval must be 0 (off) or more, not {self.db_watch_interval}"
            )
        if not self.drain_timeout > 0:
            raise ValueError(f"the drain timeout must be positive, not {self.drain_timeout}")
        if self.node_id and not NODE_ID_PATTERN.fullmatch(self.node_id):
            raise ValueError(f"--node-id {self.node_id[:80]!r}: 1-100 characters of A-Z a-z 0-9 _ . : -")
        if self.advertise_url is not None and not _websocket_url(self.advertise_url):
            raise ValueError(f"--advertise-url {self.advertise_url[:80]!r} is not a ws:// or wss:// URL")
        if (
            self.redis_url is not None
            and self.advertise_url is None
            and ipaddress.ip_address(self.host).is_unspecified
        ):
            # Other nodes' redirects would name ws://0.0.0.0:PORT/ws: no client elsewhere reaches that.
            raise ValueError(
                f"--host {self.host} with --redis needs --advertise-url (this node's public ws:// or "
                "wss:// URL, which redirects to it name)"
            )


def _websocket_url(url: str) -> bool:
    """A ``ws://`` or ``wss://`` URL with a host (what a redirect may send a client to)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises on a port that is not a number)
    except ValueError:
        return False
    return parts.scheme in ("ws", "wss") and bool(parts.hostname)


CONFIG = web.AppKey("config", ServerConfig)
SFU = web.AppKey("sfu", Sfu)
GEOFENCE_HOST = web.AppKey("geofence_host", GeofenceHost)
DRAIN = web.AppKey("drain", Drain)
DATABASE_WATCH = web.AppKey("database_watch", DatabaseWatch)
AUDIT_RETENTION = web.AppKey("audit_retention", AuditRetention)
GATE = web.AppKey("gate", AdmissionGate)
METRICS = web.AppKey("metrics", Metrics)
CLUSTER: web.AppKey[ClusterNode] = web.AppKey("cluster")
"""A cluster node's :class:`~sfu_geofence.cluster.node.ClusterNode` (``serve --redis``)."""
ADMIN_APP = web.AppKey("admin_app", web.Application)
"""The admin listener's application of a geofenced app (serve it on ``config.admin_listener``)."""
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
    app[GATE] = gate = AdmissionGate(config.caps)
    app[SFU] = sfu = Sfu(
        SfuConfig(
            ice=config.ice,
            negotiation_timeout=config.negotiation_timeout,
            connect_timeout=config.connect_timeout,
            max_participants_per_room=config.max_participants_per_room,
            fold_retirements=config.fold_retirements,
        ),
        admission=admission,
        observers=[gate, *observers],
    )
    app[DRAIN] = drain = Drain()
    app[METRICS] = metrics = Metrics(sfu, gate)
    sfu.observer.observers.append(metrics)
    metrics.add(
        "gauge", "sfu_geofence_draining", "1 while the server drains (SIGTERM)", lambda: drain.draining
    )
    install_trusted_proxies(app, config.proxies)
    app.router.add_get("/ws", websocket_handler)
    app.cleanup_ctx.append(_sfu_lifetime)
    app.cleanup_ctx.append(_metrics_probe)
    app.on_shutdown.append(_drain)
    return app


def create_geofenced_app(
    config: ServerConfig | None = None,
    observers: Iterable[SfuObserver] = (),
    policies: PolicySource | None = None,
    cluster: ClusterNode | None = None,
) -> web.Application:
    """:func:`create_app` with the geofence enforcing every room; its admin listener's application
    (metrics, and the operator API if a token is configured) is ``app[ADMIN_APP]``.

    Opens the database and the state directory now: a missing or corrupt file fails here, at start-up.
    ``policies``: a store opened by the caller (a cluster's, :mod:`sfu_geofence.cluster`); default the
    state directory's SQLite. ``cluster``: this node's place in a cluster (room placement, the
    whole cluster's operator view and audit), run and stopped with the application.
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
    if config.db_path is not None and config.db_watch_interval > 0:
        app[DATABASE_WATCH] = watch = DatabaseWatch(host.geofence, config.db_watch_interval)
        app.cleanup_ctx.append(_watch_database)  # its cleanup runs before the geofence closes
        app[METRICS].add(
            "counter",
            "sfu_geofence_database_watch_reloads",
            "Reloads of the --db file started by its watch (it changed), successful or not",
            lambda: watch.reloads,
        )
    if config.state.audit_retention_days is not None:
        app[AUDIT_RETENTION] = AuditRetention(host.geofence.audit, config.state.audit_retention_days)
        app.cleanup_ctx.append(_retain_audit)
    app.on_cleanup.append(_close_geofence)  # after the SFU's participants have all left
    add_geofence_metrics(app[METRICS], host)
    if cluster is not None:
        join_cluster(app, host, cluster)
    app[ADMIN_APP] = create_admin_listener_app(host, app[METRICS], config.admin.token, cluster)
    logger.info(
        "geofence: %s; state %s", host.geofence.database.label, config.state.directory or "in memory only"
    )
    if config.redis_url is not None:
        from ..cluster.redisstore import describe_url  # only a cluster node needs the client

        logger.info(
            "policies in Redis at %s, shared with every node using it", describe_url(config.redis_url)
        )
    if policies is not None:
        add_cluster_metrics(app[METRICS], policies)
    return app


def join_cluster(app: web.Application, host: GeofenceHost, cluster: ClusterNode) -> None:
    """Wire a cluster node to this application: placement before joins, the registry told of joins
    and departures, the audit copied to the cluster's stream, other nodes' commands acted on here."""
    from .admin.cluster import act_on_command
    from .admin.participants import participant_entries

    app[CLUSTER] = cluster
    sfu, fence = app[SFU], host.geofence
    cluster.attach(
        occupied=lambda room: room in sfu.rooms,
        snapshot=lambda: participant_entries(fence, host),
        handler=lambda command: act_on_command(fence, cluster.node or "", command),
    )
    sfu.observer.observers.append(_Announcer(cluster.registry.changed))
    fence.audit.listeners.append(cluster.audit.append)
    app.cleanup_ctx.append(_cluster_lifetime)
    app[METRICS].add(
        "counter",
        "sfu_geofence_redirects",
        "Joins sent on to the node hosting their room (redirect, close 4302)",
        lambda: cluster.placement.redirects,
    )
    app[METRICS].add(
        "gauge",
        "sfu_geofence_rooms_hosted",
        "Rooms whose lease this node holds",
        lambda: len(cluster.placement.hosted),
    )
    app[METRICS].add(
        "counter",
        "sfu_geofence_audit_stream_dropped",
        "Audit events not copied to the cluster's stream (Redis unreachable too long; in SQLite still)",
        lambda: cluster.audit.dropped,
    )


class _Announcer(SfuObserver):
    """Tells the node registry that this node's participants changed."""

    def __init__(self, changed: Callable[[], None]) -> None:
        self._changed = changed

    def participant_joined(self, participant: Participant) -> None:
        self._changed()

    def participant_left(self, participant: Participant, reason: CloseReason, detail: str) -> None:
        self._changed()


async def _cluster_lifetime(app: web.Application) -> AsyncIterator[None]:
    cluster = app[CLUSTER]
    async with running(cluster.run()):
        yield
    await cluster.stop()


async def _watch_database(app: web.Application) -> AsyncIterator[None]:
    async with running(app[DATABASE_WATCH].run()):
        yield


async def _retain_audit(app: web.Application) -> AsyncIterator[None]:
    retention = app[AUDIT_RETENTION]
    await retention.prune_safely()  # at start-up, before anyone joins
    async with running(retention.run(delay=retention.interval)):
        yield


@contextlib.asynccontextmanager
async def running(work: Coroutine[Any, Any, None]) -> AsyncIterator[None]:
    """Run ``work`` as a task for the life of the application (cancelled before the geofence closes).

    Work that dies of a bug is logged with its traceback when it dies, not at shutdown (an operator
    would otherwise see a node that silently stopped renewing its rooms or watching its database),
    and its exception never stops the rest of the shutdown."""
    task = asyncio.ensure_future(work)
    name = getattr(work, "__qualname__", repr(work))

    def report(done: asyncio.Future[None]) -> None:
        if not done.cancelled() and (error := done.exception()) is not None:
            logger.error("%s stopped: %r", name, error, exc_info=error)

    task.add_done_callback(report)
    try:
        yield
    finally:
        task.cancel()
        await asyncio.wait({task})


def add_cluster_metrics(metrics: Metrics, policies: PolicySource) -> None:
    """A Redis store's figures: how often this node caught up, and whether it follows changes now."""
    from ..cluster.redisstore import RedisPolicyStore  # only a cluster node needs the client

    if not isinstance(policies, RedisPolicyStore):
        return
    metrics.add(
        "counter",
        "sfu_geofence_policy_catch_ups",
        "Full re-reads of the policies in Redis that found changes this node had missed",
        lambda: policies.catch_ups,
    )
    metrics.add(
        "gauge",
        "sfu_geofence_policy_subscribed",
        "1 while this node follows the policy changes in Redis (subscribed and caught up), else 0",
        lambda: float(policies.subscribed.is_set()),
    )


def add_geofence_metrics(metrics: Metrics, host: GeofenceHost) -> None:
    """The geofence's figures: ejections by trigger, decision and ejection times, database, audit."""
    fence = host.geofence
    host.observe_decision = metrics.decision_seconds.observe
    host.observe_ejection = metrics.ejection_seconds.observe
    metrics.add(
        "counter",
        "sfu_geofence_ejections",
        "Ejections requested, by trigger",
        lambda: {(str(trigger),): n for trigger, n in host.ejections.items()},
        labels=("trigger",),
    )
    metrics.add(
        "gauge",
        "sfu_geofence_database_age_seconds",
        "Age of the geolocation database build deciding now",
        lambda: fence.database.age().total_seconds(),
    )
    metrics.add(
        "gauge",
        "sfu_geofence_database_alarm",
        "1 while the last database reload failed (the old build still decides; GET /api/database: why)",
        lambda: fence.database_alarm is not None,
    )
    metrics.add(
        "counter",
        "sfu_geofence_audit_write_failures",
        "Audit events that could not be written (enforcement went on)",
        lambda: fence.audit_failures,
    )
    metrics.add(
        "counter",
        "sfu_geofence_audit_refusals_counted",
        "Refusals over the audit's rate, counted in summary rows instead of one row each",
        lambda: fence.refusals_counted,
    )


async def _metrics_probe(app: web.Application) -> AsyncIterator[None]:
    async with running(app[METRICS].probe()):
        yield


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
    gate = request.app[GATE]
    over = gate.open_websocket(address)
    if over is not None:  # before the upgrade: no WebSocket, no session, the connection closed at once
        logger.debug("WebSocket of %s refused: %s", address, over)
        status = web.HTTPTooManyRequests if over.per_address else web.HTTPServiceUnavailable
        refusal = status(text=f"{over.message} ({over})", headers={"Retry-After": "5", "Connection": "close"})
        refusal.force_close()
        raise refusal
    try:
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
            gate=gate,
            ice_servers=config.ice_servers,
            placement=request.app[CLUSTER].placement if CLUSTER in request.app else None,
        )
        drain.opened(session)
        try:
            await session.run()
        finally:
            drain.closed(session)
    finally:
        gate.close_websocket(address)
    return ws
