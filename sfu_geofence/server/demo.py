"""The demo conference server: ``serve``'s geofenced application plus the pages in ``pages/``.

A browser on this machine signals from 127.0.0.1, which is in no country. To show the geofence
at work, the demo lets a tab *pretend* to connect from a sample address of a chosen country: the query
parameter ``?from=CN`` on any request (the page puts it on its WebSocket URL) makes ``request.remote``
the sample address for that request, as a trusted proxy's ``X-Forwarded-For`` would (aiohttp-remotes
clones the request the same way). Everything downstream (signaling, the geofence's admission, its
ejections, the media-address check, the audit log, the operator API) is the code real traffic goes
through; only the address differs.

Only the signaling address can be pretended: every tab's media still comes from this machine (its
LAN address, which ``sfu-geofence demo``'s ICE gathers on and accepts, or 127.0.0.1), usually in no
country. The media-address check therefore sees an unknown country for everyone; rooms admit unknown
countries by default, so that changes nothing unless a room refuses them (then every tab is ejected
once its media connects; exempting 127.0.0.0/8 and the LAN in that room avoids it).

This is a hole by design, so it exists only here: ``sfu-geofence serve`` never installs it, and the
demo listens on loopback only and honours ``from`` only from loopback peers.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from ..core.addresses import parse_address
from ..core.policystore import PolicySource
from ..sfu import SfuObserver
from .app import ADMIN_APP, GEOFENCE_HOST, ServerConfig, create_geofenced_app

if TYPE_CHECKING:
    from ..cluster.node import ClusterNode

logger = logging.getLogger(__name__)

PAGES = Path(__file__).resolve().parent / "pages"
"""The conference page and the operator console: plain HTML/JS, served as they are.

Package data (pyproject's ``package-data``), so a wheel or ``pip install .`` serves them too."""

FROM_PARAMETER = "from"
"""Query parameter naming the sample origin a request pretends to come from."""


@dataclass(frozen=True, slots=True)
class SampleOrigin:
    """A country a demo tab can pretend to connect from, and the real address that stands for it."""

    country: str
    """ISO 3166-1 alpha-2 code, also the value of ``?from=``."""
    name: str
    address: str
    """An address the embedded DB-IP database places in ``country`` (checked by the tests)."""


SAMPLE_ORIGINS: tuple[SampleOrigin, ...] = (
    SampleOrigin("US", "United States", "8.8.8.8"),
    SampleOrigin("DE", "Germany", "194.25.0.60"),
    SampleOrigin("FR", "France", "193.70.0.1"),
    SampleOrigin("JP", "Japan", "202.12.27.33"),
    SampleOrigin("CN", "China", "114.114.114.114"),
    SampleOrigin("HK", "Hong Kong", "205.252.144.228"),
    SampleOrigin("TW", "Taiwan", "168.95.1.1"),
)


@dataclass(frozen=True)
class DemoConfig:
    """What ``sfu-geofence demo`` runs: the server ``serve`` would run, plus the pages and the origins."""

    server: ServerConfig
    """Must listen on loopback, carry the operator token (the console needs it) and trust no proxy."""
    pages: Path = PAGES
    origins: tuple[SampleOrigin, ...] = SAMPLE_ORIGINS

    def __post_init__(self) -> None:
        if not ipaddress.ip_address(self.server.host).is_loopback:
            raise ValueError(
                f"the demo lets any tab pretend to come from another country, so it listens on loopback "
                f"only, not on {self.server.host}; use `sfu-geofence serve` for anything else"
            )
        if self.server.admin.token is None:
            raise ValueError("the demo's operator console needs an operator token (server.admin)")
        if self.server.proxies.trusted:
            raise ValueError(
                "the demo places its tabs with ?from=, not with X-Forwarded-For: it trusts no proxy"
            )

    @property
    def admin_token(self) -> str:
        """The bearer token of the operator API behind the console."""
        assert self.server.admin.token is not None
        return self.server.admin.token


DEMO = web.AppKey("demo", DemoConfig)


def create_demo_app(
    config: DemoConfig,
    observers: Iterable[SfuObserver] = (),
    policies: PolicySource | None = None,
    cluster: ClusterNode | None = None,
) -> web.Application:
    """``serve``'s application (:func:`create_geofenced_app`) plus the meeting page and ``?from=``;
    its admin listener's application (``app[ADMIN_APP]``) gets the operator console. ``policies``
    and ``cluster``: as ``serve --redis`` passes them (a node of a cluster: tests of the page's
    redirect).

    Admission, ejection, the media-address check and the operator API under /api are the product's
    own: the demo adds no hook of its own, only the address a tab pretends to come from.
    """
    if not (config.pages / "index.html").is_file():
        raise FileNotFoundError(f"the demo pages are not in {config.pages}: a broken installation")
    app = create_geofenced_app(config.server, observers=observers, policies=policies, cluster=cluster)
    # Where a trusted-proxy middleware would sit (the demo trusts none): before every handler, the
    # signaling route's participant_address() and the operator API included.
    app.middlewares.append(pretend_origin({origin.country: origin for origin in config.origins}))
    app[DEMO] = config
    app.router.add_get("/", _page("index.html"))
    app.router.add_get("/origins", sample_origins)
    app.router.add_static("/demo/", config.pages)
    admin = app[ADMIN_APP]
    admin[DEMO] = config
    admin.router.add_get("/console", _page("console.html"))
    admin.router.add_static("/demo/", config.pages)
    return app


def pretend_origin(origins: Mapping[str, SampleOrigin]) -> Middleware:
    """``?from=XX`` makes a loopback client's request come from the sample address of country XX."""

    @web.middleware
    async def from_sample_origin(request: web.Request, handler: Handler) -> web.StreamResponse:
        wanted = request.query.get(FROM_PARAMETER, "")
        if not wanted:
            return await handler(request)
        origin = origins.get(wanted.upper())
        if origin is None:
            known = ", ".join(origins)
            raise web.HTTPBadRequest(text=f"?{FROM_PARAMETER}={wanted[:8]!r} is not a sample origin: {known}")
        if not _from_loopback(request):
            raise web.HTTPForbidden(text=f"?{FROM_PARAMETER}= is honoured only for clients on this machine")
        return await handler(request.clone(remote=origin.address))

    return from_sample_origin


def _from_loopback(request: web.Request) -> bool:
    peername = request.transport.get_extra_info("peername") if request.transport else None
    if not isinstance(peername, tuple):
        return False
    return parse_address(peername[0]).is_loopback


async def sample_origins(request: web.Request) -> web.Response:
    """The origins the page offers, with the database that places them (and its attribution)."""
    config = request.app[DEMO]
    database = request.app[GEOFENCE_HOST].geofence.database
    return web.json_response(
        {
            "origins": [{"country": o.country, "name": o.name, "address": o.address} for o in config.origins],
            "database": database.label,
            "attribution": database.attribution,
        }
    )


def _page(name: str) -> Handler:
    async def page(request: web.Request) -> web.StreamResponse:
        return web.FileResponse(request.app[DEMO].pages / name)

    return page
