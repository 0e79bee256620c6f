"""Serving the SFU's application on 127.0.0.1 (an ephemeral port) for tests and benches."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from aiohttp import web

from ..core.geofence import Geofence
from ..core.policystore import PolicySource
from ..server import GEOFENCE_HOST, SFU, ServerConfig, create_app, create_geofenced_app
from ..server.app import ADMIN_APP, CLUSTER
from ..sfu import AdmissionHook, Sfu, SfuObserver

if TYPE_CHECKING:
    from ..cluster.node import ClusterNode


@dataclass
class Served:
    """A running server: where to connect, and the SFU inside it."""

    url: str
    """The signaling WebSocket URL."""
    sfu: Sfu
    app: web.Application
    admin_base: str | None = None
    """``http://127.0.0.1:PORT`` of the admin listener (operator API under ``/api``, ``/metrics``), if
    the app has one (:func:`geofenced_on_loopback`)."""

    @property
    def base(self) -> str:
        """``http://127.0.0.1:PORT`` of the public listener (signaling, demo pages)."""
        return self.url.removesuffix("/ws")

    @property
    def geofence(self) -> Geofence:
        """The geofence of a server started with :func:`geofenced_on_loopback`."""
        return self.app[GEOFENCE_HOST].geofence


@asynccontextmanager
async def served_on_loopback(
    config: ServerConfig | None = None,
    admission: AdmissionHook | None = None,
    observers: Iterable[SfuObserver] = (),
) -> AsyncIterator[Served]:
    """Run the media plane alone (:func:`create_app`) on 127.0.0.1 and an ephemeral port."""
    app = create_app(_on_loopback(config), admission=admission, observers=observers)
    async with app_on_loopback(app) as served:
        yield served


@asynccontextmanager
async def geofenced_on_loopback(
    config: ServerConfig | None = None,
    observers: Iterable[SfuObserver] = (),
    policies: PolicySource | None = None,
    cluster: ClusterNode | None = None,
) -> AsyncIterator[Served]:
    """Run what ``serve`` runs (:func:`create_geofenced_app`) on 127.0.0.1 and an ephemeral port;
    ``policies``: a store of the caller's (a cluster node's), closed with the server; ``cluster``:
    the node's place in a cluster, told where it listens once bound."""
    app = create_geofenced_app(_on_loopback(config), observers=observers, policies=policies, cluster=cluster)
    async with app_on_loopback(app) as served:
        yield served


def _on_loopback(config: ServerConfig | None) -> ServerConfig:
    return replace(config or ServerConfig(), host="127.0.0.1", port=0)


@asynccontextmanager
async def app_on_loopback(app: web.Application) -> AsyncIterator[Served]:
    """Run an application of :func:`create_app` (add middlewares first) on 127.0.0.1, any port, and
    its admin listener's application (if it has one) on another."""
    public = await _listen(app)
    if CLUSTER in app:
        app[CLUSTER].listening(_base(public))
    admin = await _listen(app[ADMIN_APP]) if ADMIN_APP in app else None
    try:
        yield Served(
            url=f"{_base(public)}/ws",
            sfu=app[SFU],
            app=app,
            admin_base=_base(admin) if admin is not None else None,
        )
    finally:
        if admin is not None:
            await admin.cleanup()
        await public.cleanup()


async def _listen(app: web.Application) -> web.AppRunner:
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner


def _base(runner: web.AppRunner) -> str:
    return f"http://127.0.0.1:{runner.addresses[0][1]}"
