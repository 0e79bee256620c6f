"""The audit log, page by page, filtered."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from ...core.audit import AuditEvent, EventKind
from .api import ADMIN, ApiError, ClusterView

logger = logging.getLogger(__name__)

#: Audit events per page: the default, and the most one request may ask for.
AUDIT_PAGE, AUDIT_PAGE_MAX = 100, 1000


_AUDIT_FILTERS = {"room", "participant", "kind", "outcome", "since", "after_id", "limit"}


async def read_audit(request: web.Request) -> web.Response:
    """Audit events, oldest first: the newest page, or (``after_id``) the page after an event."""
    query = request.query
    cluster = request.app[ADMIN].cluster
    known = _AUDIT_FILTERS | ({"node"} if cluster is not None else set())
    unknown = set(query) - known
    if unknown:
        raise ApiError(
            400,
            "bad_parameter",
            f"unknown parameter(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}",
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
    limit = _int_parameter(query, "limit", 1, AUDIT_PAGE_MAX)
    limit = AUDIT_PAGE if limit is None else limit
    if cluster is not None:
        return await read_cluster_audit(request, cluster, kind, since, limit)
    after_id = _int_parameter(query, "after_id", 0, SQLITE_MAX_INTEGER)
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


STREAM_ID = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")
"""An id of the cluster's audit stream (``after_id`` in cluster mode)."""


async def read_cluster_audit(
    request: web.Request, cluster: ClusterView, kind: EventKind | None, since: datetime | None, limit: int
) -> web.Response:
    """The cluster's audit stream (``--redis``): every node's events, each with its ``node``."""
    from redis.exceptions import RedisError  # only a cluster node runs this

    from ...cluster.auditstream import AuditFilter

    query = request.query
    after_id = query.get("after_id")
    if after_id is not None and not STREAM_ID.fullmatch(after_id):
        raise ApiError(
            400, "bad_parameter", "after_id must be an id of the cluster's audit, e.g. 1764864000000-0"
        )
    which = AuditFilter(
        room=query.get("room"),
        participant=query.get("participant"),
        kind=None if kind is None else str(kind),
        outcome=query.get("outcome"),
        node=query.get("node"),
        since=since,
    )
    try:
        page = await cluster.read_audit(which, after_id, limit)
    except (RedisError, OSError) as exc:
        raise ApiError(
            503, "cluster_unavailable", f"the cluster's audit is in Redis, unreachable: {exc}"
        ) from None
    return web.json_response(
        {
            "events": page.events,
            "last_id": page.last_id,
            "more": page.more,
            "audit_failures": request.app[ADMIN].geofence.audit_failures,
            "cluster": {"node": cluster.node},
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
