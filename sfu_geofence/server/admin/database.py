"""The geolocation database: what is loaded, and swapping in a new file."""

from __future__ import annotations

import logging
import os
import stat
from typing import Any

from aiohttp import web

from ...core.errors import (
    DatabaseError,
)
from ...core.geofence import Geofence
from .api import ADMIN, ATTRIBUTION, ApiError, Change, json_object
from .policies import ejections_view

logger = logging.getLogger(__name__)


async def get_database(request: web.Request) -> web.Response:
    return web.json_response(_database(request.app[ADMIN].geofence))


async def reload_database(request: web.Request) -> web.Response:
    """Swap in a new database file (or re-read the current one); a bad file keeps the old one."""
    fence = request.app[ADMIN].geofence
    body = await json_object(request, allowed={"path", *ATTRIBUTION}, required=False)
    change = Change.of(body)
    path = body.get("path")
    if path is not None and (not isinstance(path, str) or not path):
        raise ApiError(422, "invalid_path", "path must be a non-empty string (a file on the server)")
    _regular_file_or_missing(path if path is not None else fence.database.path)
    try:
        reloaded = fence.reload_database(path, actor=change.actor, reason=change.reason)
    except DatabaseError as exc:
        kept = _database(fence)
        raise ApiError(
            422, "database_unusable", f"{exc}; still using {fence.database.label}", kept=kept
        ) from None
    return web.json_response({**_database(fence), **ejections_view(reloaded)})


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
