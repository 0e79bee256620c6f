"""The operator API: policies, participants, ejection by hand, the audit log, the database.

JSON over HTTP behind a bearer token, as an aiohttp sub-application the server mounts with
``app.add_subapp("/api", create_admin_app(...))``. Countries and addresses of participants are shown
here and nowhere else: this API is the operator's, never a participant's.

Every call that changes something answers only once the change is committed to the geofence's store
(SQLite, or Redis in a cluster: acknowledged = persisted). Every refusal is a specific status and a JSON body
``{"error": code, "message": sentence}``; a refused call changes nothing. See docs/operations.md.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import stat
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, NoReturn, Protocol

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware

from ..core.audit import AuditEvent, EventKind
from ..core.countries import country_code
from ..core.decision import Decision
from ..core.errors import (
    DatabaseError,
    GeofenceError,
    InvalidCountryCode,
    InvalidPolicy,
    ParticipantError,
)
from ..core.geofence import Geofence, ParticipantView
from ..core.policy import RoomPolicy
from ..core.policystore import PolicyInForce
from ..core.storage import StorageError
from ..protocol import ROOM_PATTERN

logger = logging.getLogger(__name__)

#: Environment variable the serve command reads the token from (preferred to a flag: argv is public).
TOKEN_ENV = "SFU_GEOFENCE_ADMIN_TOKEN"
#: Shortest token accepted: a guessable token would expose every participant's country and address.
MIN_TOKEN_LENGTH = 16
#: Audit events per page: the default, and the most one request may ask for.
AUDIT_PAGE, AUDIT_PAGE_MAX = 100, 1000
#: Largest request body (a policy, a reload request).
MAX_BODY = 64 * 1024
#: Longest reason an operator may give for a change or an ejection (it goes into the audit log).
MAX_REASON = 500
#: Longest ``actor`` (who makes a change, as the operator names themself) kept in the audit log.
MAX_ACTOR = 100
#: Fields every changing call accepts beside its own: who makes the change and why (audited).
ATTRIBUTION = frozenset({"actor", "reason"})
REALM = "sfu-geofence"


@dataclass(frozen=True, slots=True)
class AdminConfig:
    """``--admin-token`` (or :data:`TOKEN_ENV`). Without a token the operator API is not mounted."""

    token: str | None = None

    def __post_init__(self) -> None:
        if self.token is not None:
            check_token(self.token)

    @classmethod
    def from_env(cls, token: str | None = None, environ: Mapping[str, str] = os.environ) -> AdminConfig:
        """The token given (a flag), else the one in :data:`TOKEN_ENV`, else none (API disabled)."""
        return cls(token if token is not None else environ.get(TOKEN_ENV) or None)

    @property
    def enabled(self) -> bool:
        return self.token is not None


def check_token(token: str) -> None:
    """Refuse tokens that are short or cannot travel in an ``Authorization: Bearer`` header."""
    if len(token) < MIN_TOKEN_LENGTH:
        raise ValueError(f"the admin token must be at least {MIN_TOKEN_LENGTH} characters long")
    if not token.isascii() or not token.isprintable() or any(c.isspace() for c in token):
        raise ValueError("the admin token must be printable ASCII without spaces")


class ParticipantControl(Protocol):
    """What the operator API asks of the SFU beyond what the geofence knows (ids only).

    Ejection by hand does not go through here: it goes through :meth:`Geofence.eject_by_operator`,
    which audits it and asks the SFU through the same ``eject`` callable as every other ejection
    (``Trigger.OPERATOR``), so there is one way out of a room.
    """

    def display_names(self, room: str) -> Mapping[str, str]:
        """Names the participants of ``room`` gave themselves, by participant id."""
        ...


@dataclass(frozen=True, slots=True)
class _Admin:
    geofence: Geofence
    control: ParticipantControl | None


ADMIN = web.AppKey("admin", _Admin)


def create_admin_app(geofence: Geofence, control: ParticipantControl | None, token: str) -> web.Application:
    """The operator API for ``geofence``; mount it with ``app.add_subapp("/api", ...)``."""
    check_token(token)
    app = web.Application(middlewares=[json_errors, bearer_auth(token)])
    app[ADMIN] = _Admin(geofence, control)
    app.router.add_get("/rooms", list_rooms)
    app.router.add_get("/rooms/{room}/participants", list_participants)
    app.router.add_post("/rooms/{room}/participants/{participant}/eject", eject_participant)
    app.router.add_get("/rooms/{room}/policy", get_room_policy)
    app.router.add_put("/rooms/{room}/policy", put_room_policy)
    app.router.add_delete("/rooms/{room}/policy", delete_room_policy)
    app.router.add_get("/policy/default", get_default_policy)
    app.router.add_put("/policy/default", put_default_policy)
    app.router.add_get("/audit", read_audit)
    app.router.add_get("/database", get_database)
    app.router.add_post("/database/reload", reload_database)
    return app


# -- errors and authentication ---------------------------------------------------------------------


class ApiError(Exception):
    """A refusal: a specific status and a JSON body ``{"error": code, "message": ...}``."""

    def __init__(
        self, status: int, code: str, message: str, *, headers: Mapping[str, str] | None = None, **extra: Any
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = dict(headers or {})
        self.extra = extra

    def response(self) -> web.Response:
        body = {"error": self.code, "message": self.message, **self.extra}
        return web.json_response(body, status=self.status, headers=self.headers)


_GENERIC = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
}


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every refusal as JSON (aiohttp's own and unexpected ones too); nothing cached on the way."""
    response = await _json_errors(request, handler)
    response.headers[hdrs.CACHE_CONTROL] = "no-store"  # addresses and countries: operators only
    return response


