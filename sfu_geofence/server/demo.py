"""The demo conference server: the SFU's own application plus the pages in demo/ and the operator API.

A browser on this machine always connects from 127.0.0.1, which is in no country. To show the geofence
at work, the demo lets a tab *pretend* to connect from a sample address of a chosen country: the query
parameter ``?from=CN`` on any request (the page puts it on its WebSocket URL) makes ``request.remote``
the sample address for that request, as a trusted proxy's ``X-Forwarded-For`` would (aiohttp-remotes
clones the request the same way). Everything downstream (signaling, admission, the audit log, the
operator views) is the code real traffic goes through; only the address differs.

This is a hole by design, so it exists only here: ``sfu-geofence serve`` never installs it, and the
demo listens on loopback only and honours ``from`` only from loopback peers.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from ..core.geofence import EjectCallback, EjectRequest, Geofence, Trigger
from ..sfu import AdmissionHook, CloseReason, SfuObserver
from .admin import check_token, create_admin_app
from .app import SFU, ServerConfig, create_app
from .state import StateConfig

logger = logging.getLogger(__name__)

PAGES = Path(__file__).resolve().parents[2] / "demo"
"""The conference page and the operator console: plain HTML/JS, served as they are."""

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
    """What ``sfu-geofence demo`` runs: the server's configuration, the operator token, the pages."""

    server: ServerConfig = field(default_factory=ServerConfig)
    admin_token: str = ""
    """Bearer token of the operator API behind the console (at least 16 characters)."""
    state: StateConfig = field(default_factory=StateConfig)
    """Where policies and the audit log are kept; in memory by default."""
    pages: Path = PAGES
    origins: tuple[SampleOrigin, ...] = SAMPLE_ORIGINS

    def __post_init__(self) -> None:
        check_token(self.admin_token)
        if not ipaddress.ip_address(self.server.host).is_loopback:
            raise ValueError(
                f"the demo lets any tab pretend to come from another country, so it listens on loopback "
                f"only, not on {self.server.host}; use `sfu-geofence serve` for anything else"
            )


GEOFENCE = web.AppKey("geofence", Geofence)
DEMO = web.AppKey("demo", DemoConfig)


def create_demo_app(
    config: DemoConfig, admission: AdmissionHook | None = None, observers: Iterable[SfuObserver] = ()
) -> web.Application:
    """The application of ``create_app`` with the demo pages, ``?from=`` and the API under /api."""
    if not (config.pages / "index.html").is_file():
        raise FileNotFoundError(
            f"the demo pages are not in {config.pages}: run the demo from a source checkout "
            "(pip install -e .)"
        )
    app = create_app(config.server, admission=admission, observers=observers)
    app.middlewares.append(pretend_origin({origin.country: origin for origin in config.origins}))
    fence = Geofence(
        _eject_from(app),
        database=config.server.db_path,
        policies=config.state.open_policies(),
        audit=config.state.open_audit(),
    )
    app[GEOFENCE] = fence
    app[DEMO] = config
    app.cleanup_ctx.append(_geofence_lifetime)
    app.add_subapp("/api", create_admin_app(fence, _SfuNames(app), config.admin_token))
    app.router.add_get("/", _page("index.html"))
    app.router.add_get("/console", _page("console.html"))
    app.router.add_get("/origins", sample_origins)
    app.router.add_static("/demo/", config.pages)
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
    return ipaddress.ip_address(peername[0].split("%", 1)[0]).is_loopback


async def sample_origins(request: web.Request) -> web.Response:
    """The origins the page offers, with the database that places them (and its attribution)."""
    config = request.app[DEMO]
    database = request.app[GEOFENCE].database
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


class _SfuNames:
    """The operator API's view of display names, read from the SFU's rooms."""

    def __init__(self, app: web.Application) -> None:
        self._app = app

    def display_names(self, room: str) -> Mapping[str, str]:
        found = self._app[SFU].rooms.get(room)
        return {} if found is None else {pid: p.name for pid, p in found.participants.items()}


def _eject_from(app: web.Application) -> EjectCallback:
    def eject(request: EjectRequest) -> None:
        # Closing is scheduled by the SFU; the geofence hears leave() at once, as the contract allows.
        app[SFU].remove_participant(request.participant, CloseReason.EJECTED, _eject_reason(request))
        app[GEOFENCE].leave(request.room, request.participant)

    return eject


def _eject_reason(request: EjectRequest) -> str:
    if request.trigger is Trigger.OPERATOR:
        return "An operator removed you from this meeting."
    country = request.decision.country
    return f"This meeting is not accessible from {country}." if country else "This meeting is not accessible."


async def _geofence_lifetime(app: web.Application) -> AsyncIterator[None]:
    yield
    app[GEOFENCE].close()
