"""The operator API of a cluster node: the other nodes' participants, ejections there, the shared audit.

This node's own participants are read live; the others' come from their last announcement in
Redis (:mod:`sfu_geofence.cluster.nodes`: at most a heartbeat old, ``age_ms`` says how old). With
Redis unreachable the listings hold this node's participants alone and say why
(``cluster.error``); an ejection on another node answers 503, or 504 when that node does not answer.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ...core.geofence import Geofence
from .api import ApiError, Change, ClusterView, known_room

if TYPE_CHECKING:
    from ...cluster.nodes import NodeView

logger = logging.getLogger(__name__)


async def other_nodes(cluster: ClusterView) -> tuple[list[NodeView], dict[str, Any]]:
    """The other nodes, and the ``cluster`` part of a listing: which node answers, how old the
    others' data is, or why they are missing."""
    from redis.exceptions import RedisError  # only a cluster node runs this

    summary: dict[str, Any] = {"node": cluster.node}
    try:
        others = await cluster.others()
    except (RedisError, OSError) as exc:
        summary["error"] = f"other nodes unknown: Redis unreachable ({exc})"
        return [], summary
    summary["nodes"] = [
        {"node": n.node, "url": n.url, "age_ms": round(n.age * 1000), "participants": len(n.participants)}
        for n in others
    ]
    return others, summary


async def eject_elsewhere(
    cluster: ClusterView, fence: Geofence, room: str, participant: str, change: Change
) -> web.Response:
    """Eject a participant hosted on another node: a command to it, answered with its result."""
    from redis.exceptions import RedisError  # only a cluster node runs this

    from ...cluster.commands import NodeUnavailable

    try:
        others = await cluster.others()
    except (RedisError, OSError) as exc:
        raise ApiError(
            503,
            "cluster_unavailable",
            f"no participant {participant!r} here, and Redis is unreachable: {exc}",
        ) from None
    host = next(
        (
            node
            for node in others
            if any(p["room"] == room and p["participant"] == participant for p in node.participants)
        ),
        None,
    )
    if host is None:
        if not fence.participants(room) and not any(
            p["room"] == room for n in others for p in n.participants
        ):
            known_room(fence, room)
        raise ApiError(404, "unknown_participant", f"no participant {participant!r} in room {room!r}")
    command = {
        "command": "eject",
        "room": room,
        "participant": participant,
        "actor": change.actor,
        "reason": change.reason,
    }
    try:
        answer = await cluster.send(host.node, command)
    except NodeUnavailable as exc:
        raise ApiError(504, "node_unavailable", str(exc), node=host.node) from None
    return web.json_response(answer["body"], status=answer["status"])


async def act_on_command(fence: Geofence, node: str, command: dict[str, Any]) -> dict[str, Any]:
    """Another node's command, acted on here: ``{"status": HTTP status, "body": JSON answer}``."""
    from .participants import eject_here

    if command.get("command") != "eject":
        return {"status": 400, "body": {"error": "unknown_command", "message": "only eject is known"}}
    try:
        change = Change(command.get("actor"), command.get("reason"))
        body = eject_here(fence, command["room"], command["participant"], change)
    except ApiError as exc:
        return {"status": exc.status, "body": {"error": exc.code, "message": exc.message, "node": node}}
    return {"status": 202, "body": {**body, "node": node}}