async def _json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return exc.response()
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        allow = {hdrs.ALLOW: exc.headers[hdrs.ALLOW]} if hdrs.ALLOW in exc.headers else None
        return web.json_response(
            {"error": _GENERIC.get(exc.status, "http_error"), "message": exc.reason},
            status=exc.status,
            headers=allow,
        )
    except StorageError as exc:  # not committed, so not acknowledged
        logger.error("operator call %s %s not stored: %s", request.method, request.path, exc)
        return web.json_response({"error": "storage_unavailable", "message": str(exc)}, status=503)
    except GeofenceError as exc:  # closed: the server is shutting down
        return web.json_response({"error": "unavailable", "message": str(exc)}, status=503)
    except Exception:
        logger.exception("operator call %s %s failed", request.method, request.path)
        return web.json_response(
            {"error": "internal_error", "message": "the server failed; see its log"}, status=500
        )


def bearer_auth(token: str) -> Middleware:
    """``Authorization: Bearer <token>``: none -> 401 (with WWW-Authenticate), a wrong one -> 403.

    Both sides are hashed before the constant-time comparison, so neither the token's bytes nor its
    length leak through timing.
    """
    expected = hashlib.sha256(token.encode()).digest()

    @web.middleware
    async def authorised(request: web.Request, handler: Handler) -> web.StreamResponse:
        scheme, _, given = request.headers.get(hdrs.AUTHORIZATION, "").strip().partition(" ")
        given = given.strip()
        if scheme.lower() != "bearer" or not given:
            raise ApiError(
                401,
                "unauthorised",
                "this API needs an operator token: Authorization: Bearer <token>",
                headers={hdrs.WWW_AUTHENTICATE: f'Bearer realm="{REALM}"'},
            )
        digest = hashlib.sha256(given.encode("utf-8", "surrogateescape")).digest()
        if not hmac.compare_digest(digest, expected):
            logger.warning("operator call %s %s with a wrong token", request.method, request.path)
            raise ApiError(403, "forbidden", "the operator token is wrong")
        return await handler(request)

    return authorised


# -- rooms and participants ------------------------------------------------------------------------


async def list_rooms(request: web.Request) -> web.Response:
    """Rooms with participants or a policy of their own."""
    fence = request.app[ADMIN].geofence
    counts: dict[str, int] = {}
    for view in fence.participants():
        counts[view.room] = counts.get(view.room, 0) + 1
    rooms = sorted(set(counts) | set(fence.policies.rooms()))
    return web.json_response(
        {
            "rooms": [
                {"room": room, "participants": counts.get(room, 0), **_policy(fence.policy(room))}
                for room in rooms
            ]
        }
    )


async def list_participants(request: web.Request) -> web.Response:
    """Who is in a room, where the geofence places them, and why they are admitted."""
    admin = request.app[ADMIN]
    room = _room(request)
    views = admin.geofence.participants(room)
    if not views:
        _known_room(admin.geofence, room)
    names = admin.control.display_names(room) if admin.control is not None else {}
    return web.json_response(
        {"room": room, "participants": [_participant(view, names.get(view.participant)) for view in views]}
    )


