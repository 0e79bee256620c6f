"""Janus as the geofence's host (docs/plugin.md), through its API alone: the gate stands between
clients and an unmodified Janus.

* **admit**: a VideoRoom ``join`` (publisher or subscriber) is decided on the client's address before
  Janus sees it; a refusal is answered in Janus's error format, naming the client's own country, and
  Janus never hears of that join. Every handle that joins is one participant of the geofence.
* **eject**: the gate tells the client why, on its own session (an event only its stream carries), then
  detaches its handle through Janus's Admin API (the participant leaves the room, its PeerConnection
  ends, nobody else's media is touched) and calls ``leave``.
* **leave**: whatever ends a participant (its ``leave``, ``detach``, a kick, the session destroyed or
  timed out, Janus restarted) is read from the session's events, and ``leave`` is called.
* **media_address**: the event handler's selected pairs (:mod:`.events`) are reported, relayed only
  when the remote address is one of the operator's declared TURN relays.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from ..core.addresses import IPNetwork, parse_address
from ..core.audit import AuditLog
from ..core.errors import GeofenceError, InvalidAddress, ParticipantError
from ..core.geofence import EjectRequest, Geofence
from ..core.policystore import PolicySource
from ..janus.admin import JanusAdmin
from ..janus.client import REQUEST_TIMEOUT_S, JanusError, JsonObject
from ..server.enforcement import ejection_reason, refusal_reason
from .sessions import RelayedSession, poll
from .wire import (
    HANDLE_NOT_FOUND,
    SESSION_NOT_FOUND,
    UNAUTHORIZED,
    UNKNOWN,
    VIDEOROOM,
    Join,
    error_reply,
    identifier,
    plugin_data,
    videoroom_join,
)

logger = logging.getLogger(__name__)


@dataclass
class Member:
    """One handle admitted into a VideoRoom room: one participant of the geofence."""

    participant: str
    room: str
    session: int
    handle: int
    display: str | None
    transaction: str
    joined: bool = False
    """True once Janus confirmed the join (until then a failed join is left at once)."""


@dataclass
class GateStats:
    """What the gate did since start-up (for the operator and the tests)."""

    refused: int = 0
    ejected: int = 0
    ejection_seconds: list[float] = field(default_factory=list)


class JanusGate:
    """The geofence in front of one Janus (its API at ``api_url``, its Admin API through ``admin``)."""

    def __init__(
        self,
        *,
        http: aiohttp.ClientSession,
        api_url: str,
        admin: JanusAdmin,
        database: str | Path | None = None,
        policies: PolicySource | None = None,
        audit: AuditLog | None = None,
        turn_relays: tuple[IPNetwork, ...] = (),
        session_timeout: float = 60.0,
        max_sessions: int = 4096,
        max_sessions_per_address: int = 32,
    ) -> None:
        self.http = http
        self.api_url = api_url.rstrip("/")
        self.admin = admin
        self.turn_relays = turn_relays
        self.session_timeout = session_timeout
        self.max_sessions = max_sessions
        self.max_sessions_per_address = max_sessions_per_address
        self.sessions: dict[int, RelayedSession] = {}
        self.members: dict[int, Member] = {}
        """Admitted participants by handle id."""
        self._by_id: dict[str, Member] = {}
        self._joins: dict[int, int] = {}
        """Joins per handle, while its session lasts."""
        self._tasks: set[asyncio.Task[None]] = set()
        self.stats = GateStats()
        self.geofence = Geofence(self.eject, database=database, policies=policies, audit=audit)
        """The geofence the gate creates and owns (:meth:`close` closes it)."""

    # -- the client's requests ---------------------------------------------------------------------

    async def request(
        self,
        address: str,
        message: JsonObject,
        session_id: int | None = None,
        handle_id: int | None = None,
        websocket: object | None = None,
    ) -> JsonObject:
        """Answer one client request (already checked by :func:`.wire.parse_message`) as Janus would."""
        kind = message["janus"]
        transaction = str(message["transaction"])
        if session_id is None:
            if kind == "create":
                over = self._over_cap(address)
                if over is not None:
                    return error_reply(UNKNOWN, over, transaction)
            reply = await self._forward(message, transaction)
            if kind == "create" and reply.get("janus") == "success":
                created = identifier(reply.get("data", {}).get("id"))
                if created is not None:
                    self._relay(created, websocket, address)
            return reply
        session = self.sessions.get(session_id)
        if session is None or session.closed:
            return error_reply(SESSION_NOT_FOUND, f"No such session {session_id}", transaction)
        session.touch()
        if handle_id is None:
            reply = await self._forward(message, transaction, session_id)
            if kind == "attach" and reply.get("janus") == "success":
                handle = identifier(reply.get("data", {}).get("id"))
                if handle is not None:
                    session.plugins[handle] = str(message.get("plugin"))
            elif kind == "destroy" and reply.get("janus") == "success":
                self._forget_session(session)
            return reply
        if kind == "message" and session.plugins.get(handle_id) == VIDEOROOM:
            join = videoroom_join(message)
            if join is not None and handle_id not in self.members:
                return await self._join(address, join, message, session, handle_id)
            if join is not None:  # a second join on a joined handle: Janus refuses it, if we let it by
                refusal = self._second_join(address, join, transaction, session_id)
                if refusal is not None:
                    return refusal
        reply = await self._forward(message, transaction, session_id, handle_id)
        if kind == "detach" and reply.get("janus") == "success":
            self._detached(session, handle_id)
        return reply

    async def events(self, session_id: int, most: int, within: float) -> list[JsonObject] | None:
        """The client's long poll: its session's next events (None: no such session)."""
        session = self.sessions.get(session_id)
        if session is None or session.closed:
            return None
        session.touch()
        return await session.next_events(most, within)

    async def info(self) -> JsonObject:
        """Janus's ``GET /info`` (what janus.js reads first), or an internal error if unreachable."""
        try:
            async with self.http.get(
                f"{self.api_url}/info", timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
            ) as response:
                reply: JsonObject = await response.json(content_type=None)
                return reply
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            return error_reply(UNKNOWN, f"Janus is unreachable: {exc}", None)

    async def websocket_closed(self, websocket: object) -> None:
        """The sessions a WebSocket created end with it (as with Janus's own WebSocket transport)."""
        for session in [s for s in self.sessions.values() if s.websocket is websocket]:
            await self._destroy(session)

    # -- admission ------------------------------------------------------------------------------------

    async def _join(
        self, address: str, join: Join, message: JsonObject, session: RelayedSession, handle: int
    ) -> JsonObject:
        transaction = str(message["transaction"])
        # The handle's id, which its client knows (a rejoin on the same handle gets a suffix: unique).
        joins = self._joins[handle] = self._joins.get(handle, 0) + 1
        participant = str(handle) if joins == 1 else f"{handle}.{joins}"
        try:
            await self.geofence.ready()
            decision = self.geofence.admit(join.room, participant, address)
        except InvalidAddress:
            self.stats.refused += 1
            return error_reply(
                UNAUTHORIZED,
                "Your network address could not be read, so this room cannot admit you.",
                transaction,
            )
        except GeofenceError as exc:
            logger.error("admission of %s in %s failed: %s", participant, join.room, exc)
            return error_reply(
                UNKNOWN, "Internal error: the geofence cannot admit anyone right now", transaction
            )
        if not decision.admitted:
            self.stats.refused += 1
            logger.debug("refused %s in %s: %s", participant, join.room, decision.reason)
            return error_reply(UNAUTHORIZED, refusal_reason(decision), transaction, session.session_id)
        member = Member(participant, join.room, session.session_id, handle, join.display, transaction)
        self.members[handle] = member
        self._by_id[participant] = member
        reply = await self._forward(message, transaction, session.session_id, handle)
        if reply.get("janus") not in ("ack", "success") or "error_code" in plugin_data(reply):
            self._left(handle)
        elif reply.get("janus") == "success":
            member.joined = True
        return reply

    def _second_join(self, address: str, join: Join, transaction: str, session: int) -> JsonObject | None:
        """A join on a handle already in a room is decided too (a pure query), never waved through."""
        try:
            decision = self.geofence.decide(join.room, address)
        except GeofenceError:
            return error_reply(
                UNKNOWN, "Internal error: the geofence cannot admit anyone right now", transaction
            )
        if decision.admitted:
            return None
        self.stats.refused += 1
        return error_reply(UNAUTHORIZED, refusal_reason(decision), transaction, session)

    # -- ejection (the geofence's eject callable) --------------------------------------------------

    def eject(self, request: EjectRequest) -> None:
        """Schedule the removal of one participant; never blocks (docs/plugin.md)."""
        task = asyncio.get_running_loop().create_task(self._remove(request, time.perf_counter()))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _remove(self, request: EjectRequest, requested: float) -> None:
        member = self._by_id.get(request.participant)
        if member is None:  # it left meanwhile
            self.geofence.leave(request.room, request.participant)
            return
        logger.info("ejecting %s from %s (%s)", member.participant, member.room, request.trigger)
        session = self.sessions.get(member.session)
        if session is not None:
            session.push(ejected_event(member, ejection_reason(request)))
        try:
            await self.admin.detach_handle(member.session, member.handle)
        except JanusError as exc:
            if exc.code not in (SESSION_NOT_FOUND, HANDLE_NOT_FOUND):
                logger.error("Janus refused to detach %s: %s", member.participant, exc)
        except (aiohttp.ClientError, TimeoutError) as exc:
            logger.error("Janus's Admin API unreachable, %s not detached: %s", member.participant, exc)
        self.stats.ejected += 1
        self.stats.ejection_seconds.append(time.perf_counter() - requested)
        self._left(member.handle)

    # -- media paths (from the event handler) ------------------------------------------------------

    def selected_pair(self, session_id: int, handle_id: int, remote: str) -> None:
        """Janus selected a pair for a handle: decide its remote address as the project's SFU does."""
        member = self.members.get(handle_id)
        if member is None or member.session != session_id:
            return
        parsed = parse_address(remote)
        relayed = parsed is not None and any(parsed in network for network in self.turn_relays)
        try:
            self.geofence.media_address(member.room, member.participant, remote, relayed)
        except ParticipantError:
            pass  # ejected or left meanwhile
        except GeofenceError:
            logger.exception("media address of %s could not be checked", member.participant)

    # -- what the operator API asks of the host ------------------------------------------------------

    def display_names(self, room: str) -> Mapping[str, str]:
        return {m.participant: m.display for m in self.members.values() if m.room == room and m.display}

    def connected(self, room: str) -> frozenset[str]:
        return frozenset(m.participant for m in self.members.values() if m.room == room)

    # -- sessions --------------------------------------------------------------------------------------

    def _over_cap(self, address: str) -> str | None:
        """Why one more session cannot be relayed (each costs a long poll to Janus), or None."""
        if len(self.sessions) >= self.max_sessions:
            return "Too many sessions: the gate relays no more for now"
        if sum(s.address == address for s in self.sessions.values()) >= self.max_sessions_per_address:
            return f"Too many sessions from your address (at most {self.max_sessions_per_address})"
        return None

    def _relay(self, session_id: int, websocket: object | None, address: str) -> RelayedSession:
        session = RelayedSession(session_id, websocket, address)
        self.sessions[session_id] = session
        session.poller = asyncio.get_running_loop().create_task(
            poll(self.http, self.api_url, session, self._observe, self._gone)
        )
        return session

    def _observe(self, session: RelayedSession, event: JsonObject) -> None:
        """Read one of Janus's events on its way to the client: joins confirmed, participants gone."""
        kind = event.get("janus")
        handle = identifier(event.get("sender"))
        member = self.members.get(handle) if handle is not None else None
        if kind == "timeout":
            self._forget_session(session)
            return
        if kind == "detached" and handle is not None and handle in session.plugins:
            self._detached(session, handle)
            return
        if member is None or member.session != session.session_id:
            return
        data = plugin_data(event)
        if event.get("transaction") == member.transaction and not member.joined:
            if kind == "error" or "error_code" in data:
                self._left(member.handle)  # Janus refused the join itself (no such room, ...)
            else:
                member.joined = True
        elif kind == "event" and (
            data.get("leaving") == "ok" or data.get("left") == "ok" or data.get("videoroom") == "destroyed"
        ):
            self._left(member.handle)

    async def _gone(self, session: RelayedSession) -> None:
        """Janus forgot the session (or cannot be reached): so do we, and its participants leave."""
        self._forget_session(session)

    def _detached(self, session: RelayedSession, handle: int) -> None:
        session.plugins.pop(handle, None)
        self._joins.pop(handle, None)
        self._left(handle)

    def _left(self, handle: int) -> None:
        member = self.members.pop(handle, None)
        if member is not None:
            self._by_id.pop(member.participant, None)
            self.geofence.leave(member.room, member.participant)

    def _forget_session(self, session: RelayedSession) -> None:
        session.close()
        self.sessions.pop(session.session_id, None)
        for handle in session.plugins:
            self._joins.pop(handle, None)
        for member in [m for m in self.members.values() if m.session == session.session_id]:
            self._left(member.handle)

    async def _destroy(self, session: RelayedSession) -> None:
        self._forget_session(session)
        with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
            await self._forward({"janus": "destroy", "transaction": "gate"}, "gate", session.session_id)

    async def reap(self) -> None:
        """Destroy HTTP clients' sessions silent for ``session_timeout`` (the gate's own poll would
        otherwise keep them alive on Janus for ever)."""
        now = time.monotonic()
        for session in list(self.sessions.values()):
            if session.websocket is None and now - session.last_seen > self.session_timeout:
                await self._destroy(session)

    async def close(self) -> None:
        """Stop every poll and pending ejection, then close the geofence (Janus keeps its sessions;
        they time out there)."""
        for session in list(self.sessions.values()):
            self._forget_session(session)
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.geofence.close()

    # -- Janus's API -----------------------------------------------------------------------------------

    async def _forward(
        self, message: JsonObject, transaction: str, session: int | None = None, handle: int | None = None
    ) -> JsonObject:
        """POST ``message`` to Janus at the session's (and handle's) path; Janus unreachable is an
        internal error to the client, never a silent pass."""
        body = {k: v for k, v in message.items() if k not in ("session_id", "handle_id")}
        path = "".join(f"/{part}" for part in (session, handle) if part is not None)
        try:
            async with self.http.post(
                f"{self.api_url}{path}", json=body, timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
            ) as response:
                reply = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            logger.warning("Janus unreachable for %s: %s", message.get("janus"), exc)
            return error_reply(UNKNOWN, "Internal error: Janus is unreachable", transaction, session)
        if not isinstance(reply, dict):
            return error_reply(UNKNOWN, "Internal error: Janus answered no JSON object", transaction, session)
        return reply


def ejected_event(member: Member, reason: str) -> JsonObject:
    """What the ejected client alone is told: a VideoRoom ``leaving`` event of its own handle, as a kick
    looks to it, with the geofence's reason (its own country at most)."""
    return {
        "janus": "event",
        "session_id": member.session,
        "sender": member.handle,
        "plugindata": {
            "plugin": VIDEOROOM,
            "data": {
                "videoroom": "event",
                "room": member.room,
                "leaving": "ok",
                "reason": "geofence",
                "geofence": {"error": "ejected", "message": reason},
            },
        },
    }
