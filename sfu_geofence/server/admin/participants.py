"""Rooms, their participants (country, address, decision: operators only) and ejection by hand."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from ...core.decision import Decision
from ...core.errors import (
    ParticipantError,
)
from ...core.geofence import ParticipantView
from .api import ADMIN, ATTRIBUTION, ApiError, Change, json_object, known_room, room_of
from .policies import policy_view

logger = logging.getLogger(__name__)


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
                {"room": room, "participants": counts.get(room, 0), **policy_view(fence.policy(room))}
                for room in rooms
            ]
        }
    )


async def list_participants(request: web.Request) -> web.Response:
    """Who is in a room, where the geofence places them, and why they are admitted."""
    admin = request.app[ADMIN]
    room = room_of(request)
    views = admin.geofence.participants(room)
    if not views:
        known_room(admin.geofence, room)
    names = admin.control.display_names(room) if admin.control is not None else {}
    return web.json_response(
        {"room": room, "participants": [_participant(view, names.get(view.participant)) for view in views]}
    )


async def eject_participant(request: web.Request) -> web.Response:
    """Remove one participant by hand: audited, then closed by the SFU (202: the close follows)."""
    fence = request.app[ADMIN].geofence
    room, participant = room_of(request), request.match_info["participant"]
    body = await json_object(request, allowed=set(ATTRIBUTION), required=False)
    change = Change.of(body)
    reason = change.reason or "ejected by an operator"
    views = fence.participants(room)
    view = next((v for v in views if v.participant == participant), None)
    if view is None:
        if not views:
            known_room(fence, room)
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