async def eject_participant(request: web.Request) -> web.Response:
    """Remove one participant by hand: audited, then closed by the SFU (202: the close follows)."""
    fence = request.app[ADMIN].geofence
    room, participant = _room(request), request.match_info["participant"]
    body = await _json_object(request, allowed=set(ATTRIBUTION), required=False)
    change = _Change.of(body)
    reason = change.reason or "ejected by an operator"
    views = fence.participants(room)
    view = next((v for v in views if v.participant == participant), None)
    if view is None:
        if not views:
            _known_room(fence, room)
        raise ApiError(404, "unknown_participant", f"no participant {participant!r} in room {room!r}")
    if view.ejecting:
        raise ApiError(409, "ejection_pending", f"the ejection of {participant!r} is already under way")
    try:
        taken = fence.eject_by_operator(room, participant, reason, actor=change.actor)
    except ParticipantError as exc:  # left between the check and now
        raise ApiError(404, "unknown_participant", str(exc)) from None
    if not taken:
        raise ApiError(502, "eject_failed", "the SFU did not take the ejection (audited as eject_failed)")
    return web.json_response({"room": room, "participant": participant, "status": "requested"}, status=202)


def _room(request: web.Request) -> str:
    """The ``{room}`` of the path, if signaling could ever join it: a policy set on a name nobody
    can join (a typo, a trailing space) would silently protect nothing."""
    room = request.match_info["room"]
    if not ROOM_PATTERN.fullmatch(room):
        raise ApiError(
            422,
            "invalid_room",
            f"room {room[:80]!r} can never be joined: a room name is 1-64 characters of A-Z a-z 0-9 _ . -",
        )
    return room


def _known_room(fence: Geofence, room: str) -> None:
    if room not in fence.policies.rooms():
        raise ApiError(404, "unknown_room", f"room {room!r} has no participants and no policy of its own")


def _participant(view: ParticipantView, name: str | None) -> dict[str, Any]:
    media = None
    if view.media_address is not None:
        media = {"address": view.media_address, "relayed": view.media_relayed}
        if view.media_decision is not None:
            media |= _decision(view.media_decision)
    return {
        "participant": view.participant,
        "name": name,
        "identity": view.identity,
        "address": view.address,
        **_decision(view.decision),
        "media": media,
        "ejecting": view.ejecting,
    }


def _decision(decision: Decision) -> dict[str, Any]:
    return {
        "country": decision.country,
        "source": decision.source,
        "database": decision.database,
        "outcome": decision.outcome,
        "reason": str(decision.reason),
        "rule": decision.rule,
        "policy_version": decision.policy_version,
    }


# -- policies --------------------------------------------------------------------------------------


async def get_room_policy(request: web.Request) -> web.Response:
    room = _room(request)
    return web.json_response({"room": room, **_policy(request.app[ADMIN].geofence.policy(room))})


async def put_room_policy(request: web.Request) -> web.Response:
    """Replace a room's policy; its participants now restricted are ejected (or would be)."""
    fence = request.app[ADMIN].geofence
    room = _room(request)
    body = await _json_object(request)
    change = _Change.of(body)
    policy = _parse_policy({k: v for k, v in body.items() if k not in ATTRIBUTION})
    before = _Ejections.before(fence)
    await fence.change_policy(room, policy, actor=change.actor, reason=change.reason)
    return web.json_response({"room": room, **_policy(fence.policy(room)), **before.since(room)})


async def delete_room_policy(request: web.Request) -> web.Response:
    """Return a room to the server default."""
    fence = request.app[ADMIN].geofence
    room = _room(request)
    change = _Change.of(await _json_object(request, allowed=set(ATTRIBUTION), required=False))
    if room not in fence.policies.rooms():
        raise ApiError(
            404, "no_room_policy", f"room {room!r} has no policy of its own: it follows the default"
        )
    before = _Ejections.before(fence)
    await fence.change_policy(room, None, actor=change.actor, reason=change.reason)
    return web.json_response({"room": room, **_policy(fence.policy(room)), **before.since(room)})


async def get_default_policy(request: web.Request) -> web.Response:
    return web.json_response(_policy(request.app[ADMIN].geofence.policies.default))


async def put_default_policy(request: web.Request) -> web.Response:
    """Replace the server default, which every room without a policy of its own follows."""
    fence = request.app[ADMIN].geofence
    body = await _json_object(request)
    change = _Change.of(body)
    policy = _parse_policy({k: v for k, v in body.items() if k not in ATTRIBUTION})
    before = _Ejections.before(fence)
    await fence.change_default_policy(policy, actor=change.actor, reason=change.reason)
    return web.json_response({**_policy(fence.policies.default), **before.since()})


def _policy(in_force: PolicyInForce) -> dict[str, Any]:
    return {
        "policy": in_force.policy.to_dict(),
        "rule": in_force.policy.describe(),
        "version": in_force.version,
        "inherited": in_force.inherited,
    }


