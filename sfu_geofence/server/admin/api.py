"""What every operator call shares: the app key, JSON refusals, the bearer token, request bodies
and the ``{room}`` of the path."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware

from ...core.errors import (
    GeofenceError,
)
from ...core.geofence import Geofence
from ...core.storage import StorageError
from ...protocol import ROOM_PATTERN
from .config import REALM

if TYPE_CHECKING:
    from ...cluster.auditstream import AuditFilter, AuditPage
    from ...cluster.nodes import NodeView

logger = logging.getLogger(__name__)

#: Largest request body (a policy, a reload request).
MAX_BODY = 64 * 1024
#: Longest reason an operator may give for a change or an ejection (it goes into the audit log).
MAX_REASON = 500
#: Longest ``actor`` (who makes a change, as the operator names themself) kept in the audit log.
MAX_ACTOR = 100
#: Fields every changing call accepts beside its own: who makes the change and why (audited).
ATTRIBUTION = frozenset({"actor", "reason"})


class ParticipantControl(Protocol):
    """What the operator API asks of the SFU beyond what the geofence knows (ids only).

    Ejection by hand does not go through here: it goes through :meth:`Geofence.eject_by_operator`,
    which audits it and asks the SFU through the same ``eject`` callable as every other ejection
    (``Trigger.OPERATOR``), so there is one way out of a room.
    """

    def display_names(self, room: str) -> Mapping[str, str]:
        """Names the participants of ``room`` gave themselves, by participant id."""
        ...


class ClusterView(Protocol):
    """What the operator API asks of a cluster node (:class:`~sfu_geofence.cluster.node.ClusterNode`)."""

    node: str | None
    """This node's id (None until its listener is bound)."""

    async def others(self) -> list[NodeView]:
        """The other live nodes and their participants, as last announced."""
        ...

    async def send(self, node: str, command: dict[str, Any]) -> dict[str, Any]:
        """A command to another node, and its answer (raises NodeUnavailable)."""
        ...

    async def read_audit(self, which: AuditFilter, after_id: str | None, limit: int) -> AuditPage:
        """A page of the cluster's audit stream."""
        ...


@dataclass(frozen=True, slots=True)
class Admin:
    geofence: Geofence
    control: ParticipantControl | None
    cluster: ClusterView | None = None
    """In a cluster (``--redis``): the whole cluster's rooms, participants and audit."""


ADMIN = web.AppKey("admin", Admin)


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


GENERIC_CODES = {
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
            {"error": GENERIC_CODES.get(exc.status, "http_error"), "message": exc.reason},
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


def room_of(request: web.Request) -> str:
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


def known_room(fence: Geofence, room: str) -> None:
    if room not in fence.policies.rooms():
        raise ApiError(404, "unknown_room", f"room {room!r} has no participants and no policy of its own")


# -- request bodies --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Change:
    """Who makes a change and why, as the operator says (optional; audited, shown in reports)."""

    actor: str | None
    reason: str | None

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> Change:
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


async def json_object(
    request: web.Request, *, allowed: set[str] | None = None, required: bool = True
) -> dict[str, Any]:
    raw = await read_body(request)
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


async def read_body(request: web.Request) -> bytes:
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
