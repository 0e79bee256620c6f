"""Room policies and the server default: read, replace, delete; who a change ejected."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ...core.countries import country_code
from ...core.errors import InvalidCountryCode, InvalidPolicy
from ...core.outcome import Enacted
from ...core.policy import RoomPolicy
from ...core.policystore import PolicyInForce
from .api import ADMIN, ATTRIBUTION, ApiError, Change, json_object, room_of


async def get_room_policy(request: web.Request) -> web.Response:
    room = room_of(request)
    return web.json_response({"room": room, **policy_view(request.app[ADMIN].geofence.policy(room))})


async def put_room_policy(request: web.Request) -> web.Response:
    """Replace a room's policy; its participants now restricted are ejected (or would be)."""
    fence = request.app[ADMIN].geofence
    room = room_of(request)
    body = await json_object(request)
    change = Change.of(body)
    policy = _parse_policy({k: v for k, v in body.items() if k not in ATTRIBUTION})
    enacted = await fence.change_policy(room, policy, actor=change.actor, reason=change.reason)
    return web.json_response({"room": room, **policy_view(fence.policy(room)), **ejections_view(enacted)})


async def delete_room_policy(request: web.Request) -> web.Response:
    """Return a room to the server default."""
    fence = request.app[ADMIN].geofence
    room = room_of(request)
    change = Change.of(await json_object(request, allowed=set(ATTRIBUTION), required=False))
    if room not in fence.policies.rooms():
        raise ApiError(
            404, "no_room_policy", f"room {room!r} has no policy of its own: it follows the default"
        )
    enacted = await fence.change_policy(room, None, actor=change.actor, reason=change.reason)
    return web.json_response({"room": room, **policy_view(fence.policy(room)), **ejections_view(enacted)})


async def get_default_policy(request: web.Request) -> web.Response:
    return web.json_response(policy_view(request.app[ADMIN].geofence.policies.default))


async def put_default_policy(request: web.Request) -> web.Response:
    """Replace the server default, which every room without a policy of its own follows."""
    fence = request.app[ADMIN].geofence
    body = await json_object(request)
    change = Change.of(body)
    policy = _parse_policy({k: v for k, v in body.items() if k not in ATTRIBUTION})
    enacted = await fence.change_default_policy(policy, actor=change.actor, reason=change.reason)
    return web.json_response({**policy_view(fence.policies.default), **ejections_view(enacted)})


def policy_view(in_force: PolicyInForce) -> dict[str, Any]:
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


def ejections_view(enacted: Enacted) -> dict[str, Any]:
    """Who a change ejected (``requested``) or, in monitor mode, would have (``would_eject``), as
    the core that acted reports it."""
    return {
        "ejections": [
            {"room": e.room, "participant": e.participant, "outcome": str(e.outcome), "country": e.country}
            for e in enacted.ejections
        ]
    }