def _parse_policy(body: dict[str, Any]) -> RoomPolicy:
    countries = body.get("countries")
    if isinstance(countries, list):
        for code in countries:
            if isinstance(code, str):
                try:
                    country_code(code)
                except InvalidCountryCode as exc:
                    raise ApiError(422, "unknown_country", str(exc), country=code) from None
    try:
        return RoomPolicy.from_dict(body)
    except InvalidPolicy as exc:
        raise ApiError(422, "invalid_policy", str(exc)) from None


@dataclass(frozen=True, slots=True)
class _Ejections:
    """Who a change ejected (``requested``) or, in monitor mode, would have (``would_eject``),
    read back from the audit log events the change wrote.

    The change itself never depends on the audit (the geofence audits best-effort); when events
    could not be written or read, ``audit_incomplete`` says the list may miss some.
    """

    fence: Geofence
    after_id: int | None
    failures: int

    @classmethod
    def before(cls, fence: Geofence) -> _Ejections:
        failures = fence.audit_failures
        try:
            latest = fence.audit.events(limit=1)
        except StorageError as exc:
            logger.error("audit log not readable: %s", exc)
            return cls(fence, None, failures)
        return cls(fence, (latest[-1].id or 0) if latest else 0, failures)

    def since(self, room: str | None = None) -> dict[str, Any]:
        ejections: list[dict[str, Any]] = []
        incomplete = self.after_id is None or self.fence.audit_failures > self.failures
        if self.after_id is not None:
            try:
                events = self.fence.audit.events(kind=EventKind.EJECTION, after_id=self.after_id, room=room)
            except StorageError as exc:
                logger.error("audit log not readable: %s", exc)
                events, incomplete = [], True
            ejections = [
                {"room": e.room, "participant": e.participant, "outcome": e.outcome, "country": e.country}
                for e in events
            ]
        return {"ejections": ejections, "audit_incomplete": incomplete}


# -- audit -----------------------------------------------------------------------------------------

_AUDIT_FILTERS = {"room", "participant", "kind", "outcome", "since", "after_id", "limit"}


async def read_audit(request: web.Request) -> web.Response:
    """Audit events, oldest first: the newest page, or (``after_id``) the page after an event."""
    query = request.query
    unknown = set(query) - _AUDIT_FILTERS
    if unknown:
        raise ApiError(
            400,
            "bad_parameter",
            f"unknown parameter(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(_AUDIT_FILTERS))}",
        )
    kind = None
    if "kind" in query:
        try:
            kind = EventKind(query["kind"])
        except ValueError:
            kinds = ", ".join(str(k) for k in EventKind)
            raise ApiError(400, "bad_parameter", f"kind must be one of {kinds}") from None
    since = None
    if "since" in query:
        try:
            since = datetime.fromisoformat(query["since"])
        except ValueError:
            raise ApiError(
                400, "bad_parameter", "since must be an ISO 8601 time, e.g. 2026-11-25T16:00:00Z"
            ) from None
        since = since if since.tzinfo else since.replace(tzinfo=UTC)
    after_id = _int_parameter(query, "after_id", 0, SQLITE_MAX_INTEGER)
    limit = _int_parameter(query, "limit", 1, AUDIT_PAGE_MAX)
    limit = AUDIT_PAGE if limit is None else limit
    events = request.app[ADMIN].geofence.audit.events(
        room=query.get("room"),
        participant=query.get("participant"),
        kind=kind,
        outcome=query.get("outcome"),
        since=since,
        after_id=after_id,
        limit=limit + 1,
    )
    more = len(events) > limit
    if more:  # one beyond the page: there are newer (paging forward) or older (newest page) events
        events = events[:limit] if after_id is not None else events[1:]
    last_id = events[-1].id if events else after_id
    return web.json_response(
        {
            "events": [_event(e) for e in events],
            "last_id": last_id,
            "more": more,
            "audit_failures": request.app[ADMIN].geofence.audit_failures,
        }
    )


SQLITE_MAX_INTEGER = 2**63 - 1
"""The largest id an audit event can have (SQLite integers are 64-bit signed)."""


def _int_parameter(query: Mapping[str, str], name: str, low: int, high: int | None) -> int | None:
    if name not in query:
        return None
    try:
        value = int(query[name])
    except ValueError:
        value = low - 1
    if value < low or (high is not None and value > high):
        bounds = f"from {low} to {high}" if high is not None else f"{low} or more"
        raise ApiError(400, "bad_parameter", f"{name} must be an integer {bounds}")
    return value


