"""The operator API: policies, participants, ejection by hand, the audit log, the database.

JSON over HTTP behind a bearer token, as an aiohttp sub-application the server mounts with
``app.add_subapp("/api", create_admin_app(...))``. Countries and addresses of participants are shown
here and nowhere else: this API is the operator's, never a participant's.

Every call that changes something answers only once the change is committed to the geofence's store
(SQLite, or Redis in a cluster: acknowledged = persisted). Every refusal is a specific status and a JSON body
``{"error": code, "message": sentence}``; a refused call changes nothing. See docs/operations.md.
"""

from __future__ import annotations

from aiohttp import web

from ...core.geofence import Geofence
from .api import ADMIN, Admin, ApiError, ClusterView, ParticipantControl, bearer_auth, json_errors
from .audit import read_audit
from .config import MIN_TOKEN_LENGTH, TOKEN_ENV, AdminConfig, check_token
from .database import get_database, reload_database
from .participants import eject_participant, list_participants, list_rooms
from .policies import (
    delete_room_policy,
    get_default_policy,
    get_room_policy,
    put_default_policy,
    put_room_policy,
)

__all__ = [
    "ADMIN",
    "MIN_TOKEN_LENGTH",
    "TOKEN_ENV",
    "AdminConfig",
    "ApiError",
    "ClusterView",
    "ParticipantControl",
    "check_token",
    "create_admin_app",
]


def create_admin_app(
    geofence: Geofence, control: ParticipantControl | None, token: str, cluster: ClusterView | None = None
) -> web.Application:
    """The operator API for ``geofence`` (and, given ``cluster``, the whole cluster's view); mount it
    with ``app.add_subapp("/api", ...)``."""
    check_token(token)
    app = web.Application(middlewares=[json_errors, bearer_auth(token)])
    app[ADMIN] = Admin(geofence, control, cluster)
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
