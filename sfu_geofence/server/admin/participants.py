"""Rooms, their participants (country, address, decision: operators only) and ejection by hand."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from ...core.decision import Decision
from ...core.errors import (
    ParticipantError,
)
from ...core.geofence import Geofence, ParticipantView
from .api import ADMIN, ATTRIBUTION, ApiError, Change, ParticipantControl, json_object, known_room, room_of
from .cluster import eject_elsewhere, other_nodes
from .policies import policy_view

logger = logging.getLogger(__name__)


async def list_rooms(request: web.Request) -> web.Response:
    """Rooms with participants or a policy of their own (in a cluster: on any node, and which)."""
    admin = request.app[ADMIN]
    fence = admin.geofence
    counts: dict[str, int] = {}
    nodes: dict[str, set[str]] = {}
    here = admin.cluster.node if admin.cluster is not None else None
    entries = [{"room": view.room, "node": str(here)} for view in fence.participants()]
    extra: dict[str, Any] = {}
    if admin.cluster is not None:
        others, extra["cluster"] = await other_nodes(admin.cluster)
        entries += [{"room": p["room"], "node": n.node} for n in others for p in n.participants]
    for entry in entries:
        counts[entry["room"]] = counts.get(entry["room"], 0) + 1
        nodes.setdefault(entry["room"], set()).add(entry["node"])
    rooms = sorted(set(counts) | set(fence.policies.rooms()))
    return web.json_response(
        {
            "rooms": [
                {
                    "room": room,
                    "participants": counts.get(room, 0),
                    **policy_view(fence.policy(room)),
                    **({"nodes": sorted(nodes.get(room, ()))} if admin.cluster is not None else {}),
                }
                for room in rooms
            ],
            **extra,
        }
    )


async def list_participants(request: web.Request) -> web.Response:
    """Who is in a room, where the geofence places them, and why they are admitted (in a cluster:
    on every node, each with its ``node``)."""
    admin = request.app[ADMIN]
    room = room_of(request)
    views = admin.geofence.participants(room)
    names = admin.control.display_names(room) if admin.control is not None else {}
    entries = [participant_view(view, names.get(view.participant)) for view in views]
    extra: dict[str, Any] = {}
    if admin.cluster is not None:
        entries = [{**entry, "node": admin.cluster.node} for entry in entries]
        others, extra["cluster"] = await other_nodes(admin.cluster)
        for node in others:
            entries += [
                {**{k: v for k, v in p.items() if k != "room"}, "node": node.node}
                for p in node.participants
                if p["room"] == room
            ]
    if not entries:
        known_room(admin.geofence, room)
    return web.json_response({"room": room, "participants": entries, **extra})


async def eject_participant(request: web.Request) -> web.Response:
    """Remove one participant by hand: audited, then closed by the SFU (202: the close follows).

    In a cluster, one on another node is ejected there (:mod:`.cluster`)."""
    admin = request.app[ADMIN]
    room, participant = room_of(request), request.match_info["participant"]
    body = await json_object(request, allowed=set(ATTRIBUTION), required=False)
    change = Change.of(body)
    if admin.cluster is not None and not any(
        v.participant == participant for v in admin.geofence.participants(room)
    ):
        return await eject_elsewhere(admin.cluster, admin.geofence, room, participant, change)
    body = eject_here(admin.geofence, room, participant, change)
    if admin.cluster is not None:
        body["node"] = admin.cluster.node
    return web.json_response(body, status=202)


def eject_here(fence: Geofence, room: str, participant: str, change: Change) -> dict[str, Any]:
    """Eject a participant of this node (ApiError if it cannot); the 202 answer's body."""
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
    return {"room": room, "participant": participant, "status": "requested"}


def participant_entries(fence: Geofence, control: ParticipantControl | None) -> list[dict[str, Any]]:
    """Every participant of this node, each with its ``room``: what a cluster node announces."""
    names: dict[str, Mapping[str, str]] = {}
    entries = []
    for view in fence.participants():
        if view.room not in names:
            names[view.room] = control.display_names(view.room) if control is not None else {}
        entries.append({"room": view.room, **participant_view(view, names[view.room].get(view.participant))})
    return entries


def participant_view(view: ParticipantView, name: str | None) -> dict[str, Any]:
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
