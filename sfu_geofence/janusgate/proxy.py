"""The gate's front: Janus's HTTP API (``/janus``, long poll included) and its WebSocket API
(subprotocol ``janus-protocol``), served to clients in place of Janus's own transports.

Clients are pointed here instead of at Janus; every request goes through :class:`.gate.JanusGate`,
which forwards it to Janus's HTTP API unchanged except for the VideoRoom joins it refuses. The
client's address is the TCP peer, or what a trusted proxy forwarded (:mod:`sfu_geofence.server.remote`,
as ``serve`` reads it). A message that is too large, not JSON, not an object, or without ``janus``
or ``transaction`` is answered with Janus's own error and never reaches Janus.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiohttp import WSMsgType, web

from ..janus.client import JsonObject
from ..server.remote import ProxyConfig, install_trusted_proxies, participant_address
from .gate import JanusGate
from .sessions import POLL_EVENTS
from .wire import (
    HANDLE_NOT_FOUND,
    MAX_MESSAGE_BYTES,
    SESSION_NOT_FOUND,
    TRANSPORT_SPECIFIC,
    WireError,
    error_reply,
    identifier,
    parse_message,
)

logger = logging.getLogger(__name__)

GATE = web.AppKey("janus_gate", JanusGate)
LONG_POLL_S = web.AppKey("long_poll_s", float)
SUBPROTOCOL = "janus-protocol"
LONG_POLL_SECONDS = 30.0
"""How long a client's long poll is held without events (Janus's own HTTP transport: 30 s)."""
MAX_POLL_EVENTS = 100


def create_front_app(
    gate: JanusGate, proxies: ProxyConfig, long_poll: float = LONG_POLL_SECONDS
) -> web.Application:
    """The public application: ``/janus`` (HTTP API) and ``/`` and ``/janus/ws`` (WebSocket API)."""
    app = web.Application(client_max_size=MAX_MESSAGE_BYTES)
    app[GATE] = gate
    app[LONG_POLL_S] = long_poll
    install_trusted_proxies(app, proxies)
    app.router.add_get("/", websocket_api)
    app.router.add_get("/janus/ws", websocket_api)
    app.router.add_get("/janus/info", info)
    app.router.add_post("/janus", http_api)
    app.router.add_post(r"/janus/{session:\d+}", http_api)
    app.router.add_post(r"/janus/{session:\d+}/{handle:\d+}", http_api)
    app.router.add_get(r"/janus/{session:\d+}", long_poll_api)
    return app


async def info(request: web.Request) -> web.Response:
    return web.json_response(await request.app[GATE].info())


async def http_api(request: web.Request) -> web.Response:
    """POST a Janus request to ``/janus[/<session>[/<handle>]]``."""
    address = participant_address(request)
    if (request.content_length or 0) > MAX_MESSAGE_BYTES:
        return _too_large()
    raw = bytearray()
    async for piece in request.content.iter_any():
        raw += piece
        if len(raw) > MAX_MESSAGE_BYTES:
            return _too_large()
    try:
        message = parse_message(bytes(raw))
    except WireError as error:
        return web.json_response(error.reply())
    session = _path_id(request, "session")
    handle = _path_id(request, "handle")
    if "session" in request.match_info and session is None:
        return web.json_response(error_reply(SESSION_NOT_FOUND, "No such session", message["transaction"]))
    if "handle" in request.match_info and handle is None:
        return web.json_response(error_reply(HANDLE_NOT_FOUND, "No such handle", message["transaction"]))
    return web.json_response(await request.app[GATE].request(address, message, session, handle))


async def long_poll_api(request: web.Request) -> web.Response:
    """GET ``/janus/<session>``: the session's events, as Janus's HTTP transport delivers them."""
    session = _path_id(request, "session")
    try:
        most = max(1, min(MAX_POLL_EVENTS, int(request.query.get("maxev", "1"))))
    except ValueError:
        most = 1
    events = (
        None if session is None else await request.app[GATE].events(session, most, request.app[LONG_POLL_S])
    )
    if events is None:
        return web.json_response(error_reply(SESSION_NOT_FOUND, f"No such session {session}", None))
    if not events:
        return web.json_response({"janus": "keepalive"})
    return web.json_response(events if "maxev" in request.query else events[0])


async def websocket_api(request: web.Request) -> web.StreamResponse:
    """Janus's WebSocket API: requests carry their session and handle ids; events are pushed."""
    address = participant_address(request)
    gate = request.app[GATE]
    ws = web.WebSocketResponse(protocols=(SUBPROTOCOL,), max_msg_size=2 * MAX_MESSAGE_BYTES, heartbeat=30.0)
    await ws.prepare(request)
    pumps: dict[int, asyncio.Task[None]] = {}
    try:
        async for frame in ws:
            if frame.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                continue
            reply = await _websocket_request(gate, address, frame.data, ws)
            await ws.send_json(reply)
            for session_id, session in gate.sessions.items():
                if session.websocket is ws and session_id not in pumps:
                    pumps[session_id] = asyncio.ensure_future(_pump(gate, session_id, ws))
    finally:
        for pump in pumps.values():
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump
        await gate.websocket_closed(ws)
    return ws


async def _websocket_request(
    gate: JanusGate, address: str, data: str | bytes, ws: web.WebSocketResponse
) -> JsonObject:
    try:
        message = parse_message(data)
    except WireError as error:
        return error.reply()
    if message["janus"] == "ping":
        return {"janus": "pong", "transaction": message["transaction"]}
    session = identifier(message.get("session_id"))
    handle = identifier(message.get("handle_id"))
    if "session_id" in message and session is None:
        return error_reply(SESSION_NOT_FOUND, "No such session", message["transaction"])
    if "handle_id" in message and (handle is None or session is None):
        return error_reply(HANDLE_NOT_FOUND, "No such handle", message["transaction"])
    return await gate.request(address, message, session, handle, websocket=ws)


async def _pump(gate: JanusGate, session_id: int, ws: web.WebSocketResponse) -> None:
    """Push the session's events down the WebSocket that created it, until either ends."""
    while not ws.closed:
        events = await gate.events(session_id, POLL_EVENTS, LONG_POLL_SECONDS)
        if events is None:
            return
        for event in events:
            await ws.send_json(event)


def _path_id(request: web.Request, name: str) -> int | None:
    text = request.match_info.get(name)
    return identifier(int(text)) if text is not None and len(text) < 21 else None


def _too_large() -> web.Response:
    error = error_reply(TRANSPORT_SPECIFIC, f"message larger than {MAX_MESSAGE_BYTES} bytes", None)
    return web.json_response(error, status=413)
