"""Running the geofenced app: listeners, the open-file budget, and serving until a signal drains it.

The command line that builds the :class:`~.app.ServerConfig` is :mod:`sfu_geofence.commands.serve`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from aiohttp import web

from ..rtc.fanout import descriptors_per_socket
from .app import ADMIN_APP, GEOFENCE_HOST, ServerConfig, create_geofenced_app
from .fdlimit import FileBudget, fit_caps, raise_open_file_limit

if TYPE_CHECKING:
    from ..cluster.node import ClusterNode
    from ..cluster.redisstore import RedisPolicyStore

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Listener:
    """One application on one address and port (0: any free one)."""

    app: web.Application
    host: str
    port: int


def within_file_budget(config: ServerConfig) -> ServerConfig:
    """Raise the open-file limit, log the capacity, and fit the caps under it (before allocating)."""
    budget: FileBudget = raise_open_file_limit()
    # Each ICE socket is two descriptors with the C fan-out on (its own dup of the socket).
    caps = fit_caps(
        config.caps, budget, sockets_per_participant=len(config.ice.bind) * descriptors_per_socket()
    )
    logger.info(
        "open-file limit %d (was %d, hard %d): room for %d WebSockets and %d participants "
        "(%d joining at once), at most %d from one address",
        budget.soft,
        budget.before,
        budget.hard,
        caps.websockets,
        caps.participants,
        caps.pending_joins,
        caps.participants_per_address,
    )
    return replace(config, caps=caps)


def listeners(app: web.Application, config: ServerConfig) -> list[Listener]:
    """A geofenced app's public listener, then its admin listener."""
    admin = config.admin_listener
    return [Listener(app, config.host, config.port), Listener(app[ADMIN_APP], admin.host, admin.port)]


def print_listening(public: str, admin: str) -> None:
    """What ``serve`` prints once it listens (tests and the load tester read these two lines)."""
    print(f"listening on {public}/ws", flush=True)
    print(f"admin listening on {admin} (operator API {admin}/api, metrics {admin}/metrics)", flush=True)


async def serve(config: ServerConfig, announce: Callable[[str, str], None] = print_listening) -> bool:
    """Serve until SIGINT or SIGTERM, then drain; True when the drain finished within its timeout.

    ``announce`` gets the public and admin base URLs once both listen (a ``--workers`` worker sends
    them to its parent instead of printing them)."""
    config = within_file_budget(config)

    store: RedisPolicyStore | None = None
    cluster: ClusterNode | None = None
    if config.redis_url is not None:
        from ..cluster.node import ClusterNode  # only a cluster node needs the client
        from ..cluster.redisstore import RedisPolicyStore

        store = await RedisPolicyStore.open(config.redis_url)  # unreachable: StorageError, exit 2
        cluster = ClusterNode(config.redis_url, config.node_id, config.advertise_url)
    try:
        app = create_geofenced_app(config, policies=store, cluster=cluster)

        def announced(public: str, admin: str) -> None:
            if cluster is not None:
                cluster.listening(public)
            announce(public, admin)

        return await run_until_signalled(
            listeners(app, config), lambda bases: announced(*bases), config.drain_timeout
        )
    finally:
        if store is not None:
            await store.aclose()


async def run_until_signalled(
    served: Sequence[Listener],
    announce: Callable[[list[str]], None],
    drain_timeout: float = ServerConfig.drain_timeout,
) -> bool:
    """Serve each application on its address until SIGINT or SIGTERM, then drain them, the last one
    first (docs/operations.md).

    ``announce`` is called once all listen, with their base URLs (``http://host:port``, the port the
    system picked when ``port`` is 0): what ``serve`` and ``demo`` print. The drain (no more joins,
    everyone told ``shutdown`` with close 1001, the audit flushed) gets ``drain_timeout`` seconds, and
    a second signal cuts it short. Returns True when it finished in time.
    """
    runners: list[web.AppRunner] = []
    signals = asyncio.Queue[int]()
    loop = asyncio.get_running_loop()
    try:
        bases = []
        for listener in served:
            runner = web.AppRunner(listener.app, shutdown_timeout=drain_timeout)
            await runner.setup()
            runners.append(runner)
            await web.TCPSite(runner, listener.host, listener.port).start()
            bound_host, bound_port = runner.addresses[0][:2]
            bases.append(f"http://{_url_host(bound_host)}:{bound_port}")
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, signals.put_nowait, signum)
        # Everything allocated so far lives as long as the process: keep it out of the cyclic
        # collector's full collections, which otherwise pause every participant's media while they
        # walk it.
        gc.freeze()
        announce(bases)
        received = await signals.get()
    except BaseException:
        for runner in reversed(runners):
            await runner.cleanup()
        raise
    logger.info("%s: draining (at most %g s)", signal.Signals(received).name, drain_timeout)
    try:
        return await _drain(runners, drain_timeout, signals)
    finally:
        # Whatever the drain did: the audit log is flushed and closed before the process exits.
        for listener in served:
            if GEOFENCE_HOST in listener.app:
                listener.app[GEOFENCE_HOST].close()


async def _drain(runners: list[web.AppRunner], limit: float, signals: asyncio.Queue[int]) -> bool:
    async def cleanup_all() -> None:
        for runner in reversed(runners):
            await runner.cleanup()

    cleanup = asyncio.ensure_future(cleanup_all())
    another = asyncio.ensure_future(signals.get())
    done, _ = await asyncio.wait({cleanup, another}, timeout=limit, return_when=asyncio.FIRST_COMPLETED)
    another.cancel()
    if cleanup in done:
        cleanup.result()
        logger.info("drained: every session told and closed")
        return True
    cleanup.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await cleanup
    why = "a second signal" if another in done else f"the drain timeout ({limit:g} s)"
    logger.warning("drain cut short by %s: the connections still open are dropped", why)
    return False


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
