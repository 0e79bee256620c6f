"""Janus's event handler (``libjanus_sampleevh``) posting to the gate: the media path re-check.

Janus reports each handle's selected ICE pair as a WebRTC event (type 16) with ``selected-pair``:
``"<local>:<port> [host,udp] <-> <remote>:<port> [<type>,udp]"``. The remote address is decided by
:meth:`.gate.JanusGate.selected_pair` (relayed only from a declared TURN relay, whatever ``<type>`` the
client wrote). The endpoint is on the admin listener (loopback by default), never on the public one:
whoever can post here can report media addresses.
"""

from __future__ import annotations

import json
import logging

from aiohttp import web

from ..janus.client import JsonObject
from .gate import JanusGate
from .wire import identifier

logger = logging.getLogger(__name__)

WEBRTC_EVENT = 16
"""``JANUS_EVENT_TYPE_WEBRTC``."""
MAX_EVENT_POST = 1024 * 1024
"""Largest batch of events accepted (Janus groups what accumulated since its last post)."""
EVENTS_PATH = "/janus-events"
EVENTS_GATE = web.AppKey("events_gate", JanusGate)


def add_event_route(app: web.Application, gate: JanusGate) -> None:
    """Serve ``POST /janus-events`` (the ``backend`` of janus.eventhandler.sampleevh.jcfg) on ``app``."""
    app[EVENTS_GATE] = gate
    app.router.add_post(EVENTS_PATH, receive_events)


async def receive_events(request: web.Request) -> web.Response:
    if (request.content_length or 0) > MAX_EVENT_POST:
        return web.json_response({"error": "body_too_large"}, status=413)
    raw = await request.content.read(MAX_EVENT_POST + 1)
    if len(raw) > MAX_EVENT_POST:
        return web.json_response({"error": "body_too_large"}, status=413)
    try:
        posted = json.loads(raw)
    except (ValueError, RecursionError):
        return web.json_response({"error": "malformed_json"}, status=400)
    gate = request.app[EVENTS_GATE]
    for event in posted if isinstance(posted, list) else [posted]:
        if isinstance(event, dict):
            selected = selected_remote(event)
            if selected is not None:
                gate.selected_pair(*selected)
    return web.Response(status=200)


def selected_remote(event: JsonObject) -> tuple[int, int, str] | None:
    """(session, handle, remote address) of a selected-pair event, else None."""
    if event.get("type") != WEBRTC_EVENT:
        return None
    body = event.get("event")
    pair = body.get("selected-pair") if isinstance(body, dict) else None
    session, handle = identifier(event.get("session_id")), identifier(event.get("handle_id"))
    if not isinstance(pair, str) or session is None or handle is None or " <-> " not in pair:
        return None
    remote = pair.split(" <-> ", 1)[1].split(" ", 1)[0]
    address = remote.rsplit(":", 1)[0].strip("[]")
    return session, handle, address