def _event(event: AuditEvent) -> dict[str, Any]:
    fields = asdict(event)
    time = fields.pop("time")
    return {
        "id": fields.pop("id"),
        "time": time.isoformat() if time else None,
        **fields,
        "kind": str(event.kind),
    }


# -- database --------------------------------------------------------------------------------------


async def get_database(request: web.Request) -> web.Response:
    return web.json_response(_database(request.app[ADMIN].geofence))


async def reload_database(request: web.Request) -> web.Response:
    """Swap in a new database file (or re-read the current one); a bad file keeps the old one."""
    fence = request.app[ADMIN].geofence
    body = await _json_object(request, allowed={"path", *ATTRIBUTION}, required=False)
    change = _Change.of(body)
    path = body.get("path")
    if path is not None and (not isinstance(path, str) or not path):
        raise ApiError(422, "invalid_path", "path must be a non-empty string (a file on the server)")
    _regular_file_or_missing(path if path is not None else fence.database.path)
    before = _Ejections.before(fence)
    try:
        fence.reload_database(path, actor=change.actor, reason=change.reason)
    except DatabaseError as exc:
        kept = _database(fence)
        raise ApiError(
            422, "database_unusable", f"{exc}; still using {fence.database.label}", kept=kept
        ) from None
    return web.json_response({**_database(fence), **before.since()})


def _regular_file_or_missing(path: str) -> None:
    """Refuse what is there but is not a regular file: open() on a FIFO would block the event loop
    (every call and everyone's media) until something wrote to it. A missing file is left to the
    geofence, which audits the failed reload."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return
    if not stat.S_ISREG(mode):
        raise ApiError(422, "invalid_path", f"{path!r} is not a regular file (a .mmdb database file)")


def _database(fence: Geofence) -> dict[str, Any]:
    info, alarm = fence.database, fence.database_alarm
    return {
        "label": info.label,
        "path": info.path,
        "type": info.database_type,
        "built": info.built.isoformat(),
        "age_days": round(info.age().total_seconds() / 86400, 1),
        "age_seconds": round(info.age().total_seconds()),
        "stale": info.stale(),
        "warning": info.staleness_warning(),
        "embedded": info.embedded,
        "ip_version": info.ip_version,
        "attribution": info.attribution,
        "alarm": None if alarm is None else {"message": alarm.message, "since": alarm.since.isoformat()},
    }


# -- request bodies --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Change:
    """Who makes a change and why, as the operator says (optional; audited, shown in reports)."""

    actor: str | None
    reason: str | None

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> _Change:
        return cls(
            _text_field(body, "actor", MAX_ACTOR, "invalid_actor"),
            _text_field(body, "reason", MAX_REASON, "invalid_reason"),
        )


def _text_field(body: Mapping[str, Any], name: str, longest: int, code: str) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= longest or not value.isprintable():
        raise ApiError(422, code, f"{name} must be a printable string of 1 to {longest} characters")
    return value


async def _json_object(
    request: web.Request, *, allowed: set[str] | None = None, required: bool = True
) -> dict[str, Any]:
    raw = await _body(request)
    if not raw.strip():
        if required:
            _malformed("the request body is empty; send a JSON object")
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        _malformed(f"the request body is not JSON: {exc}")
    except RecursionError:  # "[[[[...": the decoder recurses once per level
        _malformed("the request body nests too deeply")
    if not isinstance(body, dict):
        raise ApiError(
            422, "invalid_body", f"the request body must be a JSON object, not {type(body).__name__}"
        )
    if allowed is not None and set(body) - allowed:
        extra = ", ".join(sorted(set(body) - allowed))
        raise ApiError(422, "invalid_body", f"unknown field(s): {extra}; known: {', '.join(sorted(allowed))}")
    return body


async def _body(request: web.Request) -> bytes:
    """The whole body, however many TCP segments or chunks it came in, refused past MAX_BODY.

    Read here rather than by ``request.read()``: aiohttp takes ``client_max_size`` from the root
    application, which this sub-application does not own.
    """
    if (request.content_length or 0) > MAX_BODY:
        _too_large()
    raw = bytearray()
    async for piece in request.content.iter_any():
        raw += piece
        if len(raw) > MAX_BODY:
            _too_large()
    return bytes(raw)


def _too_large() -> NoReturn:
    raise ApiError(413, "body_too_large", f"the request body is larger than {MAX_BODY} bytes")


def _malformed(message: str) -> NoReturn:
    raise ApiError(400, "malformed_json", message)
